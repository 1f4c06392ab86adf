"""
Fast, clear failures: what no retry can fix fails the task after one call with the problem and the
fix in the message (``AirflowFailException``); what is transient fails only the call or the try.
"""

from __future__ import annotations

from unittest import mock

import pytest
import requests
from aep_hooks.exceptions import (
    AEPAuthError,
    AEPConnectionError,
    AEPInputError,
    AEPMissingObjectError,
    AEPNoRowsError,
    AEPRequestError,
    AEPServerError,
)
from aep_hooks.operators.catalog import AEPEnsureDatasetOperator
from aep_hooks.operators.ingestion import AEPBatchIngestOperator
from aep_hooks.operators.query_service import source_tables
from aep_hooks.utils.job_states import QUERY
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tests.aep_hooks.operators.conftest import PLATFORM, FakeS3, calls
from tests.aep_hooks.operators.test_query_service import query_operator

QUERIES = f"{PLATFORM}/data/foundation/query/queries"
BATCHES = f"{PLATFORM}/data/foundation/import/batches"
CTAS_SQL = "CREATE TABLE features AS SELECT e.id FROM events_2026 e JOIN profiles p ON e.id = p.id"


def ingest_operator(objects: dict[str, bytes], **kwargs) -> AEPBatchIngestOperator:
    op = AEPBatchIngestOperator(
        task_id="ingest", dataset_id="ds1", s3_bucket="bucket", as_of_date="2026-01-15", deferrable=False, **kwargs
    )
    op.s3_hook = FakeS3(objects)
    return op


@pytest.fixture
def no_sleep():
    with mock.patch("tenacity.nap.time.sleep") as sleep:
        yield sleep


@pytest.mark.usefixtures("aep_conn", "no_sleep")
class TestErrorsNoRetryCanFix:
    @pytest.mark.parametrize(
        ("status", "body", "error_type", "message"),
        [
            pytest.param(
                400,
                {"message": "Syntax error at or near SELEC", "errorCode": "42601"},
                AEPRequestError,
                "HTTP 400 \\[42601\\]: Syntax error at or near SELEC.*a retry would be refused the same way",
                id="400-invalid-sql",
            ),
            pytest.param(
                403,
                {"error_code": "403027", "message": "Sandbox prod is not valid"},
                AEPAuthError,
                "HTTP 403 \\[403027\\].*may not make this call in sandbox 'prod'",
                id="403-sandbox",
            ),
            pytest.param(
                401,
                {"error_code": "401013", "message": "Oauth token is not valid"},
                AEPAuthError,
                "HTTP 401 \\[401013\\].*check login \\(client id\\), password \\(client secret\\)",
                id="401-token",
            ),
            pytest.param(
                422,
                {"message": "dbName is not valid"},
                AEPRequestError,
                "HTTP 422: dbName is not valid",
                id="422",
            ),
        ],
    )
    def test_a_refused_submit_is_sent_once_and_fails_the_task(
        self, requests_mock, context, status, body, error_type, message
    ):
        submit = requests_mock.post(QUERIES, status_code=status, json=body)

        with pytest.raises(error_type, match=message) as err:
            query_operator().execute(context)

        assert isinstance(err.value, AirflowFailException)
        assert submit.call_count == (2 if status == 401 else 1)  # a 401 is re-sent once with a new token

    @pytest.mark.parametrize(
        ("objects", "kwargs", "error_type", "message"),
        [
            pytest.param(
                {"in/a.parquet": b"x"},
                {"s3_keys": ["in/a.parquet", "in/missing.parquet"]},
                AEPMissingObjectError,
                "s3://bucket/in/missing.parquet does not exist: the upstream task that writes it did not run",
                id="missing-key",
            ),
            pytest.param(
                {"other/a.parquet": b"x"},
                {"s3_prefix": "in/dt=2026-01-15"},
                AEPMissingObjectError,
                "No files to ingest in s3://bucket/in/dt=2026-01-15",
                id="empty-prefix",
            ),
            pytest.param(
                {"in/a.parquet": b""},
                {"s3_keys": ["in/a.parquet"]},
                AEPNoRowsError,
                "s3://bucket/in/a.parquet is empty",
                id="empty-file",
            ),
            pytest.param(
                {"a/x.parquet": b"1", "b/x.parquet": b"2"},
                {"s3_keys": ["a/x.parquet", "b/x.parquet"]},
                AEPInputError,
                "clashing file names",
                id="clashing-names",
            ),
        ],
    )
    def test_bad_ingest_input_fails_before_any_batch_is_created(
        self, requests_mock, context, objects, kwargs, error_type, message
    ):
        with pytest.raises(error_type, match=message) as err:
            ingest_operator(objects, **kwargs).execute(context)

        assert isinstance(err.value, AirflowFailException)
        assert not calls(requests_mock, "POST", BATCHES)

    def test_a_missing_connection_fails_before_any_call(self, requests_mock, context, monkeypatch):
        monkeypatch.delenv("AIRFLOW_CONN_AEP_DEFAULT")

        with pytest.raises(AEPConnectionError, match="Airflow connection 'aep_default' is not defined"):
            query_operator().execute(context)

        assert requests_mock.call_count == 0

    def test_a_value_error_of_bad_input_fails_the_task(self, requests_mock, context):
        requests_mock.get(f"{PLATFORM}/data/foundation/schemaregistry/stats", json={"tenantId": "acme"})
        op = AEPEnsureDatasetOperator(task_id="ensure", spec='{"dataset": "x", "schema": ')

        with pytest.raises(AEPInputError, match="Task ensure got invalid input: Expecting value.*fix the input"):
            op.execute(context)


