"""A Profile Query Language (PQL) subset compiled to a parameterised PostgreSQL predicate.

Supported: comparisons ``= != < <= > >=`` between an XDM path (``_acme.propensity``,
``person.name.lastName``) and a number, string or boolean literal; ``and`` / ``or`` / ``not``;
parentheses; ``path.isNotNull()`` / ``path.isNull()`` and ``exists path``. A path compiles to the
quoted dotted column of the flattened Profile tables (``"_acme.propensity"``), so the predicate
runs against any relation whose columns are XDM leaf paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple


@dataclass(frozen=True)
class Not:
    operand: Any


Node = Compare | NullCheck | BoolOp | Not

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op><=|>=|!=|==|=|<|>)
      | (?P<call>\.isNotNull\(\)|\.isNull\(\))
      | (?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.(?!isNotNull\(\)|isNull\(\))[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<paren>[()])
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "exists", "true", "false"}
_SQL_OPS = {"=": "=", "==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_NUMERIC_TYPES = ("smallint", "integer", "bigint", "double precision", "real", "numeric")


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise PQLError(f"Invalid PQL: unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "path" and value.lower() in _KEYWORDS:
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

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise PQLError(f"Invalid PQL: unexpected end of expression {self.text!r}")
        if kind is not None and token[0] != kind:
            raise PQLError(f"Invalid PQL: expected {kind} but found {token[1]!r} in {self.text!r}")
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
            return NullCheck(Path(self.take("path")[1]), is_null=False)
        if kind == "paren":
            self.take()
            node = self.or_expr()
            if self.take("paren")[1] != ")":
                raise PQLError(f"Invalid PQL: unbalanced parentheses in {self.text!r}")
            return node
        return self.predicate()

    def predicate(self) -> Node:
        path = Path(self.take("path")[1])
        kind, value = self.take()
        if kind == "call":
            return NullCheck(path, is_null=value == ".isNull()")
        if kind != "op":
            raise PQLError(f"Invalid PQL: expected a comparison after {path.name!r}, found {value!r}")
        return Compare(path, value, self.literal())

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
    :raises PQLError: on a syntax error.
    """
    return _Parser(text).parse()


def paths(node: Node) -> set[str]:
    """Every XDM path the expression reads."""
    if isinstance(node, (Compare, NullCheck)):
        return {node.path.name}
    if isinstance(node, Not):
        return paths(node.operand)
    return set().union(*(paths(operand) for operand in node.operands))


def compile_predicate(text: str, columns: Mapping[str, str]) -> tuple[str, list[Any]]:
    """Compile PQL into ``(sql, params)``: a predicate over quoted dotted columns, ``%s`` parameters.

    :param text: the PQL text.
    :param columns: column name (XDM leaf path) -> PostgreSQL type name, of the relation queried.
    :raises PQLError: on a syntax error, an unknown field or a literal of the wrong type.
    """
    params: list[Any] = []

    def emit(node: Node) -> str:
        if isinstance(node, BoolOp):
            return "(" + f" {node.op.upper()} ".join(emit(operand) for operand in node.operands) + ")"
        if isinstance(node, Not):
            return f"(NOT COALESCE({emit(node.operand)}, false))"
        column = _column(node.path, columns)
        if isinstance(node, NullCheck):
            return f"({column} IS {'' if node.is_null else 'NOT '}NULL)"
        _check_type(node, columns[node.path.name])
        params.append(node.literal.value)
        return f"({column} {_SQL_OPS[node.op]} %s)"

    return emit(parse(text)), params


def _column(path: Path, columns: Mapping[str, str]) -> str:
    if path.name not in columns:
        raise PQLError(f"Invalid PQL: field {path.name!r} is not defined in the Profile union schema")
    return quote_ident(path.name)


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
