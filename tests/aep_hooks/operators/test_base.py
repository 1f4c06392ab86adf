"""The operators' shared job life: start or reattach under a kept key, and the waiting outcomes."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
from aep_hooks.exceptions import AEPApiError
from aep_hooks.operators.base import AEPBaseOperator
from aep_hooks.operators.query_service import AEPQueryOperator
from aep_hooks.utils.job_states import FLOW_RUN, QUERY
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tests.aep_hooks.operators.conftest import FakeStateStore

RUNNING_RUN = {"metrics": {"statusSummary": {"status": "processing"}}}
FINISHED_RUN = {"metrics": {"durationSummary": {"completedAtUTC": 1}, "statusSummary": {"status": "success"}}}


def start_or_reattach(kept, docs: dict, job=QUERY, **kwargs):
    """Run the helper on a store holding ``kept`` under ``"job_id"``; returns (result, start mock, store)."""
    store = FakeStateStore()
    if kept is not None:
        store.set("job_id", kept)
    start = mock.Mock(return_value="new")
    op = AEPBaseOperator(task_id="t")
    op.hook = SimpleNamespace(**{job.read: docs.__getitem__})
    result = op.start_or_reattach({"task_state_store": store}, job, "job_id", start, **kwargs)
    return result, start, store


@pytest.mark.parametrize(
    ("kept", "docs", "job", "reattached"),
    [
        pytest.param(None, {}, QUERY, False, id="first-try-starts"),
        pytest.param("q1", {"q1": {"state": "IN_PROGRESS"}}, QUERY, True, id="running-is-reattached"),
        pytest.param("q1", {"q1": {"state": "SUCCESS"}}, QUERY, False, id="finished-outside-a-task-run-is-not-reused"),
        pytest.param("q1", {"q1": {"state": "FAILED"}}, QUERY, False, id="failed-starts-anew"),
        pytest.param(["r1", "r2"], {"r1": FINISHED_RUN, "r2": RUNNING_RUN}, FLOW_RUN, True, id="any-run-in-flight"),
        pytest.param(["r1"], {"r1": FINISHED_RUN}, FLOW_RUN, False, id="all-runs-ended"),
    ],
)
def test_start_or_reattach_follows_only_a_job_in_flight(kept, docs, job, reattached):
    result, start, store = start_or_reattach(kept, docs, job)

    assert result == (kept if reattached else "new")
    assert start.call_count == (0 if reattached else 1)
    assert store["job_id"] == result  # kept before anything waits on it


def start_in_run(kept, kept_in: int | None, this_run: int, doc: dict):
    """The helper in a try whose task instance has ``max_tries == this_run``, on a job kept by run ``kept_in``."""
    store = FakeStateStore()
    store.set("job_id", kept)
    if kept_in is not None:
        store.set("job_id.retry_sequence", kept_in)
    start = mock.Mock(return_value="new")
    op = AEPBaseOperator(task_id="t")
    op.hook = SimpleNamespace(get_query=lambda job_id: doc)
    context = {"task_state_store": store, "ti": SimpleNamespace(max_tries=this_run)}
    return op.start_or_reattach(context, QUERY, "job_id", start), start, store


@pytest.mark.parametrize(
    ("kept_in", "this_run", "doc", "reused"),
    [
        pytest.param(3, 3, {"state": "SUCCESS"}, True, id="succeeded-in-an-earlier-try-is-never-run-twice"),
        pytest.param(3, 5, {"state": "SUCCESS"}, False, id="a-cleared-task-runs-it-again"),
        pytest.param(None, 3, {"state": "SUCCESS"}, False, id="kept-before-retry-sequences-were-kept"),
        pytest.param(3, 3, {"state": "FAILED"}, False, id="failed-in-an-earlier-try-starts-anew"),
        pytest.param(5, 5, {"state": "IN_PROGRESS"}, True, id="running-is-reattached"),
    ],
)
def test_start_or_reattach_across_the_tries_of_one_run(kept_in, this_run, doc, reused):
    result, start, store = start_in_run("q1", kept_in, this_run, doc)

    assert result == ("q1" if reused else "new")
    assert start.call_count == (0 if reused else 1)
    assert (store["job_id"], store["job_id.retry_sequence"]) == (result, this_run)


def test_start_or_reattach_starts_anew_when_aep_no_longer_has_the_kept_job():
    def gone(job_id):
        raise AEPApiError.for_status(404, {"message": "Query not found"}, method="GET", url="u")

    store = FakeStateStore()
    store.set("job_id", "q-gone")
    op = AEPBaseOperator(task_id="t")
    op.hook = SimpleNamespace(get_query=gone)

    assert op.start_or_reattach({"task_state_store": store}, QUERY, "job_id", lambda: "new") == "new"


def test_start_or_reattach_takes_what_find_in_flight_finds():
    result, start, store = start_or_reattach("b-old", {}, find_in_flight=lambda kept: "b-found")

    assert (result, start.call_count, store["job_id"]) == ("b-found", 0, "b-found")


def test_start_or_reattach_without_a_store_starts_and_keeps_nothing():
    start = mock.Mock(return_value="new")
    op = AEPBaseOperator(task_id="t")

    assert op.start_or_reattach({}, QUERY, "job_id", start) == "new"
    assert start.call_count == 1


def test_a_job_that_could_not_be_read_fails_the_try_not_the_task():
    """An API error in the trigger says nothing of the job: retryable, unlike a failed job."""
    op = AEPQueryOperator(task_id="q", sql="SELECT 1")
    unreadable = {"status": "error", "id": "q1", "state": None, "errors": [{}], "message": "503 after retries"}
    with pytest.raises(AirflowException, match="could not be read") as raised:
        op.check_event(QUERY, unreadable)
    assert not isinstance(raised.value, AirflowFailException)
    with pytest.raises(AirflowFailException, match="FAILED"):
        op.check_event(QUERY, {**unreadable, "state": "FAILED"})
