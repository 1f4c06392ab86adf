"""Query Service statement guards: what client SQL is refused before PostgreSQL sees it.

The boundary between sandboxes is the sandbox's role (:mod:`aep_emulator.sandbox_roles`): without
privileges, reading another sandbox, ``aep_meta`` or server files fails in PostgreSQL itself (42501).
These guards refuse, with AEP's codes, what a role *may* do to its own session but AEP does not let
a client do: move the session out of its sandbox's schema, lift the statement timeout, switch role
or session user, change role settings. Over the wire the same goes for startup parameters: only the
presentation settings below are passed on to PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Startup parameters a client may set for its session (lower case, as PostgreSQL compares them);
# any other (``options``, ``search_path``, ``role``, ``statement_timeout``...) is dropped.
CLIENT_STARTUP_PARAMETERS = frozenset(
    {"application_name", "client_encoding", "datestyle", "timezone", "intervalstyle", "extra_float_digits"}
)
# Settings fixed for a Query Service session.
FIXED_SETTINGS = ("search_path", "statement_timeout", "role", "session_authorization")

# Between two keywords PostgreSQL accepts white space and comments.
_GAP = r"(?:\s|/\*.*?\*/|--[^\n]*(?:\n|$))+"
_SETTING = r'"?(?P<name>' + "|".join(FIXED_SETTINGS) + r')"?\b'
_RULES: tuple[tuple[re.Pattern, str, str], ...] = (
    (
        re.compile(rf"\bALTER{_GAP}(?:ROLE|USER|GROUP)\b", re.I | re.S),
        "42501",
        "ALTER ROLE is not allowed in Query Service",
    ),
    (
        re.compile(rf"\bSET{_GAP}(?:(?:SESSION|LOCAL){_GAP})?(?:ROLE\b|SESSION{_GAP}AUTHORIZATION\b)", re.I | re.S),
        "42501",
        "SET ROLE and SET SESSION AUTHORIZATION are not allowed: a Query Service session keeps its sandbox's role",
    ),
    (
        re.compile(rf"\bRESET{_GAP}(?:ROLE\b|SESSION{_GAP}AUTHORIZATION\b)", re.I | re.S),
        "42501",
        "RESET ROLE and RESET SESSION AUTHORIZATION are not allowed: a Query Service session keeps its sandbox's role",
    ),
    (
        re.compile(rf"\b(?:SET|RESET){_GAP}(?:(?:SESSION|LOCAL){_GAP})?{_SETTING}", re.I | re.S),
        "0A000",
        "changing {name} is not supported: a Query Service session stays in its sandbox, with AEP's statement timeout",
    ),
    (
        re.compile(r'(?<![\w$])"?set_config"?\s*\(', re.I),
        "0A000",
        "set_config() is not supported: Query Service session settings are fixed",
    ),
    (
        re.compile(r'(?<![\w$])"?lo_\w+"?\s*\(', re.I),
        "0A000",
        "large objects are not supported by Query Service",
    ),
)


@dataclass(frozen=True)
class Refusal:
    """Why a statement is refused: an AEP SQLSTATE and a message naming what to do instead."""

    code: str
    message: str


def check_statement(statement: str) -> Refusal | None:
    """The refusal of one statement (its quoted text and bodies included), or None when it may run."""
    for pattern, code, message in _RULES:
        if match := pattern.search(statement):
            name = match.groupdict().get("name")
            return Refusal(code, message.format(name=(name or "").lower()))
    return None


def client_startup_parameters(parameters: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The startup parameters passed on to PostgreSQL, and the names of those dropped."""
    kept = {k: v for k, v in parameters.items() if k.lower() in CLIENT_STARTUP_PARAMETERS}
    dropped = sorted(k for k in parameters if k not in kept and k not in ("user", "database"))
    return kept, dropped


def refusal_sql(schema: str, refusal: Refusal, parameters: int = 0) -> str:
    """SQL that fails with the refusal's SQLSTATE when PostgreSQL runs it (the wire endpoint sends it
    in place of the refused statement, so errors and ReadyForQuery keep PostgreSQL's order and the
    transaction state).

    :param schema: the sandbox's schema, where ``qs_refuse`` lives.
    :param refusal: the refusal.
    :param parameters: how many ``$n`` parameters the replaced statement takes (a Bind supplies them).
    """
    message = refusal.message.replace("'", "''")
    source = (
        f" FROM (SELECT {', '.join(f'${i}' for i in range(1, parameters + 1))}) AS parameters" if parameters else ""
    )
    return f"SELECT {schema}.qs_refuse('{refusal.code}', '{message}'){source}"


def refusal_block(schema: str, refusal: Refusal) -> str:
    """A DO block failing with the refusal: answered by an error alone, with no row description
    first (what the wire endpoint sends in place of a fast-path function call)."""
    return f"DO $refusal$ BEGIN PERFORM {refusal_sql(schema, refusal).removeprefix('SELECT ')}; END $refusal$"


_PARAMETER = re.compile(r"\$(\d+)")


def parameter_count(statement: str) -> int:
    """The highest ``$n`` in a statement (0 when none)."""
    return max((int(n) for n in _PARAMETER.findall(statement)), default=0)
