"""Query Service SQL scripts: ``$param`` substitution, statement splitting, anonymous blocks
(``$$ BEGIN ... EXCEPTION WHEN OTHER THEN ... END $$``), ``SET @var = SELECT ...`` and ``@var``
references. Splitting and recognising statements go by sqlglot's Spark tokens, so quoted text and
comments never split a statement; what each statement means is :mod:`aep_emulator.qs_translate`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from aep_emulator.qs_translate import tokens

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

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


class ScriptError(ValueError):
    """The SQL cannot be split into statements (an unclosed quote or block)."""


def _tokens(sql: str) -> list[Token]:
    try:
        return tokens(sql)
    except TokenError as exc:
        raise ScriptError(f"the SQL cannot be read: {exc}") from None


def _is_dollar_marker(toks: list[Token], i: int) -> bool:
    """``$$`` (two adjacent ``$`` tokens): the bounds of an anonymous block."""
    return (
        i + 1 < len(toks) and toks[i].text == "$" and toks[i + 1].text == "$" and toks[i + 1].start == toks[i].end + 1
    )


def _split(sql: str, toks: list[Token]) -> list[str]:
    statements, first, in_block, i = [], None, False, 0
    while i < len(toks):
        if _is_dollar_marker(toks, i):
            in_block = not in_block
            first = i if first is None else first
            i += 2
            continue
        if toks[i].token_type == TokenType.SEMICOLON and not in_block:
            if first is not None:
                statements.append(sql[toks[first].start : toks[i - 1].end + 1])
            first = None
        elif first is None:
            first = i
        i += 1
    if in_block:
        raise ScriptError("an anonymous block opened with $$ is not closed with END $$")
    if first is not None:
        statements.append(sql[toks[first].start : toks[-1].end + 1])
    return statements


def split_statements(sql: str) -> list[str]:
    """Split SQL on top-level ``;``, keeping quoted text, comments and ``$$`` blocks whole.

    :param sql: one or more statements.
    :return: the statements, without their terminating ``;`` and leading comments.
    :raises ScriptError: when a quote or block is not closed.
    """
    return _split(sql, _tokens(sql))


@dataclass(frozen=True)
class Block:
    """An anonymous block: ``$$ BEGIN body; [EXCEPTION WHEN OTHER THEN handler;] END $$``.

    :param body: its statements.
    :param handler: the statements run instead when one of the body's fails.
    """

    body: list[str]
    handler: list[str]


def parse_block(statement: str) -> Block | None:
    """The anonymous block ``statement`` is, or None when it is not one.

    :raises ScriptError: a block without BEGIN ... END.
    """
    toks = _tokens(statement)
    if not (_is_dollar_marker(toks, 0) and len(toks) >= 4 and _is_dollar_marker(toks, len(toks) - 2)):
        return None
    inner = toks[2:-2]
    if not inner or inner[0].text.upper() != "BEGIN" or inner[-1].text.upper() != "END":
        raise ScriptError("an anonymous block is written $$ BEGIN <statements>; END $$")
    inner = inner[1:-1]
    words = [t.text.upper() for t in inner]
    handler_at = next(
        (
            i
            for i in range(len(inner) - 3)
            if words[i : i + 3] == ["EXCEPTION", "WHEN", words[i + 2]]
            and words[i + 2] in ("OTHER", "OTHERS")
            and words[i + 3] == "THEN"
        ),
        None,
    )
    body_toks = inner if handler_at is None else inner[:handler_at]
    handler_toks = [] if handler_at is None else inner[handler_at + 4 :]
    return Block(body=_split(statement, body_toks), handler=_split(statement, handler_toks))


def parse_assignment(statement: str) -> tuple[str, str] | None:
    """``SET @name = <query>``: ``(name, query)``; None for any other statement."""
    toks = _tokens(statement)
    if len(toks) < 5 or toks[0].token_type != TokenType.SET or toks[1].text != "@" or toks[3].text != "=":
        return None
    return toks[2].text, statement[toks[4].start :]


def substitute_variables(statement: str, variables: dict[str, str | None]) -> str:
    """Replace every ``@name`` by its value as a SQL string literal (NULL when the query found none).

    :raises ScriptError: a variable that no ``SET @name`` defined.
    """
    toks = _tokens(statement)
    pieces, last = [], 0
    for at, name in zip(toks, toks[1:], strict=False):
        if at.text != "@" or name.start != at.end + 1:
            continue
        if name.text not in variables:
            raise ScriptError(f"variable @{name.text} is not set; set it first with SET @{name.text} = SELECT ...")
        value = variables[name.text]
        literal = "NULL" if value is None else "'" + value.replace("'", "''") + "'"
        pieces += [statement[last : at.start], literal]
        last = name.end + 1
    return "".join(pieces) + statement[last:]


def first_word(statement: str) -> str:
    """The statement's first keyword, upper case (``SELECT``, ``CREATE``, ``$``...)."""
    toks = _tokens(statement)
    return toks[0].text.upper() if toks else ""
