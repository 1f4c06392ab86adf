"""``bin/airflow-ui``: Airflow (``airflow standalone``) on the local stack, in the foreground or detached.

``airflow standalone`` runs the api-server (UI and REST API), scheduler, dag-processor and triggerer
with the stack's settings (``eval "$(bin/stack env)"``, which ``bin/airflow-ui`` does): metadata in
the stack's PostgreSQL (database ``airflow``), LocalExecutor, API on 127.0.0.1, no login.

Stopping it takes care: standalone leaves its components running on SIGTERM, and the task
processes the executor starts put themselves in process groups of their own. So :func:`stop_tree`
asks standalone to shut down the way Ctrl-C does (SIGINT), then terminates every process of its
tree and group that is left.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from aep_emulator.config import PROJECT_ROOT
from aep_local.processes import PidFile, StackError, log_tail, port_in_use, spawn
from aep_local.stack import StackSettings, airflow_settings

DAG_ID = "aep_propensity_pipeline"
START_TIMEOUT_S = 180
# The components a run needs; the monitor reports each as "healthy" once it heartbeats.
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def api_url() -> str:
    """The api-server's base URL (UI and REST API) from the ``AIRFLOW__API__*`` settings."""
    return f"http://{os.environ.get('AIRFLOW__API__HOST', '127.0.0.1')}:{os.environ.get('AIRFLOW__API__PORT', '8080')}"


def pid_file(stack: StackSettings) -> PidFile:
    # "standalone": a word of `airflow standalone`'s command line, so a recycled PID is never ours.
    return PidFile(stack.home / "run" / "airflow.pid", "standalone")


def log_path(stack: StackSettings) -> Path:
    return stack.home / "logs" / "airflow.log"


def airflow_env(stack: StackSettings, schedule: bool = False) -> dict[str, str]:
    """The environment for ``airflow standalone``: the caller's, the stack's Airflow settings where
    the caller has none, and the venv's ``bin`` first on ``PATH`` (standalone runs ``airflow`` from it).

    :param schedule: let the scheduler create the DAG's scheduled runs. Off by default: unpausing
        the daily DAG would otherwise start a run for the latest interval at once, with the default
        params (100,000 profiles). Manual runs (UI, REST, CLI) run either way.
    """
    env = {**airflow_settings(stack), **stack.airflow_connections(), **stack.exports(), **os.environ}
    env.setdefault("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", str(schedule))
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    return env


def health_problem(base_url: str | None = None) -> str | None:
    """None when every component reports healthy, else what is not."""
    try:
        response = requests.get(f"{base_url or api_url()}/api/v2/monitor/health", timeout=3)
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    body = response.json()
    unhealthy = [
        f"{name}: {(body.get(name) or {}).get('status')}"
        for name in COMPONENTS
        if (body.get(name) or {}).get("status") != "healthy"
    ]
    return "; ".join(unhealthy) or None


