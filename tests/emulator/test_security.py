"""Query Service confinement and admin-route authentication: the attacks a probe ran against the
emulator, over the PostgreSQL wire endpoint and over REST queries, each asserted refused with AEP's
SQLSTATE (42501 insufficient privilege, 0A000 not supported). The README's attack table lists
exactly the attacks of ``ATTACKS`` and the named tests below (checked here)."""

from __future__ import annotations

import re
import socket
import struct
import time
import uuid
from dataclasses import dataclass

import psycopg
import psycopg2
import pytest
import requests
from psycopg import sql

from aep_emulator import qs_exec, qs_proxy, sandbox_roles
from aep_emulator.config import PROJECT_ROOT
from aep_emulator.db import sandbox_schema
from aep_emulator.services import catalog, segmentation
from tests.emulator import create_dataset, create_event_schema, get_dataset, ingest, parquet_bytes
from tests.emulator.test_ingestion import events
from tests.emulator.test_qs_wire import _read
from tests.emulator.test_query_service import run
from tests.support.emulator import AEPClient

pytestmark = pytest.mark.integration

QS = "/data/foundation/query"


@dataclass(frozen=True)
class Attack:
    """One attack: what the README calls it, its SQL (``{victim}`` is another sandbox's schema,
    ``{dataset}`` a dataset table of the attacker's own sandbox) and the SQLSTATE that refuses it."""

    name: str
    sql: str
    code: str


ATTACKS = (
    Attack("read another sandbox's table", "SELECT * FROM {victim}.secret", "42501"),
    Attack("read Catalog's records (aep_meta.resources)", "SELECT doc FROM aep_meta.resources", "42501"),
    Attack("read live IMS tokens (aep_meta.tokens)", "SELECT token FROM aep_meta.tokens", "42501"),
    Attack("read a server file: pg_read_file('/etc/passwd')", "SELECT pg_read_file('/etc/passwd')", "42501"),
    Attack("list a server directory: pg_ls_dir('/')", "SELECT pg_ls_dir('/')", "42501"),
    Attack("run a program: COPY ... TO PROGRAM 'id'", "COPY (SELECT 1) TO PROGRAM 'id'", "42501"),
    Attack("write a server file: COPY ... TO '/tmp/...'", "COPY (SELECT 1) TO '/tmp/aep-attack'", "42501"),
    Attack("read a server file: COPY ... FROM '/etc/passwd'", "COPY {victim}.secret FROM '/etc/passwd'", "42501"),
    Attack("import a server file: lo_import('/etc/passwd')", "SELECT lo_import('/etc/passwd')", "0A000"),
    Attack("create a superuser: CREATE ROLE ... SUPERUSER", "CREATE ROLE aep_attacker SUPERUSER LOGIN", "42501"),
    Attack("change a role: ALTER ROLE", "ALTER ROLE CURRENT_USER SET search_path = {victim}", "42501"),
    Attack("read password hashes: pg_authid", "SELECT rolpassword FROM pg_authid", "42501"),
    # The emulator's own check (one unqualified table per DROP) refuses it before PostgreSQL does.
    Attack("drop another sandbox's table", "DROP TABLE {victim}.secret", "0A000"),
    Attack("drop a dataset Query Service did not create", "DROP TABLE {dataset}", "42501"),
    Attack("delete a dataset's rows (datasets change by batches)", "DELETE FROM {dataset}", "42501"),
    Attack("leave the sandbox: SET search_path", "SET search_path = {victim}", "0A000"),
    Attack("leave the sandbox: SET LOCAL search_path", "SET LOCAL search_path TO {victim}, public", "0A000"),
    Attack("lift the timeout: SET statement_timeout", "SET statement_timeout = 0", "0A000"),
    Attack("switch role: SET ROLE", "SET ROLE aep", "42501"),
    Attack("switch role: SET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION aep", "42501"),
    Attack("switch role back: RESET ROLE", "RESET ROLE", "42501"),
    Attack("set_config('search_path', ...)", "SELECT set_config('search_path', '{victim}', false)", "0A000"),
    Attack("set_config('role', ...)", "SELECT set_config('role', 'aep', false)", "0A000"),
    Attack(
        "switch role in a DO block built at run time",
        "DO $$ BEGIN EXECUTE 'SE' || 'T ROLE aep'; END $$",
        "42501",
    ),
    Attack("install dblink (connections out of the sandbox)", "CREATE EXTENSION dblink", "42501"),
    Attack("call dblink", "SELECT * FROM dblink('dbname=aep', 'SELECT 1') AS t(n int)", "42883"),
    Attack("create a schema", "CREATE SCHEMA aep_attacker", "42501"),
    Attack("change the database's settings", "ALTER DATABASE aep SET search_path = {victim}", "0A000"),
    Attack(
        "untrusted language: CREATE FUNCTION ... LANGUAGE c",
        "CREATE FUNCTION aep_attack() RETURNS int AS '/lib/x86_64-linux-gnu/libc.so.6', 'getpid' LANGUAGE c",
        "42501",
    ),
    Attack("terminate the emulator's own sessions", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "42501"),
    Attack(
        "set_config as a quoted name (DO block)",
        """DO $$ BEGIN PERFORM "set_config"('search_path', '{victim}', false); END $$""",
        "0A000",
    ),
    # Query Service's own statements, which the emulator's executor runs (on the sandbox's role too).
    Attack("CTAS from another sandbox's table", "CREATE TABLE loot AS SELECT * FROM {victim}.secret", "42501"),
    Attack("CTAS into another sandbox's schema", "CREATE TABLE {victim}.loot AS SELECT 1 AS n", "42501"),
    Attack(
        "INSERT INTO a dataset from another sandbox", "INSERT INTO {dataset} SELECT * FROM {victim}.secret", "42501"
    ),
    Attack("read IMS tokens into a variable: SET @var = SELECT", "SET @t = SELECT token FROM aep_meta.tokens", "42501"),
    Attack("leave the sandbox through a variable", "SET @p = SELECT '{victim}'; SET search_path = @p", "0A000"),
    Attack("switch role in an anonymous block", "$$ BEGIN SET ROLE aep; END $$", "42501"),
    Attack(
        "read Catalog's records in an anonymous block",
        "$$ BEGIN CREATE TABLE loot AS SELECT doc FROM aep_meta.resources; END $$",
        "42501",
    ),
    Attack(
        "switch role in an anonymous block's EXCEPTION handler",
        "$$ BEGIN SELECT 1/0; EXCEPTION WHEN OTHER THEN SET ROLE aep; END $$",
        "42501",
    ),
    Attack("call another sandbox's history_meta", "SELECT * FROM {victim}.history_meta('secret')", "42501"),
)
# Attacks tested below by name (they need more than one statement), in the README's table too.
NAMED_ATTACKS = (
    "startup packet options=-c search_path=... -c statement_timeout=0",
    "startup parameters search_path, role, statement_timeout",
    "fast-path function call (libpq large objects)",
    "lift the timeout with a SET built at run time (DO ... EXECUTE)",
    "a trigger on a CTAS table, fired by the emulator's batch load",
    "another sandbox's snapshots and samples through history_meta, sample_meta, SNAPSHOT",
    "admin routes without the admin token",
    "admin routes with a wrong token",
)


