"""Unit tests of the AEP operators against an HTTP fake (requests-mock): resume, replay, create-never-retried."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
from aep_hooks.exceptions import AEPApiError
from aep_hooks.links import AEPBatchLink, AEPQueryLink
from aep_hooks.operators import (
    AEPActivateAudiencesOperator,
    AEPAudienceOperator,
    AEPBatchIngestOperator,
    AEPDatasetExportOperator,
    AEPQueryOperator,
    plan_batch,
)
from aep_hooks.triggers import BatchStatusTrigger, QueryStatusTrigger
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

PLATFORM = "https://aep.test"
CATALOG = f"{PLATFORM}/data/foundation/catalog"
IMPORT = f"{PLATFORM}/data/foundation/import"
QUERIES = f"{PLATFORM}/data/foundation/query/queries"
SEGMENTATION = f"{PLATFORM}/data/core/ups"
ORG = "TEST0000000000000000000@AdobeOrg"
DATASET = "ds1"
EXTERNAL_ID = f"airflow:dag_x:2026-01-15:{DATASET}"


class FakeStateStore(dict):
    """``task_state_store`` with the accessor's get/set/delete."""

    def get(self, key, default=None):
        return super().get(key, default)

    def set(self, key, value, *, retention=None):
        self[key] = json.loads(json.dumps(value))

    def delete(self, key):
        self.pop(key, None)


