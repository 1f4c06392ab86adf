"""Background processes the stack owns: PID files, start-up waits, process-group stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class StackError(RuntimeError):
    """A problem the user must fix; the message says what and how."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in text)


class PidFile:
    """``run/<name>.pid``: written when the stack starts a process; its presence means "ours".

    :param path: the PID file.
    :param marker: a word the process's command line must contain, so a recycled PID is never
        mistaken for ours.
    """

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self.marker = marker

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def live_pid(self) -> int | None:
        """The recorded PID if that process is still ours and running; a stale file is removed."""
        try:
            pid = int(self.path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ValueError):
            self.remove()
            return None
        if self.marker not in cmdline:
            self.remove()
            return None
        return pid

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start ``argv`` detached in its own session (so ``down`` can stop its whole process group),
    with stdin closed and output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def wait_healthy(
    name: str,
    check: Callable[[], str | None],
    log_path: Path,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Poll ``check`` (None = healthy, else the problem) until healthy, or raise with the log's tail."""
    deadline = time.monotonic() + timeout_s
    problem = check()
    while problem is not None:
        if not alive():
            raise StackError(f"{name} exited during start-up; its log {log_path} ends with:\n{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"{name} was not healthy {timeout_s:.0f} s after start ({problem}); its log {log_path} ends with:\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(0.2)
        problem = check()


def stop_process_group(pid: int, timeout_s: float = 15) -> None:
    """SIGTERM the process group led by ``pid`` (children too), then SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.1)
    raise StackError(f"process group {pid} survived SIGKILL; check `ps -g {pid}`")


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies, whose parent has not reaped them, don't)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the parenthesised command name: state, ppid, pgrp.
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False
