"""Spark SQL over nested XDM, as AEP Query Service takes it, translated to PostgreSQL over the emulator's tables.

AEP runs Spark SQL over nested datasets (``_acme.userid``, ``web.webPageDetails.pageViews.value``);
the emulator stores every dataset flattened, one quoted column per XDM leaf (``"_acme.userid"``,
docs/architecture.md). This module parses a statement with sqlglot's Spark dialect and rewrites it
onto those tables, so one SQL text serves AEP and the emulator:

- **Names** resolve as Spark resolves them: case-insensitively, qualified or not, through CTEs and
  derived tables (which may go without an alias). A path to a leaf becomes its column; a path to an
  object becomes every leaf under it: inside a query as columns named by their dotted paths (so an
  outer query can reach into it again), in a result as a JSON object (a struct), in a CTAS or
  INSERT as the dotted leaf columns the table stores.
- **Functions and literals** go through sqlglot's Spark to PostgreSQL generator (``INTERVAL 7 DAYS``,
  ``date_add``, ``to_timestamp``, NULL-safe division...), with Spark's semantics where the two part:
  ``unix_timestamp`` truncates to seconds, ``date_add`` stays a date, ``randn()`` draws a normal.
- **Query Service extensions**: ``SNAPSHOT SINCE | AS OF | BETWEEN`` after a table (its rows from
  those batches), ``history_meta('t')`` / ``sample_meta('t')`` selected as a table,
  ``TIME_BETWEEN_PREVIOUS_MATCH`` and ``TIME_BETWEEN_NEXT_MATCH`` (a window over the matching rows'
  timestamps). ``ANALYZE TABLE``, ``SET`` and anonymous blocks are statements the executor runs
  (:mod:`aep_emulator.qs_exec`).

A statement sqlglot cannot parse is passed on unchanged: Query Service also takes the PostgreSQL forms
its clients send (``SHOW``, ``BEGIN``, ``$1`` parameters...), and PostgreSQL reports what is wrong.
Tables in other schemas and PostgreSQL's catalog (``pg_type``, which clients read unqualified) are
left to PostgreSQL to resolve, and to refuse where the sandbox's role has no privilege.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.scope import Scope, ScopeType, traverse_scope
from sqlglot.tokens import Token, TokenType

BATCH_ID_COLUMN = "_acp_batchid"
INGEST_TIME_COLUMN = "_acp_system_metadata.ingestTime"
# Bookkeeping columns of ingested tables: reachable by name, never part of ``*``.
SYSTEM_COLUMNS = frozenset({BATCH_ID_COLUMN, INGEST_TIME_COLUMN})
# Columns of the metadata functions Query Service offers as tables (see services/query.py).
FUNCTION_COLUMNS = {
    "history_meta": (
        "snapshot_id",
        "parent_id",
        "is_current",
        "snapshot_generation",
        "made_current_at",
        "is_current_ancestor",
        "output_record_count",
    ),
    "sample_meta": (
        "sample_table_name",
        "sample_dataset_id",
        "parent_dataset_id",
        "sample_type",
        "filter_condition_on_source_dataset",
        "sample_ratio",
        "parent_dataset_size",
        "sample_dataset_size",
        "sample_status",
        "sample_creation_date",
    ),
}
_TIME_UNIT_SECONDS = {
    "seconds": 1,
    "second": 1,
    "minutes": 60,
    "minute": 60,
    "hours": 3600,
    "hour": 3600,
    "days": 86400,
    "day": 86400,
}
_MAX_FUNCTION_ARGS = 100  # PostgreSQL's FUNC_MAX_ARGS


class QueryServiceSpark(Spark):
    """Spark SQL as Query Service reads it: double quotes delimit identifiers (``AS "totalRows"``), as
    in PostgreSQL and in Spark with ``spark.sql.ansi.doubleQuotedIdentifiers``; strings take single quotes."""

    class Tokenizer(Spark.Tokenizer):
        IDENTIFIERS = ["`", '"']
        QUOTES = ["'"]


_SPARK = QueryServiceSpark()

Path = tuple[str, ...]
"""A column of a relation as the parts of its dotted name: ``("web", "webPageDetails", "URL")``."""


class TranslationError(Exception):
    """The statement cannot run: AEP's SQLSTATE-style code and message.

    :param code: e.g. ``42703`` (unknown column), ``42P01`` (unknown table), ``0A000`` (unsupported).
    :param message: what is wrong, naming the construct.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


ColumnsOf = Callable[[Iterable[str]], dict[str, list[str]]]
"""Looks up tables: ``{table: [column names]}`` for those of the given lower-case names that exist."""


@dataclass(frozen=True)
class Snapshot:
    """A ``SNAPSHOT`` clause: rows of the batches after ``since`` up to ``until`` (None: open end).

    :param table: the table it follows.
    :param since: snapshot id the range starts after.
    :param until: snapshot id the range ends at.
    """

    table: str
    since: str | None
    until: str | None


