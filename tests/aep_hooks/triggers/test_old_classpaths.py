"""A task deferred before the provider split resumes after it.

Airflow stored such a task's trigger as a row holding the classpath ``aep_hooks.triggers.<Trigger>``
and the kwargs of the old ``serialize()``; the triggerer imports the classpath, decodes the kwargs and
runs the trigger. These tests take the triggerer's own steps on rows written as the old code wrote them.
"""

from __future__ import annotations

import pytest
from airflow.jobs.triggerer_job_runner import TriggerRunner
from airflow.models.trigger import Trigger
from airflow.serialization.decoders import smart_decode_trigger_kwargs

FAR = 4_000_000_000.0

# classpath and kwargs as the pre-split triggers serialized them, the status path and AEP's final answer.
STORED_BEFORE_THE_SPLIT = [
    pytest.param(
        "aep_hooks.triggers.QueryStatusTrigger",
        {"query_id": "q1"},
        "/data/foundation/query/queries/q1",
        {"state": "SUCCESS", "rowCount": 3},
        "aep_hooks.triggers.query_service.QueryStatusTrigger",
        id="query",
    ),
    pytest.param(
        "aep_hooks.triggers.BatchStatusTrigger",
        {"batch_id": "b1"},
        "/data/foundation/catalog/batches/b1",
        {"b1": {"status": "success"}},
        "aep_hooks.triggers.ingestion.BatchStatusTrigger",
        id="batch",
    ),
    pytest.param(
        "aep_hooks.triggers.FlowRunTrigger",
        {"run_id": "r1"},
        "/data/foundation/flowservice/runs/r1",
        {"items": [{"metrics": {"durationSummary": {"completedAtUTC": 1}, "statusSummary": {"status": "success"}}}]},
        "aep_hooks.triggers.flow_service.FlowRunTrigger",
        id="flow-run",
    ),
    pytest.param(
        "aep_hooks.triggers.SegmentJobTrigger",
        {"job_id": "j1"},
        "/data/core/ups/segment/jobs/j1",
        {"status": "SUCCEEDED"},
        "aep_hooks.triggers.segmentation.SegmentJobTrigger",
        id="segment-job",
    ),
]


def inflate_as_the_triggerer_does(row: Trigger):
    """The triggerer's ``create_triggers`` steps: import the classpath, decode the kwargs, build the trigger."""
    trigger_class = TriggerRunner().get_trigger_by_classpath(row.classpath)
    kwargs = {
        key: smart_decode_trigger_kwargs(value) for key, value in Trigger._decrypt_kwargs(row.encrypted_kwargs).items()
    }
    return trigger_class(**kwargs)


@pytest.mark.asyncio
@pytest.mark.parametrize(("classpath", "id_kwargs", "path", "final", "new_classpath"), STORED_BEFORE_THE_SPLIT)
async def test_trigger_stored_under_the_old_classpath_resumes_and_ends(
    platform, classpath, id_kwargs, path, final, new_classpath
):
    stored = Trigger(
        classpath,
        {**id_kwargs, "aep_conn_id": "aep_default", "poll_interval": 5.0, "end_time": FAR, "sandbox": "dev"},
    )
    platform.add("POST", "/ims/token/v3", body={"access_token": "atoken-1", "expires_in": 86399})
    platform.add("GET", path, body=final)

    trigger = inflate_as_the_triggerer_does(stored)
    events = [event async for event in trigger.run()]

    assert [(e.payload["status"], e.payload["id"]) for e in events] == [("success", *id_kwargs.values())]
    [status_read] = platform.calls("GET", path)
    assert status_read.headers["x-sandbox-name"] == "dev"
    # Deferred again, the task is stored under the trigger's new home.
    assert trigger.serialize()[0] == new_classpath
