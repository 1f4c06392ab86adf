"""Shared fixtures. Integration tests need the local stack (PostgreSQL + S3): ``bin/stack up``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.emulator import AEPClient, RunningEmulator, session_settings


@pytest.fixture(scope="session")
def emulator_session():
    """The emulator on a free port for the whole test session, with a sandbox of its own."""
    settings, sandbox = session_settings()
    running = RunningEmulator(settings).start()
    running.sandbox = sandbox
    yield running
    running.stop()


@pytest.fixture
def emulator(emulator_session):
    """The running emulator, with fault injection cleared after each test."""
    yield emulator_session
    emulator_session.emu.faults.reset()


@pytest.fixture
def sandbox(emulator_session) -> str:
    return emulator_session.sandbox


@pytest.fixture
def aep(emulator, sandbox) -> AEPClient:
    """An authenticated client for the session's sandbox."""
    return AEPClient(emulator.url, emulator.settings, sandbox)


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
