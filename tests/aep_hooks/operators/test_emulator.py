"""The AEP operators inside real Airflow tasks (``dag.test()``, triggers in-process) against the emulator."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from unittest import mock

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aep_hooks.hooks import AEPHook
from aep_hooks.operators.catalog import PROFILE_CLASS, AEPEnsureDatasetOperator
from aep_hooks.operators.flow_service import AEPActivateAudiencesOperator, AEPDatasetExportOperator
from aep_hooks.operators.ingestion import AEPBatchIngestOperator
from aep_hooks.operators.query_service import AEPQueryOperator
from aep_hooks.operators.segmentation import AEPAudienceOperator
from airflow.sdk import DAG, chain
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.aep_hooks.conftest import S3_ACCESS_KEY, S3_ENDPOINT, S3_SECRET_KEY, aep_connection, s3_connection

pytestmark = pytest.mark.integration

STAGING_BUCKET = "aep-propensity"
DESTINATION_BUCKET = "aep-destination"
CLIENT_SECRET = "aep-local-secret"
DESTINATION_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AS_OF = "2026-01-15"
USERS = 20


@pytest.fixture
def aep_env(monkeypatch, emulator, sandbox):
    """The ``aep_default``, ``aep_s3`` and ``aep_destination`` connections for the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", aep_connection(emulator, sandbox))
    monkeypatch.setenv("AIRFLOW_CONN_AEP_S3", s3_connection(emulator))
    monkeypatch.setenv(
        "AIRFLOW_CONN_AEP_DESTINATION",
        json.dumps(
            {
                "conn_type": "aws",
                "extra": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": DESTINATION_SECRET},
            }
        ),
    )
    return AEPHook(sandbox=sandbox)


@pytest.fixture
def s3():
    return boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
        config=boto3.session.Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def names(dag_id, tmp_path, s3):
    """Per-test names, a dataset spec template and two score files in S3."""
    suffix = dag_id.rsplit("_", 1)[-1]
    spec = {
        "dataset": f"scores_{suffix}",
        "schema": {
            "title": f"Scores {suffix}",
            "class": PROFILE_CLASS,
            "tenant_field_group": {
                "title": f"Score fields {suffix}",
                "fields": {"userid": "string", "propensity": "number"},
            },
        },
        "identity": {"field": "userid", "namespace": "ECID"},
        "profile_enabled": True,
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec).replace(f"scores_{suffix}", "scores_{{ params.suffix }}"))
    (tmp_path / "count.sql").write_text('SELECT COUNT(*) AS n FROM {{ ti.xcom_pull("ensure")["table_name"] }}')
    (tmp_path / "high.sql").write_text(
        'SELECT _acme.userid AS userid FROM {{ ti.xcom_pull("ensure")["table_name"] }} WHERE _acme.propensity >= $threshold'
    )
    prefix = f"scores/{dag_id}/dt={AS_OF}"
    for part in range(2):
        users = range(part * USERS // 2, (part + 1) * USERS // 2)
        table = pa.table(
            {
                "_acme": pa.array(
                    [{"userid": f"u{i:03d}", "propensity": i / USERS} for i in users],
                    pa.struct([("userid", pa.string()), ("propensity", pa.float64())]),
                )
            }
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        s3.put_object(Bucket=STAGING_BUCKET, Key=f"{prefix}/part-{part}.parquet", Body=buffer.getvalue())
    return {"suffix": suffix, "dataset": spec["dataset"], "prefix": prefix, "searchpath": str(tmp_path)}


def pipeline(dag_id: str, names: dict, *, deferrable: bool, stages: tuple[str, ...], retries: int = 2) -> DAG:
    """A DAG chaining the operators (``stages`` picks a prefix of them)."""
    common = {"deferrable": deferrable, "poll_interval": 0.2, "timeout": timedelta(minutes=3)}
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        template_searchpath=[names["searchpath"]],
        params={"suffix": names["suffix"]},
        default_args={"retries": retries, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        dataset_id = '{{ ti.xcom_pull("ensure")["dataset_id"] }}'
        factories = {
            "ensure": lambda: AEPEnsureDatasetOperator(task_id="ensure", spec="dataset.json", **common),
            "ingest": lambda: AEPBatchIngestOperator(
                task_id="ingest",
                dataset_id=dataset_id,
                s3_bucket=STAGING_BUCKET,
                s3_prefix=names["prefix"],
                **common,
            ),
            "count": lambda: AEPQueryOperator(task_id="count", sql="count.sql", mode="interactive", **common),
            "ctas": lambda: AEPQueryOperator(
                task_id="ctas",
                sql="high.sql",
                query_parameters={"threshold": "0.5"},
                ctas_table=f"high_{names['suffix']}_{{{{ ts_nodash | lower }}}}",
                **common,
            ),
            "export": lambda: AEPDatasetExportOperator(
                task_id="export",
                dataset_id=dataset_id,
                s3_bucket=DESTINATION_BUCKET,
                s3_path=f"exports/{dag_id}",
                flow_name=f"export {names['suffix']}",
                destination_conn_id="aep_destination",
                **common,
            ),
            "audience": lambda: AEPAudienceOperator(
                task_id="audience",
                audiences=[
                    {"name": f"high {names['suffix']}", "pql": "_acme.propensity >= 0.5", "description": "high"},
                    {"name": f"low {names['suffix']}", "pql": "_acme.propensity < 0.2"},
                ],
                **common,
            ),
            "activate": lambda: AEPActivateAudiencesOperator(
                task_id="activate",
                audience_ids=f'{{{{ ti.xcom_pull("audience")["high {names["suffix"]}"]["id"] | tojson }}}}'.join(
                    ["[", "]"]
                ),
                destination_name=f"activation {names['suffix']}",
                s3_bucket=DESTINATION_BUCKET,
                s3_path=f"activations/{dag_id}",
                destination_conn_id="aep_destination",
                **common,
            ),
        }
        chain(*[factories[name]() for name in stages])
    return dag


def results(dag_run) -> dict:
    """``{task_id: return value}`` of a finished run."""
    from airflow import settings
    from airflow.models.xcom import XComModel

    with settings.Session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, key="return_value")
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def ti_states(dag_run) -> dict:
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance

    with settings.Session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        return {ti.task_id: (ti.state, ti.try_number) for ti in tis}


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
