"""The triggers' shared run loop (through each trigger) and their serialization."""

from __future__ import annotations

import asyncio
import logging
import time
from unittest import mock

import pytest
from aep_hooks.exceptions import AEPApiError
from aep_hooks.triggers.flow_service import FlowRunTrigger
from aep_hooks.triggers.ingestion import BatchStatusTrigger
from aep_hooks.triggers.query_service import QueryStatusTrigger
from aep_hooks.triggers.segmentation import SegmentJobTrigger

POLL = 12.5
FAR = 4_000_000_000.0  # an end_time far in the future (epoch s)


def finished_run(status: str, **metrics) -> dict:
    return {
        "metrics": {
            "durationSummary": {"completedAtUTC": 1768435200000},
            "statusSummary": {"status": status},
            **metrics,
        }
    }


QUERY_PATH = "/data/foundation/query/queries/q1"
BATCH_PATH = "/data/foundation/catalog/batches/b1"
RUN_PATH = "/data/foundation/flowservice/runs/r1"
JOB_PATH = "/data/core/ups/segment/jobs/j1"

# trigger, id, status path, answers while running, final answer, expected event status, state, result
SCENARIOS = [
    pytest.param(
        QueryStatusTrigger,
        "q1",
        QUERY_PATH,
        [{"state": "SUBMITTED"}, {"state": "IN_PROGRESS"}],
        {"state": "SUCCESS", "rowCount": 42, "elapsedTime": 900, "_links": {"created_dataset": {"id": "ds9"}}},
        "success",
        "SUCCESS",
        {"rowCount": 42, "elapsedTime": 900, "dataset_id": "ds9"},
        id="query",
    ),
    pytest.param(
        BatchStatusTrigger,
        "b1",
        BATCH_PATH,
        [{"b1": {"status": "loading"}}, {"b1": {"status": "staging"}}],
        {"b1": {"status": "success", "metrics": {"failedRecordCount": 0, "outputRecordCount": 10}}},
        "success",
        "success",
        {"metrics": {"failedRecordCount": 0, "outputRecordCount": 10}},
        id="batch",
    ),
    pytest.param(
        FlowRunTrigger,
        "r1",
        RUN_PATH,
        [{"items": [{"metrics": {}}]}, {"items": [{"metrics": {"statusSummary": {"status": "success"}}}]}],
        {"items": [finished_run("Success", recordSummary={"outputRecordCount": 5})]},
        "success",
        "Success",
        {"completedAtUTC": 1768435200000, "recordSummary": {"outputRecordCount": 5}, "fileSummary": {}},
        id="flow-run",
    ),
    pytest.param(
        SegmentJobTrigger,
        "j1",
        JOB_PATH,
        [{"status": "NEW"}, {"status": "PROCESSING"}],
        {"status": "SUCCEEDED", "metrics": {"totalProfiles": 7, "segmentedProfileCounter": {"s1": 3}}},
        "success",
        "SUCCEEDED",
        {"totalProfiles": 7, "segmentedProfileCounter": {"s1": 3}},
        id="segment-job",
    ),
]


async def collect(trigger) -> list:
    return [event async for event in trigger.run()]


@pytest.fixture
def sleep():
    """The triggers' sleep, patched in their module only: other event loops (an emulator serving in a
    thread of the same test session) keep the real ``asyncio.sleep``."""
    fake_asyncio = mock.Mock(wraps=asyncio, sleep=mock.AsyncMock())
    with mock.patch("aep_hooks.triggers.base.asyncio", fake_asyncio):
        yield fake_asyncio.sleep


def patch_get_json(side_effect):
    return mock.patch("aep_hooks.triggers.base.AEPAsyncHook.get_json", side_effect=side_effect)


