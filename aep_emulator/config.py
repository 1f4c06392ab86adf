"""Emulator and local-stack settings, read from ``AEP_*`` environment variables (pydantic-settings).

One place defines every default, so the local stack, the emulator, docker-compose and the
tests agree on ports, credentials and names. A field ``x`` is read from ``AEP_X``, except
``home`` (``AEP_LOCAL_HOME``) and ``host`` / ``port`` (``AEP_EMULATOR_HOST`` / ``AEP_EMULATOR_PORT``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env_name(name: str) -> AliasChoices:
    """Read a field from ``AEP_<name>`` instead of ``AEP_<field>``."""
    return AliasChoices(name)


class Settings(BaseSettings):
    """Everything the emulator needs to know about its environment (immutable: copy with
    ``settings.model_copy(update={...})``)."""

    model_config = SettingsConfigDict(env_prefix="AEP_", frozen=True, extra="ignore", populate_by_name=True)

    home: Path = Field(PROJECT_ROOT / ".local", validation_alias=_env_name("AEP_LOCAL_HOME"))
    host: str = Field("127.0.0.1", validation_alias=_env_name("AEP_EMULATOR_HOST"))
    port: int = Field(8765, validation_alias=_env_name("AEP_EMULATOR_PORT"))
    qs_port: int = 55433
    # PostgreSQL holding the emulator's state and the Query Service tables. Its user owns the
    # emulator's objects and creates one login role per sandbox for Query Service clients (it needs
    # CREATEROLE, not superuser; docs/architecture.md#query-service-confinement).
    pg_dsn: str = "postgresql://aep:aep@127.0.0.1:55432/aep"
    # S3-compatible storage: batch files, dataset exports, activation files.
    s3_endpoint: str = "http://127.0.0.1:8333"
    # AWS-shaped keys: AEP's S3 destination connections validate the key format, and the local
    # pipeline hands the same keys to the emulator's S3 destination.
    s3_access_key: str = "AEPLOCALSTACKKEY2345"
    s3_secret_key: str = "aeplocalsecret0aeplocalsecret0aeplocal00"
    s3_region: str = "us-east-1"
    # Bucket where the emulator keeps uploaded batch files (AEP's own staging area).
    staging_bucket: str = "aep-staging"
    # Bucket that plays the customer's S3 destination (dataset exports, audience activation).
    destination_bucket: str = "aep-destination"
    # Identity of the one emulated organisation and its API client.
    org_id: str = "LOCAL0000000000000000000@AdobeOrg"
    tenant_id: str = "acme"
    client_id: str = "aep-local-client"
    client_secret: str = "aep-local-secret"
    sandboxes: Annotated[tuple[str, ...], NoDecode] = ("prod", "dev")
    token_lifetime_s: int = 86399
    # Seconds a batch stays in `staging` after COMPLETE, a query in SUBMITTED, a job in NEW...
    state_latency_s: float = 0.2
    # A new export flow answers "not ready" to ad-hoc runs for this long (AEP: ~10 min).
    export_not_ready_s: float = 0
    # Interactive Query Service statement timeout (AEP: 10 min).
    qs_statement_timeout_s: int = 600
    # Interactive Query Service returns at most this many rows of a result (AEP: 50,000).
    qs_row_cap: int = 50000
    # Bearer token the emulator-only routes (/_emulator/*: faults, token expiry) require; empty turns
    # them off. bin/stack generates one (AEP_LOCAL_HOME/admin-token) and `bin/stack env` prints it.
    admin_token: str = ""
    # Throttling like AEP's gateway: calls per minute per API client and route class, beyond which
    # the emulator answers 429 with Retry-After (docs/aep-behaviour.md#throttling). Off only for
    # benchmarks (AEP_THROTTLE=false).
    throttle: bool = True
    throttle_batch_creates_per_min: int = 138
    throttle_writes_per_min: int = 1200
    throttle_reads_per_min: int = 6000

    @field_validator("sandboxes", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        return value

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def get_settings() -> Settings:
    """Settings from the current environment (read anew each call: tests change the env)."""
    return Settings()


def default_settings() -> Settings:
    """config.py's defaults, whatever the environment says."""
    return Settings.model_construct()
