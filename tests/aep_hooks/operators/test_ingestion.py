"""AEPBatchIngestOperator against an HTTP fake: plan, resume, replay, create never re-sent."""

from __future__ import annotations

import pytest
from aep_hooks.exceptions import AEPApiError
from aep_hooks.links import AEPBatchLink
from aep_hooks.operators.ingestion import AEPBatchIngestOperator, plan_batch
from aep_hooks.triggers.ingestion import BatchStatusTrigger
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from tests.aep_hooks.operators.conftest import CATALOG, PLATFORM, FakeS3, calls, requests_mock_any

pytestmark = pytest.mark.usefixtures("aep_conn")

IMPORT = f"{PLATFORM}/data/foundation/import"
DATASET = "ds1"
EXTERNAL_ID = f"airflow:dag_x:2026-01-15:{DATASET}"


def batch_doc(batch_id: str, status: str, created: int = 0, **extra) -> dict:
    return {"id": batch_id, "status": status, "created": created, "externalId": EXTERNAL_ID, **extra}


def ingest_operator(**kwargs) -> AEPBatchIngestOperator:
    op = AEPBatchIngestOperator(
        task_id="ingest",
        dataset_id=DATASET,
        s3_bucket="bucket",
        s3_prefix="scores/dt=2026-01-15",
        as_of_date="2026-01-15",
        deferrable=False,
        poll_interval=0.01,
        **kwargs,
    )
    op.s3_hook = FakeS3(
        {
            "scores/dt=2026-01-15/part-0.parquet": b"p0",
            "scores/dt=2026-01-15/part-1.parquet": b"p1",
            "scores/dt=2026-01-15/_SUCCESS": b"",
        }
    )
    return op


def mock_catalog_batches(requests_mock, batches: list[dict]) -> None:
    """Catalog batch list (keyed by id, filtered by dataSet) and each batch by id."""
    requests_mock.get(f"{CATALOG}/batches", json={b["id"]: {k: v for k, v in b.items() if k != "id"} for b in batches})
    for b in batches:
        requests_mock.get(f"{CATALOG}/batches/{b['id']}", json={b["id"]: b})


@pytest.mark.parametrize(
    ("batches", "resume_id", "expected"),
    [
        pytest.param([], None, ("create", None, []), id="first-run"),
        pytest.param([batch_doc("b1", "success")], None, ("create", None, ["b1"]), id="rerun-replays-active"),
        pytest.param(
            [batch_doc("b1", "inactive", 1), batch_doc("b2", "success", 2)],
            None,
            ("create", None, ["b2"]),
            id="rerun-replays-only-active",
        ),
        pytest.param(
            [batch_doc("b1", "success", 1), batch_doc("b2", "failed", 2)],
            "b2",
            ("create", None, ["b1"]),
            id="retry-after-failed-batch",
        ),
        pytest.param([batch_doc("b1", "loading")], "b1", ("resume", "b1", []), id="retry-resumes-loading"),
        pytest.param([batch_doc("b1", "loading")], None, ("resume", "b1", []), id="catalog-finds-loading"),
        pytest.param([batch_doc("b1", "staging")], "b1", ("wait", "b1", []), id="retry-waits-for-staging"),
        pytest.param(
            [batch_doc("b1", "loading", 5), batch_doc("b2", "loading", 1)],
            "b2",
            ("resume", "b2", []),
            id="state-store-id-first",
        ),
        pytest.param(
            [batch_doc("b1", "success", 1), batch_doc("b2", "loading", 2)],
            None,
            ("resume", "b2", []),
            id="in-flight-before-replay",
        ),
    ],
)
def test_plan_batch(batches, resume_id, expected):
    assert tuple(plan_batch({b["id"]: b for b in batches}, resume_id)) == expected


def test_ingest_first_run_creates_uploads_completes(requests_mock, context, state):
    mock_catalog_batches(requests_mock, [])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "b1", "status": "loading"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/datasets/{DATASET}/files/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE", status_code=200)
    requests_mock.get(
        f"{CATALOG}/batches/b1",
        [
            {"json": {"b1": {"status": "staging"}}},
            {"json": {"b1": {"status": "success", "metrics": {"outputRecordCount": 10, "failedRecordCount": 0}}}},
        ],
    )

    result = ingest_operator().execute(context)

    assert result == {"batch_id": "b1", "rows": 10, "failed_rows": 0, "replaced": []}
    body = calls(requests_mock, "POST", "/import/batches")[0].json()
    assert body["externalId"] == EXTERNAL_ID
    assert body["tags"] == {
        "airflow_dag_id": ["dag_x"],
        "airflow_as_of_date": ["2026-01-15"],
        "airflow_dataset_id": [DATASET],
    }
    assert body["partialIngestionPercentage"] == 0 and "replay" not in body
    uploads = calls(requests_mock, "PUT", "/files/")
    assert sorted(r.url.rsplit("/", 1)[-1] for r in uploads) == ["part-0.parquet", "part-1.parquet"]
    assert state == {"batch_id": "b1", "uploaded_files": ["part-0.parquet", "part-1.parquet"]}
    context["ti"].xcom_push.assert_any_call(key=AEPBatchLink.key, value="b1")


