"""Flow Service: specs, connections, flows, paging, If-Match, ad-hoc dataset export and its runs.

Export datasets are seeded straight into the store and PostgreSQL plus ``catalog.create_dataset_record``,
so the tests do not depend on the Schema Registry and Batch Ingestion routes.
"""

from __future__ import annotations

import io
import re
import uuid
from urllib.parse import parse_qsl, urlsplit

import pyarrow.parquet as pq
import pytest

from aep_emulator import xdm
from aep_emulator.db import sandbox_schema
from aep_emulator.services import catalog
from tests.emulator import seed_schema
from tests.emulator.flows import (
    FLOW,
    S3_AUTH,
    S3_SPEC,
    adhoc_export,
    create,
    export_flow,
    wait_for_run,
)
from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration

ROWS = 1234


def seed_dataset(emu, sandbox: str, rows: int) -> dict:
    """An ExperienceEvent dataset whose table holds ``rows`` records and two batches' system columns."""
    table = f"export_{uuid.uuid4().hex[:10]}"
    schema_id = seed_schema(emu, sandbox, xdm.EXPERIENCE_EVENT, table)
    with emu.db.connection() as conn:
        conn.execute(
            f'CREATE TABLE {sandbox_schema(sandbox)}.{table} ("_acme.userid" text, "_acme.propensity" double precision,'
            ' "eventType" text, "timestamp" timestamptz, "_acp_batchid" text, "_acp_system_metadata.ingestTime" bigint)'
        )
        conn.execute(
            f"INSERT INTO {sandbox_schema(sandbox)}.{table} SELECT 'u' || i, i / 10000.0, 'view', now(),"
            " 'batch' || (i %% 2), 1700000000000 FROM generate_series(1, %s) AS i",
            (rows,),
        )
    return catalog.create_dataset_record(
        emu, sandbox, name=table, schema_ref=schema_id, table_name=table, create_table=False
    )


@pytest.fixture
def dataset(emulator, sandbox) -> dict:
    return seed_dataset(emulator.emu, sandbox, ROWS)


def test_connection_specs_list_the_documented_ids(aep):
    resp = aep.get(f"{FLOW}/connectionSpecs")
    assert resp.status_code == 200
    validate_response(resp)
    names = {s["id"]: s["name"] for s in resp.json()["items"]}
    assert names["23598e46-f560-407b-88d5-ea6207e49db0"] == "activation-datalake"
    assert names["4fce964d-3f37-408f-9778-e597338a21ee"] == "Amazon S3"
    assert names["10440537-2a7b-4583-ac39-ed38d4b848e8"] == "Data Landing Zone"
    assert "8a9c3494-9708-43d7-ae3f-cda01e5030e1" in names
    by_name = aep.get(f"{FLOW}/connectionSpecs", params={"property": "name==Amazon S3"})
    assert [s["id"] for s in by_name.json()["items"]] == [S3_SPEC["id"]]
    one = aep.get(f"{FLOW}/connectionSpecs/{S3_SPEC['id']}")
    validate_response(one)
    assert one.json()["items"][0]["authSpec"][0]["name"] == "Access Key"
    flow_specs = aep.get(f"{FLOW}/flowSpecs")
    validate_response(flow_specs)
    ids = {s["id"] for s in flow_specs.json()["items"]}
    assert {
        "269ba276-16fc-47db-92b0-c1049a3c131f",
        "cd2fc47e-e838-4f38-a581-8fff2f99b63a",
        "1a0514a6-33d4-4c7f-aff8-594799c47549",
    } <= ids


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"specName": "Access Key", "params": {"s3AccessKey": "short", "s3SecretKey": "s" * 40}}, id="key"),
        pytest.param(
            {"specName": "Access Key", "params": {"s3AccessKey": "A" * 20, "s3SecretKey": "bad!"}}, id="secret"
        ),
        pytest.param(None, id="missing"),
    ],
)
def test_s3_connection_auth_is_validated(aep, auth):
    resp = aep.post(f"{FLOW}/connections", json={"name": "bad s3", "auth": auth, "connectionSpec": S3_SPEC})
    assert resp.status_code == 400
    assert resp.json()["status"] == 400 and resp.json()["message"]


def test_connection_get_is_wrapped_in_items_and_hides_the_secret(aep, sandbox):
    created = create(aep, "connections", {"name": "s3 read", "auth": S3_AUTH, "connectionSpec": S3_SPEC})
    resp = aep.get(f"{FLOW}/connections/{created['id']}")
    validate_response(resp)
    [item] = resp.json()["items"]
    assert item["etag"] == created["etag"] and item["sandboxName"] == sandbox
    assert item["auth"]["params"] == {"s3AccessKey": S3_AUTH["params"]["s3AccessKey"], "s3SecretKey": "***"}
    assert aep.delete(f"{FLOW}/connections/{created['id']}").status_code == 204
    assert aep.get(f"{FLOW}/connections/{created['id']}").status_code == 404