@dataclass
class Translated:
    """A statement ready for PostgreSQL and what it does.

    :param sql: the PostgreSQL text.
    :param kind: ``query``, ``ctas``, ``insert``, ``drop``, ``unsupported_drop``, ``set``, ``analyze``
        or ``other`` (passed on unchanged).
    :param table: target table of a CTAS, INSERT INTO, DROP TABLE or ANALYZE TABLE.
    :param if_exists: ``IF NOT EXISTS`` (CTAS) or ``IF EXISTS`` (DROP) was given.
    :param schema_title: the CTAS ``WITH (schema='...')`` option.
    :param setting: ``(name, value)`` of a ``SET``.
    :param sample_rate: ``ANALYZE TABLE ... TABLESAMPLE SAMPLERATE`` percentage.
    """

    sql: str
    kind: str = "other"
    table: str | None = None
    if_exists: bool = False
    schema_title: str | None = None
    setting: tuple[str, str] | None = None
    sample_rate: float | None = None
    tables: list[str] = field(default_factory=list)


# --- statement-level -----------------------------------------------------------------------------


def tokens(sql: str) -> list[Token]:
    """Spark SQL tokens (quotes, comments and backticks handled by sqlglot's tokenizer)."""
    return _SPARK.tokenize(sql)


def translate(sql: str, columns_of: ColumnsOf) -> Translated:
    """Translate one Spark SQL statement for the emulator's PostgreSQL.

    :param sql: one statement, its ``@variables`` already substituted.
    :param columns_of: the table lookup (see :data:`ColumnsOf`).
    :raises TranslationError: for names that do not resolve and forms the emulator does not run.
    """
    try:
        toks = tokens(sql)
    except TokenError:
        return Translated(sql=sql)
    if analyze := _analyze_table(toks):
        return analyze
    sql, snapshots = _extract_snapshots(sql, toks)
    try:
        tree = sqlglot.parse_one(sql, read=_SPARK)
    except ParseError:
        if snapshots:
            raise TranslationError("42601", "SNAPSHOT must follow a table name in FROM") from None
        return Translated(sql=sql)
    if isinstance(tree, exp.Drop) and (tree.args.get("kind") or "").upper() == "TABLE":
        return _drop(tree, sql)
    if isinstance(tree, exp.Set):
        return _set(tree, sql)
    if isinstance(tree, exp.Create) and isinstance(tree.expression, exp.Query):
        return _ctas(tree, columns_of, snapshots)
    if isinstance(tree, exp.Insert) and isinstance(tree.expression, exp.Query):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        table = target.name.lower()
        query = _Resolver(columns_of, snapshots, flatten_output=True).query(tree.expression)
        tree.set("expression", query)
        _lower_table(target)
        return Translated(sql=_pg(tree), kind="insert", table=table)
    if isinstance(tree, exp.Query):
        resolver = _Resolver(columns_of, snapshots, flatten_output=False)
        query = resolver.query(tree)
        return Translated(sql=_pg(query), kind="query", tables=sorted(resolver.tables))
    return Translated(sql=sql)


def kind_of(sql: str) -> str:
    """What a statement is (``ctas``, ``insert``, ``drop``, ``set``, ``analyze``, ``query``, ``other``),
    without looking its tables up."""
    try:
        toks = tokens(sql)
        if toks[:2] and [t.text.upper() for t in toks[:2]] == ["ANALYZE", "TABLE"]:
            return "analyze"
        tree = sqlglot.parse_one(_extract_snapshots(sql, toks)[0], read=_SPARK)
    except (TokenError, ParseError, TranslationError):
        return "other"
    if isinstance(tree, exp.Create) and isinstance(tree.expression, exp.Query):
        return "ctas"
    if isinstance(tree, exp.Insert):
        return "insert"
    if isinstance(tree, exp.Drop):
        return "drop"
    if isinstance(tree, exp.Set):
        return "set"
    return "query" if isinstance(tree, exp.Query) else "other"


def _pg(tree: exp.Expression) -> str:
    return tree.sql(dialect="postgres", identify=True)


def _drop(tree: exp.Drop, sql: str) -> Translated:
    tables = tree.args.get("expressions") or tree.args.get("tables") or [tree.this]
    single = len(tables) == 1 and isinstance(tables[0], exp.Table) and not tables[0].args.get("db")
    if not single or tree.args.get("cascade"):
        # Several tables, a schema-qualified name or CASCADE would escape the one-dataset check.
        return Translated(sql=sql, kind="unsupported_drop")
    table = tables[0].name.lower()
    exists = bool(tree.args.get("exists"))
    if_exists = "IF EXISTS " if exists else ""
    return Translated(sql=f'DROP TABLE {if_exists}"{table}"', kind="drop", table=table, if_exists=exists)


