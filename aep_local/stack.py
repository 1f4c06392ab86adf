"""The local stack: settings, the three services, and ``up`` / ``status`` / ``down`` / ``env``."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import requests
from pydantic_settings import BaseSettings, SettingsConfigDict

from aep_emulator.config import PROJECT_ROOT, Settings, default_settings, get_settings
from aep_local import postgres, s3
from aep_local.processes import PidFile, StackError, port_in_use, spawn, stop_process_group, wait_healthy

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60


ADMIN_TOKEN_FILE = "admin-token"


class StackEnvironment(BaseSettings):
    """The stack's own ``AEP_*`` variables; unset ones mean "the stack's own service"."""

    model_config = SettingsConfigDict(env_prefix="AEP_", extra="ignore")

    # Ports of the stack's own PostgreSQL and SeaweedFS (default: those of config.py's DSN / endpoint).
    pg_port: int | None = None
    s3_port: int | None = None
    # Another server's DSN / endpoint makes that service external (only checked).
    pg_dsn: str | None = None
    s3_endpoint: str | None = None
    # The pipeline's artefact bucket (features, models, scores, reports).
    propensity_bucket: str = "aep-propensity"
    # The emulator's admin token; default: one generated into AEP_LOCAL_HOME/admin-token.
    admin_token: str | None = None


def _admin_token(home: Path) -> str:
    """The stack's admin token, made on first use (0600: only this user may drive the emulator's faults)."""
    path = home / ADMIN_TOKEN_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return parts._replace(
        netloc=f"{userinfo}@{parts.hostname}:{port}" if userinfo else f"{parts.hostname}:{port}"
    ).geturl()


