"""Segmentation and Audiences: definitions, jobs evaluated over Profile data, audiences, activation.

Profile data is seeded straight into the store and PostgreSQL (schema document, primary identity
descriptor, dataset record through ``catalog.create_dataset_record``, table rows), so these tests do
not depend on the Schema Registry and Batch Ingestion routes. Every test marks its rows with its own
``_acme.cohort`` value and segments on it: the session's sandbox is shared by all tests.
"""

from __future__ import annotations

import csv
import io
import time
import uuid

import pytest

from aep_emulator import xdm
from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.services import catalog
from tests.emulator import seed_schema
from tests.emulator.flows import ACTIVATION_V2, activation_flow, wait_for_run
from tests.support.openapi import validate, validate_response

pytestmark = pytest.mark.integration

UPS = "/data/core/ups"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def seed_identity_dataset(emu, sandbox: str, klass: str, prefix: str, columns: str, insert: str, rows: list) -> dict:
    """A Profile-enabled dataset of ``klass`` with primary identity ``_acme.userid`` (ECID).

    :param columns: the table's columns (DDL), besides the system columns.
    :param insert: ``INSERT INTO {table} ...`` with ``%s`` placeholders, run for every row.
    """
    suffix = uuid.uuid4().hex[:10]
    schema_id = seed_schema(emu, sandbox, klass, f"{prefix} {suffix}")
    emu.store.insert(
        sandbox,
        "descriptor",
        suffix,
        {
            "@id": suffix,
            "@type": "xdm:descriptorIdentity",
            "xdm:sourceSchema": schema_id,
            "xdm:sourceVersion": 1,
            "xdm:sourceProperty": "/_acme/userid",
            "xdm:namespace": "ECID",
            "xdm:property": "xdm:code",
            "xdm:isPrimary": True,
        },
    )
    table = f"{prefix}_{suffix}"
    with emu.db.connection() as conn:
        conn.execute(
            f"CREATE TABLE {sandbox_schema(sandbox)}.{table} ({columns},"
            ' "_acp_batchid" text, "_acp_system_metadata.ingestTime" bigint)'
        )
        with conn.cursor() as cur:
            cur.executemany(insert.format(table=f"{sandbox_schema(sandbox)}.{table}"), rows)
    return catalog.create_dataset_record(
        emu,
        sandbox,
        name=table,
        schema_ref=schema_id,
        table_name=table,
        create_table=False,
        tags={"unifiedProfile": ["enabled:true"]},
    )


def seed_profile_dataset(emu, sandbox: str, rows: list[tuple]) -> dict:
    """A Profile dataset (see :func:`seed_identity_dataset`).

    :param rows: ``(userid, propensity, cohort, lastName, ingestTime)`` tuples.
    """
    columns = [
        "_acme.userid",
        "_acme.propensity",
        "_acme.cohort",
        "person.name.lastName",
        "_acp_system_metadata.ingestTime",
    ]
    return seed_identity_dataset(
        emu,
        sandbox,
        xdm.PROFILE,
        "scores",
        '"_acme.userid" text, "_acme.propensity" double precision, "_acme.cohort" text, "person.name.lastName" text',
        f"INSERT INTO {{table}} ({', '.join(quote_ident(c) for c in columns)}) VALUES (%s, %s, %s, %s, %s)",
        rows,
    )


def cohort_rows(cohort: str) -> list[tuple]:
    """Six identities; with ``propensity >= 0.5`` exactly u2, u4 and u6 qualify (latest record wins)."""
    return [
        (f"{cohort}-u1", 0.9, cohort, "Old", 1),
        (f"{cohort}-u1", 0.1, cohort, "New", 2),  # newer record drops u1 out
        (f"{cohort}-u2", 0.8, cohort, "Doe", 1),
        (f"{cohort}-u3", 0.3, cohort, "Roe", 1),
        (f"{cohort}-u4", 0.95, cohort, None, 1),
        (None, 0.99, cohort, "NoIdentity", 1),  # no identity: not a profile
        (f"{cohort}-u6", 0.2, cohort, "Poe", 1),
        (f"{cohort}-u6", 0.7, cohort, "Poe", 2),
    ]


