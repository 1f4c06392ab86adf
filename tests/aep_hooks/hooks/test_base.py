"""The shared retry policy: what may be sent again, and how long to wait."""

from __future__ import annotations

import json
import re

import pytest
import requests
import time_machine
from aep_hooks.exceptions import AEPApiError, AEPConnectionError
from aep_hooks.hooks import AEPAsyncHook, AEPHook
from aep_hooks.hooks.base import is_retryable, parse_retry_after
from airflow.sdk.exceptions import AirflowFailException

from tests.aep_hooks.conftest import connection_json


@pytest.mark.parametrize(
    ("exception", "idempotent", "expected"),
    [
        pytest.param(AEPApiError(429, {}, method="POST", url="u"), False, True, id="429-create"),
        pytest.param(AEPApiError(500, {}, method="POST", url="u"), False, False, id="500-create"),
        pytest.param(AEPApiError(500, {}, method="GET", url="u"), True, True, id="500-read"),
        pytest.param(AEPApiError(404, {}, method="GET", url="u"), True, False, id="404-read"),
        pytest.param(requests.exceptions.ConnectTimeout(), False, False, id="timeout-create"),
        pytest.param(TimeoutError(), True, True, id="asyncio-timeout-read"),
        pytest.param(ValueError(), True, False, id="other"),
    ],
)
def test_is_retryable(exception, idempotent, expected):
    assert is_retryable(exception, idempotent=idempotent) is expected


def test_retry_after_http_date():
    with time_machine.travel("2026-01-15 00:00:00+00:00", tick=False):
        assert parse_retry_after("Thu, 15 Jan 2026 00:00:30 GMT") == 30.0
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        pytest.param(None, "Airflow connection 'aep_default' is not defined", id="missing"),
        pytest.param({"login": None}, "has no login (the client id)", id="no-login"),
        pytest.param({"password": None}, "has no password (the client secret)", id="no-secret"),
        pytest.param({"extra": {"sandbox": "dev"}}, "has no org_id extra (the IMS org id", id="no-org"),
        pytest.param({"extra": {"org_id": "ORG0000"}}, "not an IMS org id: set the org_id extra", id="bad-org"),
        pytest.param(
            {"extra": {"org_id": "O@AdobeOrg", "qs_sslmode": "on"}}, "has qs_sslmode 'on': use one of", id="sslmode"
        ),
        pytest.param({"extra": "{org_id: O@AdobeOrg"}, "has extras that are not JSON", id="extras-not-json"),
        pytest.param({"extra": "[1]"}, "has extras that are not a JSON object", id="extras-not-object"),
    ],
)
def test_a_missing_or_malformed_connection_fails_the_task_with_the_fix(monkeypatch, requests_mock, conn, message):
    if conn is None:
        monkeypatch.delenv("AIRFLOW_CONN_AEP_DEFAULT")
    else:
        fields = {**json.loads(connection_json()), **conn}
        monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(fields))

    with pytest.raises(AEPConnectionError, match=re.escape(message)) as err:
        AEPHook().get_tenant_id()

    assert isinstance(err.value, AirflowFailException)
    assert requests_mock.call_count == 0


@pytest.mark.asyncio
async def test_the_async_hook_names_a_missing_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AEP_DEFAULT")
    with pytest.raises(AEPConnectionError, match="bin/stack env prints the local one"):
        await AEPAsyncHook().get_json("/data/foundation/schemaregistry/stats")