def _set(tree: exp.Set, sql: str) -> Translated:
    items = tree.expressions
    if len(items) == 1 and isinstance(items[0].this, exp.EQ):
        name = items[0].this.this.sql(dialect=_SPARK)
        value = items[0].this.expression
        text = value.name if isinstance(value, (exp.Literal, exp.Column, exp.Identifier)) else value.sql()
        return Translated(sql=sql, kind="set", setting=(name.lower(), text.lower()))
    return Translated(sql=sql)


def _ctas(tree: exp.Create, columns_of: ColumnsOf, snapshots: dict[str, Snapshot]) -> Translated:
    title = None
    properties = tree.args.get("properties")
    if properties is not None:
        for prop in properties.expressions:
            key = prop.name.lower() if isinstance(prop, exp.Property) else ""
            if key == "schema":
                title = prop.args["value"].name
        # AEP-only options (schema, rowvalidation, label): PostgreSQL has no use for them.
        tree.set("properties", None)
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    table = target.name.lower()
    _lower_table(target)
    query = tree.expression.this if isinstance(tree.expression, exp.Subquery) else tree.expression
    tree.set("expression", _Resolver(columns_of, snapshots, flatten_output=True).query(query))
    return Translated(
        sql=_pg(tree), kind="ctas", table=table, if_exists=bool(tree.args.get("exists")), schema_title=title
    )


def _analyze_table(toks: list[Token]) -> Translated | None:
    """``ANALYZE TABLE t TABLESAMPLE SAMPLERATE n``: Query Service's sample creation."""
    words = [t.text.upper() for t in toks]
    if words[:2] != ["ANALYZE", "TABLE"] or len(toks) < 3:
        return None
    table = toks[2].text.lower()
    if words[3:5] != ["TABLESAMPLE", "SAMPLERATE"] or len(toks) < 6 or toks[5].token_type != TokenType.NUMBER:
        raise TranslationError(
            "0A000", "ANALYZE TABLE is supported as ANALYZE TABLE <table> TABLESAMPLE SAMPLERATE <percent>"
        )
    if len(toks) > 6:
        raise TranslationError("0A000", f"ANALYZE TABLE ... SAMPLERATE takes no {toks[6].text!r} clause here")
    return Translated(sql="", kind="analyze", table=table, sample_rate=float(toks[5].text))


_SNAPSHOT_VALUE = (TokenType.NUMBER, TokenType.STRING, TokenType.VAR, TokenType.NULL)


def _snapshot_value(token: Token) -> str | None:
    if token.token_type not in _SNAPSHOT_VALUE:
        raise TranslationError("42601", f"SNAPSHOT expects a snapshot id, HEAD or TAIL, not {token.text!r}")
    if token.token_type == TokenType.NULL or token.text.upper() in ("HEAD", "TAIL"):
        return None
    return token.text


def _extract_snapshots(sql: str, toks: list[Token]) -> tuple[str, dict[str, Snapshot]]:
    """Replace every ``table SNAPSHOT ...`` by a placeholder table name; return the clauses by placeholder."""
    snapshots: dict[str, Snapshot] = {}
    pieces, last = [], 0
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.token_type == TokenType.VAR and tok.text.upper() == "SNAPSHOT" and i > 0 and i + 2 < len(toks):
            table_tok = toks[i - 1]
            words = [t.text.upper() for t in toks[i + 1 : i + 5]]
            if words[:1] == ["SINCE"]:
                since, until, end = _snapshot_value(toks[i + 2]), None, i + 2
            elif words[:2] == ["AS", "OF"] and i + 3 < len(toks):
                since, until, end = None, _snapshot_value(toks[i + 3]), i + 3
            elif words[:1] == ["BETWEEN"] and i + 4 < len(toks) and words[2] == "AND":
                since, until, end = _snapshot_value(toks[i + 2]), _snapshot_value(toks[i + 4]), i + 4
            else:
                raise TranslationError("42601", "SNAPSHOT takes SINCE <id>, AS OF <id> or BETWEEN <id> AND <id>")
            placeholder = f"__aep_snapshot_{len(snapshots)}"
            snapshots[placeholder] = Snapshot(table_tok.text.lower(), since, until)
            pieces += [sql[last : table_tok.start], placeholder, " "]
            last = toks[end].end + 1
            i = end + 1
            continue
        i += 1
    pieces.append(sql[last:])
    return "".join(pieces), snapshots


ACCELERATED_STORE_PREFIX = "qsaccel_profile_agg_"
# PostgreSQL's own catalog (``pg_roles``, ``pg_type``...), which PostgreSQL clients read unqualified:
# passed on for PostgreSQL to resolve, and to refuse what the sandbox's role may not read.
_CATALOG_PREFIX = "pg_"