@pytest.fixture(scope="module")
def victim(emulator_session) -> str:
    """Another sandbox's schema with a table, and its own role, beside the session's sandbox."""
    emu = emulator_session.emu
    sandbox = f"v{uuid.uuid4().hex[:8]}"
    schema = sandbox_schema(sandbox)
    with emu.db.connection() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {}.secret AS SELECT 'prod-secret'::text AS s").format(sql.Identifier(schema))
        )
        login = sandbox_roles.provision(conn, emu.settings.pg_dsn, sandbox)
    yield schema
    with emu.db.connection() as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login.role)))


@pytest.fixture(scope="module")
def dataset_table(emulator_session) -> str:
    """A dataset table of the attacker's own sandbox, created through Catalog (not by Query Service)."""
    aep = AEPClient(emulator_session.url, emulator_session.settings, emulator_session.sandbox)
    dataset_id = create_dataset(aep, create_event_schema(aep, emulator_session.settings.tenant_id))
    return get_dataset(aep, dataset_id)["tags"]["adobe/pqs/table"][0]


def _sql(attack: Attack, victim: str, dataset_table: str) -> str:
    return attack.sql.format(victim=victim, dataset=dataset_table)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_over_the_wire_is_refused(attack, conn_params, sandbox, victim, dataset_table):
    with psycopg.connect(**conn_params, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(_sql(attack, victim, dataset_table))
        assert refused.value.sqlstate == attack.code, refused.value
        # The session is still the sandbox's own, in its own schema.
        role, path = conn.execute("SELECT current_user, current_setting('search_path')").fetchone()
    assert role.startswith(sandbox_roles.ROLE_PREFIX) and path == sandbox_schema(sandbox)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_over_rest_is_refused(attack, aep, victim, dataset_table):
    query = run(aep, _sql(attack, victim, dataset_table))
    assert query["state"] == "FAILED", query
    assert query["errors"][0]["code"] == attack.code, query["errors"]
    assert query["errors"][0]["errorType"] == "USER_ERROR"


def test_the_victim_table_is_intact(emulator, victim):
    with emulator.emu.db.connection() as conn:
        assert conn.execute(sql.SQL("SELECT s FROM {}.secret").format(sql.Identifier(victim))).fetchall() == [
            ("prod-secret",)
        ]
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'aep_attacker'").fetchone() is None


def test_sessions_run_as_the_sandbox_role_not_the_owner(conn_params, aep, sandbox, emulator):
    role = sandbox_roles.role_name(psycopg.conninfo.conninfo_to_dict(emulator.settings.pg_dsn)["dbname"], sandbox)
    with psycopg.connect(**conn_params) as conn:
        row = conn.execute("SELECT current_user, session_user, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (role, role, False)
    created = run(aep, f"CREATE TABLE owned_{uuid.uuid4().hex[:6]} AS SELECT current_user::text AS who")
    assert created["state"] == "SUCCESS", created["errors"]


def test_startup_options_cannot_move_the_session(conn_params, sandbox, victim):
    """Startup packet options=-c search_path=... -c statement_timeout=0: ignored."""
    options = f"-c search_path={victim} -c statement_timeout=0 -c role=aep"
    with psycopg.connect(**conn_params, options=options) as conn:
        path, timeout, role = conn.execute(
            "SELECT current_setting('search_path'), current_setting('statement_timeout'), current_user"
        ).fetchone()
    assert (path, timeout) == (sandbox_schema(sandbox), "10min") and role.startswith(sandbox_roles.ROLE_PREFIX)


def _raw_session(port: int, parameters: dict[str, str], password: str, query: str) -> list[tuple[bytes, bytes]]:
    """Log in with these startup parameters, run one simple query; return the messages up to ReadyForQuery."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = struct.pack("!I", qs_proxy.PROTOCOL_V3)
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in parameters.items()) + b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        stream = sock.makefile("rb")
        assert _read(stream)[0] == b"R"
        sock.sendall(b"p" + struct.pack("!I", len(password) + 5) + password.encode() + b"\0")
        while _read(stream)[0] != b"Z":
            pass
        sock.sendall(b"Q" + struct.pack("!I", len(query) + 5) + query.encode() + b"\0")
        messages = []
        while (message := _read(stream))[0] != b"Z":
            messages.append(message)
        return messages


def test_startup_parameters_cannot_move_the_session(conn_params, sandbox, victim):
    """Startup parameters search_path, role, statement_timeout: dropped, only presentation ones pass."""
    parameters = {
        "user": conn_params["user"],
        "database": conn_params["dbname"],
        "search_path": victim,
        "role": "aep",
        "statement_timeout": "0",
        "application_name": "attacker",
    }
    query = (
        "SELECT current_setting('search_path') || '|' || current_setting('statement_timeout') || '|' ||"
        " current_user || '|' || current_setting('application_name')"
    )
    messages = _raw_session(conn_params["port"], parameters, conn_params["password"], query)
    row = next(payload for tag, payload in messages if tag == b"D")
    path, timeout, role, application = row[6:].decode().split("|")  # one column: int16 count, int32 length
    assert (path, timeout, application) == (sandbox_schema(sandbox), "10min", "attacker")
    assert role.startswith(sandbox_roles.ROLE_PREFIX)


def test_a_timeout_lifted_at_run_time_is_still_enforced(conn_params, emulator, monkeypatch):
    """Lift the timeout with a SET built at run time (DO ... EXECUTE): the emulator cancels the statement."""
    settings = emulator.emu.settings.model_copy(update={"qs_statement_timeout_s": 1})
    monkeypatch.setattr(emulator.emu, "settings", settings)
    with psycopg.connect(**conn_params, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN EXECUTE 'SE' || 'T statement_timeout = 0'; END $$")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        began = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
    assert time.monotonic() - began < 15


def test_fast_path_function_calls_are_refused(conn_params):
    """Fast-path function call (libpq large objects): a function by OID, past the statement guards."""
    conn = psycopg2.connect(**conn_params)
    try:
        # libpq's large-object calls report the server's message, not its SQLSTATE.
        with pytest.raises(psycopg2.Error, match="fast-path function calls are not supported"):
            conn.lobject(0, "wb")
    finally:
        conn.close()


def test_prepared_refused_statements_keep_the_protocol_in_step(conn_params):
    """Extended protocol (Parse/Bind/Execute): a refused statement with parameters fails, the session goes on."""
    with psycopg.connect(**conn_params) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT set_config('search_path', %s, false)", ("public",))
        assert refused.value.sqlstate == "0A000"
        conn.rollback()
        assert conn.execute("SELECT %s::int * 2", (21,)).fetchone() == (42,)


def test_the_emulator_never_runs_a_sandbox_trigger(aep, emulator, conn_params):
    """A trigger on a CTAS table, fired by the emulator's batch load: the load refuses the table."""
    schema = create_event_schema(aep, emulator.settings.tenant_id)
    source = get_dataset(aep, create_dataset(aep, schema))["tags"]["adobe/pqs/table"][0]
    table = f"trojan_{uuid.uuid4().hex[:6]}"
    ctas = run(aep, f"CREATE TABLE {table} WITH (schema='{schema['title']}') AS SELECT * FROM {source}")
    assert ctas["state"] == "SUCCESS", ctas["errors"]
    with psycopg.connect(**conn_params, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {table}_steal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO aep_meta.tokens SELECT * FROM aep_meta.tokens; RETURN NEW; END $$"
        )
        conn.execute(f"CREATE TRIGGER steal BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_steal()")
    data = parquet_bytes(events(emulator.settings.tenant_id, 2))
    failed = ingest(aep, ctas["_links"]["created_dataset"]["id"], {"a.parquet": data})
    assert failed["status"] == "failed"
    assert "has triggers" in failed["errors"][0]["description"]


def test_catalog_functions_read_only_their_own_sandbox(emulator, sandbox, conn_params, aep):
    """Another sandbox's snapshots and samples through history_meta, sample_meta, SNAPSHOT: the Query
    Service functions that read Catalog's records (with the emulator's rights, as the sandbox's role
    cannot) see only their own sandbox's; each runs on a search_path the caller cannot plant in."""
    emu, table = emulator.emu, f"elsewhere_{uuid.uuid4().hex[:6]}"
    other = f"o{uuid.uuid4().hex[:8]}"  # records of a sandbox this session's role must never see
    dataset_id, batch_id = f"ds{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    tags = {catalog.TABLE_TAG: [table], qs_exec.SAMPLE_OF_TAG: [table], qs_exec.SAMPLE_RATE_TAG: ["50"]}
    emu.store.insert(other, catalog.DATASET_KIND, dataset_id, {"id": dataset_id, "tags": tags})
    related = [{"type": catalog.DATASET_KIND, "id": dataset_id}]
    batch = {"id": batch_id, "status": "success", "relatedObjects": related, "completed": 1}
    emu.store.insert(other, catalog.BATCH_KIND, batch_id, batch)
    try:
        with psycopg.connect(**conn_params) as conn:
            assert conn.execute(f"SELECT * FROM history_meta('{table}')").fetchall() == []
            assert conn.execute(f"SELECT * FROM sample_meta('{table}')").fetchall() == []
            assert conn.execute(f"SELECT * FROM snapshot_batches('{table}', '', '')").fetchall() == []
            # The Query Accelerated Store's dimensions are constants of this sandbox.
            policies = conn.execute("SELECT MERGE_POLICY FROM qsaccel.profile_agg.adwh_dim_merge_policies").fetchall()
            assert policies == [(segmentation.default_merge_policy_id(sandbox),)]
        query = run(aep, f"SELECT * FROM history_meta('{table}')")
        assert query["state"] == "SUCCESS" and query["rowCount"] == 0, query
    finally:
        emu.store.delete(other, catalog.BATCH_KIND, batch_id)
        emu.store.delete(other, catalog.DATASET_KIND, dataset_id)
    with emu.db.connection() as conn:
        definers = conn.execute(
            "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = to_regnamespace(%s) AND prosecdef",
            (sandbox_schema(sandbox),),
        ).fetchall()
    assert {name for name, _ in definers} == {"batch_snapshots", "sample_meta"}
    assert all(config == ["search_path=pg_catalog, pg_temp"] for _, config in definers), definers


@pytest.mark.parametrize("route", ["faults", "tokens/expire"])
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_admin_routes_need_the_admin_token(emulator, aep, route, token):
    """Admin routes without the admin token, or with a wrong one: 401, nothing changes."""
    aep.fetch_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    method = "PUT" if route == "faults" else "POST"
    body = {"rules": [{"path": ".*", "rate_5xx": 1}]} if route == "faults" else None
    resp = requests.request(method, f"{emulator.url}/_emulator/{route}", headers=headers, json=body, timeout=10)
    assert resp.status_code == 401 and resp.json()["error_code"] == "401013"
    assert emulator.emu.faults.describe()["rules"] == []
    assert aep.get("/data/foundation/catalog/dataSets").status_code == 200, "the token was not expired"
    # Health stays open: the stack and docker-compose probe it.
    assert requests.get(f"{emulator.url}/_emulator/health", timeout=10).status_code == 200


def test_admin_routes_work_with_the_token(emulator):
    assert emulator.admin("GET", "faults").json() == {"rules": [], "force_failures": {}}


def test_readme_lists_every_attack():
    """README: one row per attack in this suite and the count, so the table never drifts."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    names = [a.name for a in ATTACKS] + list(NAMED_ATTACKS)
    rows = re.findall(r"^\| \d+ \| (.+?) \| ", readme, re.MULTILINE)
    assert rows == names
    assert f"{len(names)} attacks, all refused" in readme