def test_ingest_retry_resumes_loading_batch_and_uploads_only_missing_files(requests_mock, context, state):
    state.set("batch_id", "b1")
    state.set("uploaded_files", ["part-0.parquet"])
    mock_catalog_batches(requests_mock, [batch_doc("b1", "loading")])
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/"), status_code=201)
    complete = requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE", status_code=200)
    requests_mock.get(f"{CATALOG}/batches/b1", json={"b1": {"status": "success", "metrics": {"outputRecordCount": 4}}})

    result = ingest_operator().execute(context)

    assert result["batch_id"] == "b1"
    assert not calls(requests_mock, "POST", "/import/batches?") and not [
        r for r in requests_mock.request_history if r.method == "POST" and r.url == f"{IMPORT}/batches"
    ]
    assert [r.url.rsplit("/", 1)[-1] for r in calls(requests_mock, "PUT", "/files/")] == ["part-1.parquet"]
    assert complete.call_count == 1


def test_ingest_rerun_creates_replay_of_active_batch(requests_mock, context):
    mock_catalog_batches(requests_mock, [batch_doc("old", "success", 1), batch_doc("older", "inactive", 0)])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "new", "status": "loading"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/new/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/new?action=COMPLETE")
    requests_mock.get(
        f"{CATALOG}/batches/new",
        json={"new": {"status": "success", "replay": {"predecessors": ["$old"], "reason": "replace"}}},
    )

    result = ingest_operator().execute(context)

    body = [r for r in requests_mock.request_history if r.method == "POST" and r.url == f"{IMPORT}/batches"][0].json()
    assert body["replay"] == {"predecessors": ["$old"], "reason": "replace"}
    assert result["replaced"] == ["old"]


def test_ingest_create_5xx_is_never_resent_and_adopts_the_batch_aep_created(requests_mock, context, state):
    requests_mock.get(
        f"{CATALOG}/batches",
        [{"json": {}}, {"json": {"ghost": {"status": "loading", "externalId": EXTERNAL_ID, "created": 1}}}],
    )
    create = requests_mock.post(f"{IMPORT}/batches", status_code=502, json={"message": "bad gateway"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/ghost/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/ghost?action=COMPLETE")
    requests_mock.get(f"{CATALOG}/batches/ghost", json={"ghost": {"status": "success"}})

    result = ingest_operator().execute(context)

    assert create.call_count == 1
    assert result["batch_id"] == "ghost"
    assert state["batch_id"] == "ghost"


def test_ingest_create_5xx_with_nothing_created_fails_the_try_after_one_post(requests_mock, context, state):
    requests_mock.get(f"{CATALOG}/batches", json={})
    create = requests_mock.post(f"{IMPORT}/batches", status_code=500, json={"message": "boom"})

    with pytest.raises(AEPApiError) as err:
        ingest_operator().execute(context)

    assert err.value.status == 500
    assert create.call_count == 1
    assert "batch_id" not in state


def test_ingest_failed_batch_fails_without_retry_with_catalog_errors(requests_mock, context):
    mock_catalog_batches(requests_mock, [])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "b1"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE")
    requests_mock.get(
        f"{CATALOG}/batches/b1",
        json={"b1": {"status": "failed", "errors": [{"code": "INGEST-1401-400", "description": "corrupted row"}]}},
    )

    with pytest.raises(AirflowFailException, match="INGEST-1401-400"):
        ingest_operator().execute(context)


def test_ingest_deferrable_persists_batch_before_deferring(requests_mock, context, state):
    mock_catalog_batches(requests_mock, [])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "b1"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE")
    op = ingest_operator()
    op.deferrable = True

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)

    trigger = deferred.value.trigger
    assert isinstance(trigger, BatchStatusTrigger)
    assert trigger.resource_id == "b1" and trigger.poll_interval == 0.01
    assert deferred.value.method_name == "execute_complete"
    assert state["batch_id"] == "b1"


def test_ingest_rejects_too_many_files(context):
    op = ingest_operator()
    op.s3_hook = FakeS3({f"scores/dt=2026-01-15/part-{i}.parquet": b"x" for i in range(1501)})
    with pytest.raises(AirflowFailException, match="1501 files"):
        op.execute(context)
