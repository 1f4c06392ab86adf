"""``bin/run-pipeline``: run the propensity DAG for one date against the local stack and summarise it.

Expects the stack's environment (``eval "$(bin/stack env)"``, which ``bin/run-pipeline`` does).
The run goes through ``dag.test()``: every task runs in this process, deferrals included, with
the metadata in the stack's PostgreSQL, so the run shows in the Airflow UI (``bin/airflow-ui``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path

DAG_ID = "aep_propensity_pipeline"
STAGES = (
    "setup",
    "synthetic_data",
    "eda",
    "featurize",
    "export",
    "train",
    "score",
    "ingest_scores",
    "audiences",
    "activate",
    "summary",
)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/run-pipeline", description=__doc__)
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=datetime.now(UTC).date(),
        help="as-of date YYYY-MM-DD (default: today, UTC)",
    )
    parser.add_argument("--profiles", type=int, default=100_000, help="synthetic population size (default 100000)")
    parser.add_argument(
        "--conf", type=json.loads, default={}, help="more DAG params as JSON, e.g. '{\"activate\": false}'"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    return parser.parse_args(argv)


def logical_date_for(as_of: date) -> datetime:
    """The run's logical date: ``as_of`` at the schedule's 02:00 UTC (one run per date)."""
    return datetime.combine(as_of, dtime(2, 0), tzinfo=UTC)


def stage_timings(task_instances) -> dict[str, float]:
    """Seconds per stage: the summed durations of its task instances (dag.test runs them one at a time)."""
    seconds: dict[str, float] = defaultdict(float)
    for ti in task_instances:
        if ti.duration:
            seconds[ti.task_id.split(".", 1)[0]] += ti.duration
    return {stage: round(seconds[stage], 1) for stage in STAGES if stage in seconds}


@contextmanager
def output_to(log_path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2: the task logs) to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def task_output(dag_run_id: str, task_id: str):
    """A task's return value in a finished run (None when it returned nothing)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run_id, dag_ids=DAG_ID, task_ids=task_id, key="return_value")
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None


def run_for_date(as_of: date, conf: dict) -> dict:
    """Run the DAG for ``as_of`` with ``dag.test()``; return its state, stage timings and summary.

    :param as_of: the as-of date.
    :param conf: DAG params for the run (``as_of_date`` is set from ``as_of``).
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.session import create_session

    dag = DagBag().get_dag(DAG_ID)
    started = time.monotonic()
    # A manual run's data interval depends on how it is triggered: name the date explicitly.
    dag_run = dag.test(logical_date=logical_date_for(as_of), run_conf={**conf, "as_of_date": as_of.isoformat()})
    wall = time.monotonic() - started
    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        failed = sorted(ti.task_id for ti in tis if ti.state in ("failed", "upstream_failed"))
        timings = stage_timings(tis)
    return {
        "dag_run": dag_run.run_id,
        "state": str(dag_run.state),
        "wall_seconds": round(wall, 1),
        "stage_seconds": timings,
        "failed_tasks": failed,
        "summary": task_output(dag_run.run_id, "summary"),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from aep_local import airflow_db
    from aep_local.stack import StackSettings

    stack = StackSettings.from_env()
    airflow_db.prepare(stack)
    log_path = stack.home / "logs" / f"run-pipeline-{args.date.isoformat()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {DAG_ID} as of {args.date} ... task logs in {log_path}", file=sys.stderr, flush=True)
    with output_to(log_path):
        result = run_for_date(args.date, {"profile_count": args.profiles, **args.conf})
    result["task_logs"] = str(log_path)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_report(args.date, result)
    return 0 if result["state"] == "success" else 1


def _print_report(as_of: date, result: dict) -> None:
    summary = result["summary"] or {}
    print(
        f"\nAEP propensity pipeline, as of {as_of}: {result['state']} in {result['wall_seconds']} s "
        f"(run {result['dag_run']})"
    )
    if result["failed_tasks"]:
        print(f"  failed tasks: {', '.join(result['failed_tasks'])} (see {result['task_logs']})")
    print(f"  events ingested: {summary.get('events_ingested')} in {summary.get('event_batches')} batches")
    print(
        f"  ROC AUC: {summary.get('roc_auc')} (ceiling {summary.get('ceiling_roc_auc')}, "
        f"baseline {summary.get('baseline_roc_auc')})"
    )
    print(f"  scored profiles: {summary.get('scored_profiles')} (batch {summary.get('scores_batch')})")
    for name, count in (summary.get("audiences") or {}).items():
        print(f"  audience {name!r}: {count} profiles")
    print(f"  model: {summary.get('model')}")
    print(f"  artefacts: {summary.get('artifacts')}")
    for path in summary.get("activation_files") or []:
        print(f"  activation file: {path}")
    print("  wall seconds per stage: " + ", ".join(f"{k} {v}" for k, v in result["stage_seconds"].items()))


if __name__ == "__main__":
    sys.exit(main())
