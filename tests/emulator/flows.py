"""Flow Service call chains the emulator tests share: dataset export and audience activation to S3."""

from __future__ import annotations

import time

from tests.support.openapi import validate_response

FLOW = "/data/foundation/flowservice"
ADHOC = "/data/core/activation/disflowprovider/adhocrun"
DATASET_EXPORT = {"Accept": "application/vnd.adobe.adhoc.dataset.activation+json; version=1"}
ACTIVATION_V2 = {"Accept": "application/vnd.adobe.adhoc.activation+json; version=2"}
S3_SPEC = {"id": "4fce964d-3f37-408f-9778-e597338a21ee", "version": "1.0"}
S3_AUTH = {"specName": "Access Key", "params": {"s3AccessKey": "AKIA" + "Q" * 16, "s3SecretKey": "s" * 40}}


def create(aep, collection: str, body: dict) -> dict:
    resp = aep.post(f"{FLOW}/{collection}", json=body)
    assert resp.status_code == 201, resp.text
    validate_response(resp)
    assert set(resp.json()) == {"id", "etag"}
    return resp.json()


def export_flow(aep, dataset: dict, path: str, compression: str = "GZIP") -> dict:
    """The dataset-export chain to S3; returns the flow's ``{id, etag}``."""
    source = create(
        aep,
        "sourceConnections",
        {
            "name": f"src {path}",
            "connectionSpec": {"id": "23598e46-f560-407b-88d5-ea6207e49db0", "version": "1.0"},
            "params": {"datasets": [{"dataSetId": dataset["id"], "name": dataset["name"]}]},
        },
    )
    base = create(aep, "connections", {"name": f"base {path}", "auth": S3_AUTH, "connectionSpec": S3_SPEC})
    target = create(
        aep,
        "targetConnections",
        {
            "name": f"tgt {path}",
            "baseConnectionId": base["id"],
            "connectionSpec": S3_SPEC,
            "params": {
                "mode": "Server-to-server",
                "bucketName": aep.settings.destination_bucket,
                "path": path,
                "compression": compression,
                "datasetFileType": "PARQUET",
            },
        },
    )
    return create(
        aep,
        "flows",
        {
            "name": f"flow {path}",
            "flowSpec": {"id": "269ba276-16fc-47db-92b0-c1049a3c131f", "version": "1.0"},
            "sourceConnectionIds": [source["id"]],
            "targetConnectionIds": [target["id"]],
            "transformations": [],
            "scheduleParams": {"interval": 3, "timeUnit": "hour", "startTime": 4102444800},
        },
    )


def adhoc_export(aep, flow_id: str, dataset_id: str):
    return aep.post(
        ADHOC,
        headers=DATASET_EXPORT,
        json={"activationInfo": {"destinations": [{"flowId": flow_id, "datasets": [{"id": dataset_id}]}]}},
    )


def wait_for_run(aep, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = aep.get(f"{FLOW}/runs/{run_id}")
        run = resp.json()["items"][0]
        if "completedAtUTC" in run["metrics"]["durationSummary"]:
            validate_response(resp)
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


def profile_to_s3_connections(aep, name: str) -> tuple[str, str]:
    """Profile-store source and S3 CSV target connections: ``(source id, target id)``."""
    source = aep.post(
        f"{FLOW}/sourceConnections",
        json={
            "name": f"{name} profiles",
            "connectionSpec": {"id": "8a9c3494-9708-43d7-ae3f-cda01e5030e1", "version": "1.0"},
        },
    )
    assert source.status_code == 201, source.text
    base = aep.post(
        f"{FLOW}/connections",
        json={
            "name": f"{name} s3",
            "connectionSpec": {"id": "4fce964d-3f37-408f-9778-e597338a21ee", "version": "1.0"},
            "auth": {"specName": "Access Key", "params": {"s3AccessKey": "AKIA" + "A" * 16, "s3SecretKey": "a" * 40}},
        },
    )
    assert base.status_code == 201, base.text
    target = aep.post(
        f"{FLOW}/targetConnections",
        json={
            "name": f"{name} csv",
            "baseConnectionId": base.json()["id"],
            "connectionSpec": {"id": "4fce964d-3f37-408f-9778-e597338a21ee", "version": "1.0"},
            "params": {
                "mode": "Server-to-server",
                "bucketName": aep.settings.destination_bucket,
                "path": f"activation/{name}",
                "compression": "NONE",
                "fileType": "CSV",
                "csvOptions": {"delimiter": ",", "quote": '"', "nullValue": "null"},
            },
        },
    )
    assert target.status_code == 201, target.text
    return source.json()["id"], target.json()["id"]


def activation_flow(aep, name: str, segment_id: str) -> str:
    source_id, target_id = profile_to_s3_connections(aep, name)
    flow = aep.post(
        f"{FLOW}/flows",
        json={
            "name": name,
            "flowSpec": {"id": "1a0514a6-33d4-4c7f-aff8-594799c47549", "version": "1.0"},
            "sourceConnectionIds": [source_id],
            "targetConnectionIds": [target_id],
            "transformations": [
                {
                    "name": "GeneralTransform",
                    "params": {"segmentSelectors": {"selectors": []}, "profileSelectors": {"selectors": []}},
                }
            ],
        },
    )
    assert flow.status_code == 201, flow.text
    patch = aep.patch(
        f"{FLOW}/flows/{flow.json()['id']}",
        headers={"If-Match": flow.json()["etag"]},
        json=[
            {
                "op": "add",
                "path": "/transformations/0/params/segmentSelectors/selectors/-",
                "value": {
                    "type": "PLATFORM_SEGMENT",
                    "value": {
                        "id": segment_id,
                        "name": name,
                        "exportMode": "DAILY_FULL_EXPORT",
                        "filenameTemplate": "%DESTINATION_NAME%_%SEGMENT_ID%_%DATETIME(YYYYMMdd_HHmmss)%",
                        "schedule": {"frequency": "ONCE", "startDate": "2025-01-01"},
                    },
                },
            },
            {
                "op": "add",
                "path": "/transformations/0/params/profileSelectors/selectors/-",
                "value": {"type": "JSON_PATH", "value": {"operator": "EXISTS", "path": "_acme.propensity"}},
            },
            {
                "op": "add",
                "path": "/transformations/0/params/profileSelectors/selectors/-",
                "value": {"type": "JSON_PATH", "value": {"operator": "EXISTS", "path": "person.name.lastName"}},
            },
        ],
    )
    assert patch.status_code == 200, patch.text
    return flow.json()["id"]
