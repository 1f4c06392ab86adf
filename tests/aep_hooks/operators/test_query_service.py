"""AEPQueryOperator against an HTTP fake: reconnect, resubmit, terminal states, CTAS checks, templates."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from aep_hooks.exceptions import AEPJobFailedError, AEPNoRowsError, AEPTransientJobError
from aep_hooks.links import AEPQueryLink
from aep_hooks.operators.query_service import AEPQueryOperator
from aep_hooks.triggers.query_service import QueryStatusTrigger
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from tests.aep_hooks.operators.conftest import CATALOG, PLATFORM

pytestmark = pytest.mark.usefixtures("aep_conn")

QUERIES = f"{PLATFORM}/data/foundation/query/queries"


def query_operator(sql: str = "SELECT 1 AS x", **kwargs) -> AEPQueryOperator:
    return AEPQueryOperator(
        task_id="q", sql=sql, deferrable=False, poll_interval=0.01, timeout=timedelta(seconds=5), **kwargs
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


def test_query_that_succeeded_in_an_earlier_try_is_never_submitted_again(requests_mock, context, state):
    """An INSERT INTO run twice doubles its rows, a CTAS run twice fails: the retry takes the result."""
    state.set("query_id", "q1")
    state.set("query_id.retry_sequence", 3)
    context["ti"].max_tries = 3
    requests_mock.get(f"{QUERIES}/q1", json={"id": "q1", "state": "SUCCESS", "rowCount": 3})
    submit = requests_mock.post(QUERIES, json={"id": "q2"})

    assert query_operator().execute(context) == {"query_id": "q1", "state": "SUCCESS", "rowCount": 3}
    assert submit.call_count == 0


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


@pytest.mark.parametrize(
    ("state_name", "errors", "fails_the_task"),
    [
        pytest.param(
            "FAILED",
            [{"code": "42P01", "message": "Table not found", "errorType": "USER_ERROR"}],
            True,
            id="user-error",
        ),
        pytest.param(
            "FAILED",
            [{"code": "58000", "message": "Analysis error", "errorType": "USER_ERROR"}],
            True,
            id="58000-analysis",
        ),
        pytest.param(
            "FAILED",
            [{"code": "53400", "message": "LIMIT above 100000", "errorType": "SYSTEM_ERROR"}],
            True,
            id="limit",
        ),
        pytest.param("FAILED", [{"code": "58000", "message": "Function [varchar] not defined"}], True, id="no-type"),
        pytest.param("KILLED", [{"code": "58000", "message": "cancelled"}], True, id="killed"),
        pytest.param(
            "TIMEOUT", [{"code": "57014", "message": "timeout", "errorType": "SYSTEM_ERROR"}], True, id="timeout"
        ),
        pytest.param(
            "FAILED",
            [{"code": "58000", "message": "Internal error", "errorType": "SYSTEM_ERROR"}],
            False,
            id="system-error",
        ),
    ],
)
def test_query_terminal_failure_fails_the_task_unless_aep_says_system_error(
    requests_mock, context, state_name, errors, fails_the_task
):
    requests_mock.post(QUERIES, json={"id": "q1"})
    requests_mock.get(f"{QUERIES}/q1", json={"id": "q1", "state": state_name, "errors": errors})

    error_type = AEPJobFailedError if fails_the_task else AEPTransientJobError
    with pytest.raises(error_type, match=f"AEP query q1 ended in state {state_name}.*{errors[0]['code']}") as err:
        query_operator().execute(context)

    assert isinstance(err.value, AirflowFailException) is fails_the_task


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


def test_query_ctas_without_rows_fails_naming_its_empty_inputs(requests_mock, context):
    finished_ctas(requests_mock, 0)
    sql = "CREATE TABLE features AS SELECT e.id FROM events_2026 e JOIN profiles p ON e.id = p.id"

    with pytest.raises(AEPNoRowsError) as err:
        query_operator(sql=sql).execute(context)

    assert isinstance(err.value, AirflowFailException)
    assert str(err.value).startswith("Query q1 (q) succeeded but wrote no rows to dataset d9")
    assert "its input tables (events_2026, profiles) have no rows it selects" in str(err.value)
    assert "allow_empty=True" in str(err.value)


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


def test_query_sql_template_sees_tenant_and_sql_vars(tmp_path, monkeypatch):
    """sql_vars (an upstream output) render first and reach the SQL file as params, beside the
    org's tenant; the template is Spark SQL, one text for AEP and the emulator."""
    import jinja2

    (tmp_path / "q.sql").write_text(
        "SELECT _{{ tenant }}.userid FROM {{ params.table }} WHERE d = '{{ params.day }}' -- {{ params.dag_param }}"
    )
    hook = SimpleNamespace(get_tenant_id=lambda: "acme")
    monkeypatch.setattr(AEPQueryOperator, "hook", hook)
    op = AEPQueryOperator(
        task_id="q", sql="q.sql", sql_vars={"table": "{{ params.prefix }}_events", "day": "2026-01-02"}
    )
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(tmp_path)), undefined=jinja2.StrictUndefined)
    op.sql = env.loader.get_source(env, "q.sql")[0]
    op.render_template_fields({"params": {"prefix": "pre", "dag_param": "kept"}}, env)
    assert op.sql_vars == {"table": "pre_events", "day": "2026-01-02"}
    assert op.sql == "SELECT _acme.userid FROM pre_events WHERE d = '2026-01-02' -- kept"
