"""Sensors: wait, in reschedule or poke mode, for an AEP job that this DAG did not start.

The operators wait for their own jobs (deferring to the triggers); a sensor serves the other case,
e.g. a batch landed by another system or a query submitted from the Query Service UI. It classifies
states exactly as the triggers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from aep_hooks.exceptions import AEPTerminalStateError
from aep_hooks.hooks.aep import AEPHook
from aep_hooks.triggers.base import RUNNING, SUCCESS, AEPJobTrigger
from aep_hooks.triggers.flow_service import FlowRunTrigger
from aep_hooks.triggers.ingestion import BatchStatusTrigger
from aep_hooks.triggers.query_service import QueryStatusTrigger
from aep_hooks.triggers.segmentation import SegmentJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

# Job kind -> (trigger whose classification applies, hook method reading the job).
JOB_KINDS: dict[str, tuple[type[AEPJobTrigger], str]] = {
    "batch": (BatchStatusTrigger, "get_batch"),
    "query": (QueryStatusTrigger, "get_query"),
    "flow_run": (FlowRunTrigger, "get_run"),
    "segment_job": (SegmentJobTrigger, "get_segment_job"),
}


class AEPJobSensor(BaseSensorOperator):
    """
    Wait until an AEP job ends: succeed on its success, fail (without retries) on a failure state.

    :param kind: ``batch``, ``query``, ``flow_run`` or ``segment_job``.
    :param resource_id: the job's id (templated).
    :param aep_conn_id: the ``aep`` connection.
    :param sandbox: sandbox to look in (default: the connection's).
    """

    template_fields: Sequence[str] = ("resource_id",)

    def __init__(
        self,
        *,
        kind: str,
        resource_id: str,
        aep_conn_id: str = AEPHook.default_conn_name,
        sandbox: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in JOB_KINDS:
            raise ValueError(f"kind must be one of {sorted(JOB_KINDS)}, not {kind!r}")
        self.kind = kind
        self.resource_id = resource_id
        self.aep_conn_id = aep_conn_id
        self.sandbox = sandbox

    def poke(self, context: Context) -> bool:
        trigger_class, read = JOB_KINDS[self.kind]
        doc = getattr(AEPHook(self.aep_conn_id, sandbox=self.sandbox), read)(self.resource_id)
        status, state = trigger_class.classify(doc)
        self.log.info("AEP %s %s in state %s", self.kind, self.resource_id, state)
        if status == RUNNING:
            return False
        if status == SUCCESS:
            return True
        # A trigger instance only to read the errors the way the deferred path does (no I/O).
        errors = trigger_class(self.resource_id, aep_conn_id=self.aep_conn_id, end_time=0.0).errors(doc)
        error = AEPTerminalStateError(self.kind, self.resource_id, state, errors)
        raise AirflowFailException(str(error)) from error
