"""Running Query Service SQL scripts: the one executor behind the REST queries and the wire endpoint.

A script is split into statements (:mod:`aep_emulator.qs_sql`); each is translated from Spark SQL
(:mod:`aep_emulator.qs_translate`), checked by the statement guards (:mod:`aep_emulator.qs_guard`,
on the text PostgreSQL runs) and run in the caller's transaction on a session logged in as the
sandbox's role (:func:`connect`), with what AEP does besides: a CTAS creates a table whose Catalog
dataset is registered once the transaction has committed, a DROP TABLE deletes its dataset (both in
:func:`record_catalog_effects`, by the emulator's own role: the sandbox's cannot touch Catalog's
records), ``ANALYZE TABLE ... TABLESAMPLE`` creates a sample dataset, ``SET`` of a Query Service
setting is kept for the session, anonymous blocks run their ``SET @var = SELECT ...`` assignments
and fall back to their ``EXCEPTION WHEN OTHER THEN`` statements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import PGresult

from aep_emulator import qs_guard, qs_sql, qs_translate, xdm
from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.runtime import Emulator
from aep_emulator.services import catalog
from aep_emulator.tables import sanitize_table_name, transactional_store

log = logging.getLogger(__name__)

# Catalog tag marking datasets a QS CTAS created: only those may be dropped with DROP TABLE.
# Emulator-specific (AEP keeps this ownership internally); Catalog tags are free-form.
CREATED_BY_QUERY_TAG = "aep-emulator/pqs/createdByQuery"
# Catalog tag of a sample dataset (ANALYZE TABLE ... TABLESAMPLE): the table it samples, the rate.
SAMPLE_OF_TAG = "aep-emulator/pqs/sampleOf"
SAMPLE_RATE_TAG = "aep-emulator/pqs/sampleRate"
# Session settings Query Service takes with SET; the emulator accepts and keeps them. Objects are
# always returned as JSON, which is what auto_to_json asks for.
QS_SETTINGS = frozenset({"auto_to_json", "aqp", "drop_system_columns", "resolve_fallback_snapshot_on_failure"})


class QueryFailed(Exception):
    """A query ends FAILED with this error (raised for checks the emulator makes itself).

    :param code: SQLSTATE-style code, e.g. ``42501``.
    :param message: error message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class QueryKilled(Exception):
    """A cancel request reached the query between statements."""


@dataclass(frozen=True)
class CreatedTable:
    """A table a CTAS (or ANALYZE) created: its columns, the ``$id`` of the schema named in
    ``WITH (schema=...)``, and extra Catalog tags for its dataset."""

    fields: list[xdm.Field]
    schema_id: str | None
    tags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class StatementResult:
    """What one statement returned: its rows (a text-format result) or only its command tag."""

    tag: str
    result: PGresult | None = None


@dataclass
class Outcome:
    """What a script's transaction did: the last statement's row count, the tables its CTAS created,
    the datasets whose tables it dropped and each statement's result (the wire endpoint sends them)."""

    row_count: int = 0
    created_tables: dict[str, CreatedTable] = field(default_factory=dict)
    dropped_datasets: list[str] = field(default_factory=list)
    results: list[StatementResult] = field(default_factory=list)


@dataclass
class Session:
    """Query Service session state: ``SET`` settings and anonymous-block variables."""

    settings: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str | None] = field(default_factory=dict)


def connect(emu: Emulator, sandbox: str, **settings: str) -> psycopg.Connection:
    """A session logged in as the sandbox's role, in its schema, with AEP's statement timeout and
    UTC (Query Service's time zone), and these server settings besides."""
    timeout_ms = str(emu.settings.qs_statement_timeout_s * 1000)
    return psycopg.connect(emu.sandbox_conninfo(sandbox, statement_timeout=timeout_ms, TimeZone="UTC", **settings))


