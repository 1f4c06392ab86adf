"""``bin/stack`` end to end: a stack of its own (PostgreSQL, SeaweedFS, emulator) in a temporary home
on free ports, so it never touches the services other work uses. Deselect with ``-m "not integration"``."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import requests

from aep_emulator.config import PROJECT_ROOT
from aep_local import postgres
from aep_local.processes import StackError
from aep_local.s3 import SEAWEEDFS_PORT_FLAGS
from aep_local.stack import StackSettings

pytestmark = pytest.mark.integration


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports (SeaweedFS takes S3's port and the nine after it)."""
    for _ in range(200):
        first = random.randrange(20000, 30000)
        if all(_port_free(port) for port in range(first, first + size)):
            return first
    raise RuntimeError(f"no {size} consecutive free ports found in 20000-30000")


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("AEP_")}


@pytest.fixture
def stack_env():
    """Environment for a stack of its own; the stack is stopped and its home removed afterwards."""
    # Not pytest's tmp_path: as root the stack runs PostgreSQL as `postgres`, which must reach the home.
    home = Path(tempfile.mkdtemp(prefix="aep-stack-test-"))
    home.chmod(0o755)
    first = _free_port_block(len(SEAWEEDFS_PORT_FLAGS) + 4)
    env = {
        **_clean_env(),
        "AEP_LOCAL_HOME": str(home),
        "AEP_S3_PORT": str(first),
        "AEP_PG_PORT": str(first + len(SEAWEEDFS_PORT_FLAGS) + 1),
        "AEP_EMULATOR_PORT": str(first + len(SEAWEEDFS_PORT_FLAGS) + 2),
        "AEP_QS_PORT": str(first + len(SEAWEEDFS_PORT_FLAGS) + 3),
    }
    yield env
    _stack("down", env)
    shutil.rmtree(home, ignore_errors=True)


def _stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aep_local", command],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _pids(env: dict[str, str]) -> dict[str, int]:
    run_dir = Path(env["AEP_LOCAL_HOME"]) / "run"
    return {pid_file.stem: int(pid_file.read_text()) for pid_file in run_dir.glob("*.pid")}


def test_up_status_reuse_env_down(stack_env):
    started = _stack("up", stack_env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.count("healthy  [started by the stack") == 3, started.stdout
    pids = _pids(stack_env)
    assert set(pids) == {"postgres", "s3", "emulator"}

    status = _stack("status", stack_env)
    assert status.returncode == 0, status.stdout + status.stderr

    began = time.monotonic()
    again = _stack("up", stack_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - began < 2, "`up` on a running stack must only check it"
    assert _pids(stack_env) == pids, "a second `up` must reuse the running services"

    exported = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$({sys.executable} -m aep_local env)" && echo "$AEP_PG_DSN $AEP_S3_ENDPOINT $AEP_ADMIN_TOKEN"',
        ],
        env=stack_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    admin_token = (Path(stack_env["AEP_LOCAL_HOME"]) / "admin-token").read_text().strip()
    assert exported.stdout.split() == [
        f"postgresql://aep:aep@127.0.0.1:{stack_env['AEP_PG_PORT']}/aep",
        f"http://127.0.0.1:{stack_env['AEP_S3_PORT']}",
        admin_token,
    ]
    emulator = f"http://127.0.0.1:{stack_env['AEP_EMULATOR_PORT']}/_emulator/faults"
    assert requests.get(emulator, timeout=10).status_code == 401
    assert requests.get(emulator, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10).ok
    _assert_superuser_is_not_the_emulator_role(stack_env)

    stopped = _stack("down", stack_env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(_running(pid) for pid in pids.values()), stopped.stdout
    assert _stack("status", stack_env).returncode == 1


def test_exported_settings_are_still_the_stack_own(monkeypatch, stack_env):
    """After `eval "$(bin/stack env)"` the stack still runs its own services instead of treating them as external."""
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    for line in _stack("env", stack_env).stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(name, value.strip("'"))
    settings = StackSettings.from_env()
    assert not settings.pg_external and not settings.s3_external


def _assert_superuser_is_not_the_emulator_role(stack_env: dict[str, str]) -> None:
    port = stack_env["AEP_PG_PORT"]
    with psycopg.connect(f"postgresql://aep:aep@127.0.0.1:{port}/aep") as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'aep'").fetchone() == (
            False,
            True,
        )
    password = (Path(stack_env["AEP_LOCAL_HOME"]) / "pg" / postgres.SUPERUSER_PASSWORD_FILE).read_text().strip()
    with psycopg.connect(f"postgresql://{postgres.SUPERUSER}:{password}@127.0.0.1:{port}/postgres") as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_a_cluster_made_by_an_older_stack_is_migrated(stack_env, monkeypatch):
    """An older stack made `aep` the bootstrap superuser: `up` migrates the cluster, keeping the data."""
    home = Path(stack_env["AEP_LOCAL_HOME"])
    server = f"postgresql://aep:aep@127.0.0.1:{stack_env['AEP_PG_PORT']}"
    dsn = f"{server}/aep"
    old = postgres.LocalPostgres(home / "pg" / "data", home / "logs" / "postgres.log", dsn)
    with monkeypatch.context() as layout:
        # The old layout: `initdb -U aep` with the DSN's password, and no superuser-password file.
        layout.setattr(postgres, "SUPERUSER", "aep")
        layout.setattr(postgres.LocalPostgres, "_new_superuser_password", lambda self: "aep")
        old.start()
    try:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE aep")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE SCHEMA sbx_prod; CREATE TABLE sbx_prod.kept AS SELECT 42 AS n")
    finally:
        old.stop()

    started = _stack("up", stack_env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "migrating it" in started.stderr and "nothing is lost" in started.stderr, started.stderr
    _assert_superuser_is_not_the_emulator_role(stack_env)
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT n, pg_get_userbyid(relowner) FROM sbx_prod.kept, pg_class WHERE oid = 'sbx_prod.kept'::regclass"
        ).fetchone() == (42, "aep")
    again = _stack("up", stack_env)
    assert again.returncode == 0 and "migrat" not in again.stderr, again.stderr


def test_unhealthy_external_postgres_is_reported_not_started(stack_env):
    dsn = f"postgresql://aep:aep@127.0.0.1:{stack_env['AEP_PG_PORT']}/aep?application_name=external"
    result = _stack("up", {**stack_env, "AEP_PG_DSN": dsn})
    assert result.returncode == 2
    assert "external (AEP_PG_DSN is set)" in result.stderr, result.stderr
    assert not (Path(stack_env["AEP_LOCAL_HOME"]) / "pg").exists()


def test_missing_postgres_binaries_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(postgres, "DEBIAN_PG_ROOT", tmp_path)
    monkeypatch.setattr(postgres, "EMBEDDED_WHEELS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"apt-get install -y postgresql.*AEP_PG_DSN"):
        postgres.find_bindir()