@dataclass(frozen=True)
class StackSettings:
    """What the stack runs and where: the emulator's settings plus the stack's own choices.

    PostgreSQL and S3 are the stack's own (started when not running) unless ``AEP_PG_DSN`` /
    ``AEP_S3_ENDPOINT`` name another server, which is then only checked.
    """

    aep: Settings
    pg_port: int
    s3_port: int
    pg_external: bool
    s3_external: bool
    # The pipeline's artefact bucket (features, models, scores, reports).
    propensity_bucket: str

    @classmethod
    def from_env(cls) -> StackSettings:
        # config.py's defaults, whatever AEP_* says: they tell the stack's own services from external ones.
        defaults = default_settings()
        env = StackEnvironment()
        pg_port = env.pg_port or urlsplit(defaults.pg_dsn).port
        s3_port = env.s3_port or urlsplit(defaults.s3_endpoint).port
        own_dsn = _with_port(defaults.pg_dsn, pg_port)
        own_endpoint = _with_port(defaults.s3_endpoint, s3_port)
        # A DSN / endpoint equal to the stack's own (e.g. exported by `bin/stack env`) is not external.
        pg_dsn = env.pg_dsn or own_dsn
        s3_endpoint = env.s3_endpoint or own_endpoint
        aep = get_settings()
        admin_token = env.admin_token or _admin_token(aep.home)
        return cls(
            aep=aep.model_copy(update={"pg_dsn": pg_dsn, "s3_endpoint": s3_endpoint, "admin_token": admin_token}),
            pg_port=pg_port,
            s3_port=s3_port,
            pg_external=pg_dsn != own_dsn,
            s3_external=s3_endpoint != own_endpoint,
            propensity_bucket=env.propensity_bucket,
        )

    @property
    def home(self) -> Path:
        return self.aep.home

    @property
    def buckets(self) -> tuple[str, ...]:
        return (self.aep.staging_bucket, self.aep.destination_bucket, self.propensity_bucket)

    def exports(self) -> dict[str, str]:
        """The AEP_* variables that make every tool (emulator, pipeline, tests) use this stack."""
        aep = self.aep
        return {
            "AEP_LOCAL_HOME": str(aep.home),
            "AEP_PG_DSN": aep.pg_dsn,
            "AEP_S3_ENDPOINT": aep.s3_endpoint,
            "AEP_S3_ACCESS_KEY": aep.s3_access_key,
            "AEP_S3_SECRET_KEY": aep.s3_secret_key,
            "AEP_S3_REGION": aep.s3_region,
            "AEP_STAGING_BUCKET": aep.staging_bucket,
            "AEP_DESTINATION_BUCKET": aep.destination_bucket,
            "AEP_PROPENSITY_BUCKET": self.propensity_bucket,
            "AEP_EMULATOR_HOST": aep.host,
            "AEP_EMULATOR_PORT": str(aep.port),
            "AEP_QS_PORT": str(aep.qs_port),
            "AEP_ORG_ID": aep.org_id,
            "AEP_TENANT_ID": aep.tenant_id,
            "AEP_CLIENT_ID": aep.client_id,
            "AEP_CLIENT_SECRET": aep.client_secret,
            "AEP_SANDBOXES": ",".join(aep.sandboxes),
            "AEP_ADMIN_TOKEN": aep.admin_token,
        }

    def airflow_connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` for the stack's emulator and S3 (first sandbox)."""
        return airflow_connections(self.aep, self.aep.sandboxes[0])


def airflow_connections(aep: Settings, sandbox: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` JSON for the provider's ``aep_default`` and the ``aep_s3`` connection.

    :param aep: the emulator's settings (URL, credentials, S3).
    :param sandbox: the sandbox the ``aep_default`` connection works in.
    """
    aep_default = {
        "conn_type": "aep",
        "host": aep.base_url,
        "login": aep.client_id,
        "password": aep.client_secret,
        "extra": {
            "org_id": aep.org_id,
            "sandbox": sandbox,
            "ims_url": f"{aep.base_url}/ims/token/v3",
            "scopes": "openid,AdobeID,read_organizations",
            # The emulator's wire endpoint speaks no TLS (it runs the same Spark SQL as AEP).
            "qs_sslmode": "disable",
        },
    }
    aep_s3 = {
        "conn_type": "aws",
        "login": aep.s3_access_key,
        "password": aep.s3_secret_key,
        "extra": {
            "endpoint_url": aep.s3_endpoint,
            "region_name": aep.s3_region,
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        },
    }
    return {
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(aep_default, separators=(",", ":")),
        "AIRFLOW_CONN_AEP_S3": json.dumps(aep_s3, separators=(",", ":")),
    }


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    origin: str
    problem: str | None

    @property
    def healthy(self) -> bool:
        return self.problem is None


class Service:
    """One service of the stack: how to check it and, unless external, start and stop it."""

    name: str
    # A word of the process's command line, so a recycled PID is never taken for ours.
    process_marker: str
    # Whether the service is someone else's (only checked), and the variable that made it so.
    external = False
    external_variable = ""
    address: str
    port: int
    # The variable that moves the service to another port.
    port_variable: str

    def __init__(self, stack: StackSettings) -> None:
        self.stack = stack
        self.pid_file = PidFile(stack.home / "run" / f"{self.name}.pid", self.process_marker)
        self.log_path = stack.home / "logs" / f"{self.name}.log"

    def check(self) -> str | None:
        """None when healthy, else the problem."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, pid: int) -> None:
        stop_process_group(pid)

    def after_healthy(self) -> None:
        """Work to do once the service answers (e.g. create buckets)."""

    def status(self) -> ServiceStatus:
        problem = self.check()
        pid = self.pid_file.live_pid()
        if self.external:
            origin = f"external ({self.external_variable})"
        elif pid is not None:
            origin = f"started by the stack (pid {pid})"
        else:
            origin = "running, not started by the stack" if problem is None else "not running"
        return ServiceStatus(self.name, self.address, origin, problem)

    def up(self) -> None:
        """Reuse the service if it is healthy, else start it (unless external)."""
        problem = self.check()
        if problem is None:
            self.after_healthy()
            return
        if self.external:
            raise StackError(
                f"{self.name} at {self.address} is not healthy: {problem}. It is external ({self.external_variable} is set): "
                f"start it, fix the variable, or unset it to let the stack run its own"
            )
        pid = self.pid_file.live_pid()
        if pid is not None:
            log.warning("%s (pid %s) runs but is not healthy (%s): restarting it", self.name, pid, problem)
            self.stop(pid)
            self.pid_file.remove()
        elif port_in_use("127.0.0.1", self.port):
            raise StackError(
                f"port {self.port} is in use, but not by a healthy {self.name} ({problem}): stop what uses it, "
                f"or set {self.port_variable} to a free port"
            )
        log.info("starting %s on %s (log %s)", self.name, self.address, self.log_path)
        self.start()
        self.after_healthy()

    def down(self) -> str:
        """Stop the service if the stack started it; say what was done."""
        pid = self.pid_file.live_pid()
        if pid is None:
            return f"{self.name}: not started by the stack, left alone"
        self.stop(pid)
        self.pid_file.remove()
        return f"{self.name}: stopped (pid {pid})"

    def _spawn_and_wait(self, argv: list[str], env: dict[str, str]) -> None:
        # From the project root, so `python -m aep_emulator` imports without an installed package.
        process = spawn(argv, self.log_path, env, cwd=PROJECT_ROOT)
        self.pid_file.write(process.pid)
        try:
            wait_healthy(self.name, self.check, self.log_path, START_TIMEOUT_S, alive=lambda: process.poll() is None)
        except StackError:
            stop_process_group(process.pid)
            self.pid_file.remove()
            raise