def table_columns(conn: psycopg.Connection, schema: str, tables: Iterable[str]) -> dict[str, list[str]]:
    """``{table: column names}`` of those tables that exist in ``schema``, in column order."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = ANY(%s) ORDER BY table_name, ordinal_position",
        (schema, list(tables)),
    ).fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def _table_fields(conn: psycopg.Connection, schema: str, table: str) -> list[xdm.Field]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return [xdm.Field(name, qs_sql.PG_TO_XDM.get(data_type, "string")) for name, data_type in rows]


def _table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{quote_ident(table)}",)).fetchone()
    return row[0] is not None


def _droppable_dataset(emu: Emulator, sandbox: str, table: str) -> str | None:
    """The id of the dataset a DROP TABLE removes (None: the table has no dataset).

    :raises QueryFailed: 42501 when the dataset was not created by Query Service.
    """
    dataset = catalog.find_dataset_by_table(emu, sandbox, table)
    if dataset is None:
        return None
    if CREATED_BY_QUERY_TAG not in (dataset.get("tags") or {}):
        raise QueryFailed("42501", f"Table {table} was not created by Query Service and cannot be dropped")
    return dataset["id"]


def _target_schema_id(emu: Emulator, sandbox: str, title: str | None) -> str | None:
    """``$id`` of the existing schema a CTAS names; None for an ad-hoc schema.

    :raises QueryFailed: 42704 when no schema has that title.
    """
    if title is None:
        return None
    schema = emu.store.find_by_name(sandbox, xdm.SCHEMA_KIND, title)
    if schema is None:
        raise QueryFailed("42704", f"Schema with title '{title}' not found")
    return schema["$id"]


class Executor:
    """Runs scripts on one PostgreSQL connection whose ``search_path`` is the sandbox's schema.

    :param emu: the running emulator.
    :param conn: the connection (its transaction holds every statement).
    :param sandbox: the sandbox.
    :param schema: the sandbox's PostgreSQL schema.
    :param session: settings and variables, kept across scripts of one wire session.
    :param cancelled: asked between statements; True ends the script with :class:`QueryKilled`.
    """

    def __init__(
        self,
        emu: Emulator,
        conn: psycopg.Connection,
        sandbox: str,
        schema: str,
        session: Session | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.emu, self.conn, self.sandbox, self.schema = emu, conn, sandbox, schema
        self.session = session or Session()
        self.cancelled = cancelled
        self.outcome = Outcome()

    def run(self, sql: str) -> Outcome:
        """Run every statement of ``sql``.

        :raises QueryFailed: for a statement the emulator refuses or cannot translate.
        :raises psycopg.Error: for a statement PostgreSQL refuses.
        """
        try:
            statements = qs_sql.split_statements(sql)
        except qs_sql.ScriptError as exc:
            raise QueryFailed("42601", str(exc)) from None
        for statement in statements:
            self._statement(statement)
        if self.cancelled():
            raise QueryKilled()
        return self.outcome

    def columns_of(self, tables: Iterable[str]) -> dict[str, list[str]]:
        return table_columns(self.conn, self.schema, tables)

    def translate(self, statement: str) -> qs_translate.Translated:
        try:
            statement = qs_sql.substitute_variables(statement, self.session.variables)
            return qs_translate.translate(statement, self.columns_of)
        except qs_sql.ScriptError as exc:
            raise QueryFailed("42601", str(exc)) from None
        except qs_translate.TranslationError as exc:
            raise QueryFailed(exc.code, str(exc)) from None

    def _statement(self, statement: str) -> None:
        if self.cancelled():
            raise QueryKilled()
        try:
            block = qs_sql.parse_block(statement)
            assignment = qs_sql.parse_assignment(statement)
        except qs_sql.ScriptError as exc:
            raise QueryFailed("42601", str(exc)) from None
        if block is not None:
            self._block(block)
        elif assignment is not None:
            name, query = assignment
            cursor = self._run(self.translate(query).sql)
            row = cursor.fetchone() if cursor.description else None
            self.session.variables[name] = None if row is None or row[0] is None else _text(row[0])
        else:
            self._translated(self.translate(statement))

    def _block(self, block: qs_sql.Block) -> None:
        if not block.handler:
            for statement in block.body:
                self._statement(statement)
            return
        savepoint = self.conn.transaction()
        savepoint.__enter__()
        try:
            created_before = dict(self.outcome.created_tables)
            dropped_before = list(self.outcome.dropped_datasets)
            for statement in block.body:
                self._statement(statement)
        except (QueryFailed, psycopg.Error) as exc:
            if isinstance(exc, pg_errors.QueryCanceled):
                savepoint.__exit__(type(exc), exc, exc.__traceback__)
                raise
            log.info("anonymous block failed (%s); running its EXCEPTION statements", exc)
            savepoint.__exit__(type(exc), exc, exc.__traceback__)
            self.outcome.created_tables = created_before
            self.outcome.dropped_datasets = dropped_before
            for statement in block.handler:
                self._statement(statement)
            return
        savepoint.__exit__(None, None, None)

    def _run(self, sql: str) -> psycopg.Cursor:
        """Run ``sql`` unless a statement guard refuses it (checked on this, the text PostgreSQL runs,
        so neither a translation nor an ``@variable`` can bring a refused form past the guards)."""
        if refusal := qs_guard.check_statement(sql):
            raise QueryFailed(refusal.code, refusal.message)
        cursor = self.conn.execute(sql)
        self.outcome.row_count = max(cursor.rowcount, 0)
        return cursor

    def _record(self, cursor: psycopg.Cursor) -> None:
        tag = (cursor.statusmessage or "").strip()
        self.outcome.results.append(StatementResult(tag, cursor.pgresult if cursor.description else None))

    def _translated(self, statement: qs_translate.Translated) -> None:
        kind = statement.kind
        if kind == "unsupported_drop":
            raise QueryFailed("0A000", "DROP TABLE takes one unqualified table name, without CASCADE")
        if kind == "set" and statement.setting and statement.setting[0] in QS_SETTINGS:
            name, value = statement.setting
            self.session.settings[name] = value
            self.outcome.results.append(StatementResult("SET"))
            return
        if kind == "analyze":
            self._analyze(statement)
            return
        dropped_dataset = _droppable_dataset(self.emu, self.sandbox, statement.table) if kind == "drop" else None
        if kind == "ctas":
            target_schema_id = _target_schema_id(self.emu, self.sandbox, statement.schema_title)
            creates_table = not _table_exists(self.conn, self.schema, statement.table)
        cursor = self._run(statement.sql)
        self._record(cursor)
        if kind == "ctas" and creates_table:
            fields = _table_fields(self.conn, self.schema, statement.table)
            self.outcome.created_tables[statement.table] = CreatedTable(fields, target_schema_id)
        elif kind == "drop":
            self.outcome.created_tables.pop(statement.table, None)
            if dropped_dataset is not None:
                self.outcome.dropped_datasets.append(dropped_dataset)

    def _analyze(self, statement: qs_translate.Translated) -> None:
        """A sample of the table as a dataset of its own, listed by ``sample_meta('table')``."""
        table, rate = statement.table, statement.sample_rate
        if not 0 < rate <= 100:
            raise QueryFailed("22023", f"SAMPLERATE must be a percentage in (0, 100], not {rate:g}")
        if table not in self.columns_of([table]):
            raise QueryFailed("42P01", f"Table or view not found: {table}")
        taken = {
            t
            for (t,) in self.conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (self.schema,)
            )
        }
        sample = next(name for n in range(1, 10_000) if (name := f"{table}_sample_{n}"[:63]) not in taken)
        columns = ", ".join(quote_ident(c) for c in self.columns_of([table])[table])
        self._run(
            f"CREATE TABLE {quote_ident(sample)} AS SELECT {columns} FROM {quote_ident(table)}"
            f" TABLESAMPLE BERNOULLI ({rate})"
        )
        self.outcome.results.append(StatementResult("ANALYZE"))
        fields = _table_fields(self.conn, self.schema, sample)
        tags = {SAMPLE_OF_TAG: [table], SAMPLE_RATE_TAG: [f"{rate:g}"]}
        self.outcome.created_tables[sample] = CreatedTable(fields, None, tags)


def script_kinds(sql: str) -> set[str]:
    """The kinds of the statements of a script (see :func:`aep_emulator.qs_translate.kind_of`),
    anonymous blocks' included; ``block`` for a block itself."""
    kinds: set[str] = set()
    for statement in qs_sql.split_statements(sql):
        block = qs_sql.parse_block(statement)
        if block is not None:
            kinds |= {"block"} | script_kinds(";\n".join(block.body + block.handler))
        elif qs_sql.parse_assignment(statement) is not None:
            kinds.add("assignment")
        else:
            kinds.add(qs_translate.kind_of(statement))
    return kinds


