"""A Profile Query Language (PQL) subset compiled to a parameterised PostgreSQL predicate.

Supported, over profile attributes and over the profile's experience events (``xEvent``):

- comparisons ``= != < <= > >=`` between an XDM path (``_acme.propensity``, ``person.name.lastName``)
  and a number, string or boolean literal; ``and`` / ``or`` / ``not``; parentheses;
- ``path.isNotNull()`` / ``path.isNull()`` and ``exists path``;
- string functions ``path.equals("v"[, caseSensitive])``, ``path.contains("v"[, caseSensitive])``,
  ``path.startsWith("v"[, caseSensitive])``, ``path.endsWith(...)`` and ``path in ["a", "b"]``;
- events: ``select X from xEvent where <condition on X>`` (the profile has such an event) and
  ``xEvent[<condition>].count() <op> n``; in a condition, ``X.timestamp occurs <op> n days before now``
  (units seconds to years).

A path compiles to the quoted dotted column of the flattened tables (``"_acme.propensity"``).
Anything else is refused with an error naming the construct (``chain(...)``, for one).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aep_emulator.db import quote_ident


class PQLError(ValueError):
    """The expression is not valid PQL (syntax), or names a field the data does not have."""


@dataclass(frozen=True)
class Path:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Compare:
    path: Path
    op: str
    literal: Literal


@dataclass(frozen=True)
class NullCheck:
    path: Path
    is_null: bool


@dataclass(frozen=True)
class StringMatch:
    """``path.equals/contains/startsWith/endsWith(value, caseSensitive)``."""

    path: Path
    function: str
    value: str
    case_sensitive: bool = True


@dataclass(frozen=True)
class InList:
    path: Path
    values: tuple


@dataclass(frozen=True)
class Occurs:
    """``path occurs <op> amount unit before now``."""

    path: Path
    op: str
    amount: float
    unit: str


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class EventQuery:
    """Events of the profile matching ``condition``: any (``count`` None) or ``count() <op> n``."""

    condition: Any
    count: tuple[str, int] | None = None


Node = Compare | NullCheck | StringMatch | InList | Occurs | BoolOp | Not | EventQuery

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op><=|>=|!=|==|=|<|>)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[()\[\],.])
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "exists", "true", "false", "in", "occurs", "select", "from", "where"}
_SQL_OPS = {"=": "=", "==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_OPERATORS = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NUMERIC_TYPES = ("smallint", "integer", "bigint", "double precision", "real", "numeric")
_STRING_FUNCTIONS = ("equals", "contains", "startsWith", "endsWith")
_UNITS = {
    "second": "seconds",
    "minute": "minutes",
    "hour": "hours",
    "day": "days",
    "week": "weeks",
    "month": "months",
    "year": "years",
}
EVENTS = "xEvent"


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise PQLError(f"Invalid PQL: unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "word" and value.lower() in _KEYWORDS:
            kind = value.lower()
        tokens.append((kind, value))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := unary ('and' unary)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.event_alias: str | None = None

    def peek(self, ahead: int = 0) -> tuple[str, str] | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise PQLError(f"Invalid PQL: unexpected end of expression {self.text!r}")
        if (kind is not None and token[0] != kind) or (value is not None and token[1] != value):
            raise PQLError(f"Invalid PQL: expected {value or kind} but found {token[1]!r} in {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise PQLError("Invalid PQL: the expression is empty")
        node = self.or_expr()
        if self.peek() is not None:
            raise PQLError(f"Invalid PQL: unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def _chain(self, keyword: str, operand) -> Node:
        operands = [operand()]
        while self.peek() and self.peek()[0] == keyword:
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(keyword, tuple(operands))

    def or_expr(self) -> Node:
        return self._chain("or", self.and_expr)

    def and_expr(self) -> Node:
        return self._chain("and", self.unary)

    def unary(self) -> Node:
        kind = self.peek()[0] if self.peek() else None
        if kind == "not":
            self.take()
            return Not(self.unary())
        if kind == "exists":
            self.take()
            return NullCheck(self.path(), is_null=False)
        if kind == "punct" and self.peek()[1] == "(":
            self.take()
            node = self.or_expr()
            self.take("punct", ")")
            return node
        if kind == "select":
            return self.select_events()
        if kind == "word" and self.peek()[1] == EVENTS and self.peek(1) == ("punct", "["):
            return self.count_events()
        if kind == "word" and self.peek(1) == ("punct", "("):
            raise PQLError(f"Invalid PQL: the function {self.peek()[1]}() is not supported by the emulator's PQL")
        return self.predicate()

    def _event_condition(self, alias: str | None) -> Node:
        if self.event_alias is not None:
            raise PQLError("Invalid PQL: a query over xEvent inside another one is not supported")
        self.event_alias = alias
        try:
            return self.or_expr()
        finally:
            self.event_alias = None

    def select_events(self) -> Node:
        """``select X from xEvent where <condition>``."""
        self.take("select")
        alias = self.take("word")[1]
        self.take("from")
        source = self.take("word")[1]
        if source != EVENTS:
            raise PQLError(f"Invalid PQL: select ... from {source} is not supported; select from xEvent")
        self.take("where")
        return EventQuery(self._event_condition(alias))

    def count_events(self) -> Node:
        """``xEvent[<condition>].count() <op> n``."""
        self.take("word", EVENTS)
        self.take("punct", "[")
        condition = self._event_condition(None)
        self.take("punct", "]")
        self.take("punct", ".")
        function = self.take("word")[1]
        if function != "count":
            raise PQLError(f"Invalid PQL: xEvent[...].{function}() is not supported; use count()")
        self.take("punct", "(")
        self.take("punct", ")")
        op = self.take("op")[1]
        amount = self.literal().value
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise PQLError("Invalid PQL: count() compares with a whole number")
        return EventQuery(condition, count=(op, amount))

    def path(self) -> Path:
        parts = [self.take("word")[1]]
        while self.peek() == ("punct", ".") and self.peek(1) and self.peek(1)[0] == "word":
            if self.peek(2) == ("punct", "("):
                break  # a method call
            self.take()
            parts.append(self.take()[1])
        if self.event_alias is not None and len(parts) > 1 and parts[0] == self.event_alias:
            parts = parts[1:]
        return Path(".".join(parts))

    def predicate(self) -> Node:
        path = self.path()
        token = self.peek()
        if token == ("punct", "."):
            self.take()
            method = self.take("word")[1]
            self.take("punct", "(")
            return self.method(path, method)
        if token is not None and token[0] == "in":
            self.take()
            self.take("punct", "[")
            values = [self.literal().value]
            while self.peek() == ("punct", ","):
                self.take()
                values.append(self.literal().value)
            self.take("punct", "]")
            return InList(path, tuple(values))
        if token is not None and token[0] == "occurs":
            return self.occurs(path)
        kind, value = self.take()
        if kind != "op":
            raise PQLError(f"Invalid PQL: expected a comparison after {path.name!r}, found {value!r}")
        return Compare(path, value, self.literal())

    def method(self, path: Path, method: str) -> Node:
        if method in ("isNull", "isNotNull"):
            self.take("punct", ")")
            return NullCheck(path, is_null=method == "isNull")
        if method not in _STRING_FUNCTIONS:
            raise PQLError(f"Invalid PQL: the function {method}() is not supported by the emulator's PQL")
        value = self.literal().value
        if not isinstance(value, str):
            raise PQLError(f"Invalid PQL: {method}() takes a string")
        case_sensitive = True
        if self.peek() == ("punct", ","):
            self.take()
            flag = self.take()
            if flag[0] not in ("true", "false"):
                raise PQLError(f"Invalid PQL: {method}()'s second argument is true or false (case sensitive)")
            case_sensitive = flag[0] == "true"
        self.take("punct", ")")
        return StringMatch(path, method, value, case_sensitive)

    def occurs(self, path: Path) -> Node:
        self.take("occurs")
        op = self.take("op")[1]
        if op not in ("<", "<=", ">", ">="):
            raise PQLError(
                "Invalid PQL: occurs takes <, <=, > or >= and a relative time, e.g. occurs < 7 days before now"
            )
        amount = self.literal().value
        unit = self.take("word")[1].lower().rstrip("s")
        if unit not in _UNITS or isinstance(amount, (str, bool)):
            raise PQLError(f"Invalid PQL: occurs {op} {amount} {unit}: use a number and seconds, minutes, ... years")
        direction = self.take("word")[1]
        now = self.take("word")[1]
        if (direction, now) != ("before", "now"):
            raise PQLError(f"Invalid PQL: occurs ... {direction} {now} is not supported; write ... before now")
        return Occurs(path, op, float(amount), _UNITS[unit])

    def literal(self) -> Literal:
        kind, value = self.take()
        if kind == "number":
            return Literal(float(value) if any(c in value for c in ".eE") else int(value))
        if kind == "string":
            return Literal(re.sub(r"\\(.)", r"\1", value[1:-1]))
        if kind in ("true", "false"):
            return Literal(kind == "true")
        raise PQLError(f"Invalid PQL: expected a number, string or boolean, found {value!r}")


def parse(text: str) -> Node:
    """Parse a PQL text expression.

    :param text: the ``expression.value`` of a segment definition.
    :raises PQLError: on a syntax error or an unsupported construct.
    """
    unsupported = re.search(r"\b(chain|split|avg|sum|min|max|average)\s*\(", text)
    if unsupported:
        raise PQLError(f"Invalid PQL: the function {unsupported.group(1)}() is not supported by the emulator's PQL")
    return _Parser(text).parse()


def paths(node: Node) -> set[str]:
    """Every profile XDM path the expression reads (event paths excluded)."""
    if isinstance(node, EventQuery):
        return set()
    if isinstance(node, Not):
        return paths(node.operand)
    if isinstance(node, BoolOp):
        return set().union(*(paths(operand) for operand in node.operands))
    return {node.path.name}


@dataclass(frozen=True)
class EventRelation:
    """The profiles' experience events for ``xEvent``: a relation with ``__namespace``, ``__identity`` and
    the events' leaf columns.

    :param sql: a subquery (``%s`` parameters in ``params``) producing that relation.
    :param columns: column -> PostgreSQL type.
    """

    sql: str
    params: list = field(default_factory=list)
    columns: Mapping[str, str] = field(default_factory=dict)


def compile_predicate(
    text: str, columns: Mapping[str, str], events: EventRelation | None = None, profile_alias: str = "p"
) -> tuple[str, list[Any]]:
    """Compile PQL into ``(sql, params)``: a predicate over quoted dotted columns, ``%s`` parameters.

    :param text: the PQL text.
    :param columns: column name (XDM leaf path) -> PostgreSQL type name, of the profiles.
    :param events: the experience events ``xEvent`` reads (None: there are none).
    :param profile_alias: the alias of the profile relation the predicate filters (its
        ``__namespace``, ``__identity`` join the events).
    :raises PQLError: on a syntax error, an unknown field or a literal of the wrong type.
    """
    params: list[Any] = []

    def emit(node: Node, scope: Mapping[str, str], qualifier: str) -> str:
        if isinstance(node, BoolOp):
            return "(" + f" {node.op.upper()} ".join(emit(operand, scope, qualifier) for operand in node.operands) + ")"
        if isinstance(node, Not):
            return f"(NOT COALESCE({emit(node.operand, scope, qualifier)}, false))"
        if isinstance(node, EventQuery):
            if events is None:
                raise PQLError("Invalid PQL: xEvent has no Profile-enabled ExperienceEvent dataset to read")
            # Uncorrelated semi-joins on (namespace, identity): PostgreSQL hashes them once, where a
            # correlated subquery would scan the events once per profile.
            params.extend(events.params)
            condition = emit(node.condition, events.columns, '"xEvent".')
            profile = f"({profile_alias}.__namespace, {profile_alias}.__identity)"
            matched = (
                f'SELECT "xEvent".__namespace, "xEvent".__identity FROM ({events.sql}) AS "xEvent"'
                f" WHERE COALESCE({condition}, false)"
            )
            if node.count is None:
                return f"({profile} IN ({matched}))"
            op, amount = node.count
            params.append(amount)
            having = f"count(*) {_SQL_OPS[op]} %s"
            # A profile without matching events has count() = 0: it qualifies when 0 <op> n does.
            if _OPERATORS[op](0, amount):
                return f"({profile} NOT IN ({matched} GROUP BY 1, 2 HAVING NOT ({having})))"
            return f"({profile} IN ({matched} GROUP BY 1, 2 HAVING {having}))"
        column = qualifier + _column(node.path, scope, events_scope=qualifier != "")
        column_type = scope[node.path.name]
        if isinstance(node, NullCheck):
            return f"({column} IS {'' if node.is_null else 'NOT '}NULL)"
        if isinstance(node, StringMatch):
            _check_text(node.path, column_type, node.function)
            value, target = (node.value, column) if node.case_sensitive else (node.value.lower(), f"lower({column})")
            if node.function == "endsWith":
                params.extend([value, value])
                return f"(right({target}, length(%s)) = %s)"
            params.append(value)
            if node.function == "equals":
                return f"({target} = %s)"
            if node.function == "contains":
                return f"(strpos({target}, %s) > 0)"
            return f"starts_with({target}, %s)"
        if isinstance(node, InList):
            for value in node.values:
                _check_type(Compare(node.path, "=", Literal(value)), column_type)
            params.append(list(node.values))
            return f"({column} = ANY(%s))"
        if isinstance(node, Occurs):
            if "timestamp" not in column_type and column_type != "date":
                raise PQLError(f"Invalid PQL: {node.path.name!r} is {column_type}; occurs needs a date-time")
            params.append(f"{node.amount:g} {node.unit}")
            bound = "(now() - %s::interval)"
            flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[node.op]
            return f"({column} {flipped} {bound})"
        _check_type(node, column_type)
        params.append(node.literal.value)
        return f"({column} {_SQL_OPS[node.op]} %s)"

    return emit(parse(text), columns, ""), params


def _column(path: Path, columns: Mapping[str, str], *, events_scope: bool = False) -> str:
    if path.name not in columns:
        where = "the ExperienceEvent datasets of xEvent" if events_scope else "the Profile union schema"
        raise PQLError(f"Invalid PQL: field {path.name!r} is not defined in {where}")
    return quote_ident(path.name)


def _check_text(path: Path, column_type: str, function: str) -> None:
    if column_type != "text":
        raise PQLError(f"Invalid PQL: {path.name!r} is {column_type}; {function}() needs a string field")


def _check_type(node: Compare, column_type: str) -> None:
    value = node.literal.value
    numeric = column_type in _NUMERIC_TYPES
    if isinstance(value, bool):
        if column_type != "boolean":
            raise PQLError(f"Invalid PQL: {node.path.name!r} is {column_type}, not boolean")
        if node.op not in ("=", "==", "!="):
            raise PQLError(f"Invalid PQL: booleans support only = and != ({node.path.name!r})")
    elif isinstance(value, (int, float)) and not numeric:
        raise PQLError(f"Invalid PQL: {node.path.name!r} is {column_type}, compared with a number")
    elif isinstance(value, str) and (numeric or column_type == "boolean"):
        raise PQLError(f"Invalid PQL: {node.path.name!r} is {column_type}, compared with a string")
