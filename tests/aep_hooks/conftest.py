"""Fixtures for the AEP provider tests: connections, an Airflow home with a migrated database, DAG runs."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from aep_emulator.config import get_settings
from aep_local.stack import airflow_connections

_SETTINGS = get_settings()
S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY = _SETTINGS.s3_endpoint, _SETTINGS.s3_access_key, _SETTINGS.s3_secret_key


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


DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=0)}
