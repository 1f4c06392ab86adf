"""The Query Service wire endpoint's SQL layer: what the proxy does with the SQL a client sends.

The proxy (:mod:`aep_emulator.qs_proxy`) hands every client message to a :class:`WireSession`.
Messages without SQL pass on as they are. A query (simple protocol ``Q``, or ``Parse`` of the
extended protocol) is translated from Spark SQL (:mod:`aep_emulator.qs_translate`): a plain query
passes on to PostgreSQL rewritten, so results stream from PostgreSQL as before; a statement with an
effect on Catalog or an AEP extension (CTAS, INSERT INTO, DROP TABLE, ``ANALYZE TABLE``, Query
Service ``SET``s, anonymous blocks, ``SET @var``) runs in the shared executor
(:mod:`aep_emulator.qs_exec`), which registers CTAS datasets as the REST path does, and the session
answers the client itself in the protocol's messages. Such statements commit at once, whatever
transaction the client opened: AEP has no transactions to join.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psycopg
from psycopg.pq import PGresult

from aep_emulator import qs_exec, qs_sql, qs_translate
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
            return message(b"Q", forwarded.encode() + b"\0")
        replies = await self._execute(sql)
        await self._answer([*replies, self._ready()])
        return None

    def _passthrough(self, sql: str) -> str | None:
        """The translated script when PostgreSQL can run all of it as it is; None when the executor must."""
        try:
            statements = qs_sql.split_statements(sql)
        except qs_sql.ScriptError as exc:
            raise qs_exec.QueryFailed("42601", str(exc)) from None
        if not statements:
            return sql
        translated = []
        with self.emu.db.connection() as conn:
            executor = qs_exec.Executor(self.emu, conn, self.sandbox, sandbox_schema(self.sandbox), self.session)
            for statement in statements:
                if qs_sql.parse_block(statement) or qs_sql.parse_assignment(statement) or "@" in statement:
                    return None
                result = executor.translate(statement)
                if result.kind not in _PASSTHROUGH_KINDS and not _plain_set(result):
                    return None
                translated.append(result.sql)
        return ";\n".join(translated)

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

    def _connect(self) -> psycopg.Connection:
        timeout_ms = self.emu.settings.qs_statement_timeout_s * 1000
        options = f"-c search_path={sandbox_schema(self.sandbox)} -c statement_timeout={timeout_ms} -c TimeZone=UTC"
        return psycopg.connect(self.emu.settings.pg_dsn, options=options)

    def _run(self, sql: str) -> qs_exec.Outcome:
        with self._connect() as conn:
            executor = qs_exec.Executor(self.emu, conn, self.sandbox, sandbox_schema(self.sandbox), self.session)
            outcome = executor.run(sql)
        # Committed: the CTAS tables get their datasets, as a REST query's do.
        qs_exec.register_datasets(self.emu, self.sandbox, f"wire-{id(self):x}", outcome.created_tables)
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
            return message(b"P", name + b"\0" + forwarded.encode() + b"\0" + params)
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
