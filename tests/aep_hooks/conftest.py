"""Fixtures for the AEP provider tests: connections, a scripted Platform, an Airflow home with a migrated database, DAG runs."""

from __future__ import annotations

import json
import textwrap
import uuid
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from aep_emulator.config import get_settings
from aep_local.stack import airflow_connections

_SETTINGS = get_settings()
S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY = _SETTINGS.s3_endpoint, _SETTINGS.s3_access_key, _SETTINGS.s3_secret_key


PLATFORM = "https://platform.test"
IMS = "https://ims.test/ims/token/v3"
ORG = "ORG0000@AdobeOrg"
CLIENT_ID = "client-0001"
CLIENT_SECRET = "secret-0001-do-not-log"
STATS = f"{PLATFORM}/data/foundation/schemaregistry/stats"
EXPIRES_IN = 86399


def connection_json(**extra) -> str:
    return json.dumps(
        {
            "conn_type": "aep",
            "host": PLATFORM,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "extra": {"org_id": ORG, "sandbox": "dev", "ims_url": IMS, **extra},
        }
    )


def aep_connection(emulator, sandbox: str) -> str:
    """``AIRFLOW_CONN_AEP_DEFAULT`` JSON for a running emulator (the local stack's own builder)."""
    return airflow_connections(emulator.settings, sandbox)["AIRFLOW_CONN_AEP_DEFAULT"]


def s3_connection(emulator) -> str:
    """``AIRFLOW_CONN_AEP_S3`` JSON for the emulator's S3."""
    return airflow_connections(emulator.settings, emulator.settings.sandboxes[0])["AIRFLOW_CONN_AEP_S3"]


@pytest.fixture
def run_dag(airflow_db):
    """
    Run a DAG built by the test with ``dag.test()`` (triggers run in-process).

    ``dag.test()`` syncs the DAG from the DAGs folder, so a stub module with the same dag_id is written
    there; the tasks that run are the ones of the DAG object passed in.
    """

    def run(dag, logical_date: datetime | None = None):
        (airflow_db / f"{dag.dag_id}.py").write_text(
            textwrap.dedent(
                f"""
                from airflow.sdk import DAG
                dag = DAG({dag.dag_id!r}, schedule=None)
                """
            )
        )
        return dag.test(logical_date=logical_date or datetime(2026, 1, 15, tzinfo=UTC))

    return run


@pytest.fixture
def dag_id() -> str:
    return f"aep_test_{uuid.uuid4().hex[:8]}"


class ScriptedPlatform:
    """
    A real HTTP server (aiohttp) standing in for IMS and the Platform gateway: each
    ``(method, path)`` answers its scripted responses in order and records the requests.
    """

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[tuple[int, dict]]] = {}
        self.requests: list[web.Request] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app)

    def add(self, method: str, path: str, status: int = 200, body: dict | None = None) -> None:
        self.script.setdefault((method, path), []).append((status, body or {}))

    def calls(self, method: str, path: str) -> list[web.Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        status, body = self.script[(request.method, request.path)].pop(0)
        return web.json_response(body, status=status)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest_asyncio.fixture
async def platform(monkeypatch):
    scripted = ScriptedPlatform()
    await scripted.server.start_server()
    conn = json.loads(connection_json())
    conn["host"] = scripted.url
    conn["extra"]["ims_url"] = f"{scripted.url}/ims/token/v3"
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(conn))
    yield scripted
    await scripted.server.close()
