"""Query Service PostgreSQL endpoint: psycopg2 and psycopg 3 through the proxy, AEP's login checks
with their SQLSTATEs, cancel requests, and the ``table_exists`` / ``history_meta`` SQL functions."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid

import psycopg
import psycopg2
import pytest

from aep_emulator import qs_proxy, xdm
from aep_emulator.services import catalog
from aep_emulator.store import now_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def wire_table(emulator, conn_params) -> str:
    table = f"wire_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**conn_params, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} AS SELECT g AS n, 'user' || g AS userid FROM generate_series(1, 3) g")
    return table


def test_psycopg2_reads_a_table_in_a_transaction(conn_params, wire_table, sandbox):
    conn = psycopg2.connect(**conn_params)
    try:
        with conn.cursor() as cur:  # psycopg2 opens the transaction with a bare BEGIN
            cur.execute(f"SELECT n, userid FROM {wire_table} ORDER BY n")
            assert cur.fetchall() == [(1, "user1"), (2, "user2"), (3, "user3")]
            cur.execute("SHOW search_path")
            assert cur.fetchone() == (f"sbx_{sandbox}",)
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"INSERT INTO {wire_table} VALUES (%s, %s)", (4, "user4"))
            cur.execute("ROLLBACK")
            cur.execute(f"SELECT count(*) FROM {wire_table}")
            assert cur.fetchone() == (3,)
        conn.commit()
    finally:
        conn.close()


def test_psycopg3_reads_a_table_in_a_transaction(conn_params, wire_table):
    with psycopg.connect(**conn_params) as conn:
        with conn.transaction():
            conn.execute(f"INSERT INTO {wire_table} VALUES (%s, %s)", (4, "user4"))
        rows = conn.execute(f"SELECT n FROM {wire_table} WHERE n > %s ORDER BY n", (2,)).fetchall()
        assert rows == [(3,), (4,)]
        conn.execute("BEGIN")
        conn.execute("COMMIT")
        # Server-side binding and prepared statements go through unchanged.
        for _ in range(6):
            assert conn.execute("SELECT %s::int + 1", (41,), prepare=True).fetchone() == (42,)


def test_sslmode_prefer_falls_back_to_plaintext(conn_params):
    with psycopg.connect(**{**conn_params, "sslmode": "prefer"}) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use is False


def test_single_table_dbname(conn_params, wire_table, sandbox):
    with psycopg2.connect(**{**conn_params, "dbname": f"{sandbox}:{wire_table}"}) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {wire_table}")
        assert cur.fetchone() == (3,)
    conn.close()


def test_bad_token_is_rejected(conn_params):
    with pytest.raises(psycopg.OperationalError, match="IMS token is invalid"):
        psycopg.connect(**{**conn_params, "password": "not-a-token"})
    with pytest.raises(psycopg2.OperationalError, match="IMS token is invalid"):
        psycopg2.connect(**{**conn_params, "password": "not-a-token"})


def _login(port: int, user: str, database: str, password: str) -> tuple[bytes, dict[str, str]]:
    """Speak the protocol by hand: SSLRequest, StartupMessage, password; return the answer's tag and
    ErrorResponse fields (empty unless the tag is ``E``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(struct.pack("!II", 8, qs_proxy.SSL_REQUEST))
        assert sock.recv(1) == b"N"
        body = (
            struct.pack("!I", qs_proxy.PROTOCOL_V3)
            + b"user\0"
            + user.encode()
            + b"\0database\0"
            + database.encode()
            + b"\0\0"
        )
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        stream = sock.makefile("rb")
        tag, payload = _read(stream)
        assert (tag, payload) == (b"R", struct.pack("!I", qs_proxy.AUTH_CLEARTEXT))
        sock.sendall(b"p" + struct.pack("!I", len(password) + 5) + password.encode() + b"\0")
        tag, payload = _read(stream)
        fields = {f[:1].decode(): f[1:].decode() for f in payload.split(b"\0") if f} if tag == b"E" else {}
        return tag, fields


def _read(stream) -> tuple[bytes, bytes]:
    tag = stream.read(1)
    (length,) = struct.unpack("!I", stream.read(4))
    return tag, stream.read(length - 4)


@pytest.mark.parametrize(
    ("user", "database", "token_ok", "sqlstate"),
    [
        ("org", "{sandbox}:all", False, "28P01"),
        ("someone@AdobeOrg", "{sandbox}:all", True, "28000"),
        ("org", "nosuchsandbox:all", True, "3D000"),
        ("org", "{sandbox}", True, "3D000"),
        ("org", "{sandbox}:no_such_table", True, "42P12"),
    ],
)
def test_login_errors_carry_aep_sqlstates(aep, emulator, sandbox, user, database, token_ok, sqlstate):
    user = emulator.settings.org_id if user == "org" else user
    password = aep.fetch_token() if token_ok else "expired-or-unknown"
    tag, fields = _login(emulator.settings.qs_port, user, database.format(sandbox=sandbox), password)
    assert tag == b"E"
    assert fields["C"] == sqlstate and fields["S"] == "FATAL"


def test_valid_login_gets_authentication_ok(aep, emulator, sandbox):
    tag, _ = _login(emulator.settings.qs_port, emulator.settings.org_id, f"{sandbox}:all?FLATTEN", aep.fetch_token())
    assert tag == b"R"


def test_expired_token_is_rejected(aep, emulator, conn_params):
    token = aep.fetch_token()
    emulator.emu.tokens.expire(token)
    tag, fields = _login(emulator.settings.qs_port, emulator.settings.org_id, conn_params["dbname"], token)
    assert (tag, fields["C"]) == (b"E", "28P01")


def test_cancel_request_reaches_postgresql(conn_params):
    with psycopg.connect(**conn_params) as conn:
        # cancel_safe: the legacy conn.cancel() blocks holding the GIL until the server closes the
        # cancel connection, which the in-process emulator then never gets to do.
        canceller = threading.Timer(0.5, conn.cancel_safe)
        canceller.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        canceller.join()
        assert time.monotonic() - started < 10


def test_table_exists_and_history_meta(emulator, sandbox, conn_params):
    emu = emulator.emu
    schema = xdm.register_adhoc_schema(emu, sandbox, f"history {uuid.uuid4().hex[:6]}", [xdm.Field("a", "string")])
    dataset = catalog.create_dataset_record(
        emu, sandbox, name=f"qs history {uuid.uuid4().hex[:6]}", schema_ref=schema["$id"]
    )
    table = catalog.dataset_table(dataset)
    related = [{"type": "dataSet", "id": dataset["id"]}]
    ts = now_ms()
    for i, (status, records) in enumerate([("success", 3), ("failed", 0), ("success", 5)]):
        batch_id = f"hist{i}{uuid.uuid4().hex[:8]}"
        doc = {
            "id": batch_id,
            "status": status,
            "relatedObjects": related,
            "metrics": {"outputRecordCount": records},
            "completed": ts + i,
        }
        emu.store.insert(sandbox, catalog.BATCH_KIND, batch_id, doc)
    with psycopg.connect(**conn_params) as conn:
        assert conn.execute("SELECT table_exists(%s), table_exists('no_such_table')", (table,)).fetchone() == (
            True,
            False,
        )
        rows = conn.execute(
            "SELECT parent_id IS NULL, is_current, snapshot_generation, output_record_count FROM history_meta(%s)",
            (table,),
        ).fetchall()
        assert rows == [(True, False, 1, 3), (False, True, 2, 5)]
        current = conn.execute("SELECT snapshot_id FROM history_meta(%s) WHERE is_current = true", (table,)).fetchall()
        # Snapshot ids are numbers (AEP's are), here the batch's completion time in epoch ms.
        assert current == [(ts + 2,)]


def test_results_are_capped_like_aep_interactive_queries(conn_params, emulator):
    """AEP returns at most 50,000 rows over the interactive endpoint; the command tag says how many."""
    cap = emulator.settings.qs_row_cap
    with psycopg.connect(**conn_params) as conn:
        cur = conn.execute("SELECT n FROM generate_series(1, %s) AS n", (cap + 123,))
        rows = cur.fetchall()
        assert len(rows) == cap and rows[-1] == (cap,)
        assert cur.rowcount == cap
        # The next result on the same connection is complete again.
        assert conn.execute("SELECT count(*) FROM generate_series(1, %s)", (cap + 1,)).fetchone() == (cap + 1,)
