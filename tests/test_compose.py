"""docker-compose.yaml agrees with the local stack (no Docker engine needed: the YAML is only read)."""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

import pytest
import yaml

from aep_emulator.config import PROJECT_ROOT
from aep_local import postgres
from aep_local.stack import AIRFLOW_DATABASE, StackSettings, airflow_connections, airflow_settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
PROJECT_IMAGE = "aep-propensity:local"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOTS = ("create-buckets", "airflow-init")
# Inside the compose network the services reach each other by service name.
COMPOSE_EMULATOR_HOST, COMPOSE_S3_ENDPOINT = "aep-emulator", "http://minio:9000"


@pytest.fixture
def stack(monkeypatch) -> StackSettings:
    """The local stack on config.py's defaults, whatever AEP_* / AIRFLOW__API__PORT the shell has."""
    for name in [name for name in os.environ if name.startswith("AEP_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("AIRFLOW__API__PORT", raising=False)
    return StackSettings.from_env()


def _workdir() -> str:
    return re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE, re.MULTILINE).group(1)


def _health_command(name: str) -> str:
    test = SERVICES[name]["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


# --- services, images, health ---------------------------------------------------------------------


def test_services():
    assert set(SERVICES) == {"postgres", "minio", "create-buckets", "aep-emulator", "airflow-init", *AIRFLOW_SERVICES}


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(ONE_SHOTS)))
def test_long_running_services_have_health_checks(name):
    check = SERVICES[name]["healthcheck"]
    assert check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name
    assert check.get("retries", 0) > 0


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("aep-emulator", "http://127.0.0.1:8765/_emulator/health"),
        ("airflow-apiserver", "http://127.0.0.1:8080/api/v2/"),
        ("airflow-scheduler", "http://127.0.0.1:8974/health"),
        ("airflow-dag-processor", "--job-type DagProcessorJob"),
        ("airflow-triggerer", "--job-type TriggererJob"),
    ],
)
def test_health_checks_probe_the_component(name, probe):
    assert probe in _health_command(name)


@pytest.mark.parametrize("name", ONE_SHOTS)
def test_one_shots_do_not_restart(name):
    assert SERVICES[name]["restart"] == "no"
    assert "healthcheck" not in SERVICES[name]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name):
    image = SERVICES[name]["image"]
    if "build" in SERVICES[name]:
        assert image == PROJECT_IMAGE
        return
    repository, _, tag = image.partition(":")
    assert tag and "latest" not in tag, image
    if name == "postgres":
        assert tag.startswith("15."), "the local stack's Debian server is PostgreSQL 15"


def test_dockerfile_base_image_is_pinned():
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE).group(1)
    _, _, tag = base.partition(":")
    assert re.match(r"\d+\.\d+\.\d+-", tag), f"pin the base image to a patch release: {base}"
    assert re.search(r"uv==\d", DOCKERFILE), "pin uv"


@pytest.mark.parametrize("name", ["aep-emulator", "airflow-init", *AIRFLOW_SERVICES])
def test_project_services_use_the_project_image(name):
    """The emulator and Airflow run the image with the locked requirements and this project installed."""
    build = SERVICES[name]["build"]
    assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).resolve() == PROJECT_ROOT / "docker" / "Dockerfile"
    assert SERVICES[name]["image"] == PROJECT_IMAGE


def test_dockerfile_installs_the_project_and_its_lock():
    assert "requirements.txt" in DOCKERFILE
    assert re.search(r"uv pip install .*-e \.", DOCKERFILE), "the project (provider entry point) must be installed"
    assert "--compile-bytecode" in DOCKERFILE
    # The provider's entry point is what registers the `aep` connection type in Airflow.
    assert "apache_airflow_provider" in (PROJECT_ROOT / "pyproject.toml").read_text()
    assert re.search(r"^USER\s+aep", DOCKERFILE, re.MULTILINE), "the services do not run as root"


def test_commands():
    assert SERVICES["aep-emulator"]["command"] == ["python", "-m", "aep_emulator"]
    assert SERVICES["airflow-init"]["command"] == ["python", "-m", "aep_local.airflow_ui", "prepare"]
    assert {name: SERVICES[name]["command"] for name in AIRFLOW_SERVICES} == {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
    }


# --- start order ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_a_condition(name):
    for dependency, spec in (SERVICES[name].get("depends_on") or {}).items():
        assert dependency in SERVICES, (name, dependency)
        expected = "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
        assert spec["condition"] == expected, (name, dependency)


