"""Sensors: wait, in reschedule or poke mode, for an AEP job that this DAG did not start.

The operators wait for their own jobs (deferring to the triggers); a sensor serves the other case,
e.g. a batch landed by another system or a query submitted from the Query Service UI. It classifies
states with the triggers' own :mod:`aep_hooks.utils.job_states`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from aep_hooks.exceptions import AEPTerminalStateError
from aep_hooks.hooks.aep import AEPHook
from aep_hooks.utils.job_states import BATCH, FLOW_RUN, QUERY, RUNNING, SEGMENT_JOB, SUCCESS, JobKind

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The ``kind`` argument's values.
JOB_KINDS: dict[str, JobKind] = {"batch": BATCH, "query": QUERY, "flow_run": FLOW_RUN, "segment_job": SEGMENT_JOB}


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
        job = JOB_KINDS[self.kind]
        doc = getattr(AEPHook(self.aep_conn_id, sandbox=self.sandbox), job.read)(self.resource_id)
        outcome = job.outcome(self.resource_id, doc)
        self.log.info("AEP %s %s in state %s", self.kind, self.resource_id, outcome["state"])
        if outcome["status"] == RUNNING:
            return False
        if outcome["status"] == SUCCESS:
            return True
        error = AEPTerminalStateError(self.kind, self.resource_id, outcome["state"], outcome["errors"])
        raise AirflowFailException(str(error)) from error