def _lower_table(table: exp.Table) -> None:
    """Table names, like every name in Spark SQL, ignore case; the emulator's are lower case.

    The Query Accelerated Store's ``qsaccel.profile_agg.<table>`` (which aepp's InteractiveQuery2
    reads on connecting) is the sandbox's ``qsaccel_profile_agg_<table>``.
    """
    if (table.catalog or "").lower() == "qsaccel" and (table.db or "").lower() == "profile_agg":
        table.set("catalog", None)
        table.set("db", None)
        table.set("this", exp.to_identifier(ACCELERATED_STORE_PREFIX + table.name.lower()))
        return
    for key in ("this", "db", "catalog"):
        ident = table.args.get(key)
        if isinstance(ident, exp.Identifier):
            table.set(key, exp.to_identifier(ident.name.lower()))


# --- resolution ----------------------------------------------------------------------------------


def _same(a: Path, b: Path) -> bool:
    return len(a) == len(b) and all(x.lower() == y.lower() for x, y in zip(a, b, strict=True))


def _starts_with(column: Path, prefix: Path) -> bool:
    return len(column) > len(prefix) and _same(column[: len(prefix)], prefix)


def _column_ref(source: str, column: Path) -> exp.Column:
    return exp.Column(this=exp.to_identifier(".".join(column), quoted=True), table=exp.to_identifier(source))


@dataclass
class _Source:
    """A relation in a scope: its columns (None when unknown, e.g. a set-returning function)."""

    name: str
    columns: list[Path] | None
    hidden: frozenset[str] = frozenset()

    def visible(self) -> list[Path]:
        return [c for c in self.columns or () if ".".join(c) not in self.hidden]


@dataclass
class _Match:
    """What a dotted reference names: one leaf column, or an object (several leaves under ``prefix``)."""

    source: str
    prefix: Path
    columns: list[Path]
    leaf: bool
    extra: Path = ()