def test_start_order():
    depends = {name: set(service.get("depends_on") or {}) for name, service in SERVICES.items()}
    assert depends["airflow-init"] == {"postgres"}
    assert depends["aep-emulator"] == {"postgres", "create-buckets"}
    assert depends["create-buckets"] == {"minio"}
    for name in AIRFLOW_SERVICES:
        assert "airflow-init" in depends[name], name
    # Tasks run in the scheduler's workers and the triggerer: they need the execution API and the emulator.
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert {"airflow-apiserver", "aep-emulator"} <= depends[name], name


# --- ports and credentials --------------------------------------------------------------------------


def test_ports_match_the_local_stack_and_stay_on_loopback(stack):
    aep = stack.aep
    assert SERVICES["postgres"]["ports"] == [f"127.0.0.1:{stack.pg_port}:5432"]
    assert SERVICES["minio"]["ports"] == [f"127.0.0.1:{stack.s3_port}:9000"]
    assert SERVICES["aep-emulator"]["ports"] == [
        f"127.0.0.1:{aep.port}:{aep.port}",
        f"127.0.0.1:{aep.qs_port}:{aep.qs_port}",
    ]
    api_port = airflow_settings(stack)["AIRFLOW__API__PORT"]
    assert SERVICES["airflow-apiserver"]["ports"] == [f"127.0.0.1:{api_port}:{api_port}"]
    environment = SERVICES["aep-emulator"]["environment"]
    assert (environment["AEP_EMULATOR_HOST"], environment["AEP_EMULATOR_PORT"], environment["AEP_QS_PORT"]) == (
        "0.0.0.0",
        str(aep.port),
        str(aep.qs_port),
    )
    published = [(name, port) for name, service in SERVICES.items() for port in service.get("ports") or []]
    assert all(str(port).startswith("127.0.0.1:") for _, port in published), published
    assert {name for name, _ in published} == {"postgres", "minio", "aep-emulator", "airflow-apiserver"}


