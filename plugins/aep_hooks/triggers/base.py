"""
The base of the AEP triggers: poll one job, classified as :mod:`aep_hooks.utils.job_states` says.

Each trigger only reads the job's status (no side effects, so it is safe to run more than once),
polls (0.25 s, then doubling up to ``poll_interval`` seconds) until ``end_time`` and yields exactly one event::

    {"status": "success" | "error" | "timeout", "id": ..., "state": ..., "errors": [...],
     "message": ..., "result": {...}}
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from aep_hooks.exceptions import AEPApiError
from aep_hooks.hooks.rest import AEPAsyncHook
from aep_hooks.utils.job_states import ERROR, RUNNING, TIMEOUT, JobKind, poll_waits


class AEPJobTrigger(BaseTrigger):
    """
    Poll one AEP job until it ends or ``end_time`` passes; yield exactly one event.

    Subclasses name the kind of job (``job``) and the id argument (``id_kwarg``), read the job and summarise it.

    :param resource_id: the job's AEP id.
    :param aep_conn_id: the ``aep`` connection id.
    :param poll_interval: seconds between status reads.
    :param end_time: deadline, in epoch seconds; a ``timeout`` event is yielded after it.
    :param sandbox: a sandbox that overrides the connection's.
    """

    #: the kind of job: its name and classification, shared with the operators and the sensor
    job: ClassVar[JobKind]
    #: the name of the id argument of the subclass's ``__init__``
    id_kwarg: ClassVar[str]

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
            outcome = self.job.outcome(self.resource_id, doc)
            status, state = outcome["status"], outcome["state"]
            if status != RUNNING:
                message = f"AEP {self.job.name} {self.resource_id} ended in state {state}"
                yield self._event(status, state, message, outcome["errors"], self.summarize(doc))
                return
            remaining = self.end_time - time.time()
            if remaining <= 0:
                message = f"AEP {self.job.name} {self.resource_id} still in state {state} at the deadline"
                yield self._event(TIMEOUT, state, message, [], {})
                return
            sleep_for = min(next(waits), remaining)
            self.log.info("AEP %s %s in state %s, sleeping %s s", self.job.name, self.resource_id, state, sleep_for)
            await asyncio.sleep(sleep_for)
