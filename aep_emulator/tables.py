"""Dataset tables: one PostgreSQL table per dataset, in the sandbox's schema, one column per XDM leaf.

Columns are the dotted leaf paths, quoted (``"web.webPageDetails.URL"``), plus the system columns
``"_acp_batchid"`` and ``"_acp_system_metadata.ingestTime"`` that batch loads fill.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors

from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.store import Store
from aep_emulator.xdm import Field, pg_type

BATCH_ID_COLUMN = "_acp_batchid"
INGEST_TIME_COLUMN = "_acp_system_metadata.ingestTime"
SYSTEM_COLUMNS = (BATCH_ID_COLUMN, INGEST_TIME_COLUMN)

_MAX_IDENT = 63
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class TableError(Exception):
    """A dataset table cannot be created or named as asked."""


def qualified(sandbox: str, table: str) -> str:
    """``sbx_<sandbox>."<table>"``, ready for SQL."""
    return f"{sandbox_schema(sandbox)}.{quote_ident(table)}"


def sanitize_table_name(name: str) -> str:
    """A Query Service table name from a dataset name: lower case, ``[a-z0-9_]``, not digit-led.

    :param name: the dataset name.
    """
    base = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"
    if base[0].isdigit():
        base = "_" + base
    return base[:_MAX_IDENT]


def validate_table_name(table: str) -> None:
    """Raise TableError unless ``table`` is a plain lower-case SQL identifier."""
    if not _TABLE_NAME.match(table):
        raise TableError(
            f"table name {table!r} is not valid; use 1-63 characters of [a-z0-9_] not starting with a digit"
        )


def _create(conn: psycopg.Connection, sandbox: str, table: str, fields: Iterable[Field]) -> None:
    columns = [f"{quote_ident(f.path)} {pg_type(f.xdm_type)}" for f in fields]
    columns += [f"{quote_ident(BATCH_ID_COLUMN)} text NOT NULL", f"{quote_ident(INGEST_TIME_COLUMN)} bigint NOT NULL"]
    conn.execute(f"CREATE TABLE {qualified(sandbox, table)} ({', '.join(columns)})")


def create_table(conn: psycopg.Connection, sandbox: str, table: str, fields: list[Field]) -> None:
    """Create a dataset's table with exactly this name.

    :param conn: connection whose transaction the DDL joins.
    :param sandbox: the dataset's sandbox.
    :param table: table name (validated).
    :param fields: the schema's leaf fields.
    :raises TableError: when the name is invalid or taken.
    """
    validate_table_name(table)
    try:
        with conn.transaction():
            _create(conn, sandbox, table, fields)
    except pg_errors.DuplicateTable:
        raise TableError(f"table {table!r} already exists in sandbox {sandbox}; choose another name") from None


def create_unique_table(conn: psycopg.Connection, sandbox: str, base: str, fields: list[Field]) -> str:
    """Create a table named ``base``, or ``base_1``, ``base_2``... when taken; return the name used.

    Trying the CREATE (rather than checking first) keeps two concurrent creates from picking one name.
    """
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"_{attempt}"
        table = base[: _MAX_IDENT - len(suffix)] + suffix
        try:
            with conn.transaction():
                _create(conn, sandbox, table, fields)
            return table
        except pg_errors.DuplicateTable:
            continue
    raise TableError(f"no free table name derived from {base!r}; give the dataset a more distinctive name")


# What, on a table a sandbox's role owns (a CTAS table), would run that role's code with the
# emulator's rights when the emulator reads or writes the table: views and other relation kinds,
# row-level security, rules, triggers, defaults and generated columns, CHECK constraints, index
# expressions and predicates, columns of types outside pg_catalog (domains), inheritance children.
_USER_CODE = """
SELECT c.relkind <> 'r', c.relrowsecurity, c.relhasrules,
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),
       EXISTS (SELECT 1 FROM pg_attrdef d WHERE d.adrelid = c.oid),
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'c'),
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)),
       EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 AND ty.typnamespace <> 'pg_catalog'::regnamespace),
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhparent = c.oid)
FROM pg_class c WHERE c.oid = to_regclass(%s) AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
"""
_USER_CODE_KINDS = (
    "is not a plain table",
    "has row-level security",
    "has rules",
    "has triggers",
    "has column defaults or generated columns",
    "has CHECK constraints",
    "has expression or partial indexes",
    "has columns of user-defined types",
    "has inheritance children",
)


def check_inert(conn: psycopg.Connection, sandbox: str, table: str) -> None:
    """Raise TableError when reading or writing ``table`` would run code a sandbox's role put there.

    Tables the emulator created are its own and pass at once; a CTAS table passes while it is a
    plain table of built-in types, as CTAS makes it.
    """
    name = qualified(sandbox, table)
    row = conn.execute(_USER_CODE, (name,)).fetchone()
    found = [kind for kind, present in zip(_USER_CODE_KINDS, row or (), strict=False) if present]
    if found:
        raise TableError(
            f"table {table!r} in sandbox {sandbox} {' and '.join(found)}; the emulator reads and loads only "
            "plain tables: drop it and create it again with CREATE TABLE ... AS SELECT"
        )


def drop_table(conn: psycopg.Connection, sandbox: str, table: str) -> None:
    """Drop a dataset's table if it exists."""
    conn.execute(f"DROP TABLE IF EXISTS {qualified(sandbox, table)}")


def delete_batch_rows(conn: psycopg.Connection, sandbox: str, table: str, batch_ids: list[str]) -> int:
    """Delete the rows that batches loaded (replay, REVERT); return how many went."""
    if not batch_ids:
        return 0
    check_inert(conn, sandbox, table)
    cur = conn.execute(
        f"DELETE FROM {qualified(sandbox, table)} WHERE {quote_ident(BATCH_ID_COLUMN)} = ANY(%s)", (batch_ids,)
    )
    return cur.rowcount


class _ConnectionDatabase:
    """A stand-in for :class:`~aep_emulator.db.Database` that hands out one open connection."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        yield self.conn


def transactional_store(conn: psycopg.Connection) -> Store:
    """A Store whose reads and writes join ``conn``'s transaction.

    A table change (load, replay, drop) and the resource documents describing it then commit or roll
    back together.
    """
    return Store(_ConnectionDatabase(conn))