class _Resolver:
    """Rewrites one query tree, scope by scope, from Spark names to the stored columns.

    :param columns_of: the table lookup.
    :param snapshots: SNAPSHOT placeholders found in the text.
    :param flatten_output: the result feeds a table (CTAS, INSERT): objects become leaf columns.
    """

    def __init__(self, columns_of: ColumnsOf, snapshots: dict[str, Snapshot], *, flatten_output: bool) -> None:
        self.columns_of = columns_of
        self.snapshots = snapshots
        self.flatten_output = flatten_output
        self.outputs: dict[int, list[Path]] = {}
        self.tables: set[str] = set()
        # Columns already rewritten: a correlated subquery's columns also show in its parent scope.
        self.done: set[int] = set()

    # entry point
    def query(self, tree: exp.Expression) -> exp.Expression:
        tree = self._prepare(tree)
        scopes = traverse_scope(tree)
        known = self._lookup_tables(scopes)
        root = scopes[-1] if scopes else None
        for scope in scopes:
            if isinstance(scope.expression, exp.SetOperation):
                self.outputs[id(scope.expression)] = self.outputs.get(id(_leftmost(scope.expression)))
                continue
            self._resolve_scope(scope, known, final=scope is root or _is_final_branch(scope, root))
        tree = tree.transform(_rewrite_functions)
        return tree

    def _prepare(self, tree: exp.Expression) -> exp.Expression:
        counter = 0
        for node in list(tree.find_all(exp.Subquery)):
            if isinstance(node.parent, (exp.From, exp.Join)) and not node.alias:
                # Spark takes a derived table without an alias; PostgreSQL 15 does not.
                counter += 1
                node.set("alias", exp.TableAlias(this=exp.to_identifier(f"__subquery_{counter}")))
        for table in tree.find_all(exp.Table):
            _lower_table(table)
            if isinstance(table.this, exp.Func) and not table.alias:
                # A set-returning function in FROM is named after the function, as in PostgreSQL.
                function = table.this.name if isinstance(table.this, exp.Anonymous) else table.this.sql_name()
                table.set("alias", exp.TableAlias(this=exp.to_identifier(function.lower())))
        for alias in tree.find_all(exp.TableAlias):
            if alias.this is not None and isinstance(alias.parent, (exp.Table, exp.Subquery, exp.CTE)):
                alias.set("this", exp.to_identifier(alias.name.lower()))
        for select in list(tree.find_all(exp.Select)):
            _metadata_function_as_table(select)
        for table in list(tree.find_all(exp.Table)):
            if table.name in self.snapshots:
                self._snapshot_subquery(table)
        return tree

    def _snapshot_subquery(self, table: exp.Table) -> None:
        snap = self.snapshots[table.name]
        alias = table.alias or snap.table

        def bound(value: str | None) -> exp.Expression:
            return exp.Literal.string(value) if value is not None else exp.null()

        batches = exp.select("snapshot_batches.batch_id").from_(
            exp.Table(
                this=exp.Anonymous(
                    this="snapshot_batches",
                    expressions=[exp.Literal.string(snap.table), bound(snap.since), bound(snap.until)],
                )
            ).as_("snapshot_batches")
        )
        filtered = (
            exp.select(exp.Star())
            .from_(exp.to_table(snap.table))
            .where(exp.In(this=exp.column(BATCH_ID_COLUMN), query=exp.Subquery(this=batches)))
        )
        table.replace(exp.Subquery(this=filtered, alias=exp.TableAlias(this=exp.to_identifier(alias))))

    def _lookup_tables(self, scopes: list[Scope]) -> dict[str, list[str]]:
        names = set()
        for scope in scopes:
            for source in scope.sources.values():
                if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
                    names.add(source.name)
        found = self.columns_of(sorted(names)) if names else {}
        self.tables |= set(found)
        return found

    def _sources(self, scope: Scope, known: dict[str, list[str]]) -> dict[str, _Source]:
        sources = {}
        for name, (_, source) in scope.selected_sources.items():
            if isinstance(source, Scope):
                sources[name] = _Source(name, self.outputs.get(id(source.expression)))
            elif isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
                columns = known.get(source.name)
                if columns is None and not source.args.get("db") and not source.name.startswith(_CATALOG_PREFIX):
                    raise TranslationError("42P01", f"Table or view not found: {source.name}")
                paths = [tuple(c.split(".")) for c in columns] if columns is not None else None
                sources[name] = _Source(name, paths, hidden=SYSTEM_COLUMNS)
            elif isinstance(source, exp.Table) and isinstance(source.this, exp.Anonymous):
                cols = FUNCTION_COLUMNS.get(source.this.name.lower())
                sources[name] = _Source(name, [(c,) for c in cols] if cols else None)
            else:
                sources[name] = _Source(name, None)
        return sources

    def _resolve_scope(self, scope: Scope, known: dict[str, list[str]], *, final: bool) -> None:
        select = scope.expression
        if not isinstance(select, exp.Select):
            return
        sources = self._sources(scope, known)
        outer = self._outer_sources(scope, known)
        aliases = {p.alias.lower(): p for p in select.expressions if isinstance(p, exp.Alias)}
        projections = set(map(id, select.expressions))
        alias_references = []

        for column in list(scope.columns):
            if id(column) in self.done:
                continue
            self.done.add(id(column))
            node, parts = _full_reference(column)
            if isinstance(column.this, exp.Star):
                continue
            in_projection = id(node) in projections or (
                isinstance(node.parent, exp.Alias) and id(node.parent) in projections
            )
            match = _match(parts, sources) or _match(parts, outer)
            if match is None:
                if len(parts) == 1 and parts[0].lower() in aliases and not in_projection:
                    alias_references.append((node, aliases[parts[0].lower()]))
                    continue
                if any(s.columns is None for s in list(sources.values()) + list(outer.values())):
                    node.replace(_unknown_reference(parts))
                    continue
                raise TranslationError(
                    "42703", f"cannot resolve column '{'.'.join(parts)}': no such field in the query's sources"
                )
            if in_projection:
                continue  # handled with the projection list below
            node.replace(_value(match, as_object=True))

        # sqlglot leaves select aliases in HAVING and ORDER BY out of the scope's columns.
        for clause in (select.args.get("having"), select.args.get("order"), select.args.get("qualify")):
            for column in list(clause.find_all(exp.Column)) if clause is not None else ():
                if id(column) not in self.done and not column.table and column.name.lower() in aliases:
                    self.done.add(id(column))
                    alias_references.append((column, aliases[column.name.lower()]))
        for node, projection in alias_references:
            # Spark takes a select alias in GROUP BY, HAVING and ORDER BY; PostgreSQL an output name in
            # ORDER BY only: elsewhere the aliased expression stands in for it.
            if node.find_ancestor(exp.Order) is not None and node.find_ancestor(exp.Window) is None:
                node.replace(exp.column(exp.to_identifier(projection.alias, quoted=True)))
            else:
                node.replace(self._resolved(projection.this, sources, outer))
        self.outputs[id(select)] = self._project(select, sources, outer, final=final)

    def _resolved(
        self, value: exp.Expression, sources: dict[str, _Source], outer: dict[str, _Source]
    ) -> exp.Expression:
        """A copy of a projection's expression with its own reference resolved (it is rewritten last)."""
        if isinstance(value, (exp.Column, exp.Dot)):
            column = value if isinstance(value, exp.Column) else value.find(exp.Column)
            node, parts = _full_reference(column)
            match = _match(parts, sources) or _match(parts, outer)
            if match is not None and node is value:
                return _value(match, as_object=True)
        return value.copy()

    def _outer_sources(self, scope: Scope, known: dict[str, list[str]]) -> dict[str, _Source]:
        outer: dict[str, _Source] = {}
        parent = scope.parent
        while parent is not None and scope.scope_type == ScopeType.SUBQUERY:
            for name, source in self._sources(parent, known).items():
                outer.setdefault(name, source)
            scope, parent = parent, parent.parent
        return outer

    def _project(
        self, select: exp.Select, sources: dict[str, _Source], outer: dict[str, _Source], *, final: bool
    ) -> list[Path] | None:
        """Rewrite the projection list; return the scope's output columns (None when unknown)."""
        flatten = not final or self.flatten_output
        new, outputs, unknown = [], [], False
        for projection in select.expressions:
            alias = projection.alias if isinstance(projection, exp.Alias) else None
            value = projection.this if isinstance(projection, exp.Alias) else projection
            if isinstance(value, exp.Star) or (isinstance(value, exp.Column) and isinstance(value.this, exp.Star)):
                qualifier = value.table.lower() if isinstance(value, exp.Column) else ""
                chosen = [s for s in sources.values() if not qualifier or s.name == qualifier]
                if qualifier and not chosen:
                    raise TranslationError("42703", f"cannot resolve '{qualifier}.*': no such table in FROM")
                if any(s.columns is None for s in chosen):
                    new.append(projection)
                    unknown = True  # the shape is PostgreSQL's to know
                    continue
                for source in chosen:
                    self._expand(source.name, source.visible(), (), flatten, new, outputs)
                continue
            node, parts = (None, None)
            column = value if isinstance(value, exp.Column) else value.find(exp.Column)
            if isinstance(value, (exp.Column, exp.Dot)) and column is not None:
                # (a qualified function call, ``pg_catalog.now()``, is a Dot with no column)
                node, parts = _full_reference(column)
            match = (_match(parts, sources) or _match(parts, outer)) if parts and node is value else None
            if match is not None and not match.leaf and not match.extra:
                # Spark names an unaliased reference after its last part, as the query writes it.
                name = alias or parts[-1]
                if flatten:
                    for column in match.columns:
                        rest = column[len(match.prefix) :]
                        outputs.append((name, *rest))
                        new.append(exp.alias_(_column_ref(match.source, column), ".".join((name, *rest)), quoted=True))
                else:
                    outputs.append((name,))
                    new.append(exp.alias_(_value(match, as_object=True), name, quoted=True))
                continue
            if match is not None:
                name = alias or parts[-1]
                new.append(exp.alias_(_value(match, as_object=True), name, quoted=True))
                outputs.append((name,))
                continue
            name = alias or _output_name(value)
            new.append(exp.alias_(value, name, quoted=True) if name else value)
            outputs.append((name or _postgres_name(value),))
        select.set("expressions", new)
        return None if unknown else outputs

    def _expand(
        self, source: str, columns: list[Path], prefix: Path, flatten: bool, new: list, outputs: list[Path]
    ) -> None:
        """``*``: every column; in a result, an object per top-level name."""
        if flatten:
            for column in columns:
                outputs.append(column)
                new.append(exp.alias_(_column_ref(source, column), ".".join(column), quoted=True))
            return
        seen: dict[str, list[Path]] = {}
        for column in columns:
            seen.setdefault(column[0].lower(), []).append(column)
        for group in seen.values():
            head = group[0][0]
            if len(group) == 1 and len(group[0]) == 1:
                new.append(exp.alias_(_column_ref(source, group[0]), head, quoted=True))
            else:
                new.append(exp.alias_(_object(source, group, (head,)), head, quoted=True))
            outputs.append((head,))