@pytest.mark.usefixtures("aep_conn", "no_sleep")
class TestTransientFaults:
    def test_a_throttled_submit_is_retried_in_the_hook(self, requests_mock, context):
        submit = requests_mock.post(
            QUERIES,
            [
                {"status_code": 429, "headers": {"Retry-After": "0"}, "json": {"message": "slow down"}},
                {"status_code": 429, "json": {"message": "slow down"}},
                {"json": {"id": "q1"}},
            ],
        )
        requests_mock.get(f"{QUERIES}/q1", json={"id": "q1", "state": "SUCCESS", "rowCount": 1})

        assert query_operator().execute(context)["query_id"] == "q1"
        assert submit.call_count == 3

    def test_a_5xx_on_submit_fails_the_try_and_is_never_resent(self, requests_mock, context):
        submit = requests_mock.post(
            QUERIES, [{"status_code": 503, "json": {"message": "busy"}}, {"json": {"id": "q1"}}]
        )

        with pytest.raises(AEPServerError) as err:
            query_operator().execute(context)

        assert not isinstance(err.value, AirflowFailException)
        assert submit.call_count == 1

    def test_reads_ride_out_5xx_and_timeouts(self, requests_mock, context):
        requests_mock.post(QUERIES, json={"id": "q1"})
        status = requests_mock.get(
            f"{QUERIES}/q1",
            [
                {"status_code": 502, "text": "Bad gateway"},
                {"exc": requests.exceptions.ReadTimeout},
                {"json": {"id": "q1", "state": "SUCCESS", "rowCount": 1}},
            ],
        )

        assert query_operator().execute(context)["state"] == "SUCCESS"
        assert status.call_count >= 3

    @pytest.mark.parametrize(
        ("status_code", "fails_the_task"),
        [(404, True), (403, True), (503, False), (429, False), (None, False)],
    )
    def test_a_job_the_trigger_could_not_read(self, status_code, fails_the_task):
        event = {
            "status": "error",
            "id": "q1",
            "state": None,
            "errors": [{}],
            "message": f"GET ... failed with HTTP {status_code}",
            "result": {"status_code": status_code} if status_code else {},
        }
        with pytest.raises(AirflowException, match="AEP query q1 could not be read") as err:
            query_operator().check_event(QUERY, event)
        assert isinstance(err.value, AirflowFailException) is fails_the_task


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        (CTAS_SQL, ["events_2026", "profiles"]),
        ("INSERT INTO scores SELECT * FROM staging_scores", ["staging_scores"]),
        ("WITH w AS (SELECT * FROM ev) SELECT * FROM w", ["ev"]),
        ("SELEC broken ((", []),
    ],
)
def test_source_tables(sql, tables):
    assert source_tables(sql) == tables
