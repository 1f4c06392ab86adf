"""The whole propensity DAG with dag.test() against the emulator, PostgreSQL and S3, run twice for one date.

Small scale (a few thousand profiles), real outcomes: batches in the emulator's Catalog, scores in
the scores dataset's table, metrics.json in S3, audience files whose counts match the segment jobs,
and a rerun of the date that replaces instead of duplicating.
"""

from __future__ import annotations

import csv
import gzip
import io
from datetime import date
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.config import Config
from propensity import artifacts

from aep_emulator.db import sandbox_schema
from aep_local.run_pipeline import DAG_ID, run_for_date, task_output
from aep_local.stack import airflow_connections
from tests.support.emulator import AEPClient

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

AS_OF = date(2026, 3, 10)
PROFILES = 10_000
CATALOG = "/data/foundation/catalog"


@pytest.fixture(scope="module")
def pipeline(emulator_session, airflow_db):
    """Two runs of the DAG for AS_OF (a first run that seeds history, then a rerun), with its S3 and AEP."""
    settings, sandbox = emulator_session.settings, emulator_session.sandbox
    dag_file = Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.py"
    (airflow_db / dag_file.name).symlink_to(dag_file)
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(s3={"addressing_style": "path"}),
    )
    buckets = {"artifact_bucket": f"{sandbox}-artifacts", "destination_bucket": f"{sandbox}-destination"}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    patch = pytest.MonkeyPatch()
    for name, value in airflow_connections(settings, sandbox).items():
        patch.setenv(name, value)
    conf = {"profile_count": PROFILES, **buckets}
    try:
        first = run_for_date(AS_OF, conf)
        first_audiences = task_output(first["dag_run"], "audiences.evaluate")
        first_plan = task_output(first["dag_run"], "setup.plan")
        rerun = run_for_date(AS_OF, conf)
        rerun_audiences = task_output(rerun["dag_run"], "audiences.evaluate")
    finally:
        patch.undo()
    return {
        "first": first,
        "rerun": rerun,
        "first_audiences": first_audiences,
        "rerun_audiences": rerun_audiences,
        "plan": first_plan,
        "s3": s3,
        "buckets": buckets,
        "aep": AEPClient(emulator_session.url, settings, sandbox),
        "settings": settings,
        "sandbox": sandbox,
    }


def _batches(pipeline, dataset_id: str) -> dict[str, dict]:
    resp = pipeline["aep"].get(f"{CATALOG}/batches", params={"dataSet": dataset_id, "limit": 100})
    resp.raise_for_status()
    return resp.json()


def _table_rows(pipeline, table: str, sql: str) -> list[tuple]:
    settings = pipeline["settings"]
    with psycopg.connect(settings.pg_dsn) as conn:
        conn.execute(f"SET search_path TO {sandbox_schema(pipeline['sandbox'])}")
        return conn.execute(sql.format(table=f'"{table}"')).fetchall()


def test_both_runs_succeed(pipeline):
    for run in ("first", "rerun"):
        assert pipeline[run]["state"] == "success", pipeline[run]["failed_tasks"]


def test_events_and_scores_batches_succeeded_in_catalog(pipeline):
    plan = pipeline["plan"]
    events = _batches(pipeline, plan["events_dataset_id"])
    assert events and {b["status"] for b in events.values()} <= {"success", "inactive"}
    active_events = [b for b in events.values() if b["status"] == "success"]
    # Ten weeks of history in weekly batches plus the run's own day.
    assert len(active_events) == 11
    scores = _batches(pipeline, plan["scores_dataset_id"])
    assert [b["status"] for b in scores.values() if b["status"] == "success"] == ["success"]


def test_one_score_per_profile_with_model_version_and_time(pipeline):
    plan, tenant = pipeline["plan"], pipeline["plan"]["tenant"]
    table = pipeline["aep"].get(f"{CATALOG}/dataSets/{plan['scores_dataset_id']}").json()[plan["scores_dataset_id"]]
    table_name = table["tags"]["adobe/pqs/table"][0]
    ((rows, users, missing_version, missing_time),) = _table_rows(
        pipeline,
        table_name,
        f'SELECT count(*), count(DISTINCT "_{tenant}.userid"), count(*) FILTER (WHERE "_{tenant}.propensityModelVersion" IS NULL),'
        f' count(*) FILTER (WHERE "_{tenant}.propensityScoredAt" IS NULL) FROM {{table}}',
    )
    summary = pipeline["rerun"]["summary"]
    assert rows == users == summary["scored_profiles"] > PROFILES // 4
    assert missing_version == missing_time == 0


def test_model_metrics_beat_the_gate_and_approach_the_ceiling(pipeline):
    metrics = artifacts.read_json(pipeline["s3"], pipeline["buckets"]["artifact_bucket"], artifacts.metrics_key(AS_OF))
    assert metrics["roc_auc"] > 0.75
    assert metrics["ceiling_roc_auc"] - metrics["roc_auc"] < 0.12
    assert metrics["model_version"].startswith(AS_OF.isoformat())


def test_activation_files_match_the_segment_jobs(pipeline):
    s3, bucket = pipeline["s3"], pipeline["buckets"]["destination_bucket"]
    activation = task_output(pipeline["rerun"]["dag_run"], "activate.s3_destination")
    counts = {audience["id"]: audience["count"] for audience in pipeline["rerun_audiences"].values()}
    assert sum(counts.values()) > 0
    files = [f for run in activation["runs"].values() for f in run["files"]]
    assert len(files) == len(counts)
    for key in files:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        rows = list(csv.reader(io.StringIO(gzip.decompress(body).decode())))[1:]
        audience_id = next(a for a in counts if a in key)
        assert len(rows) == counts[audience_id]


def test_rerun_replaces_instead_of_duplicating(pipeline):
    plan = pipeline["plan"]
    scores = _batches(pipeline, plan["scores_dataset_id"])
    by_status = {status: [b for b in scores.values() if b["status"] == status] for status in ("success", "inactive")}
    assert len(by_status["success"]) == 1 and len(by_status["inactive"]) == 1
    (active,) = by_status["success"]
    (replaced_id,) = [batch_id for batch_id, b in scores.items() if b["status"] == "inactive"]
    assert [p.lstrip("$") for p in active["replay"]["predecessors"]] == [replaced_id]
    assert {a["id"] for a in pipeline["first_audiences"].values()} == {
        a["id"] for a in pipeline["rerun_audiences"].values()
    }
    events = _batches(pipeline, plan["events_dataset_id"])
    assert len([b for b in events.values() if b["status"] == "success"]) == 11
    ((duplicates,),) = _table_rows(
        pipeline,
        plan["events_table"],
        'SELECT count(*) - count(DISTINCT "_id") FROM {table}',
    )
    assert duplicates == 0