def test_continuation_token_pages_through_a_filtered_list(aep):
    prefix = f"page-{uuid.uuid4().hex[:8]}"
    ids = [
        create(
            aep,
            "connections",
            {
                "name": f"{prefix}-{i}",
                "connectionSpec": {"id": "10440537-2a7b-4583-ac39-ed38d4b848e8", "version": "1.0"},
            },
        )["id"]
        for i in range(5)
    ]
    first = aep.get(f"{FLOW}/connections", params={"property": f"name~{prefix}", "limit": 2})
    validate_response(first)
    seen = [c["id"] for c in first.json()["items"]]
    href = first.json()["_links"]["next"]["href"]
    while True:
        assert href.count("=") == 1
        # Following the link alone keeps the filter and the page size.
        page = aep.get(f"{FLOW}/connections", params=dict(parse_qsl(urlsplit(href).query))).json()
        seen += [c["id"] for c in page["items"]]
        if "next" not in page["_links"]:
            break
        href = page["_links"]["next"]["href"]
    assert seen == ids
    count = aep.get(f"{FLOW}/connections", params={"property": f"name~{prefix}", "count": "true"}).json()
    assert count == {"count": 5}


def test_flow_patch_needs_the_current_etag(aep, dataset):
    flow = export_flow(aep, dataset, f"etag-{uuid.uuid4().hex[:6]}")
    path = f"{FLOW}/flows/{flow['id']}"
    change = [{"op": "Replace", "path": "/scheduleParams", "value": {"interval": 6, "timeUnit": "hour"}}]
    assert aep.patch(path, json=change).status_code == 428
    stale = aep.patch(path, json=change, headers={"If-Match": '"not-the-etag"'})
    assert stale.status_code == 412
    ok = aep.patch(path, json=change, headers={"If-Match": flow["etag"]})
    assert ok.status_code == 200
    validate_response(ok)
    assert ok.json()["etag"] != flow["etag"]
    assert aep.patch(path, json=change, headers={"If-Match": flow["etag"]}).status_code == 412
    got = aep.get(path).json()["items"][0]
    assert got["scheduleParams"] == {"interval": 6, "timeUnit": "hour"} and got["etag"] == ok.json()["etag"]
    disabled = aep.post(f"{path}/action", params={"op": "disable"})
    assert disabled.status_code == 200
    validate_response(disabled)
    assert aep.get(path).json()["items"][0]["state"] == "disabled"