def _postgres_init_sql() -> str:
    mounts = SERVICES["postgres"]["configs"]
    scripts = [mount for mount in mounts if mount["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert len(scripts) == 1 and scripts[0]["target"].endswith(".sql")
    return COMPOSE["configs"][scripts[0]["source"]]["content"]


def test_postgres_superuser_is_not_the_emulator_role(stack):
    """As in the local stack: the server's superuser is `postgres`; the DSN's role is created by the
    init script with the local stack's attributes (no SUPERUSER, CREATEROLE for the sandbox roles)."""
    local_pg = urlsplit(stack.aep.pg_dsn)
    postgres_env = SERVICES["postgres"]["environment"]
    assert postgres_env["POSTGRES_USER"] == postgres.SUPERUSER != local_pg.username
    assert "POSTGRES_DB" not in postgres_env, "the init script creates the database, owned by the DSN's role"
    sql = _postgres_init_sql()
    assert f"CREATE ROLE {local_pg.username} WITH {postgres.OWNER_ATTRIBUTES} PASSWORD '{local_pg.password}';" in sql
    assert f"CREATE DATABASE {local_pg.path.lstrip('/')} OWNER {local_pg.username};" in sql
    assert "NOSUPERUSER" in postgres.OWNER_ATTRIBUTES and "CREATEROLE" in postgres.OWNER_ATTRIBUTES


def test_emulator_admin_token_is_set():
    """Without a token the emulator's admin routes are off; compose sets a local one."""
    assert SERVICES["aep-emulator"]["environment"]["AEP_ADMIN_TOKEN"]


def test_credentials_match_the_local_stack(stack):
    aep = stack.aep
    local_pg = urlsplit(aep.pg_dsn)
    minio_env = SERVICES["minio"]["environment"]
    assert (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"], minio_env["MINIO_REGION"]) == (
        aep.s3_access_key,
        aep.s3_secret_key,
        aep.s3_region,
    )
    for name in ("aep-emulator", "airflow-init", *AIRFLOW_SERVICES):
        environment = SERVICES[name]["environment"]
        compose_pg = urlsplit(environment["AEP_PG_DSN"])
        assert (compose_pg.username, compose_pg.password, compose_pg.path) == (
            local_pg.username,
            local_pg.password,
            local_pg.path,
        ), name
        assert (compose_pg.hostname, compose_pg.port) == ("postgres", 5432), name
        assert environment["AEP_S3_ENDPOINT"] == COMPOSE_S3_ENDPOINT, name
        assert (environment["AEP_S3_ACCESS_KEY"], environment["AEP_S3_SECRET_KEY"], environment["AEP_S3_REGION"]) == (
            aep.s3_access_key,
            aep.s3_secret_key,
            aep.s3_region,
        ), name


def test_bucket_job_creates_the_stack_buckets(stack):
    job = SERVICES["create-buckets"]
    alias = next(name.removeprefix("MC_HOST_") for name in job["environment"] if name.startswith("MC_HOST_"))
    assert job["command"][:2] == ["mb", "--ignore-existing"]
    assert job["command"][2:] == [f"{alias}/{bucket}" for bucket in stack.buckets]
    assert SERVICES["aep-emulator"]["depends_on"]["create-buckets"]["condition"] == "service_completed_successfully"
    endpoint = urlsplit(job["environment"][f"MC_HOST_{alias}"])
    assert (endpoint.username, endpoint.password) == (stack.aep.s3_access_key, stack.aep.s3_secret_key)
    assert f"{endpoint.scheme}://{endpoint.hostname}:{endpoint.port}" == COMPOSE_S3_ENDPOINT


# --- Airflow --------------------------------------------------------------------------------------


def test_postgres_init_creates_the_airflow_database(stack):
    owner = urlsplit(stack.aep.pg_dsn).username
    assert re.search(rf"CREATE DATABASE {AIRFLOW_DATABASE} OWNER {owner};", _postgres_init_sql())


@pytest.mark.parametrize("name", ["airflow-init", *AIRFLOW_SERVICES])
def test_airflow_settings_match_the_local_stack(stack, name):
    """aep_local.stack.airflow_settings(), with the container's paths and the compose hosts."""
    environment = SERVICES[name]["environment"]
    workdir = _workdir()
    for key, local in airflow_settings(stack).items():
        compose = environment[key]
        if key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
            relative = os.path.relpath(local, PROJECT_ROOT)
            assert compose == f"{workdir}/{relative}", key
        elif key == "AIRFLOW_HOME":
            assert compose.startswith("/home/aep/"), "the runtime user's home (writable)"
        elif key == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            local_url, compose_url = urlsplit(local), urlsplit(compose)
            assert (compose_url.scheme, compose_url.username, compose_url.password, compose_url.path) == (
                local_url.scheme,
                local_url.username,
                local_url.password,
                f"/{AIRFLOW_DATABASE}",
            )
            assert (compose_url.hostname, compose_url.port) == ("postgres", 5432)
        elif key == "AIRFLOW__CORE__EXECUTION_API_SERVER_URL":
            assert compose == "http://airflow-apiserver:8080/execution/"
        elif key == "AIRFLOW__API__HOST":
            # Every interface inside the container; published on 127.0.0.1 only (checked above).
            assert compose == "0.0.0.0"
        else:
            assert compose == local, key


@pytest.mark.parametrize("name", ["airflow-init", *AIRFLOW_SERVICES])
def test_airflow_connections_match_the_local_stack(stack, name):
    """Same conn ids and extras as `bin/stack env`; only the hosts are the compose services'."""
    compose_aep = stack.aep.model_copy(update={"host": COMPOSE_EMULATOR_HOST, "s3_endpoint": COMPOSE_S3_ENDPOINT})
    expected = airflow_connections(compose_aep, stack.aep.sandboxes[0])
    environment = SERVICES[name]["environment"]
    assert {key for key in environment if key.startswith("AIRFLOW_CONN_")} == set(expected)
    for key, value in expected.items():
        assert json.loads(environment[key]) == json.loads(value), key
    aep_default = json.loads(environment["AIRFLOW_CONN_AEP_DEFAULT"])
    assert aep_default["host"] == f"http://aep-emulator:{stack.aep.port}"
    assert aep_default["extra"]["qs_sslmode"] == "disable"
    assert "qs_dialect" not in aep_default["extra"]  # one SQL text for AEP and the emulator
    aep_s3 = json.loads(environment["AIRFLOW_CONN_AEP_S3"])
    assert aep_s3["extra"]["endpoint_url"] == COMPOSE_S3_ENDPOINT
    assert aep_s3["extra"]["config_kwargs"] == {"s3": {"addressing_style": "path"}}


def test_airflow_services_share_one_configuration():
    """Secrets that sign the tasks' tokens must be the same in every component, as must the rest."""
    environments = [SERVICES[name]["environment"] for name in ("airflow-init", *AIRFLOW_SERVICES)]
    assert all(environment == environments[0] for environment in environments)
    environment = environments[0]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert environment[key], key
    assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert environment["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"


def test_airflow_logs_are_shared():
    """Workers (scheduler) and the triggerer write task logs the api-server reads."""
    mounts = {name: SERVICES[name].get("volumes") or [] for name in AIRFLOW_SERVICES}
    home = SERVICES["airflow-apiserver"]["environment"]["AIRFLOW_HOME"]
    for name, volumes in mounts.items():
        assert f"airflow-logs:{home}/logs" in volumes, name
    assert "airflow-logs" in COMPOSE["volumes"]
    assert f"{home}/logs" in DOCKERFILE, "the image creates the logs directory owned by the runtime user"
