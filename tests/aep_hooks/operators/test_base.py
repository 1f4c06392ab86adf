"""The operators' shared waiting outcomes."""

from __future__ import annotations

import pytest
from aep_hooks.operators.query_service import AEPQueryOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException


def test_a_job_that_could_not_be_read_fails_the_try_not_the_task():
    """An API error in the trigger says nothing of the job: retryable, unlike a failed job."""
    op = AEPQueryOperator(task_id="q", sql="SELECT 1")
    unreadable = {"status": "error", "id": "q1", "state": None, "errors": [{}], "message": "503 after retries"}
    with pytest.raises(AirflowException, match="could not be read") as raised:
        op.check_event("query", unreadable)
    assert not isinstance(raised.value, AirflowFailException)
    with pytest.raises(AirflowFailException, match="FAILED"):
        op.check_event("query", {**unreadable, "state": "FAILED"})
