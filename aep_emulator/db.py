"""PostgreSQL access: one connection pool for the emulator's state and its Query Service tables."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

META_SCHEMA = "aep_meta"

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {META_SCHEMA};
CREATE TABLE IF NOT EXISTS {META_SCHEMA}.resources (
    sandbox    text   NOT NULL,
    kind       text   NOT NULL,
    id         text   NOT NULL,
    name       text,
    doc        jsonb  NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (sandbox, kind, id)
);
CREATE INDEX IF NOT EXISTS resources_by_name ON {META_SCHEMA}.resources (sandbox, kind, name);
CREATE TABLE IF NOT EXISTS {META_SCHEMA}.tokens (
    token      text   PRIMARY KEY,
    client_id  text   NOT NULL,
    org_id     text   NOT NULL,
    issued_ms  bigint NOT NULL,
    expires_ms bigint NOT NULL
);
"""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def sandbox_schema(sandbox: str) -> str:
    """The PostgreSQL schema holding a sandbox's Query Service tables."""
    name = "sbx_" + re.sub(r"[^a-z0-9_]", "_", sandbox.lower())
    if not _IDENT.match(name):
        raise ValueError(f"sandbox name {sandbox!r} cannot be mapped to a PostgreSQL schema")
    return name


def quote_ident(name: str) -> str:
    """Quote a PostgreSQL identifier (XDM leaf paths such as ``_acme.userid`` keep their dots)."""
    return '"' + name.replace('"', '""') + '"'


# The owner's sessions resolve names in pg_catalog only: sandbox roles create functions and
# operators in their schemas, and none of them may ever be picked up by the emulator's own SQL.
OWNER_OPTIONS = "-c search_path=pg_catalog"


class Database:
    """A small wrapper over a psycopg pool of the owner role's connections.

    :param dsn: libpq connection string of the PostgreSQL server.
    """

    def __init__(self, dsn: str, max_size: int = 8) -> None:
        self.dsn = dsn
        self.pool = ConnectionPool(
            dsn, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": False, "options": OWNER_OPTIONS}
        )

    def open(self, sandboxes: tuple[str, ...]) -> None:
        self.pool.open(wait=True, timeout=30)
        with self.connection() as conn:
            conn.execute(_DDL)
            for sandbox in sandboxes:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sandbox_schema(sandbox)}")

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside a transaction, committed on success."""
        with self.pool.connection() as conn:
            yield conn