def _leftmost(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.SetOperation):
        node = node.this
    return node.this if isinstance(node, exp.Subquery) else node


def _is_final_branch(scope: Scope, root: Scope | None) -> bool:
    """A SELECT of the top-level UNION: its columns are the result's."""
    if root is None or not isinstance(root.expression, exp.SetOperation):
        return False
    node = scope.expression.parent
    while isinstance(node, (exp.SetOperation, exp.Subquery)):
        if node is root.expression:
            return True
        node = node.parent
    return False


def _full_reference(column: exp.Column) -> tuple[exp.Expression, list[str]]:
    """The outermost node of a dotted reference (``a.b.c.d.e`` parses as Dot(Column(a.b.c.d), e))."""
    parts = [p.name for p in column.parts]
    node: exp.Expression = column
    while isinstance(node.parent, exp.Dot) and node.parent.this is node:
        node = node.parent
        parts.append(node.expression.name)
    return node, parts


def _match(parts: list[str] | None, sources: dict[str, _Source]) -> _Match | None:
    if not parts:
        return None
    if len(parts) > 1 and parts[0].lower() in sources:
        found = _match_in(sources[parts[0].lower()], tuple(parts[1:]))
        if found is not None:
            return found
    matches = [m for s in sources.values() if (m := _match_in(s, tuple(parts))) is not None]
    if len(matches) > 1:
        names = ", ".join(m.source for m in matches)
        raise TranslationError("42702", f"reference '{'.'.join(parts)}' is ambiguous: it is in {names}")
    return matches[0] if matches else None