class FakeS3:
    """The part of S3Hook the operators use, over an in-memory bucket."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_keys(self, bucket_name, prefix):
        return sorted(k for k in self.objects if k.startswith(prefix))

    def head_object(self, key, bucket_name):
        return {"ContentLength": len(self.objects[key])}

    def get_key(self, key, bucket_name):
        return SimpleNamespace(get=lambda: {"Body": io.BytesIO(self.objects[key])})


@pytest.fixture(autouse=True)
def aep_conn(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AEP_DEFAULT",
        json.dumps(
            {
                "conn_type": "aep",
                "host": PLATFORM,
                "login": "client-id",
                "password": "client-secret-value",
                "extra": {"org_id": ORG, "sandbox": "prod", "ims_url": "https://ims.test/ims/token/v3"},
            }
        ),
    )
    requests_mock.post("https://ims.test/ims/token/v3", json={"access_token": "token-value-123", "expires_in": 86400})


@pytest.fixture
def state():
    return FakeStateStore()


@pytest.fixture
def context(state):
    ti = mock.MagicMock()
    return {"dag": SimpleNamespace(dag_id="dag_x"), "ti": ti, "task_state_store": state}


def batch_doc(batch_id: str, status: str, created: int = 0, **extra) -> dict:
    return {"id": batch_id, "status": status, "created": created, "externalId": EXTERNAL_ID, **extra}


def ingest_operator(**kwargs) -> AEPBatchIngestOperator:
    op = AEPBatchIngestOperator(
        task_id="ingest",
        dataset_id=DATASET,
        s3_bucket="bucket",
        s3_prefix="scores/dt=2026-01-15",
        as_of_date="2026-01-15",
        deferrable=False,
        poll_interval=0.01,
        **kwargs,
    )
    op.s3_hook = FakeS3(
        {
            "scores/dt=2026-01-15/part-0.parquet": b"p0",
            "scores/dt=2026-01-15/part-1.parquet": b"p1",
            "scores/dt=2026-01-15/_SUCCESS": b"",
        }
    )
    return op


def mock_catalog_batches(requests_mock, batches: list[dict]) -> None:
    """Catalog batch list (keyed by id, filtered by dataSet) and each batch by id."""
    requests_mock.get(f"{CATALOG}/batches", json={b["id"]: {k: v for k, v in b.items() if k != "id"} for b in batches})
    for b in batches:
        requests_mock.get(f"{CATALOG}/batches/{b['id']}", json={b["id"]: b})


def calls(requests_mock, method: str, url_part: str) -> list:
    return [r for r in requests_mock.request_history if r.method == method and url_part in r.url]


# --------------------------------------------------------------------------- plan_batch


@pytest.mark.parametrize(
    ("batches", "resume_id", "expected"),
    [
        pytest.param([], None, ("create", None, []), id="first-run"),
        pytest.param([batch_doc("b1", "success")], None, ("create", None, ["b1"]), id="rerun-replays-active"),
        pytest.param(
            [batch_doc("b1", "inactive", 1), batch_doc("b2", "success", 2)],
            None,
            ("create", None, ["b2"]),
            id="rerun-replays-only-active",
        ),
        pytest.param(
            [batch_doc("b1", "success", 1), batch_doc("b2", "failed", 2)],
            "b2",
            ("create", None, ["b1"]),
            id="retry-after-failed-batch",
        ),
        pytest.param([batch_doc("b1", "loading")], "b1", ("resume", "b1", []), id="retry-resumes-loading"),
        pytest.param([batch_doc("b1", "loading")], None, ("resume", "b1", []), id="catalog-finds-loading"),
        pytest.param([batch_doc("b1", "staging")], "b1", ("wait", "b1", []), id="retry-waits-for-staging"),
        pytest.param(
            [batch_doc("b1", "loading", 5), batch_doc("b2", "loading", 1)],
            "b2",
            ("resume", "b2", []),
            id="state-store-id-first",
        ),
        pytest.param(
            [batch_doc("b1", "success", 1), batch_doc("b2", "loading", 2)],
            None,
            ("resume", "b2", []),
            id="in-flight-before-replay",
        ),
    ],
)
def test_plan_batch(batches, resume_id, expected):
    assert tuple(plan_batch({b["id"]: b for b in batches}, resume_id)) == expected


# --------------------------------------------------------------------------- batch ingest


def test_ingest_first_run_creates_uploads_completes(requests_mock, context, state):
    mock_catalog_batches(requests_mock, [])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "b1", "status": "loading"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/datasets/{DATASET}/files/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE", status_code=200)
    requests_mock.get(
        f"{CATALOG}/batches/b1",
        [
            {"json": {"b1": {"status": "staging"}}},
            {"json": {"b1": {"status": "success", "metrics": {"outputRecordCount": 10, "failedRecordCount": 0}}}},
        ],
    )

    result = ingest_operator().execute(context)

    assert result == {"batch_id": "b1", "rows": 10, "failed_rows": 0, "replaced": []}
    body = calls(requests_mock, "POST", "/import/batches")[0].json()
    assert body["externalId"] == EXTERNAL_ID
    assert body["tags"] == {
        "airflow_dag_id": ["dag_x"],
        "airflow_as_of_date": ["2026-01-15"],
        "airflow_dataset_id": [DATASET],
    }
    assert body["partialIngestionPercentage"] == 0 and "replay" not in body
    uploads = calls(requests_mock, "PUT", "/files/")
    assert sorted(r.url.rsplit("/", 1)[-1] for r in uploads) == ["part-0.parquet", "part-1.parquet"]
    assert state == {"batch_id": "b1", "uploaded_files": ["part-0.parquet", "part-1.parquet"]}
    context["ti"].xcom_push.assert_any_call(key=AEPBatchLink.key, value="b1")


def requests_mock_any(prefix: str):
    import re

    return re.compile(re.escape(prefix) + ".*")


def test_ingest_retry_resumes_loading_batch_and_uploads_only_missing_files(requests_mock, context, state):
    state.set("batch_id", "b1")
    state.set("uploaded_files", ["part-0.parquet"])
    mock_catalog_batches(requests_mock, [batch_doc("b1", "loading")])
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/"), status_code=201)
    complete = requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE", status_code=200)
    requests_mock.get(f"{CATALOG}/batches/b1", json={"b1": {"status": "success", "metrics": {"outputRecordCount": 4}}})

    result = ingest_operator().execute(context)

    assert result["batch_id"] == "b1"
    assert not calls(requests_mock, "POST", "/import/batches?") and not [
        r for r in requests_mock.request_history if r.method == "POST" and r.url == f"{IMPORT}/batches"
    ]
    assert [r.url.rsplit("/", 1)[-1] for r in calls(requests_mock, "PUT", "/files/")] == ["part-1.parquet"]
    assert complete.call_count == 1


def test_ingest_rerun_creates_replay_of_active_batch(requests_mock, context):
    mock_catalog_batches(requests_mock, [batch_doc("old", "success", 1), batch_doc("older", "inactive", 0)])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "new", "status": "loading"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/new/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/new?action=COMPLETE")
    requests_mock.get(
        f"{CATALOG}/batches/new",
        json={"new": {"status": "success", "replay": {"predecessors": ["$old"], "reason": "replace"}}},
    )

    result = ingest_operator().execute(context)

    body = [r for r in requests_mock.request_history if r.method == "POST" and r.url == f"{IMPORT}/batches"][0].json()
    assert body["replay"] == {"predecessors": ["$old"], "reason": "replace"}
    assert result["replaced"] == ["old"]


def test_ingest_create_5xx_is_never_resent_and_adopts_the_batch_aep_created(requests_mock, context, state):
    requests_mock.get(
        f"{CATALOG}/batches",
        [{"json": {}}, {"json": {"ghost": {"status": "loading", "externalId": EXTERNAL_ID, "created": 1}}}],
    )
    create = requests_mock.post(f"{IMPORT}/batches", status_code=502, json={"message": "bad gateway"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/ghost/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/ghost?action=COMPLETE")
    requests_mock.get(f"{CATALOG}/batches/ghost", json={"ghost": {"status": "success"}})

    result = ingest_operator().execute(context)

    assert create.call_count == 1
    assert result["batch_id"] == "ghost"
    assert state["batch_id"] == "ghost"


def test_ingest_create_5xx_with_nothing_created_fails_the_try_after_one_post(requests_mock, context, state):
    requests_mock.get(f"{CATALOG}/batches", json={})
    create = requests_mock.post(f"{IMPORT}/batches", status_code=500, json={"message": "boom"})

    with pytest.raises(AEPApiError) as err:
        ingest_operator().execute(context)

    assert err.value.status == 500
    assert create.call_count == 1
    assert "batch_id" not in state


def test_ingest_failed_batch_fails_without_retry_with_catalog_errors(requests_mock, context):
    mock_catalog_batches(requests_mock, [])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "b1"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE")
    requests_mock.get(
        f"{CATALOG}/batches/b1",
        json={"b1": {"status": "failed", "errors": [{"code": "INGEST-1401-400", "description": "corrupted row"}]}},
    )

    with pytest.raises(AirflowFailException, match="INGEST-1401-400"):
        ingest_operator().execute(context)


def test_ingest_deferrable_persists_batch_before_deferring(requests_mock, context, state):
    mock_catalog_batches(requests_mock, [])
    requests_mock.post(f"{IMPORT}/batches", status_code=201, json={"id": "b1"})
    requests_mock.put(requests_mock_any(f"{IMPORT}/batches/b1/"), status_code=201)
    requests_mock.post(f"{IMPORT}/batches/b1?action=COMPLETE")
    op = ingest_operator()
    op.deferrable = True

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)

    trigger = deferred.value.trigger
    assert isinstance(trigger, BatchStatusTrigger)
    assert trigger.resource_id == "b1" and trigger.poll_interval == 0.01
    assert deferred.value.method_name == "execute_complete"
    assert state["batch_id"] == "b1"


def test_ingest_rejects_too_many_files(context):
    op = ingest_operator()
    op.s3_hook = FakeS3({f"scores/dt=2026-01-15/part-{i}.parquet": b"x" for i in range(1501)})
    with pytest.raises(AirflowFailException, match="1501 files"):
        op.execute(context)


# --------------------------------------------------------------------------- query


def query_operator(**kwargs) -> AEPQueryOperator:
    return AEPQueryOperator(
        task_id="q", sql="SELECT 1 AS x", deferrable=False, poll_interval=0.01, timeout=timedelta(seconds=5), **kwargs
    )


def test_query_retry_reconnects_to_running_query(requests_mock, context, state):
    state.set("query_id", "q1")
    requests_mock.get(
        f"{QUERIES}/q1",
        [
            {"json": {"id": "q1", "state": "IN_PROGRESS"}},
            {"json": {"id": "q1", "state": "IN_PROGRESS"}},
            {"json": {"id": "q1", "state": "SUCCESS", "rowCount": 3}},
        ],
    )
    submit = requests_mock.post(QUERIES, json={"id": "q2"})

    result = query_operator().execute(context)

    assert submit.call_count == 0
    assert result == {"query_id": "q1", "state": "SUCCESS", "rowCount": 3}
    context["ti"].xcom_push.assert_any_call(key=AEPQueryLink.key, value="q1")


def test_query_after_finished_query_submits_anew_and_persists_before_polling(requests_mock, context, state):
    state.set("query_id", "q0")
    requests_mock.get(f"{QUERIES}/q0", json={"id": "q0", "state": "SUCCESS"})
    submit = requests_mock.post(QUERIES, status_code=202, json={"id": "q1", "state": "SUBMITTED"})
    op = query_operator(query_parameters={"as_of": "2026-01-15"})
    op.deferrable = True

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)

    assert state["query_id"] == "q1"
    assert isinstance(deferred.value.trigger, QueryStatusTrigger)
    assert submit.last_request.json() == {
        "dbName": "prod:all",
        "sql": "SELECT 1 AS x",
        "name": "dag_x.q",
        "queryParameters": {"as_of": "2026-01-15"},
    }


@pytest.mark.parametrize("state_name", ["FAILED", "KILLED", "TIMEOUT"])
def test_query_terminal_failure_fails_with_aep_error(requests_mock, context, state_name):
    requests_mock.post(QUERIES, json={"id": "q1"})
    requests_mock.get(
        f"{QUERIES}/q1",
        json={
            "id": "q1",
            "state": state_name,
            "errors": [{"code": "58000", "message": "Function [varchar] not defined"}],
        },
    )
    with pytest.raises(AirflowFailException, match=f"{state_name}.*58000"):
        query_operator().execute(context)


def finished_ctas(requests_mock, row_count: int):
    """A CTAS query q1 that ended SUCCESS with ``row_count`` rows in dataset d9; returns the submit mock."""
    submit = requests_mock.post(QUERIES, json={"id": "q1"})
    requests_mock.get(
        f"{QUERIES}/q1",
        json={
            "id": "q1",
            "state": "SUCCESS",
            "isCTAS": True,
            "rowCount": row_count,
            "_links": {"created_dataset": {"id": "d9"}},
        },
    )
    requests_mock.get(f"{CATALOG}/dataSets/d9", json={"d9": {"name": "features"}})
    return submit


def test_query_ctas_without_rows_fails(requests_mock, context):
    finished_ctas(requests_mock, 0)
    with pytest.raises(AirflowFailException, match="wrote no rows"):
        query_operator(ctas_table="features").execute(context)


def test_query_ctas_returns_dataset_and_sends_ctas_parameters(requests_mock, context):
    submit = finished_ctas(requests_mock, 7)

    result = query_operator(ctas_table="features").execute(context)

    assert result == {"query_id": "q1", "state": "SUCCESS", "rowCount": 7, "dataset_id": "d9"}
    assert submit.last_request.json()["ctasParameters"] == {"datasetName": "features", "description": "dag_x.q"}


def test_query_times_out_on_the_deadline_and_is_retryable(requests_mock, context):
    requests_mock.post(QUERIES, json={"id": "q1"})
    requests_mock.get(f"{QUERIES}/q1", json={"id": "q1", "state": "IN_PROGRESS"})
    op = query_operator()
    op.timeout = timedelta(seconds=0.05)
    with pytest.raises(AirflowException, match="deadline") as err:
        op.execute(context)
    assert not isinstance(err.value, AirflowFailException)


def test_query_sql_template_sees_dialect_tenant_and_sql_vars(tmp_path, monkeypatch):
    """sql_vars (an upstream output) render first and reach the SQL file as params, beside the
    connection's dialect and the org's tenant, so one template serves AEP and the emulator."""
    import jinja2

    (tmp_path / "q.sql").write_text(
        "SELECT {% if dialect == 'postgres' %}\"_{{ tenant }}.userid\"{% else %}_{{ tenant }}.userid{% endif %}"
        " FROM {{ params.table }} WHERE d = '{{ params.day }}' -- {{ params.dag_param }}"
    )
    hook = SimpleNamespace(settings=SimpleNamespace(qs_dialect="postgres"), get_tenant_id=lambda: "acme")
    monkeypatch.setattr(AEPQueryOperator, "hook", hook)
    op = AEPQueryOperator(
        task_id="q", sql="q.sql", sql_vars={"table": "{{ params.prefix }}_events", "day": "2026-01-02"}
    )
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(tmp_path)), undefined=jinja2.StrictUndefined)
    op.sql = env.loader.get_source(env, "q.sql")[0]
    op.render_template_fields({"params": {"prefix": "pre", "dag_param": "kept"}}, env)
    assert op.sql_vars == {"table": "pre_events", "day": "2026-01-02"}
    assert op.sql == "SELECT \"_acme.userid\" FROM pre_events WHERE d = '2026-01-02' -- kept"


# --------------------------------------------------------------------------- audience


def test_audience_updates_changed_definition_and_runs_one_job(requests_mock, context, state):
    requests_mock.get(
        f"{SEGMENTATION}/segment/definitions",
        json={
            "segments": [{"id": "s1", "name": "high", "expression": {"value": "old pql"}, "description": ""}],
            "page": {"totalPages": 1},
        },
    )
    patch = requests_mock.patch(f"{SEGMENTATION}/segment/definitions/s1", json={"id": "s1"})
    create_def = requests_mock.post(f"{SEGMENTATION}/segment/definitions", json={"id": "s2"})
    job = requests_mock.post(f"{SEGMENTATION}/segment/jobs", json={"id": "j1", "status": "NEW"})
    requests_mock.get(
        f"{SEGMENTATION}/segment/jobs/j1",
        json={"id": "j1", "status": "SUCCEEDED", "metrics": {"segmentedProfileCounter": {"s1": 5, "s2": 0}}},
    )
    op = AEPAudienceOperator(
        task_id="aud",
        audiences=[
            {"name": "high", "pql": "_acme.propensity >= 0.5"},
            {"name": "low", "pql": "_acme.propensity < 0.1"},
        ],
        deferrable=False,
        poll_interval=0.01,
    )

    result = op.execute(context)

    assert result == {"high": {"id": "s1", "count": 5}, "low": {"id": "s2", "count": 0}}
    assert {"op": "add", "path": "/expression/value", "value": "_acme.propensity >= 0.5"} in patch.last_request.json()
    assert create_def.call_count == 1 and create_def.last_request.json()["name"] == "low"
    assert job.last_request.json() == [{"segmentId": "s1"}, {"segmentId": "s2"}]
    assert state["segment_job_id"] == "j1"


# --------------------------------------------------------------------------- export location


def test_export_is_located_through_the_run_window_not_the_listing(context):
    op = AEPDatasetExportOperator(
        task_id="export", dataset_id="ds1", s3_bucket="dest", s3_path="exports", flow_name="f", deferrable=False
    )
    op.s3_hook = FakeS3(
        {
            "exports/ds1/exportTime=20260115100000/part-00000-a.parquet": b"a",
            "exports/ds1/exportTime=20260115100000/part-00001-b.parquet": b"b",
            # a later export (listed last) that this run did not write
            "exports/ds1/exportTime=20260115113000/part-00000-c.parquet": b"c",
            "exports/ds1/exportTime=202601150900/part-00000-d.parquet": b"d",
        }
    )
    started = 1768471200000  # 2026-01-15T10:00:00Z
    run = {
        "id": "r1",
        "flowId": "f1",
        "metrics": {
            "durationSummary": {"startedAtUTC": started + 20_000, "completedAtUTC": started + 90_000},
            "recordSummary": {"outputRecordCount": 12},
        },
    }

    result = op.result(context, [run])

    assert result == {
        "flow_id": "f1",
        "run_id": "r1",
        "export_path": "s3://dest/exports/ds1/exportTime=20260115100000/",
        "files": [
            "exports/ds1/exportTime=20260115100000/part-00000-a.parquet",
            "exports/ds1/exportTime=20260115100000/part-00001-b.parquet",
        ],
        "records": 12,
    }


def test_export_base_connection_secret_is_not_logged(requests_mock, context, caplog, monkeypatch):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv(
        "AIRFLOW_CONN_AEP_DESTINATION",
        json.dumps(
            {
                "conn_type": "aws",
                "extra": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": secret},
            }
        ),
    )
    flow_service = f"{PLATFORM}/data/foundation/flowservice"
    requests_mock.get(f"{flow_service}/connections", json={"items": []})
    create = requests_mock.post(f"{flow_service}/connections", json={"id": "c1", "etag": "1"})
    requests_mock.get(f"{flow_service}/targetConnections", json={"items": [{"id": "t1", "name": "f target"}]})
    op = AEPDatasetExportOperator(
        task_id="export",
        dataset_id="ds1",
        s3_bucket="dest",
        s3_path="exports",
        flow_name="f",
        destination_conn_id="aep_destination",
        deferrable=False,
    )
    with caplog.at_level("DEBUG"):
        assert op.ensure_s3_target("f", {}) == "t1"
    assert create.last_request.json()["auth"]["params"] == {
        "s3AccessKey": "AKIAIOSFODNN7EXAMPLE",
        "s3SecretKey": secret,
    }
    assert secret not in caplog.text


# --------------------------------------------------------------------------- links


def test_links_point_to_the_aep_ui_from_xcom():
    from aep_hooks.links import AEP_UI_CONTEXT_KEY, AEPDatasetLink

    values = {AEPBatchLink.key: "b1", AEPDatasetLink.key: "d1", AEP_UI_CONTEXT_KEY: {"org_id": ORG, "sandbox": "dev"}}
    with mock.patch("aep_hooks.links.XCom.get_value", side_effect=lambda *, key, ti_key: values.get(key)):
        assert AEPBatchLink().get_link(None, ti_key=None) == (
            f"https://experience.adobe.com/#/@{ORG}/sname:dev/platform/dataset/activity/batches/b1"
        )
        assert AEPDatasetLink().get_link(None, ti_key=None).endswith("/sname:dev/platform/dataset/browse/d1")
        assert AEPQueryLink().get_link(None, ti_key=None) == ""


# --------------------------------------------------------------------------- waiting outcomes


def test_a_job_that_could_not_be_read_fails_the_try_not_the_task():
    """An API error in the trigger says nothing of the job: retryable, unlike a failed job."""
    op = AEPQueryOperator(task_id="q", sql="SELECT 1")
    unreadable = {"status": "error", "id": "q1", "state": None, "errors": [{}], "message": "503 after retries"}
    with pytest.raises(AirflowException, match="could not be read") as raised:
        op.check_event("query", unreadable)
    assert not isinstance(raised.value, AirflowFailException)
    with pytest.raises(AirflowFailException, match="FAILED"):
        op.check_event("query", {**unreadable, "state": "FAILED"})


def test_activation_fails_when_any_of_its_runs_failed(monkeypatch):
    """The deferral watched the first run only; a second audience's failed run must still fail the task."""
    done = {"durationSummary": {"completedAtUTC": 2}}
    runs = {
        "r1": {"id": "r1", "metrics": {**done, "statusSummary": {"status": "success"}}},
        "r2": {"id": "r2", "metrics": {**done, "statusSummary": {"status": "failed", "errors": [{"message": "disk"}]}}},
    }
    hook = SimpleNamespace(get_run=runs.__getitem__)
    monkeypatch.setattr(AEPActivateAudiencesOperator, "hook", hook)
    op = AEPActivateAudiencesOperator(
        task_id="act", audience_ids=["a1", "a2"], destination_name="d", s3_bucket="b", s3_path="p"
    )
    event = {"status": "success", "id": "r1", "state": "success", "errors": []}
    with pytest.raises(AirflowFailException, match="r2"):
        op.execute_complete({}, event, run_ids=["r1", "r2"])


