"""
The AEP jobs the provider waits for (queries, batches, flow runs, segment jobs): their states, how a
job's document is classified, and how often it is read.

The one place of this logic: the triggers classify what they poll, the operators what they poll
without deferring, what they reattach to and the runs no trigger watched, the sensor what it pokes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

RUNNING, SUCCESS, ERROR, TIMEOUT = "running", "success", "error", "timeout"


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


def job_errors(doc: dict) -> list:
    """AEP's error list of a query, batch or segment job."""
    return list(doc.get("errors") or [])


def run_errors(doc: dict) -> list:
    """AEP's error list of a flow run (under ``metrics.statusSummary``, else at the top)."""
    status_summary = (doc.get("metrics") or {}).get("statusSummary") or {}
    return list(status_summary.get("errors") or doc.get("errors") or [])


@dataclass(frozen=True)
class JobKind:
    """
    One kind of AEP job: what it is called, how it is read and how its document is classified.

    :param name: what the job is, for messages (``query``, ``batch``, ``flow run``, ``segment job``).
    :param read: the :class:`~aep_hooks.hooks.aep.AEPHook` method that returns the job's document by id.
    :param classify: ``doc -> ("running" | "success" | "error", state)``.
    :param errors: ``doc -> AEP's error list``.
    """

    name: str
    read: str
    classify: Callable[[dict], tuple[str, str]]
    errors: Callable[[dict], list] = job_errors

    def outcome(self, resource_id: str, doc: dict) -> dict[str, Any]:
        """
        Where the job is: ``{"status", "id", "state", "errors"}``, the core of a trigger event.

        :param resource_id: the job's id.
        :param doc: the job's document.
        """
        status, state = self.classify(doc)
        return {"status": status, "id": resource_id, "state": state, "errors": self.errors(doc)}


QUERY = JobKind("query", "get_query", classify_query)
BATCH = JobKind("batch", "get_batch", classify_batch)
FLOW_RUN = JobKind("flow run", "get_run", classify_run, run_errors)
SEGMENT_JOB = JobKind("segment job", "get_segment_job", classify_segment_job)