class TestRun:
    @pytest.mark.asyncio
    @pytest.mark.parametrize(("cls", "rid", "path", "running", "final", "status", "state", "result"), SCENARIOS)
    async def test_polls_until_terminal_and_yields_one_event(
        self, sleep, cls, rid, path, running, final, status, state, result
    ):
        trigger = cls(rid, aep_conn_id="aep_default", poll_interval=POLL, end_time=FAR)
        with patch_get_json([*running, final]) as get_json:
            events = await collect(trigger)

        assert len(events) == 1
        assert events[0].payload == {
            "status": status,
            "id": rid,
            "state": state,
            "errors": [],
            "message": f"AEP {cls.job.name} {rid} ended in state {state}",
            "result": result,
        }
        assert get_json.call_args_list == [mock.call(path)] * (len(running) + 1)
        # Polls back off from FIRST_POLL_S, doubling, up to the poll interval.
        waits = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, POLL, POLL]
        assert sleep.call_args_list == [mock.call(w) for w in waits[: len(running)]]

    @pytest.mark.asyncio
    @pytest.mark.parametrize(
        ("cls", "answer", "state", "errors"),
        [
            pytest.param(
                QueryStatusTrigger,
                {
                    "state": "FAILED",
                    "errors": [{"code": "58000", "message": "Analysis error", "errorType": "USER_ERROR"}],
                },
                "FAILED",
                [{"code": "58000", "message": "Analysis error", "errorType": "USER_ERROR"}],
                id="query-failed",
            ),
            pytest.param(QueryStatusTrigger, {"state": "KILLED"}, "KILLED", [], id="query-killed"),
            pytest.param(QueryStatusTrigger, {"state": "TIMEOUT"}, "TIMEOUT", [], id="query-timeout"),
            pytest.param(
                BatchStatusTrigger,
                {"b1": {"status": "failed", "errors": [{"code": "INGEST-1401-400", "description": "corrupted row"}]}},
                "failed",
                [{"code": "INGEST-1401-400", "description": "corrupted row"}],
                id="batch-failed",
            ),
            pytest.param(BatchStatusTrigger, {"b1": {"status": "aborted"}}, "aborted", [], id="batch-aborted"),
            pytest.param(BatchStatusTrigger, {"b1": {"status": "stalled"}}, "stalled", [], id="batch-stalled"),
            pytest.param(BatchStatusTrigger, {"b1": {"status": "inactive"}}, "inactive", [], id="batch-inactive"),
            pytest.param(
                FlowRunTrigger,
                {
                    "items": [
                        {
                            "metrics": {
                                "durationSummary": {"completedAtUTC": 1},
                                "statusSummary": {
                                    "status": "Failed",
                                    "errors": [{"code": "EXPORT-500", "message": "x"}],
                                },
                            }
                        }
                    ]
                },
                "Failed",
                [{"code": "EXPORT-500", "message": "x"}],
                id="run-failed",
            ),
            pytest.param(
                SegmentJobTrigger,
                {"status": "FAILED", "errors": [{"code": "0100"}]},
                "FAILED",
                [{"code": "0100"}],
                id="job-failed",
            ),
            pytest.param(SegmentJobTrigger, {"status": "CANCELLED"}, "CANCELLED", [], id="job-cancelled"),
        ],
    )
    async def test_failure_event_carries_aep_errors(self, sleep, cls, answer, state, errors):
        rid = {QueryStatusTrigger: "q1", BatchStatusTrigger: "b1", FlowRunTrigger: "r1", SegmentJobTrigger: "j1"}[cls]
        with patch_get_json([answer]):
            events = await collect(cls(rid, poll_interval=POLL, end_time=FAR))

        assert len(events) == 1
        assert (events[0].payload["status"], events[0].payload["state"], events[0].payload["errors"]) == (
            "error",
            state,
            errors,
        )
        sleep.assert_not_called()

    @pytest.mark.asyncio
    async def test_timeout_event_at_the_deadline(self, sleep):
        trigger = QueryStatusTrigger("q1", poll_interval=POLL, end_time=time.time() - 1)
        with patch_get_json([{"state": "IN_PROGRESS"}]) as get_json:
            events = await collect(trigger)

        assert len(events) == 1
        assert events[0].payload["status"] == "timeout"
        assert events[0].payload["state"] == "IN_PROGRESS"
        assert get_json.call_count == 1
        sleep.assert_not_called()

    @pytest.mark.asyncio
    async def test_last_sleep_ends_at_the_deadline(self, sleep):
        end_time = time.time() + 5
        with patch_get_json([{"state": "IN_PROGRESS"}, {"state": "SUCCESS"}]):
            await collect(QueryStatusTrigger("q1", poll_interval=60, end_time=end_time))
        (slept,), _ = sleep.call_args
        assert 0 < slept <= 5

    @pytest.mark.asyncio
    async def test_unknown_state_is_logged_and_waited_on(self, sleep, caplog):
        with (
            patch_get_json([{"state": "REFRESHING"}, {"state": "SUCCESS"}]) as get_json,
            caplog.at_level(logging.WARNING),
        ):
            events = await collect(QueryStatusTrigger("q1", poll_interval=POLL, end_time=FAR))

        assert [e.payload["status"] for e in events] == ["success"]
        assert get_json.call_count == 2
        sleep.assert_called_once_with(0.25)  # the first, shortest wait of the back-off
        assert "unknown state 'REFRESHING'" in caplog.text

    @pytest.mark.asyncio
    async def test_api_error_becomes_an_error_event(self, sleep):
        body = {"message": "Query not found", "statusCode": 404}
        error = AEPApiError(404, body, method="GET", url="https://platform.test" + QUERY_PATH, request_id="rid")
        with patch_get_json(error):
            events = await collect(QueryStatusTrigger("q1", poll_interval=POLL, end_time=FAR))

        assert len(events) == 1
        payload = events[0].payload
        assert (payload["status"], payload["errors"], payload["result"]) == ("error", [body], {"status_code": 404})
        assert "Query not found" in payload["message"]

    @pytest.mark.asyncio
    async def test_run_with_metrics_but_no_completion_keeps_polling(self, sleep):
        running = {
            "items": [{"metrics": {"statusSummary": {"status": "success"}, "recordSummary": {"inputRecordCount": 3}}}]
        }
        with patch_get_json([running, {"items": [finished_run("success")]}]) as get_json:
            events = await collect(FlowRunTrigger("r1", poll_interval=POLL, end_time=FAR))

        assert get_json.call_count == 2
        assert events[0].payload["status"] == "success"


