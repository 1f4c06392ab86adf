"""AEPJobSensor: the triggers' state classification, in poke/reschedule mode."""

from __future__ import annotations

from unittest import mock

import pytest
from aep_hooks.sensors import AEPJobSensor
from airflow.sdk.exceptions import AirflowFailException


def poke(kind: str, doc: dict, method: str) -> bool:
    sensor = AEPJobSensor(task_id="wait", kind=kind, resource_id="x1")
    with mock.patch(f"aep_hooks.sensors.jobs.AEPHook.{method}", return_value=doc) as read:
        result = sensor.poke({})
    read.assert_called_once_with("x1")
    return result


@pytest.mark.parametrize(
    ("kind", "method", "running", "done"),
    [
        pytest.param("batch", "get_batch", {"status": "staging"}, {"status": "success"}, id="batch"),
        pytest.param("query", "get_query", {"state": "IN_PROGRESS"}, {"state": "SUCCESS"}, id="query"),
        pytest.param("segment_job", "get_segment_job", {"status": "PROCESSING"}, {"status": "SUCCEEDED"}, id="job"),
        pytest.param(
            "flow_run",
            "get_run",
            {"metrics": {"statusSummary": {"status": "processing"}}},
            {"metrics": {"durationSummary": {"completedAtUTC": 1}, "statusSummary": {"status": "Success"}}},
            id="run",
        ),
    ],
)
def test_waits_while_running_and_succeeds_when_done(kind, method, running, done):
    assert poke(kind, running, method) is False
    assert poke(kind, done, method) is True


def test_failed_batch_fails_the_task_with_aep_errors():
    errors = [{"code": "INGEST-1401-400", "description": "corrupt file"}]
    with pytest.raises(AirflowFailException, match="INGEST-1401-400"):
        poke("batch", {"status": "failed", "errors": errors}, "get_batch")


def test_unknown_kind_is_refused_at_parse_time():
    with pytest.raises(ValueError, match="kind must be one of"):
        AEPJobSensor(task_id="wait", kind="dataset", resource_id="x1")
