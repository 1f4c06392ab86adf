"""The Query Service wire endpoint's SQL layer: what the proxy does with the SQL a client sends.

The proxy (:mod:`aep_emulator.qs_proxy`) hands every client message to a :class:`WireSession`.
Messages without SQL pass on as they are. A query (simple protocol ``Q``, or ``Parse`` of the
extended protocol) is translated from Spark SQL (:mod:`aep_emulator.qs_translate`): a plain query
passes on to PostgreSQL rewritten, so results stream from PostgreSQL as before; when a statement
guard (:mod:`aep_emulator.qs_guard`) refuses the rewritten text, PostgreSQL gets a statement failing
with the refusal's SQLSTATE instead, so errors and ReadyForQuery keep PostgreSQL's order and the
transaction's state. A statement with an effect on Catalog or an AEP extension (CTAS, INSERT INTO,
DROP TABLE, ``ANALYZE TABLE``, Query Service ``SET``s, anonymous blocks, ``SET @var``) runs in the
shared executor (:mod:`aep_emulator.qs_exec`), logged in as the sandbox's role like the client's
own session and guarded the same way; it records CTAS and DROP in Catalog as the REST path does,
and the session answers the client itself in the protocol's messages. Such statements commit at
once, whatever transaction the client opened: AEP has no transactions to join.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psycopg
from psycopg.pq import PGresult

from aep_emulator import qs_exec, qs_guard, qs_sql, qs_translate
from aep_emulator.db import sandbox_schema
from aep_emulator.runtime import Emulator

log = logging.getLogger(__name__)

# Statement kinds PostgreSQL runs as translated; every other kind needs the executor.
_PASSTHROUGH_KINDS = frozenset({"query", "other"})


def message(tag: bytes, payload: bytes) -> bytes:
    """One backend protocol message."""
    return tag + struct.pack("!I", len(payload) + 4) + payload


def error_response(code: str, text: str, severity: str = "ERROR") -> bytes:
    fields = [b"S" + severity.encode(), b"V" + severity.encode(), b"C" + code.encode(), b"M" + text.encode()]
    return message(b"E", b"\0".join(fields) + b"\0\0")


def _row_description(result: PGresult) -> bytes:
    payload = struct.pack("!h", result.nfields)
    for i in range(result.nfields):
        payload += (result.fname(i) or b"?column?") + b"\0"
        payload += struct.pack("!ihihih", 0, 0, result.ftype(i), result.fsize(i), result.fmod(i), 0)
    return message(b"T", payload)


def _data_rows(result: PGresult, cap: int) -> tuple[list[bytes], int]:
    rows = []
    for r in range(min(result.ntuples, cap)):
        payload = struct.pack("!h", result.nfields)
        for c in range(result.nfields):
            value = result.get_value(r, c)
            payload += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
        rows.append(message(b"D", payload))
    return rows, len(rows)


def _command_complete(tag: str, rows: int | None) -> bytes:
    if rows is not None and tag.split(" ")[0] == "SELECT":
        tag = f"SELECT {rows}"
    return message(b"C", tag.encode() + b"\0")


@dataclass
class _Prepared:
    """An extended-protocol statement the session answers itself, and its outcome once run."""

    sql: str
    outcome: list[bytes] | None = None
    failed: bool = False


@dataclass
class WireSession:
    """One client connection's SQL state.

    :param emu: the running emulator.
    :param sandbox: the session's sandbox.
    :param send: writes bytes to the client.
    :param backend_idle: waits until PostgreSQL has answered everything passed on to it.
    """

    emu: Emulator
    sandbox: str
    send: Callable[[bytes], Awaitable[None]]
    backend_idle: Callable[[], Awaitable[None]]
    transaction_status: bytes = b"I"
    session: qs_exec.Session = field(default_factory=qs_exec.Session)
    _statements: dict[bytes, _Prepared] = field(default_factory=dict)
    _portals: dict[bytes, _Prepared] = field(default_factory=dict)
    _skipping: bool = False
    _answering: bool = False

    @property
    def schema(self) -> str:
        """The sandbox's PostgreSQL schema."""
        return sandbox_schema(self.sandbox)

    async def from_client(self, tag: bytes, payload: bytes) -> bytes | None:
        """The bytes to pass on to PostgreSQL for one client message; None when the session answered."""
        if tag == b"Q":
            return await self._simple_query(payload)
        if tag == b"P":
            return await self._parse(payload)
        if self._answering or self._skipping:
            return await self._extended(tag, payload)
        return message(tag, payload)

    # --- simple protocol ------------------------------------------------------------------------

    async def _simple_query(self, payload: bytes) -> bytes | None:
        sql = payload.rstrip(b"\0").decode()
        try:
            forwarded = await asyncio.to_thread(self._passthrough, sql)
        except qs_exec.QueryFailed as exc:
            await self._answer([error_response(exc.code, str(exc)), self._ready()])
            return None
        if forwarded is not None:
            return message(b"Q", self._guarded(forwarded).encode() + b"\0")
        replies = await self._execute(sql)
        await self._answer([*replies, self._ready()])
        return None

    def _passthrough(self, sql: str) -> list[str] | None:
        """The translated statements when PostgreSQL can run all of them as they are; None when the
        executor must.

        Only the names are looked up here, in the emulator's own session (no client SQL runs in it).
        """
        try:
            statements = qs_sql.split_statements(sql)
        except qs_sql.ScriptError as exc:
            raise qs_exec.QueryFailed("42601", str(exc)) from None
        if not statements:
            return [sql]
        translated = []
        with self.emu.db.connection() as conn:
            executor = qs_exec.Executor(self.emu, conn, self.sandbox, self.schema, self.session)
            for statement in statements:
                if qs_sql.parse_block(statement) or qs_sql.parse_assignment(statement) or "@" in statement:
                    return None
                result = executor.translate(statement)
                if result.kind not in _PASSTHROUGH_KINDS and not _plain_set(result):
                    return None
                translated.append(result.sql)
        return translated

    def _guarded(self, statements: list[str], parameters: int = 0) -> str:
        """The translated statements as one text, or, when a guard refuses one of them, a statement
        failing with the first refusal (taking ``parameters`` ``$n``, so a Bind still fits)."""
        for statement in statements:
            if refusal := qs_guard.check_statement(statement):
                return qs_guard.refusal_sql(self.schema, refusal, parameters)
        return ";\n".join(statements)

    async def _execute(self, sql: str) -> list[bytes]:
        """Run a script in the executor; its results (or its error) as protocol messages."""
        try:
            outcome = await asyncio.to_thread(self._run, sql)
        except qs_exec.QueryFailed as exc:
            return [error_response(exc.code, str(exc))]
        except psycopg.Error as exc:
            return [error_response(exc.sqlstate or "58000", exc.diag.message_primary or str(exc))]
        except Exception as exc:  # the client must get an answer; the cause is logged
            log.exception("Query Service wire statement failed unexpectedly")
            return [error_response("58000", f"System error: {exc}")]
        replies = []
        cap = self.emu.settings.qs_row_cap
        for result in outcome.results:
            if result.result is None:
                replies.append(_command_complete(result.tag, None))
                continue
            rows, count = _data_rows(result.result, cap)
            replies += [_row_description(result.result), *rows, _command_complete(result.tag, count)]
        return replies

    def _run(self, sql: str) -> qs_exec.Outcome:
        with qs_exec.connect(self.emu, self.sandbox) as conn:
            executor = qs_exec.Executor(self.emu, conn, self.sandbox, self.schema, self.session)
            outcome = executor.run(sql)
        # Committed: Catalog learns of the CTAS and DROP TABLE, as after a REST query.
        qs_exec.record_catalog_effects(self.emu, self.sandbox, f"wire-{id(self):x}", outcome)
        return outcome

    async def _answer(self, replies: list[bytes]) -> None:
        await self.backend_idle()
        await self.send(b"".join(replies))

    def _ready(self) -> bytes:
        return message(b"Z", self.transaction_status)

    # --- extended protocol ----------------------------------------------------------------------

    async def _parse(self, payload: bytes) -> bytes | None:
        name, rest = payload.split(b"\0", 1)
        sql, params = rest.split(b"\0", 1)
        text = sql.decode()
        try:
            forwarded = await asyncio.to_thread(self._passthrough, text)
        except qs_exec.QueryFailed as exc:
            self._statements[name] = _Prepared(text, [error_response(exc.code, str(exc))], failed=True)
            self._answering = True
            return await self._extended(b"P", payload, prepared=self._statements[name])
        if forwarded is not None and not self._answering:
            (declared,) = struct.unpack("!h", params[:2])
            parameters = max(declared, *map(qs_guard.parameter_count, forwarded))
            return message(b"P", name + b"\0" + self._guarded(forwarded, parameters).encode() + b"\0" + params)
        self._statements[name] = _Prepared(text)
        self._answering = True
        return await self._extended(b"P", payload, prepared=self._statements[name])

    async def _extended(self, tag: bytes, payload: bytes, prepared: _Prepared | None = None) -> bytes | None:
        """Answer Parse/Bind/Describe/Execute/Close/Sync of a statement the executor runs."""
        if tag == b"S":
            self._skipping = self._answering = False
            await self._answer([self._ready()])
            return None
        if self._skipping:
            return None
        replies: list[bytes] = []
        if tag == b"P":
            if prepared.failed:
                replies, self._skipping = prepared.outcome, True
            else:
                replies = [message(b"1", b"")]
        elif tag == b"B":
            portal, rest = payload.split(b"\0", 1)
            statement_name = rest.split(b"\0", 1)[0]
            statement = self._statements.get(statement_name)
            if statement is None:
                replies, self._skipping = [error_response("26000", "prepared statement does not exist")], True
            elif struct.unpack("!h", rest[len(statement_name) + 1 : len(statement_name) + 3])[0] > 0:
                replies = [error_response("0A000", "parameters are not supported with this statement here")]
                self._skipping = True
            else:
                self._portals[portal] = _Prepared(statement.sql)
                replies = [message(b"2", b"")]
        elif tag == b"D" and payload[:1] == b"S":
            replies = [message(b"t", struct.pack("!h", 0)), message(b"n", b"")]
        elif tag == b"D":
            replies = await self._portal(self._portals.get(payload[1:].rstrip(b"\0")), describe=True)
        elif tag == b"E":
            replies = await self._portal(self._portals.get(payload.split(b"\0", 1)[0]), describe=False)
        elif tag == b"C":
            replies = [message(b"3", b"")]
        elif tag == b"H":
            replies = []
        else:
            replies, self._skipping = [error_response("08P01", f"unexpected message {tag!r}")], True
        if replies:
            await self._answer(replies)
        return None

    async def _portal(self, portal: _Prepared | None, *, describe: bool) -> list[bytes]:
        if portal is None:
            self._skipping = True
            return [error_response("34000", "portal does not exist")]
        if portal.outcome is None:
            portal.outcome = await self._execute(portal.sql)
        replies = portal.outcome
        if replies and replies[0][:1] == b"E":
            self._skipping = True
            return replies
        has_rows = bool(replies) and replies[0][:1] == b"T"
        if describe:
            return [replies[0]] if has_rows else [message(b"n", b"")]
        return replies[1:] if has_rows else replies[-1:]


def _plain_set(statement: qs_translate.Translated) -> bool:
    """A ``SET`` of a PostgreSQL setting (not one of Query Service's own)."""
    return statement.kind == "set" and bool(statement.setting) and statement.setting[0] not in qs_exec.QS_SETTINGS