def new_definition(aep, cohort: str, name: str | None = None, pql: str | None = None) -> dict:
    resp = aep.post(
        f"{UPS}/segment/definitions",
        json={
            "name": name or f"propensity {cohort}",
            "profileInstanceId": "ups",
            "description": "high propensity",
            "expression": {
                "type": "PQL",
                "format": "pql/text",
                "value": pql or f'_acme.propensity >= 0.5 and _acme.cohort = "{cohort}"',
            },
            "evaluationInfo": {
                "batch": {"enabled": True},
                "continuous": {"enabled": False},
                "synchronous": {"enabled": False},
            },
            "schema": {"name": "_xdm.context.profile"},
            "ttlInDays": 60,
        },
    )
    assert resp.status_code == 200, resp.text
    validate_response(resp)
    return resp.json()


def wait_for_job(aep, job_id: str, timeout: float = 30) -> tuple[dict, list[str]]:
    """The finished job and every status seen while polling."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = aep.get(f"{UPS}/segment/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job = resp.json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in TERMINAL:
            validate_response(resp)
            return job, seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish; statuses {seen}")


def run_job(aep, segment_id: str) -> dict:
    resp = aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": segment_id}])
    assert resp.status_code == 200, resp.text
    return wait_for_job(aep, resp.json()["id"])[0]


@pytest.fixture
def cohort(emulator, sandbox) -> str:
    name = f"c{uuid.uuid4().hex[:8]}"
    seed_profile_dataset(emulator.emu, sandbox, cohort_rows(name))
    return name


def test_definition_is_created_with_documented_fields(aep, sandbox, cohort):
    resp = aep.post(
        f"{UPS}/segment/definitions",
        json={
            "name": f"fields {cohort}",
            "expression": {"type": "PQL", "format": "pql/text", "value": "_acme.propensity > 0.5"},
            "schema": {"name": "_xdm.context.profile"},
        },
    )
    assert resp.status_code == 200
    validate_response(resp)
    body = resp.json()
    assert resp.headers["X-Location"].endswith(f"/segment/definitions/{body['id']}")
    assert body["sandbox"]["sandboxName"] == sandbox
    assert body["mergePolicyId"] and body["dataGovernancePolicy"] == {"excludeOptOut": True}
    assert body["updateEpoch"] == body["updateTime"] // 1000
    assert body["evaluationInfo"]["batch"]["enabled"] is True


def test_duplicate_name_is_422(aep, cohort):
    new_definition(aep, cohort)
    resp = aep.post(
        f"{UPS}/segment/definitions",
        json={
            "name": f"propensity {cohort}",
            "expression": {"type": "PQL", "format": "pql/text", "value": "_acme.propensity > 0"},
            "schema": {"name": "_xdm.context.profile"},
        },
    )
    assert resp.status_code == 422
    assert "already exists" in resp.json()["errors"]["422"][0]["message"]


@pytest.mark.parametrize(
    ("pql", "message"),
    [
        pytest.param("_acme.propensity >=", "unexpected end", id="syntax"),
        pytest.param("_acme.nosuchfield > 1", "'_acme.nosuchfield' is not defined", id="unknown-field"),
    ],
)
def test_invalid_pql_is_400_with_the_reason(aep, cohort, pql, message):
    resp = aep.post(
        f"{UPS}/segment/definitions",
        json={
            "name": f"bad {uuid.uuid4().hex}",
            "expression": {"type": "PQL", "format": "pql/text", "value": pql},
            "schema": {"name": "_xdm.context.profile"},
        },
    )
    assert resp.status_code == 400
    assert message in resp.json()["title"]
    assert resp.json()["errors"]["400"][0]["message"] == resp.json()["title"]


def test_definitions_list_pages_are_one_based(aep, cohort):
    for i in range(3):
        new_definition(aep, cohort, name=f"page {cohort} {i}")
    first = aep.get(f"{UPS}/segment/definitions", params={"limit": 2, "page": 1, "sort": "updateTime:desc"})
    assert first.status_code == 200
    page = first.json()["page"]
    assert page["limit"] == 2 and page["pageSize"] == 2 and page["sort"] == "desc"
    assert page["totalPages"] == -(-page["totalCount"] // 2)
    # The newest definitions come first.
    assert [s["name"] for s in first.json()["segments"]] == [f"page {cohort} 2", f"page {cohort} 1"]
    last = aep.get(f"{UPS}/segment/definitions", params={"limit": 2, "page": page["totalPages"]}).json()
    assert 1 <= len(last["segments"]) <= 2
    # The spec declares a single SegmentDefinition as the list's 200 body; check the documented
    # list shape above and each listed definition against the definition schema.
    for segment in first.json()["segments"]:
        validate("GET", f"{UPS}/segment/definitions/{segment['id']}", 200, segment)


def test_definition_get_patch_delete(aep, cohort):
    created = new_definition(aep, cohort)
    path = f"{UPS}/segment/definitions/{created['id']}"
    got = aep.get(path)
    validate_response(got)
    assert got.json()["expression"] == created["expression"]
    patched = aep.patch(path, json=[{"op": "add", "path": "/description", "value": "patched"}])
    assert patched.status_code == 200
    validate_response(patched)
    assert patched.json()["description"] == "patched"
    assert patched.json()["updateTime"] >= created["updateTime"]
    bad = aep.patch(path, json=[{"op": "replace", "path": "/expression/value", "value": "_acme.propensity >"}])
    assert bad.status_code == 400
    deleted = aep.delete(path)
    assert deleted.status_code == 200
    validate_response(deleted)
    missing = aep.get(path)
    assert missing.status_code == 404
    assert missing.json()["errors"]["404"][0]["code"] == "UPAPI-113430-404"


def test_job_counts_merged_latest_profiles(aep, emulator, sandbox, cohort):
    # A second Profile dataset sends a newer propensity for u3: fragments merge per identity.
    seed_profile_dataset(emulator.emu, sandbox, [(f"{cohort}-u3", 0.99, None, None, 5)])
    segment = new_definition(aep, cohort)
    created = aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": segment["id"]}])
    assert created.status_code == 200
    validate_response(created)
    assert created.json()["status"] == "NEW"
    assert created.json()["segments"][0]["segmentId"] == segment["id"]
    job, seen = wait_for_job(aep, created.json()["id"])
    assert job["status"] == "SUCCEEDED"
    assert seen == [s for s in ("NEW", "QUEUED", "PROCESSING", "SUCCEEDED") if s in seen]
    metrics = job["metrics"]
    assert metrics["segmentedProfileCounter"] == {segment["id"]: 4}
    assert metrics["segmentedProfileByNamespaceCounter"] == {segment["id"]: {"ECID": 4}}
    assert metrics["segmentedProfileByStatusCounter"][segment["id"]] == {"realized": 4, "existing": 0, "exited": 0}
    assert metrics["totalProfiles"] >= 5
    assert metrics["totalTime"]["endTimeInMs"] >= metrics["totalTime"]["startTimeInMs"]
    again = run_job(aep, segment["id"])
    assert again["metrics"]["segmentedProfileByStatusCounter"][segment["id"]] == {
        "realized": 0,
        "existing": 4,
        "exited": 0,
    }


def test_forced_failure_fails_the_job(aep, emulator, cohort):
    segment = new_definition(aep, cohort)
    emulator.emu.faults.configure({"force_failures": {"segment_job": 1}})
    job = run_job(aep, segment["id"])
    assert job["status"] == "FAILED"
    assert job["errors"][0]["msg"]


def test_cancel_moves_the_job_to_cancelled(aep, cohort, held_worker):
    segment = new_definition(aep, cohort)
    job_id = aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": segment["id"]}]).json()["id"]
    assert aep.delete(f"{UPS}/segment/jobs/{job_id}").status_code == 204
    assert aep.get(f"{UPS}/segment/jobs/{job_id}").json()["status"] == "CANCELLING"
    held_worker.set()
    job, _ = wait_for_job(aep, job_id)
    assert job["status"] == "CANCELLED"


def test_job_for_unknown_segment_is_404(aep):
    resp = aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": "no-such-segment"}])
    assert resp.status_code == 404
    assert resp.json()["errors"]["404"][0]["code"] == "UPAPI-113430-404"


def test_job_creation_can_be_throttled(aep, emulator, cohort):
    segment = new_definition(aep, cohort)
    emulator.emu.faults.configure(
        {"rules": [{"path": "/ups/segment/jobs$", "method": "POST", "first_n": 1, "rate_429": 1, "retry_after": 3}]}
    )
    throttled = aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": segment["id"]}])
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    assert aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": segment["id"]}]).status_code == 200


def _audience_body(cohort: str, name: str) -> dict:
    return {
        "name": name,
        "profileInstanceId": "ups",
        "type": "SegmentDefinition",
        "expression": {"type": "PQL", "format": "pql/text", "value": f'_acme.cohort = "{cohort}"'},
        "schema": {"name": "_xdm.context.profile"},
        "labels": ["core/C1"],
    }


def test_audience_crud_and_shared_identity_with_definitions(aep, cohort):
    created = aep.post(f"{UPS}/audiences", json=_audience_body(cohort, f"aud {cohort}"))
    assert created.status_code == 201
    validate_response(created)
    audience = created.json()
    assert audience["audienceId"] == audience["id"] and audience["lifecycleState"] == "published"
    path = f"{UPS}/audiences/{audience['id']}"
    # The same resource through the Segmentation API.
    assert aep.get(f"{UPS}/segment/definitions/{audience['id']}").json()["name"] == f"aud {cohort}"
    patched = aep.patch(path, json=[{"op": "replace", "path": "/description", "value": "v2"}])
    assert patched.status_code == 201  # the spec's status for PATCH and PUT
    validate_response(patched)
    assert patched.json()["_etag"] != audience["_etag"]
    replaced = aep.put(path, json={**_audience_body(cohort, f"aud {cohort} renamed"), "description": "v3"})
    assert replaced.status_code == 201
    assert aep.get(path).json()["name"] == f"aud {cohort} renamed"
    assert aep.delete(path).status_code == 204
    missing = aep.get(path)
    assert missing.status_code == 404
    assert missing.json()["errors"]["404"][0]["code"] == "UPAPI-113430-404"


def test_audience_list_pages_with_integer_next(aep, cohort):
    for i in range(5):
        assert aep.post(f"{UPS}/audiences", json=_audience_body(cohort, f"list {cohort} {i}")).status_code == 201
    seen, start = [], 0
    while True:
        resp = aep.get(
            f"{UPS}/audiences", params={"name": f"LIST {cohort}", "limit": 2, "start": start, "sort": "name:asc"}
        )
        assert resp.status_code == 200
        body = resp.json()
        assert isinstance(body["_page"]["next"], int)
        assert body["_page"]["totalCount"] == 5 and body["_page"]["totalPages"] == 3
        seen += [a["name"] for a in body["children"]]
        # The spec's children items are oneOf two open schemas (any object matches both), so each
        # child is checked against the single-audience schema instead.
        for child in body["children"]:
            validate("GET", f"{UPS}/audiences/{child['id']}", 200, child)
        if body["_page"]["next"] == 0:
            assert "next" not in body["_links"]
            break
        assert f"start={body['_page']['next']}" in body["_links"]["next"]["href"]
        start = body["_page"]["next"]
    assert seen == [f"list {cohort} {i}" for i in range(5)]
    only = aep.get(f"{UPS}/audiences", params={"property": f"name==list {cohort} 3"}).json()
    assert [a["name"] for a in only["children"]] == [f"list {cohort} 3"]


def test_activation_writes_one_csv_matching_the_job_count(aep, emulator, cohort):
    segment = new_definition(aep, cohort)
    job = run_job(aep, segment["id"])
    name = f"dest-{cohort}"
    flow_id = activation_flow(aep, name, segment["id"])
    resp = aep.post(
        "/data/core/activation/disflowprovider/adhocrun",
        headers=ACTIVATION_V2,
        json={"activationInfo": {flow_id: [segment["id"]]}},
    )
    assert resp.status_code == 200, resp.text
    validate_response(resp)
    order = resp.json()["order"]
    assert [(o["segment"], o["order"]) for o in order] == [(segment["id"], flow_id)]
    run = wait_for_run(aep, order[0]["statusURL"].rsplit("/", 1)[1])
    assert run["metrics"]["statusSummary"]["status"] == "success"
    count = job["metrics"]["segmentedProfileCounter"][segment["id"]]
    assert run["metrics"]["recordSummary"]["outputRecordCount"] == count
    [key] = [f["path"] for f in run["metrics"]["fileSummary"]["manifest"]["fileInfo"]]
    assert key.startswith(f"activation/{name}/{name}_{segment['id']}_") and key.endswith(".csv")
    listed = emulator.emu.s3.list_objects_v2(Bucket=aep.settings.destination_bucket, Prefix=f"activation/{name}/")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    body = emulator.emu.s3.get_object(Bucket=aep.settings.destination_bucket, Key=key)["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == count == 3
    assert {r["ECID"]: (float(r["_acme.propensity"]), r["person.name.lastName"]) for r in rows} == {
        f"{cohort}-u2": (0.8, "Doe"),
        f"{cohort}-u4": (0.95, "null"),
        f"{cohort}-u6": (0.7, "Poe"),
    }


def test_activation_rejects_unmapped_audiences_and_concurrent_runs(aep, cohort, held_worker):
    segment = new_definition(aep, cohort)
    other = new_definition(aep, cohort, name=f"other {cohort}")
    flow_id = activation_flow(aep, f"dest2-{cohort}", segment["id"])
    url = "/data/core/activation/disflowprovider/adhocrun"
    unmapped = aep.post(url, headers=ACTIVATION_V2, json={"activationInfo": {flow_id: [other["id"]]}})
    assert unmapped.status_code == 400
    assert "are not part of this dataflow or out of schedule range!" in unmapped.json()["message"]
    first = aep.post(url, headers=ACTIVATION_V2, json={"activationInfo": {flow_id: [segment["id"]]}})
    assert first.status_code == 200
    second = aep.post(url, headers=ACTIVATION_V2, json={"activationInfo": {flow_id: [segment["id"]]}})
    assert second.status_code == 400
    validate_response(second)
    assert second.json()["message"].startswith(f"Run already going on for audience {segment['id']} for order {flow_id}")


def seed_event_dataset(emu, sandbox: str, rows: list[tuple]) -> dict:
    """An ExperienceEvent dataset (see :func:`seed_identity_dataset`).

    :param rows: ``(userid, eventType, days_ago)`` tuples.
    """
    return seed_identity_dataset(
        emu,
        sandbox,
        xdm.EXPERIENCE_EVENT,
        "events",
        '"_acme.userid" text, "eventType" text, "timestamp" timestamptz',
        'INSERT INTO {table} ("_acme.userid", "eventType", "timestamp") VALUES (%s, %s, now() - make_interval(days => %s))',
        rows,
    )


def test_xevent_segments_select_profiles_by_their_events(aep, emulator, sandbox, cohort):
    """PQL over experience events: ``select X from xEvent where ...`` with a string function and a
    relative time, and ``xEvent[...].count()``; profiles and events meet on their primary identity."""
    seed_event_dataset(
        emulator.emu,
        sandbox,
        [
            (f"{cohort}-u2", "web.formFilledOut", 1),
            (f"{cohort}-u3", "web.formFilledOut", 30),  # too long ago
            (f"{cohort}-u6", "directMarketing.emailOpened", 1),
            (f"{cohort}-u6", "directMarketing.emailOpened", 2),
            (f"{cohort}-u6", "directMarketing.emailOpened", 3),
            (f"{cohort}-u4", "directMarketing.emailOpened", 1),
        ],
    )
    recent_subscribers = new_definition(
        aep,
        cohort,
        name=f"subscribed {cohort}",
        pql=f'_acme.cohort = "{cohort}" and select X from xEvent where'
        ' X.eventType.equals("WEB.formFilledOut", false) and X.timestamp occurs < 7 days before now',
    )
    openers = new_definition(
        aep,
        cohort,
        name=f"openers {cohort}",
        pql=f'_acme.cohort = "{cohort}" and xEvent[eventType.startsWith("directMarketing.")].count() >= 3',
    )
    for definition, expected in ((recent_subscribers, 1), (openers, 1)):
        job = run_job(aep, definition["id"])
        assert job["status"] == "SUCCEEDED", job
        assert job["metrics"]["segmentedProfileCounter"][definition["id"]] == expected


@pytest.mark.parametrize(
    ("pql", "construct"),
    [
        ('chain(xEvent, timestamp, [A: WHAT(eventType.equals("a", false))])', "chain()"),
        ('select X from xEvent where X.eventType.matches("a.*")', "matches()"),
        ('select X from profile where X.eventType = "a"', "from profile"),
    ],
)
def test_unsupported_pql_forms_answer_aeps_error_naming_the_construct(aep, cohort, pql, construct):
    resp = aep.post(
        f"{UPS}/segment/definitions",
        json={"name": f"bad {cohort}", "expression": {"type": "PQL", "format": "pql/text", "value": pql}},
    )
    assert resp.status_code == 400
    assert construct in resp.text