# --- stopping a process tree ---------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # After the command name: state(0) ppid(1) pgrp(2) ... starttime(19).
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _process_table() -> dict[int, tuple[str, int, int, int]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    return table


def _tree_and_group(roots: set[int], group: int) -> dict[int, int]:
    """{pid: starttime} of ``roots``, their descendants and the members of process group ``group``."""
    table = _process_table()
    found = {pid for pid, (_state, _ppid, pgrp, _start) in table.items() if pgrp == group}
    found |= roots & table.keys()
    frontier = set(found)
    while frontier:
        frontier = {pid for pid, (_s, ppid, _g, _t) in table.items() if ppid in frontier and pid not in found}
        found |= frontier
    return {pid: table[pid][3] for pid in found}


def _alive(pid: int, starttime: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[3] == starttime and stat[0] != "Z"


def stop_tree(root: int, grace_s: float = 30, term_s: float = 10) -> None:
    """Stop ``airflow standalone`` (pid ``root``) and everything it started.

    SIGINT to standalone (its own orderly shutdown: it terminates each component and waits), then
    SIGTERM and finally SIGKILL to whatever is left of its tree and process group, including task
    processes that moved to process groups of their own. Processes are remembered with their start
    time, so orphans whose parent is already gone are still found and a recycled PID is never hit.
    """
    seen = _tree_and_group({root}, root)

    def remaining() -> dict[int, int]:
        live = {pid for pid, start in seen.items() if _alive(pid, start)}
        for pid, start in _tree_and_group(live, root).items():
            seen.setdefault(pid, start)
        return {pid: start for pid, start in seen.items() if _alive(pid, start)}

    def signal_all(pids: dict[int, int], sig: int) -> None:
        for pid, start in pids.items():
            if _alive(pid, start):
                # It may exit between the check and the signal: that is the outcome we want.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def wait_gone(timeout_s: float) -> dict[int, int]:
        deadline = time.monotonic() + timeout_s
        left = remaining()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = remaining()
        return left

    if root in seen:
        signal_all({root: seen[root]}, signal.SIGINT)
    left = wait_gone(grace_s)
    for sig, wait_s in ((signal.SIGTERM, term_s), (signal.SIGKILL, 5)):
        if not left:
            return
        signal_all(left, sig)
        left = wait_gone(wait_s)
    if left:
        raise StackError(f"processes {sorted(left)} survived SIGKILL")


# --- commands ------------------------------------------------------------------------------------


def _check_free(stack: StackSettings) -> int | None:
    """The PID of a standalone the command already started, or None when the port is free."""
    pid = pid_file(stack).live_pid()
    if pid is not None:
        return pid
    port = int(os.environ.get("AIRFLOW__API__PORT", "8080"))
    if port_in_use("127.0.0.1", port):
        raise StackError(
            f"port {port} is in use, but not by an Airflow that bin/airflow-ui started: stop what uses it, "
            f"or set AIRFLOW__API__PORT to a free port"
        )
    return None


def _prepare(stack: StackSettings) -> None:
    from aep_local import airflow_db

    print("bin/airflow-ui: preparing the metadata database (airflow db migrate, pool aep_api)", file=sys.stderr)
    airflow_db.prepare(stack)


def _ready_banner(started: float) -> str:
    return (
        f"\nAirflow UI: {api_url()}  (no login needed; ready in {time.monotonic() - started:.0f} s)\n"
        f"  DAG {DAG_ID}: {api_url()}/dags/{DAG_ID}\n"
    )


def wait_ready(process: subprocess.Popen, timeout_s: float, log: Path | None) -> None:
    """Wait until the monitor reports every component healthy; raise if standalone exits or times out."""
    deadline = time.monotonic() + timeout_s
    while (problem := health_problem()) is not None:
        if process.poll() is not None:
            tail = f"; its log {log} ends with:\n{log_tail(log)}" if log else ""
            raise StackError(f"airflow standalone exited with code {process.returncode} during start-up{tail}")
        if time.monotonic() > deadline:
            tail = f"; its log {log} ends with:\n{log_tail(log)}" if log else ""
            raise StackError(f"Airflow was not healthy {timeout_s:.0f} s after start ({problem}){tail}")
        time.sleep(1)


def start_background(stack: StackSettings, timeout_s: float = START_TIMEOUT_S, schedule: bool = False) -> int:
    """Start standalone detached (own session, output to ``logs/airflow.log``), wait until healthy.

    :returns: its PID (also in ``run/airflow.pid``).
    """
    pid = _check_free(stack)
    if pid is not None:
        print(f"bin/airflow-ui: already running (pid {pid}, log {log_path(stack)})", file=sys.stderr)
        return pid
    _prepare(stack)
    started = time.monotonic()
    process = spawn(["airflow", "standalone"], log_path(stack), airflow_env(stack, schedule), cwd=PROJECT_ROOT)
    pid_file(stack).write(process.pid)
    try:
        wait_ready(process, timeout_s, log_path(stack))
    except (StackError, KeyboardInterrupt):
        stop_tree(process.pid)
        pid_file(stack).remove()
        raise
    print(_ready_banner(started).rstrip())
    print(f"  pid {process.pid} ({pid_file(stack).path}), log {log_path(stack)}; stop: bin/airflow-ui stop")
    return process.pid


def run_foreground(stack: StackSettings, schedule: bool = False) -> int:
    """Run standalone attached to this terminal until Ctrl-C (or SIGTERM), then stop all of it."""
    pid = _check_free(stack)
    if pid is not None:
        raise StackError(f"Airflow already runs in the background (pid {pid}): bin/airflow-ui stop first")
    _prepare(stack)
    started = time.monotonic()
    # Its own session: Ctrl-C reaches only this process, which then stops the whole tree in order.
    process = subprocess.Popen(
        ["airflow", "standalone"],
        env=airflow_env(stack, schedule),
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file(stack).write(process.pid)
    stopping = threading.Event()

    def announce() -> None:
        try:
            wait_ready(process, START_TIMEOUT_S, None)
        except StackError as exc:
            if not stopping.is_set():
                print(f"bin/airflow-ui: {exc}", file=sys.stderr)
            return
        if not stopping.is_set():
            print(_ready_banner(started) + "  Ctrl-C stops Airflow (the local services keep running)\n", flush=True)

    def on_term(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=announce, daemon=True).start()
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = 0
    stopping.set()
    print("\nbin/airflow-ui: stopping Airflow ...", file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_tree(process.pid)
    pid_file(stack).remove()
    print("bin/airflow-ui: stopped", file=sys.stderr)
    return code


def stop(stack: StackSettings) -> int:
    pid = pid_file(stack).live_pid()
    if pid is None:
        print("bin/airflow-ui: not running (no live PID in run/airflow.pid)")
        return 0
    stop_tree(pid)
    pid_file(stack).remove()
    print(f"bin/airflow-ui: stopped (pid {pid} and its children)")
    return 0


def status(stack: StackSettings) -> int:
    pid = pid_file(stack).live_pid()
    problem = health_problem()
    origin = f"started by bin/airflow-ui (pid {pid})" if pid else "not started by bin/airflow-ui"
    print(f"airflow   {api_url():<42} {'healthy' if problem is None else 'UNHEALTHY: ' + problem}  [{origin}]")
    return 0 if problem is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/airflow-ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="start",
        choices=("start", "stop", "status", "prepare"),
        help="start (default): run Airflow; stop: stop a background Airflow; status: its health; "
        "prepare: only create/migrate the metadata database and set the pool (docker-compose's airflow-init)",
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help=f"start detached (PID file run/airflow.pid, log logs/airflow.log), wait until healthy "
        f"(at most {START_TIMEOUT_S} s) and return",
    )
    parser.add_argument(
        "--schedule",
        action="store_true",
        help="let the scheduler create scheduled runs (off by default: only manual runs run)",
    )
    args = parser.parse_args(argv)
    # Started from a non-interactive shell with `&`, this process inherits SIGINT ignored, and so
    # would standalone, which shuts down in order only on SIGINT: a handler here is reset to the
    # default in every program it starts.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = StackSettings.from_env()
    try:
        if args.command == "stop":
            return stop(stack)
        if args.command == "status":
            return status(stack)
        if args.command == "prepare":
            _prepare(stack)
            return 0
        if args.background:
            start_background(stack, schedule=args.schedule)
            return 0
        return run_foreground(stack, schedule=args.schedule)
    except StackError as exc:
        print(f"bin/airflow-ui {args.command}: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"bin/airflow-ui {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
