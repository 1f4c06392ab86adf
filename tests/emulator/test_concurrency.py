"""Races: replays of one predecessor completed together, a replay racing a REVERT, two CTAS queries
on one table, two runners of one segment job. Each must end with one winner and no doubled rows."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from aep_emulator.services import catalog, ingestion, segmentation
from tests.emulator import (
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
from tests.emulator.test_ingestion import events
from tests.emulator.test_query_service import datasets_named, submit, wait_for

pytestmark = pytest.mark.integration

ROWS = 10


@pytest.fixture
def dataset(aep, emulator):
    dataset_id = create_dataset(aep, create_event_schema(aep, emulator.settings.tenant_id))
    return dataset_id, get_dataset(aep, dataset_id)["tags"]["adobe/pqs/table"][0]


def _staged_replay(aep, emulator, dataset_id: str, predecessor: str) -> str:
    batch = create_batch(aep, dataset_id, replay={"predecessors": [f"${predecessor}"], "reason": "replace"})
    data = parquet_bytes(events(emulator.settings.tenant_id, ROWS))
    assert upload(aep, batch["id"], dataset_id, "part-0.parquet", data).status_code == 200
    return batch["id"]


def _together(*calls):
    """Run the calls at the same moment (a barrier), return their results in order."""
    barrier = threading.Barrier(len(calls))

    def call(fn):
        barrier.wait(timeout=10)
        return fn()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result(timeout=60) for future in [pool.submit(call, fn) for fn in calls]]


def _complete(aep, batch_id: str):
    return lambda: aep.post(f"{IMPORT}/batches/{batch_id}", params={"action": "COMPLETE"}).status_code


@pytest.mark.parametrize("round_", range(3))
def test_two_replays_of_one_predecessor_completed_together(aep, emulator, sandbox, dataset, round_):
    """Exactly one replay succeeds; the other fails with the conflict code; the rows are not doubled."""
    dataset_id, table = dataset
    predecessor = ingest(aep, dataset_id, {"a.parquet": parquet_bytes(events(emulator.settings.tenant_id, ROWS))})
    assert predecessor["status"] == "success"
    first, second = (_staged_replay(aep, emulator, dataset_id, predecessor["id"]) for _ in range(2))

    assert _together(_complete(aep, first), _complete(aep, second)) == [200, 200]
    outcomes = {batch_id: wait_for_batch(aep, batch_id) for batch_id in (first, second)}

    statuses = sorted(batch["status"] for batch in outcomes.values())
    assert statuses == ["failed", "success"], outcomes
    loser = next(batch for batch in outcomes.values() if batch["status"] == "failed")
    assert loser["errors"][0]["code"] == ingestion.CODE_REPLAY_CONFLICT
    assert predecessor["id"] in loser["errors"][0]["description"]
    assert table_rows(emulator.settings, sandbox, table) == ROWS
    winner = next(batch_id for batch_id, batch in outcomes.items() if batch["status"] == "success")
    assert table_rows(emulator.settings, sandbox, table, f"\"_acp_batchid\" = '{winner}'") == ROWS
    assert wait_for_batch(aep, predecessor["id"])["status"] == "inactive"


def test_a_replay_racing_a_revert_of_its_predecessor(aep, emulator, sandbox, dataset):
    """One wins: REVERT first leaves no rows and fails the replay; the replay first makes REVERT a 400."""
    dataset_id, table = dataset
    predecessor = ingest(aep, dataset_id, {"a.parquet": parquet_bytes(events(emulator.settings.tenant_id, ROWS))})
    replay = _staged_replay(aep, emulator, dataset_id, predecessor["id"])

    def revert():
        return aep.post(f"{IMPORT}/batches/{predecessor['id']}", params={"action": "REVERT"}).status_code

    completed, reverted = _together(_complete(aep, replay), revert)
    assert completed == 200
    replayed = wait_for_batch(aep, replay)
    if reverted == 200:
        assert replayed["status"] == "failed" and replayed["errors"][0]["code"] == ingestion.CODE_REPLAY_CONFLICT
        assert table_rows(emulator.settings, sandbox, table) == 0
    else:
        assert reverted == 400 and replayed["status"] == "success"
        assert table_rows(emulator.settings, sandbox, table) == ROWS
    assert wait_for_batch(aep, predecessor["id"])["status"] == "inactive"


def test_two_ctas_on_one_table_register_one_dataset(aep, emulator, sandbox):
    table = f"race_{uuid.uuid4().hex[:6]}"
    sql = f"CREATE TABLE IF NOT EXISTS {table} AS SELECT 1 AS n"
    queries = _together(lambda: submit(aep, sql), lambda: submit(aep, sql))
    finished = [wait_for(aep, query["id"]) for query in queries]
    assert len(datasets_named(aep, table)) == 1, finished
    found = catalog.find_dataset_by_table(emulator.emu, sandbox, table)
    assert found is not None and found["tags"]["adobe/pqs/table"] == [table]


def test_a_second_runner_never_moves_a_segment_job_back(aep, emulator, sandbox):
    job_id = str(uuid.uuid4())
    job = {"id": job_id, "status": "SUCCEEDED", "segments": [], "metrics": {}, "creationTime": 0}
    emulator.emu.store.insert(sandbox, segmentation.KIND_JOB, job_id, job)
    assert segmentation._advance(emulator.emu, sandbox, job_id, "QUEUED") is False
    assert segmentation._advance(emulator.emu, sandbox, job_id, "FAILED") is False
    assert emulator.emu.store.get(sandbox, segmentation.KIND_JOB, job_id)["status"] == "SUCCEEDED"
