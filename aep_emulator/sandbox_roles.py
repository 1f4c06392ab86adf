"""Query Service confinement: one PostgreSQL login role per sandbox, for the SQL clients send.

AEP runs each sandbox's queries where only that sandbox's datasets exist. The emulator gets the same
from PostgreSQL's privileges rather than from a ``search_path``: client SQL (the wire endpoint and
REST queries) runs in a session *logged in* as the sandbox's role, which

- is no superuser and cannot create roles, databases or extensions, nor read server files or run
  programs (``pg_read_file``, ``COPY ... PROGRAM``, ``lo_import`` need privileges it lacks);
- may use only its sandbox's schema: read and append to the datasets the emulator created there
  (owned by the emulator's owner role), and create, change and drop the tables its own queries
  create (CTAS); no other sandbox's schema, no ``aep_meta``;
- cannot get back to the owner role: there is no ``RESET ROLE`` to a session user it is not.

The owner role (the user of ``AEP_PG_DSN``) keeps the emulator's state and needs CREATEROLE, not
superuser. It is a member of each sandbox role, so it can load and drop the sandbox's CTAS tables
and cancel its queries. See docs/architecture.md#query-service-confinement.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from aep_emulator.db import META_SCHEMA, sandbox_schema

log = logging.getLogger(__name__)

ROLE_PREFIX = "aepqs_"
# Sessions of one sandbox role at a time: enough for a pipeline and a few analysts, not for a flood.
CONNECTION_LIMIT = 32
# What a sandbox role may do with the datasets the emulator created (AEP: read, INSERT INTO).
DATASET_PRIVILEGES = "SELECT, INSERT"


class ConfinementError(RuntimeError):
    """The owner role cannot set up the sandbox roles; the message says what to grant."""


@dataclass(frozen=True)
class SandboxLogin:
    """How to log in as a sandbox's role.

    :param role: the role name.
    :param password: its password (derived from the owner's, so every emulator on one database agrees).
    :param schema: the sandbox's schema.
    """

    role: str
    password: str
    schema: str


def role_name(database: str, sandbox: str) -> str:
    """The sandbox's role, unique per database (roles are cluster-wide, schemas per database)."""
    base = re.sub(r"[^a-z0-9_]", "_", f"{ROLE_PREFIX}{database}_{sandbox}".lower())
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:10]
    return f"{base[:52]}_{digest}"


def sandbox_login(owner_dsn: str, sandbox: str) -> SandboxLogin:
    """The login of ``sandbox``'s role on the database of ``owner_dsn``."""
    params = conninfo_to_dict(owner_dsn)
    database = params.get("dbname") or params.get("user") or "postgres"
    role = role_name(database, sandbox)
    key = f"{params.get('user', '')}:{params.get('password', '')}:{database}".encode()
    password = hmac.new(key, role.encode(), hashlib.sha256).hexdigest()
    return SandboxLogin(role, password, sandbox_schema(sandbox))


def sandbox_conninfo(owner_dsn: str, sandbox: str, **settings: str) -> str:
    """A libpq conninfo logging in as the sandbox's role, with these server settings (``-c k=v``)."""
    login = sandbox_login(owner_dsn, sandbox)
    options = " ".join(f"-c {name}={value}" for name, value in {"search_path": login.schema, **settings}.items())
    return make_conninfo(owner_dsn, user=login.role, password=login.password, options=options)