def _text(value: object) -> str:
    """A variable's value as PostgreSQL prints it (a boolean is ``t``/``f``, as AEP's blocks compare it)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def record_catalog_effects(
    emu: Emulator, sandbox: str, query_id: str, outcome: Outcome, ctas_parameters: dict | None = None
) -> dict | None:
    """Once a script's transaction committed, what it did to tables in Catalog's records (in the
    emulator's own session): forget the datasets whose tables it dropped, register those it created.
    Return the last created dataset's link.

    :param ctas_parameters: the REST query's ``ctasParameters`` (they name the dataset).
    """
    _forget_dropped_datasets(emu, sandbox, outcome)
    return _register_datasets(emu, sandbox, query_id, outcome.created_tables, ctas_parameters)


def _forget_dropped_datasets(emu: Emulator, sandbox: str, outcome: Outcome) -> None:
    """Delete the records of datasets whose tables the script dropped: those whose table is gone, or
    is the one the script itself created again (its CTAS registers the new dataset)."""
    with emu.db.connection() as conn:
        store = transactional_store(conn)
        for dataset_id in outcome.dropped_datasets:
            dataset = store.get(sandbox, catalog.DATASET_KIND, dataset_id)
            if dataset is None:
                continue
            table = catalog.dataset_table(dataset)
            if table in outcome.created_tables or not _table_exists(conn, sandbox_schema(sandbox), table):
                store.delete(sandbox, catalog.DATASET_KIND, dataset_id)


def _register_datasets(
    emu: Emulator,
    sandbox: str,
    query_id: str,
    created_tables: dict[str, CreatedTable],
    ctas_parameters: dict | None,
) -> dict | None:
    """Register a Catalog dataset per created table; return the last one's link.

    Without a target schema, an ad-hoc schema is generated from the table's columns (dotted names
    become nested objects), titled after the dataset (plus the query id when that title is taken:
    schema titles are unique).
    """
    ctas = ctas_parameters or {}
    created_link = None
    for table, created in created_tables.items():
        # ctasParameters name the dataset; a SQL CTAS names it after its table.
        from_parameters = bool(ctas) and sanitize_table_name(ctas["datasetName"]) == table
        dataset_name = ctas["datasetName"] if from_parameters else table
        schema_id = created.schema_id
        if schema_id is None:
            title_taken = emu.store.find_by_name(sandbox, xdm.SCHEMA_KIND, dataset_name) is not None
            title = f"{dataset_name} ({query_id})" if title_taken else dataset_name
            schema_id = xdm.register_adhoc_schema(emu, sandbox, title, created.fields)["$id"]
        dataset = catalog.create_dataset_record(
            emu,
            sandbox,
            name=dataset_name,
            schema_ref=schema_id,
            tags={CREATED_BY_QUERY_TAG: [query_id], **created.tags},
            description=ctas.get("description") if from_parameters else None,
            table_name=table,
            create_table=False,
        )
        created_link = {
            "id": dataset["id"],
            "href": f"{emu.settings.base_url}/data/foundation/catalog/dataSets/{dataset['id']}",
        }
    return created_link