def _match_in(source: _Source, path: Path) -> _Match | None:
    if source.columns is None:
        return None
    for column in source.columns:
        if _same(column, path):
            return _Match(source.name, column, [column], leaf=True)
    under = [c for c in source.columns if _starts_with(c, path)]
    if under:
        prefix = under[0][: len(path)]
        return _Match(source.name, prefix, under, leaf=False)
    # A path into a map or array column (stored as jsonb): the rest are keys.
    for column in source.columns:
        if _starts_with(path, column):
            return _Match(source.name, column, [column], leaf=True, extra=path[len(column) :])
    return None


def _value(match: _Match, *, as_object: bool) -> exp.Expression:
    if match.leaf:
        value: exp.Expression = _column_ref(match.source, match.columns[0])
        for key in match.extra:
            value = exp.JSONExtract(this=value, expression=exp.Literal.string(key))
        return value
    return _object(match.source, match.columns, match.prefix)


def _object(source: str, columns: list[Path], prefix: Path) -> exp.Expression:
    """A Spark struct as a JSON object, NULL when every leaf under it is NULL (as a missing struct reads)."""
    tree: dict = {}
    for column in columns:
        node = tree
        rest = column[len(prefix) :]
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = column

    def build(node: dict) -> tuple[exp.Expression, list[exp.Expression]]:
        pairs, leaves = [], []
        for key, child in node.items():
            if isinstance(child, dict):
                value, child_leaves = build(child)
                leaves += child_leaves
            else:
                value = _column_ref(source, child)
                leaves.append(value)
            pairs += [exp.Literal.string(key), value]
        chunks = [pairs[i : i + _MAX_FUNCTION_ARGS] for i in range(0, len(pairs), _MAX_FUNCTION_ARGS)]
        built = [exp.Anonymous(this="jsonb_build_object", expressions=chunk) for chunk in chunks]
        obj = built[0]
        for more in built[1:]:
            obj = exp.DPipe(this=obj, expression=more)
        counts = [
            exp.Anonymous(this="num_nonnulls", expressions=[leaf.copy() for leaf in leaves[i : i + _MAX_FUNCTION_ARGS]])
            for i in range(0, len(leaves), _MAX_FUNCTION_ARGS)
        ]
        total = counts[0]
        for more in counts[1:]:
            total = exp.Add(this=total, expression=more)
        guarded = exp.Case(ifs=[exp.If(this=exp.EQ(this=total, expression=exp.Literal.number(0)), true=exp.null())])
        guarded.set("default", obj)
        return guarded, leaves

    return build(tree)[0]


def _unknown_reference(parts: list[str]) -> exp.Expression:
    """A name in a relation whose columns are unknown: PostgreSQL resolves it (unquoted names fold)."""
    names = [exp.to_identifier(p.lower()) for p in parts]
    node: exp.Expression = exp.Column(
        **dict(zip(("this", "table", "db", "catalog"), reversed(names[:4]), strict=False))
    )
    for name in names[4:]:
        node = exp.Dot(this=node, expression=name)
    return node


def _postgres_name(value: exp.Expression) -> str:
    """PostgreSQL's name for an unaliased expression: its function's name, else ``?column?``."""
    return value.name.lower() if isinstance(value, exp.Func) and value.name else "?column?"


def _output_name(value: exp.Expression) -> str | None:
    """Spark's name for an unaliased expression where PostgreSQL's would differ; None: leave it to PostgreSQL."""
    if isinstance(value, exp.Column):
        return value.name
    return None


def _metadata_function_as_table(select: exp.Select) -> None:
    """``SELECT history_meta('t')`` (Query Service's form) -> ``SELECT * FROM history_meta('t')``."""
    if select.args.get("from_") is not None or len(select.expressions) != 1:
        return
    call = select.expressions[0]
    if isinstance(call, exp.Anonymous) and call.name.lower() in FUNCTION_COLUMNS:
        name = call.name.lower()
        call = exp.Anonymous(this=name, expressions=call.expressions)
        select.set("expressions", [exp.Star()])
        select.set("from_", exp.From(this=exp.Table(this=call, alias=exp.TableAlias(this=exp.to_identifier(name)))))


# --- functions -----------------------------------------------------------------------------------


_TIME_PARTS: dict = {
    exp.Hour: "HOUR",
    exp.Minute: "MINUTE",
    exp.Second: "SECOND",
    exp.Quarter: "QUARTER",
    "hour": "HOUR",
    "minute": "MINUTE",
    "second": "SECOND",
    "quarter": "QUARTER",
}


def _extract(part: str, value: exp.Expression) -> exp.Expression:
    """Spark's integer date part (``hour(ts)``...) of a timestamp."""
    return exp.Cast(
        this=exp.Extract(this=exp.var(part), expression=exp.Cast(this=value, to=exp.DataType.build("timestamptz"))),
        to=exp.DataType.build("int"),
    )


