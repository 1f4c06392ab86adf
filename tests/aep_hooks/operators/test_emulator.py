"""The AEP operators inside real Airflow tasks (``dag.test()``, triggers in-process) against the emulator."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from aep_hooks.hooks import AEPHook
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.aep_hooks.conftest import S3_SECRET_KEY
from tests.aep_hooks.operators.emulator_dag import (
    CLIENT_SECRET,
    DESTINATION_BUCKET,
    DESTINATION_SECRET,
    USERS,
    pipeline,
    results,
    ti_states,
)

pytestmark = pytest.mark.integration


def batches_of(hook: AEPHook, dataset_id: str) -> dict:
    return hook.find_batches(dataSet=dataset_id)


def test_pipeline_runs_every_operator_deferred_and_a_rerun_duplicates_nothing(
    aep_env, names, dag_id, run_dag, s3, capfd
):
    stages = ("ensure", "ingest", "count", "ctas", "export", "audience", "activate")
    dag = pipeline(dag_id, names, deferrable=True, stages=stages)

    first = run_dag(dag)

    assert first.state == DagRunState.SUCCESS, ti_states(first)
    out = results(first)
    dataset_id = out["ensure"]["dataset_id"]
    assert out["ensure"]["tenant_id"] == "acme"
    assert out["ingest"]["rows"] == USERS and out["ingest"]["replaced"] == []
    assert out["count"] == {"rows": [[USERS]], "rowCount": 1}
    assert out["ctas"]["state"] == "SUCCESS" and out["ctas"]["rowCount"] == USERS // 2
    assert aep_env.get_dataset(out["ctas"]["dataset_id"])["name"].startswith("high_")
    export = out["export"]
    assert export["export_path"].startswith(f"s3://{DESTINATION_BUCKET}/exports/{dag_id}/{dataset_id}/exportTime=")
    assert export["files"] and export["records"] == USERS
    for key in export["files"]:
        assert export["export_path"].removeprefix(f"s3://{DESTINATION_BUCKET}/") in key
        s3.head_object(Bucket=DESTINATION_BUCKET, Key=key)
    high = out["audience"][f"high {names['suffix']}"]
    assert high["count"] == USERS // 2 and out["audience"][f"low {names['suffix']}"]["count"] == USERS // 5
    [activation] = out["activate"]["runs"].values()
    assert activation["records"] == USERS // 2 and activation["files"]

    second = run_dag(pipeline(dag_id, names, deferrable=True, stages=stages[:2] + ("export", "audience", "activate")))

    assert second.state == DagRunState.SUCCESS, ti_states(second)
    again = results(second)
    assert again["ensure"] == out["ensure"]
    batches = batches_of(aep_env, dataset_id)
    assert len(batches) == 2
    replay = batches[again["ingest"]["batch_id"]]
    assert replay["status"] == "success"
    assert [p.lstrip("$") for p in replay["replay"]["predecessors"]] == [out["ingest"]["batch_id"]]
    assert batches[out["ingest"]["batch_id"]]["status"] == "inactive"
    assert again["ingest"]["replaced"] == [out["ingest"]["batch_id"]]
    assert again["audience"][f"high {names['suffix']}"]["id"] == high["id"]
    # The rerun exports again (a new run), never reusing the first run's result.
    assert again["export"]["run_id"] != export["run_id"]
    assert_no_duplicates(aep_env, names, dataset_id)
    assert_nothing_secret(capfd, first, second)


def assert_no_duplicates(hook: AEPHook, names: dict, dataset_id: str) -> None:
    suffix = names["suffix"]
    assert [d for d in hook.find_datasets(name=names["dataset"]).values() if d["name"] == names["dataset"]]
    assert len([d for d in hook.find_datasets(name=names["dataset"]).values() if d["name"] == names["dataset"]]) == 1
    for kind, title in (("schemas", f"Scores {suffix}"), ("fieldgroups", f"Score fields {suffix}")):
        listed = hook.iter_query_service(
            f"/data/foundation/schemaregistry/tenant/{kind}",
            "results",
            headers={"Accept": "application/vnd.adobe.xed-id+json"},
        )
        assert len([r for r in listed if r.get("title") == title]) == 1, kind
    schema = hook.find_schema_resource("schemas", f"Scores {suffix}")
    assert len(hook.find_descriptors(schema["$id"])) == 1
    for kind, name in (("flows", f"export {suffix}"), ("flows", f"activation {suffix}")):
        items = [i for i in hook.iter_flow_service(f"/data/foundation/flowservice/{kind}") if i.get("name") == name]
        assert len(items) <= 1, name
    definitions = [d for d in hook.iter_segment_definitions() if d["name"].endswith(suffix)]
    assert sorted(d["name"] for d in definitions) == sorted({d["name"] for d in definitions})
    active = [b for b in hook.find_batches(dataSet=dataset_id).values() if b["status"] == "success"]
    assert len(active) == 1


def assert_nothing_secret(capfd, *dag_runs) -> None:
    """No credential appears in task logs, XCom or rendered template fields."""
    from airflow import settings
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel

    secrets = [CLIENT_SECRET, S3_SECRET_KEY, DESTINATION_SECRET, "Bearer "]
    captured = capfd.readouterr()
    texts = [captured.out, captured.err]
    with settings.Session() as session:
        for dag_run in dag_runs:
            texts += [
                json.dumps(XComModel.deserialize_value(x), default=str)
                for x in session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
            ]
            texts += [
                json.dumps(r.rendered_fields, default=str)
                for r in session.query(RenderedTaskInstanceFields).filter_by(
                    dag_id=dag_run.dag_id, run_id=dag_run.run_id
                )
            ]
    assert "Completed batch" in captured.out + captured.err, "the task logs were not captured"
    for secret in secrets:
        assert not [t for t in texts if secret in t], f"{secret[:6]}... leaked"


def test_crash_after_create_before_complete_retries_into_the_same_batch(aep_env, names, dag_id, run_dag):
    real_complete = AEPHook.complete_batch
    calls = []

    def crash_first(self, batch_id):
        calls.append(batch_id)
        if len(calls) == 1:
            raise RuntimeError("worker killed after the uploads, before COMPLETE")
        return real_complete(self, batch_id)

    with mock.patch.object(AEPHook, "complete_batch", crash_first):
        dag_run = run_dag(pipeline(dag_id, names, deferrable=False, stages=("ensure", "ingest")))

    assert dag_run.state == DagRunState.SUCCESS, ti_states(dag_run)
    assert ti_states(dag_run)["ingest"] == (TaskInstanceState.SUCCESS, 2)
    out = results(dag_run)
    batches = batches_of(aep_env, out["ensure"]["dataset_id"])
    assert list(batches) == [out["ingest"]["batch_id"]] == list(set(calls))
    assert batches[out["ingest"]["batch_id"]]["status"] == "success"
    assert out["ingest"]["rows"] == USERS


def test_operator_sequence_survives_injected_429_and_5xx_without_duplicates(
    aep_env, emulator, names, dag_id, run_dag, monkeypatch
):
    injected = []
    pick = emulator.emu.faults.pick

    def counting_pick(method, path):
        latency, status, retry_after = pick(method, path)
        if status:
            injected.append((method, path, status))
        return latency, status, retry_after

    monkeypatch.setattr(emulator.emu.faults, "pick", counting_pick)
    rules = {"rules": [{"path": "^/data/", "rate_429": 0.1, "rate_5xx": 0.1, "retry_after": 0}], "seed": 7}
    emulator.admin("PUT", "faults", json=rules).raise_for_status()
    stages = ("ensure", "ingest", "ctas", "export", "audience")
    with mock.patch.object(AEPHook, "__init__", _fast_retry_init(AEPHook.__init__)):
        dag_run = run_dag(pipeline(dag_id, names, deferrable=False, stages=stages, retries=4))
    emulator.admin("DELETE", "faults")

    assert dag_run.state == DagRunState.SUCCESS, ti_states(dag_run)
    assert len(injected) >= 5 and any(method == "POST" for method, _, _ in injected), injected
    out = results(dag_run)
    assert out["ingest"]["rows"] == USERS
    assert len(batches_of(aep_env, out["ensure"]["dataset_id"])) == 1
    assert_no_duplicates(aep_env, names, out["ensure"]["dataset_id"])


def _fast_retry_init(init):
    """The hooks' back-off shortened (the emulator's faults are random, not rate limits)."""

    def fast(self, *args, **kwargs):
        kwargs.update(retry_min_wait=0.01, retry_max_wait=0.05)
        init(self, *args, **kwargs)

    return fast


def test_dataset_spec_template_is_rendered_for_the_ui(aep_env, names, dag_id, run_dag):
    from airflow import settings
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    dag_run = run_dag(pipeline(dag_id, names, deferrable=False, stages=("ensure",)))

    with settings.Session() as session:
        rendered = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_id, run_id=dag_run.run_id).one()
    assert json.loads(rendered.rendered_fields["spec"])["dataset"] == names["dataset"]
