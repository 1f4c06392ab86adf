"""Query Service's interactive PostgreSQL endpoint: a PostgreSQL v3 protocol front for the real server.

The proxy authenticates clients the way AEP does (cleartext password; user = org id, password = a
live IMS token; dbname ``{sandbox}:all`` or ``{sandbox}:{table}``), then logs in to the emulator's
PostgreSQL as the sandbox's own role (:mod:`aep_emulator.sandbox_roles`), with ``search_path`` set to
the sandbox's schema and the QS statement timeout; of the client's startup parameters only the
presentation ones pass (:mod:`aep_emulator.qs_guard`). From there on it relays the client's messages
one by one through the SQL layer (:mod:`aep_emulator.qs_wire`: Spark SQL translated, a refused
statement replaced by one that fails with the refusal's SQLSTATE, statements with Catalog effects run
by the shared executor), and the server's message by message (to cap a result at AEP's 50,000 rows),
so every client PostgreSQL accepts (psql, psycopg2, psycopg 3) works unchanged.

AEP requires TLS; the emulator does not offer it: SSLRequest and GSSENCRequest are answered ``N``,
so clients connect with ``sslmode=disable`` (or ``prefer``) against the emulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct

import scramp
from psycopg.conninfo import conninfo_to_dict

from aep_emulator import qs_guard, sandbox_roles
from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.qs_wire import WireSession
from aep_emulator.runtime import Emulator

log = logging.getLogger(__name__)

PROTOCOL_V3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
# Authentication request codes (the int32 after an 'R' message's length).
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 3, 5, 10, 11, 12
_COPY_CHUNK = 65536


class ClientRejected(Exception):
    """The client may not connect; it gets a FATAL ErrorResponse with this SQLSTATE.

    :param sqlstate: five-character SQLSTATE, e.g. ``28P01``.
    :param message: error message.
    """

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class BackendRejected(Exception):
    """PostgreSQL refused the proxy's login; carries its raw ErrorResponse message for the client.

    :param error_message: the complete ``E`` message PostgreSQL sent.
    """

    def __init__(self, error_message: bytes) -> None:
        super().__init__("PostgreSQL refused the proxy's login")
        self.error_message = error_message


def _message(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("!I", len(payload) + 4) + payload


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = [b"SFATAL", b"VFATAL", b"C" + sqlstate.encode(), b"M" + message.encode()]
    return _message(b"E", b"\0".join(fields) + b"\0\0")


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], await reader.readexactly(length - 4)


def _startup_message(parameters: dict[str, str]) -> bytes:
    body = struct.pack("!I", PROTOCOL_V3)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in parameters.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


class QSProxy:
    """The asyncio server on ``127.0.0.1:settings.qs_port``.

    :param emu: the running emulator (settings, token store, database).
    """

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task] = set()
        backend = conninfo_to_dict(emu.settings.pg_dsn)
        self._backend_host = backend.get("host") or "localhost"
        self._backend_port = int(backend.get("port") or 5432)
        self._backend_database = backend.get("dbname") or backend.get("user") or "postgres"

    async def start(self) -> QSProxy:
        host, port = self.emu.settings.host, self.emu.settings.qs_port
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("Query Service PostgreSQL endpoint on %s:%s", host, port)
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for session in self._sessions:
            session.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = asyncio.current_task()
        self._sessions.add(session)
        try:
            await self._session(reader, writer)
        except ClientRejected as exc:
            log.info("Query Service connection rejected (%s): %s", exc.sqlstate, exc)
            writer.write(_error_response(exc.sqlstate, str(exc)))
            await writer.drain()
        except BackendRejected as exc:
            log.warning("Query Service proxy: %s", exc)
            writer.write(exc.error_message)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("Query Service connection closed: %s", exc)
        finally:
            self._sessions.discard(session)
            writer.close()

    async def _open_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._backend_host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self._backend_host}/.s.PGSQL.{self._backend_port}")
        return await asyncio.open_connection(self._backend_host, self._backend_port)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parameters = await self._negotiate(reader, writer)
        if parameters is None:
            return
        writer.write(_message(b"R", struct.pack("!I", AUTH_CLEARTEXT)))
        await writer.drain()
        tag, payload = await _read_message(reader)
        if tag != b"p":
            raise ClientRejected("08P01", "expected a password message")
        password = payload.rstrip(b"\0").decode()
        sandbox = await asyncio.to_thread(self._authenticate, parameters, password)
        login = sandbox_roles.sandbox_login(self.emu.settings.pg_dsn, sandbox)
        backend_reader, backend_writer = await self._open_backend()
        try:
            await self._backend_login(backend_reader, backend_writer, parameters, login)
            # PostgreSQL's ParameterStatus, BackendKeyData and ReadyForQuery follow through the pipe.
            writer.write(_message(b"R", struct.pack("!I", AUTH_OK)))
            await writer.drain()
            backend = _BackendState()

            async def send(data: bytes) -> None:
                writer.write(data)
                await writer.drain()

            wire = WireSession(self.emu, sandbox, send, backend.idle)
            await asyncio.gather(
                _pump_client(reader, backend_writer, wire, backend),
                _pump_results(backend_reader, writer, self.emu.settings.qs_row_cap, wire, backend),
            )
        finally:
            backend_writer.close()

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, str] | None:
        """Read the StartupMessage, refusing encryption; None when it was a CancelRequest."""
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
            elif code == CANCEL_REQUEST:
                await self._forward_cancel(struct.pack("!I", length) + body)
                return None
            elif code == PROTOCOL_V3:
                items = body[4:].split(b"\0")
                return {k.decode(): v.decode() for k, v in zip(items[0::2], items[1::2], strict=False) if k}
            else:
                raise ClientRejected("08P01", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")

    async def _forward_cancel(self, request: bytes) -> None:
        """Pass a CancelRequest on: the key data the client holds is PostgreSQL's own."""
        _, backend_writer = await self._open_backend()
        backend_writer.write(request)
        await backend_writer.drain()
        backend_writer.close()

    def _authenticate(self, parameters: dict[str, str], password: str) -> str:
        """Check user, token and dbname as AEP does; return the sandbox (runs in a thread)."""
        settings = self.emu.settings
        user = parameters.get("user", "")
        if user != settings.org_id:
            raise ClientRejected("28000", f"user {user!r} is not valid: use the organization id {settings.org_id}")
        token = self.emu.tokens.lookup(password)
        if token is None or token.org_id != user:
            raise ClientRejected("28P01", "password authentication failed: the IMS token is invalid or expired")
        database = parameters.get("database", "")
        sandbox, separator, target = database.partition(":")
        if not separator or sandbox not in settings.sandboxes:
            raise ClientRejected("3D000", f"database {database!r} does not exist: use '<sandbox>:all'")
        target = target.partition("?")[0]  # ?FLATTEN only changes how nested columns are shown
        if target != "all" and not self._table_exists(sandbox, target):
            raise ClientRejected("42P12", f"no tables found for dbName {database!r}")
        return sandbox

    def _table_exists(self, sandbox: str, table: str) -> bool:
        with self.emu.db.connection() as conn:
            row = conn.execute(
                "SELECT to_regclass(%s)", (f"{sandbox_schema(sandbox)}.{quote_ident(table)}",)
            ).fetchone()
        return row[0] is not None

    async def _backend_login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_parameters: dict[str, str],
        login: sandbox_roles.SandboxLogin,
    ) -> None:
        """Log in to PostgreSQL as the sandbox's role (SCRAM-SHA-256, md5, cleartext or trust)."""
        timeout_ms = self.emu.settings.qs_statement_timeout_s * 1000
        parameters, dropped = qs_guard.client_startup_parameters(client_parameters)
        if dropped:
            log.info("Query Service session: startup parameters %s ignored (fixed for a sandbox)", dropped)
        parameters.update(
            user=login.role,
            database=self._backend_database,
            options=f"-c search_path={login.schema} -c statement_timeout={timeout_ms} -c TimeZone=UTC",
        )
        writer.write(_startup_message(parameters))
        scram: scramp.ScramClient | None = None
        while True:
            await writer.drain()
            tag, payload = await _read_message(reader)
            if tag == b"E":
                raise BackendRejected(_message(tag, payload))
            if tag != b"R":
                raise ClientRejected("08P01", f"unexpected message {tag!r} from PostgreSQL during login")
            (code,) = struct.unpack("!I", payload[:4])
            if code == AUTH_OK:
                return
            if code == AUTH_CLEARTEXT:
                writer.write(_message(b"p", login.password.encode() + b"\0"))
            elif code == AUTH_MD5:
                inner = hashlib.md5((login.password + login.role).encode()).hexdigest()
                digest = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                writer.write(_message(b"p", b"md5" + digest.encode() + b"\0"))
            elif code == AUTH_SASL:
                mechanisms = [m.decode() for m in payload[4:].split(b"\0") if m]
                scram = scramp.ScramClient(mechanisms, login.role, login.password)
                first = scram.get_client_first().encode()
                mechanism = scram.mechanism_name.encode()
                writer.write(_message(b"p", mechanism + b"\0" + struct.pack("!i", len(first)) + first))
            elif code == AUTH_SASL_CONTINUE and scram is not None:
                scram.set_server_first(payload[4:].decode())
                writer.write(_message(b"p", scram.get_client_final().encode()))
            elif code == AUTH_SASL_FINAL and scram is not None:
                scram.set_server_final(payload[4:].decode())
            else:
                raise ClientRejected("28000", f"PostgreSQL asked for unsupported authentication (code {code})")