class PostgresService(Service):
    name = "postgres"
    external_variable = "AEP_PG_DSN"
    port_variable = "AEP_PG_PORT"
    process_marker = "postgres"

    def __init__(self, stack: StackSettings) -> None:
        super().__init__(stack)
        self.external = stack.pg_external
        url = urlsplit(stack.aep.pg_dsn)
        self.port = url.port or 5432
        # The password stays out of status lines.
        self.address = url._replace(netloc=f"{url.username}@{url.hostname}:{self.port}").geturl()
        self.server = postgres.LocalPostgres(stack.home / "pg" / "data", self.log_path, stack.aep.pg_dsn)
        self._started = False

    def check(self) -> str | None:
        return postgres.check(self.stack.aep.pg_dsn)

    def start(self) -> None:
        self.pid_file.write(self.server.start())
        self._started = True

    def after_healthy(self) -> None:
        # The stack's own cluster: its roles once it is new, and a migration when an older stack made it.
        if not self.external and self.server.exists and (self._started or not self.server.is_current):
            self.server.prepare_owner()

    def stop(self, pid: int) -> None:
        self.server.stop()


class S3Service(Service):
    name = "s3"
    external_variable = "AEP_S3_ENDPOINT"
    port_variable = "AEP_S3_PORT"
    process_marker = "weed"

    def __init__(self, stack: StackSettings) -> None:
        super().__init__(stack)
        self.external = stack.s3_external
        self.address = stack.aep.s3_endpoint
        self.port = stack.s3_port

    @cached_property
    def client(self):
        aep = self.stack.aep
        return s3.s3_client(aep.s3_endpoint, aep.s3_access_key, aep.s3_secret_key, aep.s3_region)

    def check(self) -> str | None:
        return s3.check(self.client)

    def start(self) -> None:
        data_dir = self.stack.home / "s3"
        data_dir.mkdir(parents=True, exist_ok=True)
        aep = self.stack.aep
        # With keys in its environment SeaweedFS checks every request's signature against them.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": aep.s3_access_key, "AWS_SECRET_ACCESS_KEY": aep.s3_secret_key}
        self._spawn_and_wait(s3.seaweedfs_argv(data_dir, self.port), env)

    def after_healthy(self) -> None:
        s3.ensure_buckets(self.client, self.stack.buckets)


class EmulatorService(Service):
    name = "emulator"
    port_variable = "AEP_EMULATOR_PORT"
    process_marker = "aep_emulator"

    def __init__(self, stack: StackSettings) -> None:
        super().__init__(stack)
        self.address = stack.aep.base_url
        self.port = stack.aep.port

    def check(self) -> str | None:
        try:
            response = requests.get(f"{self.address}/_emulator/health", timeout=3)
        except requests.RequestException as exc:
            return f"no answer ({type(exc).__name__})"
        return None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"

    def start(self) -> None:
        env = {**os.environ, **self.stack.exports()}
        self._spawn_and_wait([sys.executable, "-m", "aep_emulator"], env)


AIRFLOW_DATABASE = "airflow"


def airflow_settings(stack: StackSettings) -> dict[str, str]:
    """``AIRFLOW__*`` settings for a local Airflow on this stack: its metadata in the stack's
    PostgreSQL (database ``airflow``), the project's DAGs and plugins, loopback only, small pools."""
    metadata = urlsplit(stack.aep.pg_dsn)._replace(scheme="postgresql+psycopg", path=f"/{AIRFLOW_DATABASE}")
    api_port = os.environ.get("AIRFLOW__API__PORT", "8080")
    return {
        "AIRFLOW_HOME": str(stack.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Standalone forks `parallelism` workers up front; two cores need few.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.geturl(),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": api_port,
        # Task processes reach the execution API on the API server's own port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    }


class Stack:
    """The three services, in start order."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings.from_env()
        self.services: tuple[Service, ...] = (
            PostgresService(self.settings),
            S3Service(self.settings),
            EmulatorService(self.settings),
        )

    def up(self) -> list[ServiceStatus]:
        for directory in ("logs", "run"):
            (self.settings.home / directory).mkdir(parents=True, exist_ok=True)
        for service in self.services:
            service.up()
        return self.status()

    def status(self) -> list[ServiceStatus]:
        return [service.status() for service in self.services]

    def down(self) -> list[str]:
        # The emulator first: it holds connections to the others.
        return [service.down() for service in reversed(self.services)]

    def env_lines(self) -> list[str]:
        """``export`` lines for ``eval "$(bin/stack env)"``."""
        variables = {
            **self.settings.exports(),
            **self.settings.airflow_connections(),
            **airflow_settings(self.settings),
        }
        return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
