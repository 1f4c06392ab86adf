"""
Against the emulator in ``dag.test()``: reruns leave no orphan Flow Service resources and apply what
changed; errors no retry can fix fail on the first try; a transient query failure is retried.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from aep_hooks.hooks import AEPHook
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.aep_hooks.operators.emulator_dag import DESTINATION_BUCKET, pipeline, results, ti_states

pytestmark = pytest.mark.integration

FLOW_KINDS = ("connections", "sourceConnections", "targetConnections", "flows")
RERUN_STAGES = ("ensure", "ingest", "rebuild", "export_rebuilt", "audience", "activate")


def flow_resources(hook: AEPHook) -> dict[str, dict[str, str]]:
    """Every Flow Service resource of the sandbox, by kind: ``{id: name}``."""
    return {
        kind: {item["id"]: item["name"] for item in hook.iter_flow_service(f"/data/foundation/flowservice/{kind}")}
        for kind in FLOW_KINDS
    }


def counts(resources: dict[str, dict[str, str]]) -> dict[str, int]:
    return {kind: len(items) for kind, items in resources.items()}


def test_three_reruns_leave_as_many_flow_service_resources_as_one_run(aep_env, names, dag_id, run_dag):
    before = counts(flow_resources(aep_env))
    first = run_dag(pipeline(dag_id, names, deferrable=False, stages=RERUN_STAGES))
    assert first.state == DagRunState.SUCCESS, ti_states(first)
    after_first = flow_resources(aep_env)
    # One export flow (its source, S3 base and target) and one activation flow (profile base, source, S3 base, target).
    assert {kind: counts(after_first)[kind] - before[kind] for kind in FLOW_KINDS} == {
        "connections": 3,
        "sourceConnections": 2,
        "targetConnections": 2,
        "flows": 2,
    }
    datasets = [results(first)["rebuild"]["dataset_id"]]

    for _ in range(3):
        rerun = run_dag(pipeline(dag_id, names, deferrable=False, stages=RERUN_STAGES))
        assert rerun.state == DagRunState.SUCCESS, ti_states(rerun)
        datasets.append(results(rerun)["rebuild"]["dataset_id"])
        assert counts(flow_resources(aep_env)) == counts(after_first)

    assert len(set(datasets)) == 4, "each run rebuilds its CTAS dataset"
    now = flow_resources(aep_env)
    # What does not depend on the rebuilt dataset is reused, never recreated.
    assert set(now["connections"]) == set(after_first["connections"])
    assert set(now["targetConnections"]) == set(after_first["targetConnections"])
    export_flow = next(
        f
        for f in aep_env.iter_flow_service("/data/foundation/flowservice/flows")
        if f["name"] == f"export rebuilt {names['suffix']}"
    )
    [source_id] = export_flow["sourceConnectionIds"]
    source = aep_env.get_flow_item("sourceConnections", source_id)
    assert [d["dataSetId"] for d in source["params"]["datasets"]] == [datasets[-1]]


def test_a_changed_path_and_rotated_keys_are_applied_not_reused(aep_env, names, dag_id, run_dag, s3, monkeypatch):
    stages = ("ensure", "ingest", "rebuild", "export_rebuilt")
    first = run_dag(pipeline(dag_id, names, deferrable=False, stages=stages))
    assert first.state == DagRunState.SUCCESS, ti_states(first)
    after_first = flow_resources(aep_env)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AEP_DESTINATION",
        json.dumps(
            {
                "conn_type": "aws",
                "extra": {
                    "aws_access_key_id": "AKIAROTATEDKEY234567",
                    "aws_secret_access_key": "rotatedSecretKey0rotatedSecretKey0rotate",
                },
            }
        ),
    )

    moved = run_dag(pipeline(dag_id, names, deferrable=False, stages=stages, export_path=f"moved/{dag_id}"))

    assert moved.state == DagRunState.SUCCESS, ti_states(moved)
    export = results(moved)["export_rebuilt"]
    assert export["export_path"].startswith(f"s3://{DESTINATION_BUCKET}/moved/{dag_id}/")
    for key in export["files"]:
        s3.head_object(Bucket=DESTINATION_BUCKET, Key=key)
    now = flow_resources(aep_env)
    assert counts(now) == counts(after_first)
    base = next(i for i, n in now["connections"].items() if n == f"export rebuilt {names['suffix']} S3")
    assert base not in after_first["connections"], "rotated keys make a new base connection"
    assert aep_env.get_flow_item("connections", base)["auth"]["params"]["s3AccessKey"] == "AKIAROTATEDKEY234567"


def test_a_transient_query_failure_fails_the_try_and_the_retry_submits_it_anew(
    aep_env, emulator, names, dag_id, run_dag
):
    emulator.emu.faults.configure({"force_failures": {"query": 1}})

    dag_run = run_dag(pipeline(dag_id, names, deferrable=False, stages=("ensure", "ingest", "rebuild"), retries=2))

    assert dag_run.state == DagRunState.SUCCESS, ti_states(dag_run)
    assert ti_states(dag_run)["rebuild"] == (TaskInstanceState.SUCCESS, 2)
    queries = [
        q
        for q in aep_env.iter_query_service("/data/foundation/query/queries", "queries", {"limit": 1000})
        if q["request"].get("name") == f"{dag_id}.rebuild"
    ]
    assert sorted(q["state"] for q in queries) == ["FAILED", "SUCCESS"]


@pytest.mark.parametrize(
    ("failure", "failing_task", "message"),
    [
        pytest.param("invalid-sql", "rebuild", "Not retried: the same job would fail the same way", id="invalid-sql"),
        pytest.param("no-connection", "ensure", "Airflow connection 'aep_default' is not defined", id="no-connection"),
        pytest.param("sandbox-not-allowed", "ensure", "may not make this call in sandbox 'nosuch'", id="bad-sandbox"),
        pytest.param("invalid-interactive-sql", "count", "Query Service refused the SQL of count", id="wire-sql"),
    ],
)
def test_errors_no_retry_can_fix_fail_on_the_first_try(
    aep_env, names, dag_id, run_dag, monkeypatch, capfd, failure, failing_task, message
):
    if failure == "invalid-sql":
        Path(names["searchpath"], "rebuild.sql").write_text(
            "DROP TABLE IF EXISTS high_x; CREATE TABLE high_x AS SELECT no_such_column FROM no_such_table"
        )
    elif failure == "invalid-interactive-sql":
        Path(names["searchpath"], "count.sql").write_text("SELEC COUNT(*) FROM nowhere")
    elif failure == "no-connection":
        monkeypatch.delenv("AIRFLOW_CONN_AEP_DEFAULT")
    else:
        conn = json.loads(os.environ["AIRFLOW_CONN_AEP_DEFAULT"])
        monkeypatch.setenv(
            "AIRFLOW_CONN_AEP_DEFAULT", json.dumps({**conn, "extra": {**conn["extra"], "sandbox": "nosuch"}})
        )
    started = time.monotonic()

    stages = ("ensure", "count") if failing_task == "count" else ("ensure", "ingest", "rebuild")
    dag_run = run_dag(pipeline(dag_id, names, deferrable=False, stages=stages, retries=3))

    elapsed = time.monotonic() - started
    assert dag_run.state == DagRunState.FAILED
    assert ti_states(dag_run)[failing_task] == (TaskInstanceState.FAILED, 1)
    captured = capfd.readouterr()
    assert message in captured.out + captured.err
    assert elapsed < 120, elapsed
