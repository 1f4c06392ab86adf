"""Batch Ingestion: upload, COMPLETE/ABORT/REVERT, validation failures that load nothing, replay, restart."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from tests.emulator import (
    CATALOG,
    IMPORT,
    create_batch,
    create_dataset,
    create_event_schema,
    get_dataset,
    ingest,
    parquet_bytes,
    table_rows,
    upload,
    wait_for_batch,
)
from tests.support.emulator import AEPClient, RunningEmulator
from tests.support.openapi import validate, validate_response

pytestmark = pytest.mark.integration

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def dataset(aep, emulator):
    """``(dataset id, table name)`` of a fresh ExperienceEvent dataset."""
    dataset_id = create_dataset(aep, create_event_schema(aep, emulator.settings.tenant_id))
    return dataset_id, get_dataset(aep, dataset_id)["tags"]["adobe/pqs/table"][0]


def events(tenant: str, n: int = 3, **overrides) -> pa.Table:
    columns = {
        "_id": [f"e{i}" for i in range(n)],
        "timestamp": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
        "eventType": ["web.webpagedetails.pageViews"] * n,
        f"_{tenant}": pa.array([{"userid": f"u{i}"} for i in range(n)]),
        "web": pa.array([{"webPageDetails": {"URL": "https://acme.example", "pageViews": {"value": 1.0}}}] * n),
    }
    columns.update(overrides)
    return pa.table(columns)


def test_parquet_batch_loads_and_reports_metrics(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    created = aep.post(
        f"{IMPORT}/batches",
        json={
            "datasetId": dataset_id,
            "inputFormat": {"format": "Parquet"},
            "externalId": "run-1",
            "tags": {"run": ["a"]},
        },
    )
    assert created.status_code == 201
    batch = created.json()
    assert (
        batch["status"] == "loading" and batch["externalId"] == "run-1" and batch["inputFormat"]["format"] == "parquet"
    )
    # The spec's Batch.status enum omits loading/staging, which AEP documents for a new batch (docs/aep-behaviour.md#batches).
    validate("POST", created.request.url, 201, {**batch, "status": "processing"})
    data = parquet_bytes(events(emulator.settings.tenant_id))
    assert upload(aep, batch["id"], dataset_id, "day=1/part-0.parquet", data).status_code == 200
    assert upload(aep, batch["id"], dataset_id, "day=1/part-0.parquet", data).status_code == 200  # overwrite
    completed = aep.post(f"{IMPORT}/batches/{batch['id']}", params={"action": "COMPLETE"})
    # AEP documents a plain 200 (docs/aep-behaviour.md#batches).
    assert completed.status_code == 200 and completed.content == b""
    assert aep.post(f"{IMPORT}/batches/{batch['id']}", params={"action": "COMPLETE"}).status_code == 200  # idempotent
    done = wait_for_batch(aep, batch["id"])
    assert done["status"] == "success", done
    assert done["metrics"] == {
        "inputRecordCount": 3,
        "outputRecordCount": 3,
        "failedRecordCount": 0,
        "inputFileCount": 1,
        "inputByteSize": len(data),
    }
    validate_response(aep.get(f"{CATALOG}/batches/{batch['id']}"))
    assert table_rows(emulator.settings, sandbox, table, f"\"_acp_batchid\" = '{batch['id']}'") == 3
    assert table_rows(emulator.settings, sandbox, table, '"web.webPageDetails.pageViews.value" = 1') == 3
    assert get_dataset(aep, dataset_id)["lastBatchStatus"] == "success"
    listed = aep.get(f"{CATALOG}/batches", params={"dataSet": dataset_id, "status": "success"})
    validate_response(listed)
    assert list(listed.json()) == [batch["id"]]


def test_strings_coerce_to_numbers_and_dates(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    line = {
        "_id": "j1",
        "timestamp": "2024-05-01T12:00:00Z",
        "directMarketing": {"opens": {"value": "2"}},
        "identityMap": {"ECID": [{"id": "123", "primary": True}]},
    }
    batch = ingest(aep, dataset_id, {"e.json": json.dumps(line).encode()}, fmt="JSON")
    assert batch["status"] == "success", batch
    assert (
        table_rows(emulator.settings, sandbox, table, '"directMarketing.opens.value" = 2 AND "identityMap" ? \'ECID\'')
        == 1
    )


@pytest.mark.parametrize(
    ("name", "make", "code", "phrase"),
    [
        pytest.param(
            "wrong-type",
            lambda t: parquet_bytes(events(t, eventType=pa.array([True, False, True]))),
            "INGEST-1401-400",
            "'eventType' expects XDM type string",
            id="wrong-type",
        ),
        pytest.param(
            "missing-required",
            lambda t: parquet_bytes(events(t).drop_columns(["timestamp"])),
            "INGEST-1555-400",
            "Required field 'timestamp' is missing",
            id="missing-required",
        ),
        pytest.param(
            "corrupt",
            lambda t: b"PAR1 this is not parquet PAR1",
            "INGEST-1401-400",
            "cannot be read as parquet",
            id="corrupt-parquet",
        ),
        pytest.param("empty", lambda t: b"", "106", "Dataset file is empty", id="empty-file"),
        pytest.param(
            "unknown-field",
            lambda t: parquet_bytes(events(t, colour=["red"] * 3)),
            "INGEST-1401-400",
            "unknown field(s) 'colour'",
            id="unknown-field",
        ),
    ],
)
def test_bad_input_fails_the_batch_and_loads_nothing(aep, emulator, sandbox, dataset, name, make, code, phrase):
    dataset_id, table = dataset
    good = parquet_bytes(events(emulator.settings.tenant_id))
    batch = ingest(aep, dataset_id, {"a-good.parquet": good, f"b-{name}.parquet": make(emulator.settings.tenant_id)})
    assert batch["status"] == "failed"
    assert any(e["code"] == code and phrase in e["description"] for e in batch["errors"]), batch["errors"]
    assert table_rows(emulator.settings, sandbox, table) == 0  # the good file's rows rolled back too
    validate_response(aep.get(f"{CATALOG}/batches/{batch['id']}"))


def test_partial_ingestion_drops_failing_rows_below_threshold(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    ids = pa.array(["a", None, "c", "d"])
    data = parquet_bytes(events(emulator.settings.tenant_id, 4, _id=ids))
    strict = ingest(aep, dataset_id, {"p.parquet": data}, partialIngestionPercentage=10)
    assert strict["status"] == "failed" and strict["errors"][0]["code"] == "INGEST-1211-400"
    lenient = ingest(aep, dataset_id, {"p.parquet": data}, partialIngestionPercentage=25, enableErrorDiagnostics=True)
    assert lenient["status"] == "success"
    assert lenient["metrics"]["failedRecordCount"] == 1 and lenient["metrics"]["outputRecordCount"] == 3
    assert table_rows(emulator.settings, sandbox, table) == 3


def test_json_array_needs_multiline_flag(aep, dataset):
    dataset_id, _ = dataset
    body = json.dumps([{"_id": "x", "timestamp": "2024-05-01T00:00:00Z"}]).encode()
    refused = ingest(aep, dataset_id, {"a.json": body}, fmt="json")
    assert refused["status"] == "failed" and "isMultiLineJson" in refused["errors"][0]["description"]
    accepted = ingest(
        aep, dataset_id, {"a.json": body}, fmt="json", inputFormat={"format": "json", "isMultiLineJson": True}
    )
    assert accepted["status"] == "success", accepted


def test_replay_inactivates_predecessor_and_removes_its_rows(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    first = ingest(aep, dataset_id, {"a.parquet": parquet_bytes(events(emulator.settings.tenant_id, 3))})
    refused = aep.post(
        f"{IMPORT}/batches",
        json={
            "datasetId": dataset_id,
            "inputFormat": {"format": "parquet"},
            "replay": {"predecessors": [first["id"]], "reason": "replace"},
        },
    )
    assert refused.status_code == 400 and "'$'" in refused.json()["detail"]
    second = ingest(
        aep,
        dataset_id,
        {"b.parquet": parquet_bytes(events(emulator.settings.tenant_id, 5))},
        replay={"predecessors": [f"${first['id']}"], "reason": "replace"},
    )
    assert second["status"] == "success"
    assert second["replay"]["predecessors"] == [first["id"]]
    assert aep.get(f"{CATALOG}/batches/{first['id']}").json()[first["id"]]["status"] == "inactive"
    assert table_rows(emulator.settings, sandbox, table, f"\"_acp_batchid\" = '{first['id']}'") == 0
    assert table_rows(emulator.settings, sandbox, table) == 5


def test_revert_and_abort(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    done = ingest(aep, dataset_id, {"a.parquet": parquet_bytes(events(emulator.settings.tenant_id))})
    assert aep.post(f"{IMPORT}/batches/{done['id']}", params={"action": "ABORT"}).status_code == 400
    assert aep.post(f"{IMPORT}/batches/{done['id']}", params={"action": "REVERT"}).status_code == 200
    assert wait_for_batch(aep, done["id"])["status"] == "inactive"
    assert table_rows(emulator.settings, sandbox, table) == 0
    loading = create_batch(aep, dataset_id)
    assert aep.post(f"{IMPORT}/batches/{loading['id']}", params={"action": "ABORT"}).status_code == 200
    assert wait_for_batch(aep, loading["id"])["status"] == "aborted"
    late = upload(aep, loading["id"], dataset_id, "x.parquet", b"data")
    assert late.status_code == 400 and "aborted" in late.json()["detail"]


def test_upload_errors(aep, dataset):
    dataset_id, _ = dataset
    assert upload(aep, "no-such-batch", dataset_id, "x.parquet", b"1").status_code == 404
    batch = create_batch(aep, dataset_id)
    assert upload(aep, batch["id"], "no-such-dataset", "x.parquet", b"1").status_code == 404
    wrong_type = aep.put(
        f"{IMPORT}/batches/{batch['id']}/datasets/{dataset_id}/files/x.parquet",
        data=b"1",
        headers={"Content-Type": "application/json"},
    )
    assert wrong_type.status_code == 415
    bad = aep.post(f"{IMPORT}/batches", json={"datasetId": dataset_id, "inputFormat": {"format": "avro"}})
    assert bad.status_code == 400 and "json, parquet, csv" in bad.json()["detail"]


def test_forced_failure(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    emulator.emu.faults.configure({"force_failures": {"batch": 1}})
    batch = ingest(aep, dataset_id, {"a.parquet": parquet_bytes(events(emulator.settings.tenant_id))})
    assert batch["status"] == "failed" and batch["errors"][0]["code"].startswith("INGEST-")
    assert table_rows(emulator.settings, sandbox, table) == 0


def test_state_survives_restart_and_staging_batches_resume(aep, emulator, sandbox, dataset):
    dataset_id, table = dataset
    done = ingest(aep, dataset_id, {"a.parquet": parquet_bytes(events(emulator.settings.tenant_id, 2))})
    pending = create_batch(aep, dataset_id)
    upload(aep, pending["id"], dataset_id, "b.parquet", parquet_bytes(events(emulator.settings.tenant_id, 4)))
    # Leave a batch in staging as a crash between COMPLETE and its load would.
    emulator.emu.store.mutate(sandbox, "batch", pending["id"], lambda d: {**d, "status": "staging", "started": 0})
    second = RunningEmulator(emulator.settings).start()
    try:
        other = AEPClient(second.url, second.settings, sandbox)
        assert other.get(f"{CATALOG}/batches/{done['id']}").json()[done["id"]]["status"] == "success"
        assert wait_for_batch(other, pending["id"])["status"] == "success"
    finally:
        second.stop()
    assert table_rows(emulator.settings, sandbox, table) == 6
