"""Fixtures for the AEP provider tests: connections, an Airflow home with a migrated database, DAG runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

LOCAL_ORG = "LOCAL0000000000000000000@AdobeOrg"
S3_ENDPOINT = os.environ.get("AEP_S3_ENDPOINT", "http://127.0.0.1:8333")
S3_ACCESS_KEY = os.environ.get("AEP_S3_ACCESS_KEY", "AEPLOCALSTACKKEY2345")
S3_SECRET_KEY = os.environ.get("AEP_S3_SECRET_KEY", "aeplocalsecret0aeplocalsecret0aeplocal00")


def aep_connection(
    url: str, sandbox: str, *, client_id: str = "aep-local-client", secret: str = "aep-local-secret"
) -> str:
    """``AIRFLOW_CONN_AEP_DEFAULT`` JSON for an emulator at ``url``."""
    return json.dumps(
        {
            "conn_type": "aep",
            "host": url,
            "login": client_id,
            "password": secret,
            "extra": {
                "org_id": LOCAL_ORG,
                "sandbox": sandbox,
                "ims_url": f"{url}/ims/token/v3",
                "scopes": "openid,AdobeID,read_organizations",
                "qs_sslmode": "disable",
                "qs_dialect": "postgres",
            },
        }
    )


def s3_connection() -> str:
    """``AIRFLOW_CONN_AEP_S3`` JSON for the local S3."""
    return json.dumps(
        {
            "conn_type": "aws",
            "extra": {
                "endpoint_url": S3_ENDPOINT,
                "region_name": "us-east-1",
                "aws_access_key_id": S3_ACCESS_KEY,
                "aws_secret_access_key": S3_SECRET_KEY,
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        }
    )


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory):
    """An Airflow home with a migrated SQLite database and an empty DAGs folder (one per session)."""
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ,
    )
    from airflow import settings

    settings.configure_vars()
    settings.reconfigure_orm()
    yield dags
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
