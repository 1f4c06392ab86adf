"""The emulator's shared runtime: settings, database, store, S3, faults and a background worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import boto3
from botocore.config import Config
from fastapi import Request

from aep_emulator import sandbox_roles
from aep_emulator.config import Settings
from aep_emulator.db import Database
from aep_emulator.faults import Faults
from aep_emulator.store import Store
from aep_emulator.throttle import Limits, Throttle

log = logging.getLogger(__name__)

# How often the emulator looks for Query Service statements past their timeout.
STATEMENT_WATCH_INTERVAL_S = 2.0


class Emulator:
    """Everything a route handler needs; one instance per running app.

    :param settings: emulator settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.pg_dsn)
        self.store = Store(self.db)
        self.faults = Faults()
        self.throttle = Throttle(Limits.from_settings(settings))
        # Background work (batch loads, queries, exports, segment jobs) runs here so API calls
        # return at once, as AEP's do, and state machines advance asynchronously.
        self.worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aep-emu-worker")
        self._stopping = threading.Event()

    @cached_property
    def s3(self):
        return boto3.client(
            "s3",
            endpoint_url=self.settings.s3_endpoint,
            aws_access_key_id=self.settings.s3_access_key,
            aws_secret_access_key=self.settings.s3_secret_key,
            region_name=self.settings.s3_region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def start(self) -> None:
        self.db.open(self.settings.sandboxes)
        with self.db.connection() as conn:
            sandbox_roles.set_up(conn, self.settings.pg_dsn, self.settings.sandboxes)
        threading.Thread(target=self._watch_statements, name="aep-emu-qs-timeout", daemon=True).start()
        existing = {b["Name"] for b in self.s3.list_buckets().get("Buckets", [])}
        for bucket in (self.settings.staging_bucket, self.settings.destination_bucket):
            if bucket not in existing:
                self.s3.create_bucket(Bucket=bucket)

    def _watch_statements(self) -> None:
        """Until stopped: cancel Query Service statements past AEP's timeout, whatever the session set."""
        while not self._stopping.wait(STATEMENT_WATCH_INTERVAL_S):
            try:
                with self.db.connection() as conn:
                    sandbox_roles.cancel_overdue(
                        conn, self.settings.pg_dsn, self.settings.sandboxes, self.settings.qs_statement_timeout_s
                    )
            except Exception:
                log.exception("checking Query Service statements against their timeout failed")

    def sandbox_conninfo(self, sandbox: str, **server_settings: str) -> str:
        """Where a sandbox's Query Service SQL runs: a login as the sandbox's own role."""
        return sandbox_roles.sandbox_conninfo(self.settings.pg_dsn, sandbox, **server_settings)

    def stop(self) -> None:
        self._stopping.set()
        self.worker.shutdown(wait=True, cancel_futures=False)
        self.db.close()

    def submit(self, fn: Callable, *args) -> Future:
        """Run ``fn(*args)`` in the background, logging (never swallowing silently) its failure."""

        def run():
            try:
                return fn(*args)
            except Exception:
                log.exception("background task %s failed", getattr(fn, "__name__", fn))
                raise

        return self.worker.submit(run)


@dataclass(frozen=True)
class CallContext:
    """Who is calling, established by the gateway checks."""

    sandbox: str
    org_id: str
    client_id: str
    request_id: str


def emulator(request: Request) -> Emulator:
    """FastAPI dependency: the running emulator."""
    return request.app.state.emulator


def call_context(request: Request) -> CallContext:
    """FastAPI dependency: the caller's sandbox, org and client (set by the gateway)."""
    return request.scope["aep_context"]
