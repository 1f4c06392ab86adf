"""The job-state classification the triggers, operators and the sensor share."""

from __future__ import annotations

import pytest
from aep_hooks.utils.job_states import (
    FLOW_RUN,
    classify_batch,
    classify_query,
    classify_run,
    classify_segment_job,
    poll_waits,
)


def finished_run(status: str, **metrics) -> dict:
    return {
        "metrics": {
            "durationSummary": {"completedAtUTC": 1768435200000},
            "statusSummary": {"status": status},
            **metrics,
        }
    }


class TestClassify:
    @pytest.mark.parametrize(
        ("classify", "doc", "expected"),
        [
            (classify_query, {"state": "SUBMITTED"}, ("running", "SUBMITTED")),
            (classify_query, {"state": "SUCCESS"}, ("success", "SUCCESS")),
            (classify_query, {"state": "KILLED"}, ("error", "KILLED")),
            (classify_query, {"state": "TIMEOUT"}, ("error", "TIMEOUT")),
            (classify_batch, {"status": "retrying"}, ("running", "retrying")),
            (classify_batch, {"status": "active"}, ("success", "active")),
            (classify_batch, {"status": "abandoned"}, ("error", "abandoned")),
            (classify_batch, {"status": "Stalled"}, ("error", "Stalled")),
            (classify_batch, {"status": "deleted"}, ("error", "deleted")),
            (classify_run, {"metrics": {"durationSummary": {"completedAtUTC": 1}}}, ("running", "PENDING")),
            (classify_run, finished_run("SUCCESS"), ("success", "SUCCESS")),
            (classify_run, finished_run("failed"), ("error", "failed")),
            (classify_segment_job, {"status": "CANCELLING"}, ("running", "CANCELLING")),
            (classify_segment_job, {"status": "CANCELLED"}, ("error", "CANCELLED")),
            (classify_segment_job, {}, ("running", "UNKNOWN")),
        ],
    )
    def test_states(self, classify, doc, expected):
        assert classify(doc) == expected


def test_poll_waits_double_from_a_quarter_second_up_to_the_interval():
    waits = poll_waits(3.0)
    assert [next(waits) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_flow_run_outcome_carries_the_errors_of_its_status_summary():
    run = finished_run("failed")
    run["metrics"]["statusSummary"]["errors"] = [{"code": "EXPORT-500"}]
    assert FLOW_RUN.outcome("r1", run) == {
        "status": "error",
        "id": "r1",
        "state": "failed",
        "errors": [{"code": "EXPORT-500"}],
    }
