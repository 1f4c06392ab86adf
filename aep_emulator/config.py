"""Emulator and local-stack settings, read from ``AEP_*`` environment variables.

One place defines every default, so the local stack, the emulator, docker-compose and the
tests agree on ports, credentials and names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Everything the emulator needs to know about its environment."""

    home: Path = field(default_factory=lambda: Path(_env("AEP_LOCAL_HOME", str(PROJECT_ROOT / ".local"))))
    host: str = field(default_factory=lambda: _env("AEP_EMULATOR_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("AEP_EMULATOR_PORT", "8765")))
    qs_port: int = field(default_factory=lambda: int(_env("AEP_QS_PORT", "55433")))
    # PostgreSQL holding the emulator's state and the Query Service tables.
    pg_dsn: str = field(default_factory=lambda: _env("AEP_PG_DSN", "postgresql://aep:aep@127.0.0.1:55432/aep"))
    # S3-compatible storage: batch files, dataset exports, activation files.
    s3_endpoint: str = field(default_factory=lambda: _env("AEP_S3_ENDPOINT", "http://127.0.0.1:8333"))
    # AWS-shaped keys: AEP's S3 destination connections validate the key format, and the local
    # pipeline hands the same keys to the emulator's S3 destination.
    s3_access_key: str = field(default_factory=lambda: _env("AEP_S3_ACCESS_KEY", "AEPLOCALSTACKKEY2345"))
    s3_secret_key: str = field(
        default_factory=lambda: _env("AEP_S3_SECRET_KEY", "aeplocalsecret0aeplocalsecret0aeplocal00")
    )
    s3_region: str = field(default_factory=lambda: _env("AEP_S3_REGION", "us-east-1"))
    # Bucket where the emulator keeps uploaded batch files (AEP's own staging area).
    staging_bucket: str = field(default_factory=lambda: _env("AEP_STAGING_BUCKET", "aep-staging"))
    # Bucket that plays the customer's S3 destination (dataset exports, audience activation).
    destination_bucket: str = field(default_factory=lambda: _env("AEP_DESTINATION_BUCKET", "aep-destination"))
    # Identity of the one emulated organisation and its API client.
    org_id: str = field(default_factory=lambda: _env("AEP_ORG_ID", "LOCAL0000000000000000000@AdobeOrg"))
    tenant_id: str = field(default_factory=lambda: _env("AEP_TENANT_ID", "acme"))
    client_id: str = field(default_factory=lambda: _env("AEP_CLIENT_ID", "aep-local-client"))
    client_secret: str = field(default_factory=lambda: _env("AEP_CLIENT_SECRET", "aep-local-secret"))
    sandboxes: tuple[str, ...] = field(
        default_factory=lambda: tuple(s.strip() for s in _env("AEP_SANDBOXES", "prod,dev").split(",") if s.strip())
    )
    token_lifetime_s: int = field(default_factory=lambda: int(_env("AEP_TOKEN_LIFETIME_S", "86399")))
    # Seconds a batch stays in `staging` after COMPLETE, a query in SUBMITTED, a job in NEW...
    state_latency_s: float = field(default_factory=lambda: float(_env("AEP_STATE_LATENCY_S", "0.2")))
    # A new export flow answers "not ready" to ad-hoc runs for this long (AEP: ~10 min).
    export_not_ready_s: float = field(default_factory=lambda: float(_env("AEP_EXPORT_NOT_READY_S", "0")))
    # Interactive Query Service statement timeout (AEP: 10 min).
    qs_statement_timeout_s: int = field(default_factory=lambda: int(_env("AEP_QS_STATEMENT_TIMEOUT_S", "600")))
    # Interactive Query Service returns at most this many rows of a result (AEP: 50,000).
    qs_row_cap: int = field(default_factory=lambda: int(_env("AEP_QS_ROW_CAP", "50000")))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def get_settings() -> Settings:
    """Settings from the current environment (read anew each call: tests change the env)."""
    return Settings()