def check_owner(conn: psycopg.Connection) -> None:
    """Fail with the fix when the owner role cannot create the sandbox roles; warn when it is a superuser."""
    user, is_super, can_create_roles = conn.execute(
        "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if is_super:
        log.warning(
            "AEP_PG_DSN's user %s is a PostgreSQL superuser: Query Service clients are still confined to "
            "their sandbox roles, but the emulator's own state should use a role without SUPERUSER "
            "(CREATEROLE and CREATEDB are enough; bin/stack sets one up)",
            user,
        )
    elif not can_create_roles:
        raise ConfinementError(
            f"AEP_PG_DSN's user {user} cannot create roles: the emulator runs each sandbox's Query Service "
            f"SQL as a role of its own. As a superuser, run: ALTER ROLE {user} CREATEROLE"
        )


def provision(conn: psycopg.Connection, owner_dsn: str, sandbox: str) -> SandboxLogin:
    """Create (or repair) the sandbox's role and its privileges; idempotent, run at every start.

    :param conn: an owner connection; the statements join its transaction.
    :param owner_dsn: the owner's DSN (the role's password derives from it).
    :param sandbox: the sandbox.
    """
    login = sandbox_login(owner_dsn, sandbox)
    role, schema = sql.Identifier(login.role), sql.Identifier(login.schema)
    # Roles are cluster-wide: emulators starting together on one server must not both CREATE it.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"aep_emulator.role/{login.role}",))
    existing = conn.execute(
        "SELECT rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = %s", (login.role,)
    ).fetchone()
    if existing is not None and existing[0]:
        raise ConfinementError(
            f"Query Service role {login.role} of sandbox {sandbox} has SUPERUSER, REPLICATION or BYPASSRLS, "
            f"which only a superuser can give or take: as a superuser run DROP ROLE {login.role} (the emulator "
            "creates it again) or ALTER ROLE ... NOSUPERUSER NOREPLICATION NOBYPASSRLS"
        )
    # CREATE gives the unprivileged defaults (NOSUPERUSER, NOREPLICATION, NOBYPASSRLS); ALTER on every
    # start resets what else anyone may have changed, and the password if the owner's changed.
    attributes = sql.SQL("LOGIN NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT {} PASSWORD {}").format(
        sql.Literal(CONNECTION_LIMIT), sql.Literal(login.password)
    )
    try:
        verb = "CREATE" if existing is None else "ALTER"
        conn.execute(sql.SQL(verb + " ROLE {} WITH ").format(role) + attributes)
        if not conn.execute("SELECT pg_has_role(current_user, %s, 'USAGE')", (login.role,)).fetchone()[0]:
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfinementError(
            f"the emulator cannot set up Query Service role {login.role} for sandbox {sandbox}: "
            f"{exc.diag.message_primary}. Drop the role (as a superuser: DROP ROLE {login.role}) so the "
            f"emulator can create it, or grant the emulator's user ADMIN on it"
        ) from exc
    # Settings a session starts with (the logins also pass them): the sandbox's schema, nothing else.
    conn.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, schema))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, role))
    privileges = sql.SQL(DATASET_PRIVILEGES)
    conn.execute(sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(privileges, schema, role))
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(schema, privileges, role)
    )
    return login


def lock_down_database(conn: psycopg.Connection) -> None:
    """Take from PUBLIC what would let any role out of its schema: ``aep_meta`` and, on PostgreSQL
    before 15, CREATE in ``public`` (a place to plant functions that shadow built-ins)."""
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(META_SCHEMA)))
    row = conn.execute(
        "SELECT pg_has_role(current_user, nspowner, 'USAGE'), has_schema_privilege('public', oid, 'CREATE')"
        " FROM pg_namespace WHERE nspname = 'public'"
    ).fetchone()
    if row is None or not row[1]:
        return
    if row[0]:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    else:
        log.warning(
            "every role may CREATE in schema public of this database; as its owner run: "
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        )


def set_up(conn: psycopg.Connection, owner_dsn: str, sandboxes: tuple[str, ...]) -> None:
    """Check the owner, lock the database down and provision every sandbox's role (at start-up)."""
    check_owner(conn)
    lock_down_database(conn)
    for sandbox in sandboxes:
        provision(conn, owner_dsn, sandbox)


def cancel_overdue(conn: psycopg.Connection, owner_dsn: str, sandboxes: tuple[str, ...], timeout_s: float) -> int:
    """Cancel the sandbox roles' statements running longer than ``timeout_s``; return how many.

    The statement timeout a session starts with is the first line; this is the one a client cannot
    lift (a ``SET`` built at run time inside a function gets past the statement guards).
    """
    roles = [sandbox_login(owner_dsn, sandbox).role for sandbox in sandboxes]
    rows = conn.execute(
        "SELECT pid, usename, pg_cancel_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND usename = ANY(%s) AND state = 'active'"
        " AND now() - query_start > make_interval(secs => %s)",
        (roles, timeout_s),
    ).fetchall()
    for pid, role, _ in rows:
        log.warning("cancelled a statement of %s (pid %s) past the Query Service timeout of %s s", role, pid, timeout_s)
    return len(rows)
