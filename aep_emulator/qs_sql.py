"""Query Service SQL handling for the REST queries: ``$param`` substitution, statement splitting and
recognising the statements that touch Catalog (CTAS, INSERT INTO, DROP TABLE).

The emulator runs the SQL on PostgreSQL, so only AEP syntax PostgreSQL lacks is rewritten: the
``WITH (schema=..., rowvalidation=..., label=...)`` options of a CTAS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT = r'(?P<table>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CTAS = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?P<if_not_exists>IF\s+NOT\s+EXISTS\s+)?"
    + _IDENT
    + r"\s*(?:WITH\s*\((?P<options>[^)]*)\)\s*)?AS\s+(?P<select>.+)$",
    re.IGNORECASE | re.DOTALL,
)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+" + _IDENT + r"(?=[\s(])", re.IGNORECASE)
_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\s+(?P<if_exists>IF\s+EXISTS\s+)?" + _IDENT + r"\s*$", re.IGNORECASE)
_ANY_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\b", re.IGNORECASE)
_LEADING_COMMENTS = re.compile(r"(?:\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/))*\s*", re.DOTALL)
_SCHEMA_OPTION = re.compile(r"""\bschema\s*=\s*'(?P<title>(?:[^']|'')*)'""", re.IGNORECASE)

# PostgreSQL column type (information_schema.columns.data_type) -> XDM type of the ad-hoc schema
# a CTAS registers; the inverse of the XDM -> PostgreSQL mapping in docs/architecture.md.
PG_TO_XDM = {
    "text": "string",
    "character varying": "string",
    "character": "string",
    "uuid": "string",
    "double precision": "number",
    "real": "number",
    "numeric": "number",
    "bigint": "long",
    "integer": "int",
    "smallint": "short",
    "boolean": "boolean",
    "date": "date",
    "timestamp with time zone": "date-time",
    "timestamp without time zone": "date-time",
    "jsonb": "map",
    "json": "map",
}


class MissingQueryParameter(ValueError):
    """The SQL names a ``$param`` that the query parameters do not define."""


@dataclass(frozen=True)
class Statement:
    """One SQL statement and what it does to Catalog.

    :param sql: the statement as PostgreSQL runs it.
    :param kind: ``ctas``, ``insert``, ``drop`` or ``other``.
    :param table: target table of a CTAS, INSERT INTO or DROP TABLE.
    :param if_exists: ``IF NOT EXISTS`` (CTAS) or ``IF EXISTS`` (DROP) was given.
    :param schema_title: the CTAS ``WITH (schema='...')`` option: the title of an existing XDM schema
        for the new dataset (without it, an ad-hoc schema is generated).
    """

    sql: str
    kind: str = "other"
    table: str | None = None
    if_exists: bool = False
    schema_title: str | None = None


def substitute_parameters(sql: str, parameters: dict[str, str]) -> str:
    """Replace every ``$key`` by its value, as plain text (AEP does no typing or quoting).

    :param sql: SQL with ``$key`` placeholders.
    :param parameters: values by key (keys without ``$``).
    :raises MissingQueryParameter: a placeholder has no value.
    """
    # Dollar-quote markers ($$, $tag$) are SQL, not placeholders; placeholders inside a quoted body
    # are still substituted, as AEP does in anonymous blocks.
    protected = {m.start() for m in _DOLLAR_TAG.finditer(sql)}

    def fill(match: re.Match) -> str:
        if match.start() in protected:
            return match.group(0)
        key = match.group(1)
        if key not in parameters:
            raise MissingQueryParameter(key)
        return str(parameters[key])

    return _PARAM.sub(fill, sql)


def split_statements(sql: str) -> list[str]:
    """Split SQL on top-level ``;``, leaving quoted text, dollar-quoted bodies and comments whole.

    :param sql: one or more statements.
    :return: the non-empty statements, without their terminating ``;``.
    """
    statements, start, i, n = [], 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            i = _skip_quoted(sql, i, ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(tag.group(0), tag.end())
            i = n if end < 0 else end + len(tag.group(0))
        elif ch == ";":
            statements.append(sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _skip_quoted(sql: str, i: int, quote: str) -> int:
    """Index just past the quoted text opened at ``i`` (a doubled quote is an escaped one)."""
    j = i + 1
    while j < len(sql):
        if sql[j] == quote:
            if sql.startswith(quote * 2, j):
                j += 2
                continue
            return j + 1
        j += 1
    return j


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.DOTALL)
    return bool(without_comments.strip())


def _table_name(token: str) -> str:
    """PostgreSQL's name for an identifier: quoted ones verbatim, unquoted ones folded to lower case."""
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


def classify(statement: str) -> Statement:
    """Recognise a CTAS, INSERT INTO or DROP TABLE, rewriting AEP-only CTAS options away."""
    code = statement[_LEADING_COMMENTS.match(statement).end() :]
    if match := _CTAS.match(code):
        options = match.group("options") or ""
        title = _SCHEMA_OPTION.search(options)
        if_not_exists = "IF NOT EXISTS " if match.group("if_not_exists") else ""
        return Statement(
            sql=f"CREATE TABLE {if_not_exists}{match.group('table')} AS {match.group('select')}",
            kind="ctas",
            table=_table_name(match.group("table")),
            if_exists=bool(if_not_exists),
            schema_title=title.group("title").replace("''", "'") if title else None,
        )
    if match := _INSERT_INTO.match(code):
        return Statement(sql=statement, kind="insert", table=_table_name(match.group("table")))
    if match := _DROP_TABLE.match(code):
        return Statement(
            sql=statement,
            kind="drop",
            table=_table_name(match.group("table")),
            if_exists=bool(match.group("if_exists")),
        )
    if _ANY_DROP_TABLE.match(code):
        # Several tables, a schema-qualified name or CASCADE would escape the one-dataset check.
        return Statement(sql=statement, kind="unsupported_drop")
    return Statement(sql=statement)
