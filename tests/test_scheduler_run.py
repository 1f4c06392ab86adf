"""One run of the propensity DAG through the real scheduler: ``airflow standalone`` (api-server,
scheduler with LocalExecutor, dag-processor, triggerer), triggered over the REST API like the UI does.

Heavy (~1.2 GB of memory, a minute or two): deselect it with ``-m "not scheduler"``. Needs the local
stack up (``bin/stack up``, as ``bin/test`` does). It is isolated from a ``bin/airflow-ui`` that may be running: its own
metadata database (dropped afterwards), Airflow home, ports and AEP sandbox (the session emulator's).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import date
from urllib.parse import quote, urlsplit

import boto3
import psycopg
import pytest
import requests
from botocore.config import Config

from aep_local import airflow_ui
from aep_local.stack import StackSettings, airflow_connections, airflow_settings
from tests.support.emulator import free_port

pytestmark = [pytest.mark.scheduler, pytest.mark.integration]

DAG_ID = airflow_ui.DAG_ID
AS_OF = date(2026, 11, 26)
PROFILES = 3000
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def standalone(emulator_session, tmp_path_factory):
    """``airflow standalone`` in the background on free ports, with the session emulator's sandbox."""
    home = tmp_path_factory.mktemp("scheduler_run")
    base = StackSettings.from_env()
    stack = replace(base, aep=base.aep.model_copy(update={"home": home}))
    settings, sandbox = emulator_session.settings, emulator_session.sandbox
    database = f"airflow_sched_{uuid.uuid4().hex[:8]}"
    admin_dsn = urlsplit(stack.aep.pg_dsn)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    port = free_port()
    with pytest.MonkeyPatch.context() as ported:
        # airflow_settings derives the execution API's URL from the API port.
        ported.setenv("AIRFLOW__API__PORT", str(port))
        base_settings = airflow_settings(stack)
    env = {
        **base_settings,
        **airflow_connections(settings, sandbox),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": urlsplit(base_settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        ._replace(path=f"/{database}")
        .geturl(),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    pid = None
    try:
        pid = airflow_ui.start_background(stack)
        yield {"url": airflow_ui.api_url(), "home": home, "settings": settings, "sandbox": sandbox}
    finally:
        if pid is not None:
            airflow_ui.stop_tree(pid)
        patch.undo()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_for_dag(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while requests.get(f"{url}/api/v2/dags/{DAG_ID}", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, f"{DAG_ID} not parsed within {timeout_s} s"
        time.sleep(2)


def test_a_triggered_run_succeeds_through_the_scheduler(standalone):
    url, settings = standalone["url"], standalone["settings"]
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(s3={"addressing_style": "path"}),
    )
    buckets = {
        "artifact_bucket": f"{standalone['sandbox']}-sched-artifacts",
        "destination_bucket": f"{standalone['sandbox']}-sched-destination",
    }
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)

    _wait_for_dag(url)
    unpaused = requests.patch(f"{url}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=10)
    assert unpaused.status_code == 200 and unpaused.json()["is_paused"] is False, unpaused.text
    conf = {"as_of_date": AS_OF.isoformat(), "profile_count": PROFILES, **buckets}
    triggered = requests.post(
        f"{url}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=10
    )
    assert triggered.status_code == 200, triggered.text
    run_id = triggered.json()["dag_run_id"]
    run_url = f"{url}/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"

    def task_states() -> dict[str, str]:
        tis = requests.get(f"{run_url}/taskInstances", params={"limit": 100}, timeout=10).json()["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = None
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} still {state} after {RUN_TIMEOUT_S} s"
        time.sleep(5)
        state = requests.get(run_url, timeout=10).json()["state"]
        # The DAG retries each task 3 times with back-off: a first failure is enough to report.
        if any(s in ("up_for_retry", "failed") for s in task_states().values()):
            break

    not_ok = {task: s for task, s in task_states().items() if s not in ("success", "skipped")}
    assert state == "success" and not not_ok, (
        f"run {run_id}: {state}; tasks {not_ok}; logs under {standalone['home']}/airflow/logs"
    )
    # Deferrable operators went through the triggerer: their trigger logs exist.
    logs = standalone["home"] / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    assert list(logs.glob("task_id=*/attempt=*.log.trigger.*.log")), "no task was resumed by the triggerer"
    summary = requests.get(f"{run_url}/taskInstances/summary/xcomEntries/return_value", timeout=10).json()["value"]
    assert summary["as_of"] == AS_OF.isoformat()
    assert summary["scored_profiles"] > 0 and summary["audiences"]
    assert summary["artifacts"] == f"s3://{buckets['artifact_bucket']}/"