def _epoch(value: exp.Expression) -> exp.Expression:
    return exp.Extract(this=exp.var("epoch"), expression=exp.Cast(this=value, to=exp.DataType.build("timestamptz")))


def _rewrite_functions(node: exp.Expression) -> exp.Expression:
    """Spark functions whose PostgreSQL rendition differs in meaning, and the Adobe-defined ones."""
    if isinstance(node, exp.StrToUnix):
        # unix_timestamp(ts): whole seconds since the epoch (Spark truncates).
        inner = node.this if node.this is not None else exp.CurrentTimestamp()
        return exp.Cast(
            this=exp.Floor(this=_epoch(inner)),
            to=exp.DataType.build("bigint"),
        )
    scale = {exp.UnixMicros: 1_000_000, exp.UnixMillis: 1_000, exp.UnixSeconds: 1}.get(type(node))
    if scale is not None:
        # unix_micros(ts) & co.: whole units since the epoch (PostgreSQL's epoch is exact numeric).
        return exp.Cast(
            this=exp.Floor(this=exp.Mul(this=_epoch(node.this), expression=exp.Literal.number(scale))),
            to=exp.DataType.build("bigint"),
        )
    if isinstance(node, exp.TsOrDsAdd) and (node.unit is None or node.unit.name.upper() in ("DAY", "DAYS")):
        # date_add(d, n) is a date in Spark; PostgreSQL's date + integer is one too.
        return exp.Add(
            this=exp.Cast(this=node.this, to=exp.DataType.build("date")),
            expression=exp.Cast(this=node.expression, to=exp.DataType.build("int")),
        )
    part = _TIME_PARTS.get(type(node)) or (
        _TIME_PARTS.get(node.name.lower()) if isinstance(node, exp.Anonymous) and len(node.expressions) == 1 else None
    )
    if part is not None:
        return _extract(part, node.this if not isinstance(node, exp.Anonymous) else node.expressions[0])
    if isinstance(node, exp.DayOfMonth):
        return _extract("DAY", node.this)
    if isinstance(node, exp.DayOfWeek):
        # Spark: 1 = Sunday ... 7 = Saturday; PostgreSQL's DOW: 0 = Sunday.
        return exp.Add(this=_extract("DOW", node.this), expression=exp.Literal.number(1))
    if isinstance(node, exp.WeekOfYear):
        return _extract("WEEK", node.this)
    if isinstance(node, exp.Div) and node.args.get("safe"):
        # x / 0 fails (22012), as in Spark's ANSI mode; sqlglot would render Spark's legacy NULL.
        node.set("safe", False)
        return node
    if isinstance(node, exp.Randn):
        # A standard normal draw (Box-Muller), as Spark's randn().
        return sqlglot.parse_one("(sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))", read="postgres")
    if isinstance(node, exp.Window) and isinstance(node.this, exp.Anonymous):
        name = node.this.name.lower()
        if name in ("time_between_previous_match", "time_between_next_match"):
            return _time_between_match(node, previous=name == "time_between_previous_match")
    return node


def _time_between_match(window: exp.Window, *, previous: bool) -> exp.Expression:
    """``TIME_BETWEEN_PREVIOUS_MATCH(ts, condition, unit) OVER (w)``: time from the latest row of the
    frame (up to this one) where the condition holds to this row's ts, in ``unit``; NULL before any
    match. ``..._NEXT_MATCH``: to the earliest such row from this one on."""
    args = window.this.expressions
    if len(args) != 3 or not isinstance(args[2], exp.Literal):
        raise TranslationError(
            "42601",
            f"{window.this.name} takes (timestamp, condition, unit), e.g. (timestamp, eventType = 'x', 'minutes')",
        )
    ts, condition, unit = args
    seconds = _TIME_UNIT_SECONDS.get(unit.name.lower())
    if seconds is None:
        raise TranslationError("42601", f"{window.this.name}: unit must be one of {sorted(set(_TIME_UNIT_SECONDS))}")
    matched = exp.Case(ifs=[exp.If(this=condition.copy(), true=ts.copy())])
    aggregate = exp.Max(this=matched) if previous else exp.Min(this=matched)
    spec = window.copy()
    spec.set("this", aggregate)
    if not previous and spec.args.get("spec") is None:
        spec.set(
            "spec",
            exp.WindowSpec(kind="ROWS", start="CURRENT ROW", end="UNBOUNDED", end_side="FOLLOWING"),
        )
    elapsed = (
        exp.Sub(this=_epoch(ts.copy()), expression=_epoch(spec))
        if previous
        else exp.Sub(this=_epoch(spec), expression=_epoch(ts.copy()))
    )
    return exp.Div(this=exp.Paren(this=elapsed), expression=exp.Literal.number(float(seconds)))
