"""The DAG's whole AEP call sequence (docs/architecture.md, call path) over HTTP against the emulator, PostgreSQL and S3.

token → tenant → schema and identity descriptor → dataset → Parquet batch `success` → CTAS query
`SUCCESS` creating a dataset → ad-hoc export with Parquet files on S3 → segment definition and job
`SUCCEEDED` with the right member count → activation file on S3. Every response is checked against
Adobe's OpenAPI spec on the way.
"""

from __future__ import annotations

import csv
import io
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.emulator import CATALOG, REGISTRY, create_profile_schema, ingest, parquet_bytes
from tests.emulator.flows import ACTIVATION_V2, activation_flow, adhoc_export, export_flow, wait_for_run
from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration

QUERY = "/data/foundation/query"
UPS = "/data/core/ups"
PROFILES = 100


def ok(resp, status: int = 200):
    assert resp.status_code == status, resp.text
    validate_response(resp)
    return resp.json() if resp.content else None


def wait(read, done, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = read()
        if done(doc):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"still {doc} after {timeout} s")


def test_dag_call_sequence_end_to_end(aep, emulator, sandbox):
    s3, bucket = emulator.emu.s3, aep.settings.destination_bucket
    run = uuid.uuid4().hex[:8]

    # 1. IMS token, then the tenant.
    assert aep.fetch_token()
    tenant = ok(aep.get(f"{REGISTRY}/stats"))["tenantId"]

    # 2. A Profile schema with a primary ECID identity and the union tag; a Profile-enabled dataset.
    schema = create_profile_schema(aep, tenant)
    ok(
        aep.post(
            f"{REGISTRY}/tenant/descriptors",
            json={
                "@type": "xdm:descriptorIdentity",
                "xdm:sourceSchema": schema["$id"],
                "xdm:sourceVersion": 1,
                "xdm:sourceProperty": f"/_{tenant}/userid",
                "xdm:namespace": "ECID",
                "xdm:property": "xdm:code",
                "xdm:isPrimary": True,
            },
        ),
        201,
    )
    ok(
        aep.patch(
            f"{REGISTRY}/tenant/schemas/{schema['meta:altId']}",
            json=[{"op": "add", "path": "/meta:immutableTags", "value": ["union"]}],
        )
    )
    created = ok(
        aep.post(
            f"{CATALOG}/dataSets",
            json={
                "name": f"scores_{run}",
                "schemaRef": {"id": schema["$id"], "contentType": "application/vnd.adobe.xed+json;version=1"},
            },
        ),
        201,
    )
    dataset_id = created[0].rsplit("/", 1)[1]
    ok(
        aep.patch(
            f"{CATALOG}/dataSets/{dataset_id}",
            headers={"Content-Type": "application/json-patch+json"},
            json=[
                {"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]},
                {"op": "add", "path": "/tags/unifiedIdentity", "value": ["enabled:true"]},
            ],
        )
    )
    table = ok(aep.get(f"{CATALOG}/dataSets/{dataset_id}"))[dataset_id]["tags"]["adobe/pqs/table"][0]

    # 3. A Parquet batch of profiles with propensities 0.00 .. 0.99.
    users = [f"{run}-{i:03d}" for i in range(PROFILES)]
    profiles = pa.table(
        {
            "_id": users,
            f"_{tenant}": pa.StructArray.from_arrays(
                [pa.array(users), pa.array([i / PROFILES for i in range(PROFILES)])], names=["userid", "propensity"]
            ),
        }
    )
    batch = ingest(aep, dataset_id, {"profiles.parquet": parquet_bytes(profiles)})
    assert batch["status"] == "success"
    assert batch["metrics"]["outputRecordCount"] == PROFILES

    # 4. A CTAS query: SUCCESS, and a Catalog dataset named after its table.
    ctas = f"high_{run}"
    query = ok(
        aep.post(
            f"{QUERY}/queries",
            json={
                "dbName": f"{sandbox}:all",
                # Spark SQL over the nested record, as on AEP.
                "sql": f"CREATE TABLE {ctas} AS SELECT _{tenant}.userid AS userid, _{tenant}.propensity AS propensity"
                f" FROM {table} WHERE _{tenant}.propensity >= 0.5",
            },
        ),
        202,
    )
    query = wait(
        lambda: ok(aep.get(f"{QUERY}/queries/{query['id']}")),
        lambda q: q["state"] in ("SUCCESS", "FAILED", "KILLED", "TIMEOUT"),
    )
    assert query["state"] == "SUCCESS", query["errors"]
    ((ctas_id, ctas_doc),) = ok(aep.get(f"{CATALOG}/dataSets", params={"name": ctas})).items()
    assert ctas_doc["tags"]["adobe/pqs/table"] == [ctas]

    # 5. Ad-hoc dataset export: Parquet parts on S3 under {path}/{datasetId}/exportTime=…/.
    flow = export_flow(aep, {"id": ctas_id, "name": ctas}, f"seq/{run}")
    started = ok(adhoc_export(aep, flow["id"], ctas_id))
    export_run = wait_for_run(aep, started["destinations"][0]["datasets"][0]["statusURL"].rsplit("/", 1)[1])
    assert export_run["metrics"]["statusSummary"]["status"].lower() == "success"
    parts = [f["path"] for f in export_run["metrics"]["fileSummary"]["manifest"]["fileInfo"]]
    assert parts and all(p.startswith(f"seq/{run}/{ctas_id}/exportTime=") and p.endswith(".parquet") for p in parts)
    exported = pa.concat_tables(
        [pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=p)["Body"].read())) for p in parts]
    )
    assert exported.num_rows == PROFILES // 2

    # 6. A segment definition and its job: SUCCEEDED with this run's profiles at or above 0.8 (the
    # user-id range keeps other tests' profiles in the shared sandbox out).
    pql = f'_{tenant}.propensity >= 0.8 and _{tenant}.userid >= "{run}-" and _{tenant}.userid < "{run}-~"'
    definition = ok(
        aep.post(
            f"{UPS}/segment/definitions",
            json={
                "name": f"high propensity {run}",
                "profileInstanceId": "ups",
                "expression": {"type": "PQL", "format": "pql/text", "value": pql},
                "schema": {"name": "_xdm.context.profile"},
            },
        )
    )
    job = ok(aep.post(f"{UPS}/segment/jobs", json=[{"segmentId": definition["id"]}]))
    job = wait(
        lambda: ok(aep.get(f"{UPS}/segment/jobs/{job['id']}")),
        lambda j: j["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"),
    )
    assert job["status"] == "SUCCEEDED"
    assert job["metrics"]["segmentedProfileCounter"][definition["id"]] == PROFILES // 5

    # 7. Activation to the S3 destination: one CSV with exactly the job's members.
    flow_id = activation_flow(aep, f"seq-{run}", definition["id"])
    order = ok(
        aep.post(
            "/data/core/activation/disflowprovider/adhocrun",
            headers=ACTIVATION_V2,
            json={"activationInfo": {flow_id: [definition["id"]]}},
        )
    )["order"]
    activation = wait_for_run(aep, order[0]["statusURL"].rsplit("/", 1)[1])
    [key] = [f["path"] for f in activation["metrics"]["fileSummary"]["manifest"]["fileInfo"]]
    rows = list(csv.DictReader(io.StringIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())))
    assert sorted(r["ECID"] for r in rows) == users[80:]