class _BackendState:
    """How many client requests PostgreSQL still owes a ReadyForQuery, so that answers the proxy
    gives itself (qs_wire) never overtake PostgreSQL's."""

    def __init__(self) -> None:
        self.pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def sent(self) -> None:
        self.pending += 1
        self._idle.clear()

    def ready(self) -> None:
        self.pending = max(self.pending - 1, 0)
        if self.pending == 0:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


async def _pump_results(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    row_cap: int,
    wire: WireSession,
    backend: _BackendState,
) -> None:
    """PostgreSQL to the client, message by message, keeping at most ``row_cap`` rows of each result.

    AEP's interactive endpoint returns at most 50,000 rows and says nothing of the rest: the rows
    past the cap are dropped and the command tag reports the rows sent (``SELECT 50000``).
    """
    rows = 0
    try:
        while True:
            tag, payload = await _read_message(reader)
            if tag == b"T":  # RowDescription: a new result begins
                rows = 0
            elif tag == b"D":  # DataRow
                rows += 1
                if rows > row_cap:
                    continue
            elif tag == b"C" and rows > row_cap:  # CommandComplete, e.g. b"SELECT 60000\0"
                verb = payload.rstrip(b"\0").rsplit(b" ", 1)[0]
                payload = verb + b" " + str(row_cap).encode() + b"\0"
            elif tag == b"Z":  # ReadyForQuery: its status byte is the transaction's
                wire.transaction_status = payload[:1]
                backend.ready()
            writer.write(_message(tag, payload))
            if writer.transport.get_write_buffer_size() > _COPY_CHUNK or tag == b"Z":
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        log.debug("Query Service connection ended: %s", exc)
    finally:
        writer.close()


# Fast-path function calls name a function by OID, past every statement guard (libpq's large-object
# API uses them); answered by PostgreSQL with this refusal instead.
_FUNCTION_CALL_REFUSAL = qs_guard.Refusal("0A000", "fast-path function calls are not supported by Query Service")


async def _pump_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: WireSession, backend: _BackendState
) -> None:
    """Client to PostgreSQL, message by message through the SQL layer (qs_wire, which translates
    and guards every statement); at EOF, close the other side so its peer sees the end too."""
    try:
        while True:
            tag, payload = await _read_message(reader)
            if tag == b"X":  # Terminate
                writer.write(_message(tag, payload))
                break
            if tag == b"F":
                tag, refusal = b"Q", qs_guard.refusal_block(wire.schema, _FUNCTION_CALL_REFUSAL)
                forwarded = _message(tag, refusal.encode() + b"\0")
            else:
                forwarded = await wire.from_client(tag, payload)
            if forwarded is None:
                continue
            if tag in (b"Q", b"S"):
                backend.sent()
            writer.write(forwarded)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        log.debug("Query Service connection dropped: %s", exc)
    finally:
        writer.close()
