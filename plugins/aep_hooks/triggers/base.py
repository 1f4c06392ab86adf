"""
The base of the AEP triggers, and the job-state classification they share with the operators' sync path.

Each trigger only reads the job's status (no side effects, so it is safe to run more than once),
polls (0.25 s, then doubling up to ``poll_interval`` seconds) until ``end_time`` and yields exactly one event::

    {"status": "success" | "error" | "timeout", "id": ..., "state": ..., "errors": [...],
     "message": ..., "result": {...}}
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from aep_hooks.exceptions import AEPApiError
from aep_hooks.hooks.rest import AEPAsyncHook

log = logging.getLogger(__name__)

RUNNING, SUCCESS, ERROR = "running", "success", "error"


FIRST_POLL_S = 0.25
"""First wait between status reads; each next wait doubles, up to ``poll_interval``."""


def poll_waits(poll_interval: float) -> Iterator[float]:
    """Waits between status reads: 0.25 s, 0.5 s, 1 s... capped at ``poll_interval``.

    Short jobs (a small batch, an emulator) finish after a read or two; long AEP jobs are polled
    at ``poll_interval`` after the first minute or so.

    :param poll_interval: the longest wait.
    """
    wait = min(FIRST_POLL_S, poll_interval)
    while True:
        yield wait
        wait = min(wait * 2, poll_interval)


@dataclass(frozen=True)
class JobStates:
    """
    The states of one kind of AEP job, upper-cased (AEP's casing varies, so comparisons ignore it).

    :param kind: what the job is, for messages.
    :param in_progress: states that keep polling.
    :param succeeded: terminal states that mean success.
    :param failed: terminal states that mean failure.
    """

    kind: str
    in_progress: frozenset[str]
    succeeded: frozenset[str]
    failed: frozenset[str]

    def classify(self, state: str | None) -> tuple[str, str]:
        """Return ``("running"|"success"|"error", state)``; an unknown state is logged and waited on."""
        state = str(state or "UNKNOWN")
        if state.upper() in self.succeeded:
            return SUCCESS, state
        if state.upper() in self.failed:
            return ERROR, state
        if state.upper() not in self.in_progress:
            log.warning("AEP %s in unknown state %r; waiting for a known state", self.kind, state)
        return RUNNING, state


# Query Service REST state machine (docs/aep-behaviour.md#query-service): all four terminal states end polling.
QUERY_STATES = JobStates(
    "query",
    in_progress=frozenset({"SUBMITTED", "IN_PROGRESS"}),
    succeeded=frozenset({"SUCCESS"}),
    failed=frozenset({"FAILED", "KILLED", "TIMEOUT"}),
)
# Catalog batch status classes (docs/aep-behaviour.md#batches); "inactive"/"deleted" mean the batch is gone (reverted).
BATCH_STATES = JobStates(
    "batch",
    in_progress=frozenset({"LOADING", "LOADED", "STAGING", "STAGED", "PROCESSING", "QUEUED", "RETRYING"}),
    succeeded=frozenset({"SUCCESS", "ACTIVE"}),
    failed=frozenset({"FAILED", "FAILURE", "ABORTED", "ABANDONED", "STALLED", "INACTIVE", "DELETED"}),
)
# Flow run statusSummary.status (docs/aep-behaviour.md#flow-service), meaningful once durationSummary.completedAtUTC is set.
RUN_STATES = JobStates(
    "flow run",
    in_progress=frozenset({"PROCESSING", "WAITING", "QUEUED", "SCHEDULED", "IN_PROGRESS", "PENDING"}),
    succeeded=frozenset({"SUCCESS", "COMPLETED"}),
    failed=frozenset({"FAILED", "FAILURE", "PARTIAL_FAILURE", "CANCELLED", "ABORTED"}),
)
# Segment job states (docs/aep-behaviour.md#segmentation).
SEGMENT_JOB_STATES = JobStates(
    "segment job",
    in_progress=frozenset({"NEW", "QUEUED", "PROCESSING", "CANCELLING"}),
    succeeded=frozenset({"SUCCEEDED"}),
    failed=frozenset({"FAILED", "CANCELLED"}),
)


def classify_query(doc: dict) -> tuple[str, str]:
    """
    Classify a Query Service query: ``SUBMITTED → IN_PROGRESS → SUCCESS | FAILED | KILLED | TIMEOUT``.

    :param doc: the query as ``GET /queries/{id}`` returns it.
    """
    return QUERY_STATES.classify(doc.get("state"))


def classify_batch(doc: dict) -> tuple[str, str]:
    """
    Classify a Catalog batch: ``loading → staging → success | failed`` (and the other statuses of docs/aep-behaviour.md#batches).

    :param doc: the batch as ``GET /catalog/batches/{id}`` returns it, unwrapped.
    """
    return BATCH_STATES.classify(doc.get("status"))


def classify_run(doc: dict) -> tuple[str, str]:
    """
    Classify a flow run: finished only once ``completedAtUTC`` and ``statusSummary.status`` are set.

    :param doc: the run as ``GET /runs/{id}`` returns it, unwrapped from ``items``.
    """
    metrics = doc.get("metrics") or {}
    status = (metrics.get("statusSummary") or {}).get("status")
    if not (metrics.get("durationSummary") or {}).get("completedAtUTC") or not status:
        return RUNNING, status or "PENDING"
    return RUN_STATES.classify(status)


def classify_segment_job(doc: dict) -> tuple[str, str]:
    """
    Classify a segment job: ``NEW → QUEUED → PROCESSING → SUCCEEDED | FAILED``, or ``CANCELLING → CANCELLED``.

    :param doc: the job as ``GET /segment/jobs/{id}`` returns it.
    """
    return SEGMENT_JOB_STATES.classify(doc.get("status"))


class AEPJobTrigger(BaseTrigger):
    """
    Poll one AEP job until it ends or ``end_time`` passes; yield exactly one event.

    Subclasses name the id argument (``id_kwarg``), read the job, classify and summarise it.

    :param resource_id: the job's AEP id.
    :param aep_conn_id: the ``aep`` connection id.
    :param poll_interval: seconds between status reads.
    :param end_time: deadline, in epoch seconds; a ``timeout`` event is yielded after it.
    :param sandbox: a sandbox that overrides the connection's.
    """

    #: what the job is, for messages
    kind: str
    #: the name of the id argument of the subclass's ``__init__``
    id_kwarg: str
    #: the module-level classification of the job's document, shared with the operators' sync path
    classify: Callable[[dict], tuple[str, str]]

    def __init__(
        self,
        resource_id: str,
        aep_conn_id: str = AEPAsyncHook.default_conn_name,
        poll_interval: float = 30.0,
        *,
        end_time: float,
        sandbox: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(resource_id, str) or not resource_id:
            raise ValueError(f"{self.id_kwarg} must be a non-empty string, got {resource_id!r}")
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number, got {poll_interval!r}")
        if not isinstance(end_time, (int, float)):
            raise ValueError(f"end_time must be epoch seconds, got {end_time!r}")
        self.resource_id = resource_id
        self.aep_conn_id = aep_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)
        self.sandbox = sandbox

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                self.id_kwarg: self.resource_id,
                "aep_conn_id": self.aep_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "sandbox": self.sandbox,
            },
        )

    def get_async_hook(self) -> AEPAsyncHook:
        """A new async hook (new HTTP sessions, new token) for this run of the trigger."""
        return AEPAsyncHook(self.aep_conn_id, sandbox=self.sandbox)

    @abstractmethod
    async def fetch(self, hook: AEPAsyncHook) -> dict:
        """Read the job's current document."""

    def errors(self, doc: dict) -> list:
        """AEP's error list for the job."""
        return list(doc.get("errors") or [])

    def summarize(self, doc: dict) -> dict[str, Any]:
        """A small, JSON-serialisable summary of the finished job."""
        return {}

    def _event(self, status: str, state: str | None, message: str, errors: list, result: dict) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "id": self.resource_id,
                "state": state,
                "errors": errors,
                "message": message,
                "result": result,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.get_async_hook()
        waits = poll_waits(self.poll_interval)
        while True:
            try:
                doc = await self.fetch(hook)
            except AEPApiError as err:
                yield self._event(ERROR, None, str(err), [err.body], {"status_code": err.status})
                return
            status, state = self.classify(doc)
            if status != RUNNING:
                message = f"AEP {self.kind} {self.resource_id} ended in state {state}"
                yield self._event(status, state, message, self.errors(doc), self.summarize(doc))
                return
            remaining = self.end_time - time.time()
            if remaining <= 0:
                message = f"AEP {self.kind} {self.resource_id} still in state {state} at the deadline"
                yield self._event("timeout", state, message, [], {})
                return
            sleep_for = min(next(waits), remaining)
            self.log.info("AEP %s %s in state %s, sleeping %s s", self.kind, self.resource_id, state, sleep_for)
            await asyncio.sleep(sleep_for)