class TestSerialize:
    @pytest.mark.parametrize(
        ("cls", "module", "id_kwarg"),
        [
            (QueryStatusTrigger, "query_service", "query_id"),
            (BatchStatusTrigger, "ingestion", "batch_id"),
            (FlowRunTrigger, "flow_service", "run_id"),
            (SegmentJobTrigger, "segmentation", "job_id"),
        ],
    )
    def test_round_trip(self, cls, module, id_kwarg):
        trigger = cls("x1", aep_conn_id="aep_other", poll_interval=5, end_time=1768435200.5, sandbox="dev")

        classpath, kwargs = trigger.serialize()

        assert classpath == f"aep_hooks.triggers.{module}.{cls.__name__}"
        assert kwargs == {
            id_kwarg: "x1",
            "aep_conn_id": "aep_other",
            "poll_interval": 5.0,
            "end_time": 1768435200.5,
            "sandbox": "dev",
        }
        assert cls(**kwargs).serialize() == (classpath, kwargs)

    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"query_id": "", "end_time": FAR}, id="empty-id"),
            pytest.param({"query_id": "q1", "poll_interval": 0, "end_time": FAR}, id="zero-interval"),
            pytest.param({"query_id": "q1", "poll_interval": "30", "end_time": FAR}, id="string-interval"),
            pytest.param({"query_id": "q1", "end_time": None}, id="no-deadline"),
        ],
    )
    def test_rejects_bad_kwargs(self, kwargs):
        with pytest.raises(ValueError):
            QueryStatusTrigger(**kwargs)