def test_ad_hoc_run_already_going_on_is_adopted_not_duplicated(monkeypatch):
    """An earlier try started the run but never heard back: AEP refuses another, the task adopts it."""
    running = {"id": "r-earlier", "metrics": {"statusSummary": {"status": "processing"}}}
    finished = {
        "id": "r-old",
        "metrics": {"durationSummary": {"completedAtUTC": 1}, "statusSummary": {"status": "success"}},
    }
    hook = SimpleNamespace(find_runs=lambda flow_id: [finished, running] if flow_id == "f1" else [])
    monkeypatch.setattr(AEPDatasetExportOperator, "hook", hook)
    op = AEPDatasetExportOperator(task_id="export", dataset_id="d1", flow_name="f", s3_bucket="b", s3_path="p")
    refused = AEPApiError(
        400,
        {"message": "A run already exists for flow f1 and dataset d1"},
        method="POST",
        url="https://platform.test/adhocrun",
    )
    starts = mock.Mock(side_effect=refused)
    state = {}
    context = {"task_state_store": SimpleNamespace(get=state.get, set=state.__setitem__)}
    assert op.adhoc_run_ids(context, "f1", starts) == ["r-earlier"]
    assert starts.call_count == 1 and state["run_ids"] == ["r-earlier"]
    other = AEPApiError(
        400, {"message": "Flow for id f1 is incorrect"}, method="POST", url="https://platform.test/adhocrun"
    )
    with pytest.raises(AEPApiError):
        op.adhoc_run_ids({"task_state_store": None}, "f1", mock.Mock(side_effect=other))