def test_adhoc_export_writes_parquet_parts_with_the_dataset_rows(aep, emulator, dataset):
    path = f"exports/{uuid.uuid4().hex[:8]}"
    flow = export_flow(aep, dataset, path)
    resp = adhoc_export(aep, flow["id"], dataset["id"])
    assert resp.status_code == 200, resp.text
    [destination] = resp.json()["destinations"]
    [exported] = destination["datasets"]
    assert destination["flowId"] == flow["id"] and exported["id"] == dataset["id"]
    assert re.search(r"/data/foundation/flowservice/runs/[0-9a-f-]{36}$", exported["statusURL"])
    run = wait_for_run(aep, exported["statusURL"].rsplit("/", 1)[1])
    metrics = run["metrics"]
    assert metrics["statusSummary"]["status"] == "success"
    assert metrics["recordSummary"]["outputRecordCount"] == metrics["recordSummary"]["inputRecordCount"] == ROWS
    keys = [f["path"] for f in metrics["fileSummary"]["manifest"]["fileInfo"]]
    assert metrics["fileSummary"]["outputFileCount"] == len(keys) >= 1
    listed = emulator.emu.s3.list_objects_v2(Bucket=aep.settings.destination_bucket, Prefix=f"{path}/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(keys)
    assert metrics["sizeSummary"]["outputBytes"] == sum(o["Size"] for o in listed["Contents"])
    for key in keys:
        assert re.fullmatch(
            rf"{path}/{dataset['id']}/exportTime=\d{{12}}/part-\d{{5}}-tid-\d+-[0-9a-f-]{{36}}-\d+-1-c000\.gz\.parquet",
            key,
        )
    tables = [
        pq.read_table(
            io.BytesIO(emulator.emu.s3.get_object(Bucket=aep.settings.destination_bucket, Key=k)["Body"].read())
        )
        for k in keys
    ]
    assert sum(t.num_rows for t in tables) == ROWS
    flat = tables[0].flatten()
    # Nested like AEP's exports; no system columns.
    assert set(tables[0].column_names) == {"_acme", "eventType", "timestamp"}
    assert set(flat.column_names) == {"_acme.userid", "_acme.propensity", "eventType", "timestamp"}
    assert (
        pq.ParquetFile(
            io.BytesIO(emulator.emu.s3.get_object(Bucket=aep.settings.destination_bucket, Key=keys[0])["Body"].read())
        )
        .metadata.row_group(0)
        .column(0)
        .compression
        == "GZIP"
    )
    listed_runs = aep.get(f"{FLOW}/runs", params={"property": f"flowId=={flow['id']}"})
    validate_response(listed_runs)
    assert [r["id"] for r in listed_runs.json()["items"]] == [run["id"]]
    assert run["activities"][0]["statusSummary"]["status"] == "success"
    assert aep.get(f"{FLOW}/flows/{flow['id']}").json()["items"][0]["lastRunDetails"]["id"] == run["id"]


def test_adhoc_export_is_not_ready_for_a_new_flow(aep, emulator, dataset, monkeypatch):
    flow = export_flow(aep, dataset, f"notready-{uuid.uuid4().hex[:6]}")
    monkeypatch.setattr(emulator.emu, "settings", emulator.emu.settings.model_copy(update={"export_not_ready_s": 600}))
    resp = adhoc_export(aep, flow["id"], dataset["id"])
    assert resp.status_code == 400
    assert resp.json() == {
        "message": "Following order ID(s) are not ready for dataset export, please wait for 10 minutes and retry."
    }


def test_adhoc_export_refuses_a_second_run_while_one_is_active(aep, dataset, held_worker):
    flow = export_flow(aep, dataset, f"busy-{uuid.uuid4().hex[:6]}")
    first = adhoc_export(aep, flow["id"], dataset["id"])
    assert first.status_code == 200
    second = adhoc_export(aep, flow["id"], dataset["id"])
    assert second.status_code == 400
    assert "run already exists" in second.json()["message"]
    run_id = first.json()["destinations"][0]["datasets"][0]["statusURL"].rsplit("/", 1)[1]
    assert run_id in second.json()["message"]
    held_worker.set()
    assert wait_for_run(aep, run_id)["metrics"]["statusSummary"]["status"] == "success"


def test_adhoc_export_rejects_foreign_datasets_and_audience_flows(aep, emulator, sandbox, dataset):
    flow = export_flow(aep, dataset, f"foreign-{uuid.uuid4().hex[:6]}")
    other = seed_dataset(emulator.emu, sandbox, 1)
    resp = adhoc_export(aep, flow["id"], other["id"])
    assert resp.status_code == 400 and other["id"] in resp.json()["message"]
    assert adhoc_export(aep, str(uuid.uuid4()), dataset["id"]).status_code == 404


def test_forced_export_failure_fails_the_run(aep, emulator, dataset):
    flow = export_flow(aep, dataset, f"fail-{uuid.uuid4().hex[:6]}")
    emulator.emu.faults.configure({"force_failures": {"export": 1}})
    resp = adhoc_export(aep, flow["id"], dataset["id"])
    run = wait_for_run(aep, resp.json()["destinations"][0]["datasets"][0]["statusURL"].rsplit("/", 1)[1])
    assert run["metrics"]["statusSummary"]["status"] == "failed"
    assert run["metrics"]["statusSummary"]["errors"][0]["message"]
    assert run["metrics"]["fileSummary"]["outputFileCount"] == 0


def test_uncompressed_export_to_the_landing_zone(aep, emulator, dataset):
    base = create(
        aep,
        "connections",
        {"name": "dlz", "connectionSpec": {"id": "10440537-2a7b-4583-ac39-ed38d4b848e8", "version": "1.0"}},
    )
    path = f"dlz-{uuid.uuid4().hex[:6]}"
    target = create(
        aep,
        "targetConnections",
        {
            "name": "dlz target",
            "baseConnectionId": base["id"],
            "connectionSpec": {"id": "10440537-2a7b-4583-ac39-ed38d4b848e8", "version": "1.0"},
            "params": {"path": path, "compression": "NONE", "datasetFileType": "PARQUET"},
        },
    )
    source = create(
        aep,
        "sourceConnections",
        {
            "name": "dlz src",
            "connectionSpec": {"id": "23598e46-f560-407b-88d5-ea6207e49db0", "version": "1.0"},
            "params": {"datasets": [{"dataSetId": dataset["id"], "name": dataset["name"]}]},
        },
    )
    flow = create(
        aep,
        "flows",
        {
            "name": "dlz flow",
            "flowSpec": {"id": "cd2fc47e-e838-4f38-a581-8fff2f99b63a", "version": "1.0"},
            "sourceConnectionIds": [source["id"]],
            "targetConnectionIds": [target["id"]],
        },
    )
    resp = adhoc_export(aep, flow["id"], dataset["id"])
    run = wait_for_run(aep, resp.json()["destinations"][0]["datasets"][0]["statusURL"].rsplit("/", 1)[1])
    credentials = aep.get(
        "/data/foundation/connectors/landingzone/credentials", params={"type": "dlz_destination"}
    ).json()
    assert credentials["dlzProvider"] == "Amazon S3"
    folder = credentials["dlzPath"]["dlzFolder"]
    [key] = [f["path"] for f in run["metrics"]["fileSummary"]["manifest"]["fileInfo"]]
    assert key.startswith(f"{folder}/{path}/{dataset['id']}/exportTime=") and key.endswith("-c000.parquet")
    obj = emulator.emu.s3.get_object(Bucket=credentials["dlzPath"]["bucketName"], Key=key)["Body"].read()
    assert pq.read_table(io.BytesIO(obj)).num_rows == ROWS
