"""
The base of the AEP operators: arguments, links, and the life of an AEP job they start.

Every operator is safe to retry and to rerun: resources are found by deterministic name before
anything is created and creates are never retried blindly. An operator that starts a long-running
AEP job (a query, a batch, flow runs, a segment job) goes through
:meth:`AEPBaseOperator.start_or_reattach`, which keeps the job's id in ``task_state_store`` before
any wait, so that a retry reconnects to the job it started while that job is still in flight; a
finished job is never reused (a cleared task runs again). Then :meth:`AEPBaseOperator.wait_for`
waits until the deadline: a deferral to a trigger, or (``deferrable=False``) a poll with the same
status classification.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from aep_hooks.exceptions import AEPTerminalStateError
from aep_hooks.hooks.aep import AEPHook
from aep_hooks.links import AEPBaseLink
from aep_hooks.triggers.base import AEPJobTrigger
from aep_hooks.utils.job_states import RUNNING, SUCCESS, TIMEOUT, JobKind, poll_waits

if TYPE_CHECKING:
    from airflow.sdk import Context


def load_json(value: Any) -> Any:
    """A template field that may hold a rendered ``.json`` file (a string) or a Python value."""
    return json.loads(value) if isinstance(value, str) else value


class TaskState:
    """
    This task instance's ``task_state_store``: values kept across its tries, by key.

    Without a store (``execute`` called outside a task run) nothing is kept and nothing is found.

    :param context: the task context.
    """

    def __init__(self, context: Context) -> None:
        self._store = context.get("task_state_store")

    def get(self, key: str) -> Any:
        """The value an earlier try kept under ``key``, or None."""
        return None if self._store is None else self._store.get(key)

    def set(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` for the next tries."""
        if self._store is not None:
            self._store.set(key, value)


class AEPBaseOperator(BaseOperator):
    """
    Arguments and waiting logic shared by the AEP operators.

    :param aep_conn_id: the ``aep`` connection.
    :param sandbox: sandbox to work in (default: the connection's).
    :param deferrable: wait in the triggerer instead of polling in the worker.
    :param poll_interval: seconds between status checks.
    :param timeout: how long to wait for an AEP job before the task fails (and may be retried).
    """

    ui_color = "#fa0f00"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        aep_conn_id: str = "aep_default",
        sandbox: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: timedelta = timedelta(hours=2),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aep_conn_id = aep_conn_id
        self.sandbox = sandbox
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout

    @cached_property
    def hook(self) -> AEPHook:
        return AEPHook(self.aep_conn_id, sandbox=self.sandbox)

    def persist_link(self, context: Context, link: type[AEPBaseLink], resource_id: str) -> None:
        link.persist(
            context, org_id=self.hook.settings.org_id, sandbox=self.hook.settings.sandbox, resource_id=resource_id
        )

    def start_or_reattach(
        self,
        context: Context,
        job: JobKind,
        key: str,
        start: Callable[[], Any],
        find_in_flight: Callable[[Any], Any] | None = None,
    ) -> Any:
        """
        The job an earlier try kept under ``key`` while it is in flight, else the one ``start`` starts.

        What is returned is kept under ``key`` before anything waits on it, so a retry after a
        crash, a deadline or a lost trigger follows this job instead of starting a second one.

        :param context: the task context.
        :param job: the kind of job (how it is read and classified).
        :param key: the ``task_state_store`` key: a job id, or a list of run ids.
        :param start: starts the job and returns what to keep under ``key``.
        :param find_in_flight: finds the job still in flight from the kept value (default: the
            kept value while any of its ids is running).
        """
        state = TaskState(context)
        in_flight = (find_in_flight or partial(self._while_running, job))(state.get(key))
        if in_flight:
            self.log.info("Reconnecting to %s %s, still in flight from an earlier try", job.name, in_flight)
        job_ids = in_flight or start()
        state.set(key, job_ids)
        return job_ids

    def _while_running(self, job: JobKind, kept: Any) -> Any:
        """``kept`` (a job id or a list of them) while any of its jobs is running, else None."""
        ids = [kept] if isinstance(kept, str) else kept or []
        return kept if any(job.classify(getattr(self.hook, job.read)(i))[0] == RUNNING for i in ids) else None

    def wait_for(
        self,
        context: Context,
        trigger_class: type[AEPJobTrigger],
        resource_id: str,
        method_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """
        Wait for an AEP job to end, then hand over to ``execute_complete``.

        Deferring hands the job to the trigger; the sync path polls with the same classification
        (the trigger's :class:`~aep_hooks.utils.job_states.JobKind`), a real sleep and the same deadline.

        :param context: the task context.
        :param trigger_class: trigger that watches this kind of job.
        :param resource_id: the job's id.
        :param method_kwargs: extra JSON arguments for ``execute_complete``.
        """
        trigger = trigger_class(
            resource_id,
            aep_conn_id=self.aep_conn_id,
            poll_interval=self.poll_interval,
            end_time=time.time() + self.timeout.total_seconds(),
            sandbox=self.sandbox,
        )
        if self.deferrable:
            if method_kwargs:
                TaskState(context).set("defer_kwargs", method_kwargs)
            self.defer(trigger=trigger, method_name="execute_complete", kwargs=method_kwargs, timeout=self.timeout)
        job, read = trigger.job, getattr(self.hook, trigger.job.read)
        waits = poll_waits(self.poll_interval)
        while True:
            event = job.outcome(resource_id, read(resource_id))
            if event["status"] != RUNNING:
                break
            if time.time() >= trigger.end_time:
                event = {**event, "status": TIMEOUT, "errors": []}
                break
            wait = min(next(waits), trigger.end_time - time.time())
            self.log.info("AEP %s %s in state %s, sleeping %s s", job.name, resource_id, event["state"], wait)
            time.sleep(wait)
        return self.execute_complete(context, event, **(method_kwargs or {}))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after deferral with the ``defer`` kwargs, which ``dag.test()`` (3.3) replaces by the event."""
        if next_kwargs and "event" in next_kwargs:
            next_kwargs = {**(TaskState(context).get("defer_kwargs") or {}), **next_kwargs}
        return super().resume_execution(next_method, next_kwargs, context)

    def check_event(self, kind: str, event: dict[str, Any]) -> str:
        """
        Raise unless the job ended well; return its id.

        A failed job fails the task without retries (AEP's errors are in the message); a job still
        running at the deadline fails the try, and the retry reconnects to it.

        :param kind: what the job is, for messages.
        :param event: a trigger event, or the same shape built by the sync path.
        """
        self.log.info("AEP %s %s ended: %s (%s)", kind, event["id"], event["status"], event.get("state"))
        if event["status"] == SUCCESS:
            return event["id"]
        if event["status"] == TIMEOUT:
            raise AirflowException(
                f"AEP {kind} {event['id']} still in state {event.get('state')} at the deadline ({self.timeout})"
            )
        if event["status"] == "error" and event.get("state") is None:
            # The trigger could not read the job (an API error outlasting the hook's retries), which
            # says nothing of the job itself: a task retry reconnects to it from the task state store.
            raise AirflowException(f"AEP {kind} {event['id']} could not be read: {event.get('message')}")
        error = AEPTerminalStateError(kind, event["id"], event.get("state") or "unknown", event.get("errors"))
        raise AirflowFailException(str(error)) from error

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError
