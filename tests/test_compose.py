"""docker-compose.yaml agrees with the local stack (no Docker engine needed: the YAML is only read)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import yaml

from aep_emulator.config import PROJECT_ROOT
from aep_local.stack import StackSettings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]


@pytest.fixture
def stack(monkeypatch) -> StackSettings:
    """The local stack on config.py's defaults, whatever AEP_* the shell has."""
    for name in [name for name in os.environ if name.startswith("AEP_")]:
        monkeypatch.delenv(name)
    return StackSettings.from_env()


def test_services_and_health_checks():
    assert {"postgres", "minio", "create-buckets", "aep-emulator"} <= set(SERVICES)
    for name in ("postgres", "minio", "aep-emulator"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/_emulator/health" in " ".join(SERVICES["aep-emulator"]["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["postgres", "minio", "create-buckets"])
def test_images_are_pinned(name):
    repository, _, tag = SERVICES[name]["image"].partition(":")
    assert tag and tag != "latest" and "latest" not in tag, SERVICES[name]["image"]
    if name == "postgres":
        assert tag.startswith("15."), "the local stack's Debian server is PostgreSQL 15"


def test_emulator_is_built_from_the_project_dockerfile():
    build = SERVICES["aep-emulator"]["build"]
    assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).is_file()
    assert SERVICES["aep-emulator"]["command"] == ["python", "-m", "aep_emulator"]


def test_ports_match_the_local_stack_and_stay_on_loopback(stack):
    aep = stack.aep
    assert SERVICES["postgres"]["ports"] == [f"127.0.0.1:{stack.pg_port}:5432"]
    assert SERVICES["minio"]["ports"] == [f"127.0.0.1:{stack.s3_port}:9000"]
    assert SERVICES["aep-emulator"]["ports"] == [
        f"127.0.0.1:{aep.port}:{aep.port}",
        f"127.0.0.1:{aep.qs_port}:{aep.qs_port}",
    ]
    environment = SERVICES["aep-emulator"]["environment"]
    assert (environment["AEP_EMULATOR_HOST"], environment["AEP_EMULATOR_PORT"], environment["AEP_QS_PORT"]) == (
        "0.0.0.0",
        str(aep.port),
        str(aep.qs_port),
    )


def test_credentials_match_the_local_stack(stack):
    aep = stack.aep
    local_pg = urlsplit(aep.pg_dsn)
    postgres_env = SERVICES["postgres"]["environment"]
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"], postgres_env["POSTGRES_DB"]) == (
        local_pg.username,
        local_pg.password,
        local_pg.path.lstrip("/"),
    )
    minio_env = SERVICES["minio"]["environment"]
    assert (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"], minio_env["MINIO_REGION"]) == (
        aep.s3_access_key,
        aep.s3_secret_key,
        aep.s3_region,
    )
    emulator_env = SERVICES["aep-emulator"]["environment"]
    compose_pg = urlsplit(emulator_env["AEP_PG_DSN"])
    assert (compose_pg.username, compose_pg.password, compose_pg.path) == (
        local_pg.username,
        local_pg.password,
        local_pg.path,
    )
    assert (compose_pg.hostname, compose_pg.port) == ("postgres", 5432)
    assert emulator_env["AEP_S3_ENDPOINT"] == "http://minio:9000"
    assert (emulator_env["AEP_S3_ACCESS_KEY"], emulator_env["AEP_S3_SECRET_KEY"], emulator_env["AEP_S3_REGION"]) == (
        aep.s3_access_key,
        aep.s3_secret_key,
        aep.s3_region,
    )


def test_bucket_job_creates_the_stack_buckets(stack):
    job = SERVICES["create-buckets"]
    alias = next(name.removeprefix("MC_HOST_") for name in job["environment"] if name.startswith("MC_HOST_"))
    assert job["command"][:2] == ["mb", "--ignore-existing"]
    assert job["command"][2:] == [f"{alias}/{bucket}" for bucket in stack.buckets]
    assert SERVICES["aep-emulator"]["depends_on"]["create-buckets"]["condition"] == "service_completed_successfully"
