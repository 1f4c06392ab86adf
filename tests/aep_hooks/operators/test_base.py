"""The operators' shared job life: start or reattach under a kept key, and the waiting outcomes."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
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
        pytest.param("q1", {"q1": {"state": "SUCCESS"}}, QUERY, False, id="finished-is-never-reused"),
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
        op.check_event("query", unreadable)
    assert not isinstance(raised.value, AirflowFailException)
    with pytest.raises(AirflowFailException, match="FAILED"):
        op.check_event("query", {**unreadable, "state": "FAILED"})
