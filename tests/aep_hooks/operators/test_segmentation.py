"""AEPAudienceOperator against an HTTP fake: definitions upserted by name, one segment job."""

from __future__ import annotations

import pytest
from aep_hooks.operators.segmentation import AEPAudienceOperator

from tests.aep_hooks.operators.conftest import PLATFORM

pytestmark = pytest.mark.usefixtures("aep_conn")

SEGMENTATION = f"{PLATFORM}/data/core/ups"


def test_audience_updates_changed_definition_and_runs_one_job(requests_mock, context, state):
    requests_mock.get(
        f"{SEGMENTATION}/segment/definitions",
        json={
            "segments": [{"id": "s1", "name": "high", "expression": {"value": "old pql"}, "description": ""}],
            "page": {"totalPages": 1},
        },
    )
    patch = requests_mock.patch(f"{SEGMENTATION}/segment/definitions/s1", json={"id": "s1"})
    create_def = requests_mock.post(f"{SEGMENTATION}/segment/definitions", json={"id": "s2"})
    job = requests_mock.post(f"{SEGMENTATION}/segment/jobs", json={"id": "j1", "status": "NEW"})
    requests_mock.get(
        f"{SEGMENTATION}/segment/jobs/j1",
        json={"id": "j1", "status": "SUCCEEDED", "metrics": {"segmentedProfileCounter": {"s1": 5, "s2": 0}}},
    )
    op = AEPAudienceOperator(
        task_id="aud",
        audiences=[
            {"name": "high", "pql": "_acme.propensity >= 0.5"},
            {"name": "low", "pql": "_acme.propensity < 0.1"},
        ],
        deferrable=False,
        poll_interval=0.01,
    )

    result = op.execute(context)

    assert result == {"high": {"id": "s1", "count": 5}, "low": {"id": "s2", "count": 0}}
    assert {"op": "add", "path": "/expression/value", "value": "_acme.propensity >= 0.5"} in patch.last_request.json()
    assert create_def.call_count == 1 and create_def.last_request.json()["name"] == "low"
    assert job.last_request.json() == [{"segmentId": "s1"}, {"segmentId": "s2"}]
    assert state["segment_job_id"] == "j1"
