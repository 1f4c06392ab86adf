"""Query Service over the PostgreSQL wire: connection parameters, the token as password."""

from __future__ import annotations

from unittest import mock

import pytest
from aep_hooks.hooks import AEPQueryServiceHook

from tests.aep_hooks.conftest import ORG, PLATFORM, connection_json


class TestQueryServiceHook:
    @pytest.fixture
    def connection_parameters(self, ims, requests_mock):
        return requests_mock.get(
            f"{PLATFORM}/data/foundation/query/connection_parameters",
            json={"username": ORG, "dbName": "dev:all", "host": "org.platform-query.test", "port": 80, "token": "x"},
        )

    def test_connects_with_a_fresh_token_and_require_ssl(self, connection_parameters):
        qs_hook = AEPQueryServiceHook()
        with mock.patch.object(AEPQueryServiceHook, "_create_connection") as create_connection:
            qs_hook.get_conn()

        (conn_args,), _ = create_connection.call_args
        assert conn_args == {
            "host": "org.platform-query.test",
            "port": 80,
            "user": ORG,
            "password": "token-1",
            "dbname": "dev:all",
            "sslmode": "require",
            "keepalives_idle": 240,
        }
        assert connection_parameters.call_count == 1

    def test_emulator_settings(self, monkeypatch, connection_parameters):
        monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", connection_json(qs_sslmode="disable"))
        qs_hook = AEPQueryServiceHook(sandbox="prod")
        with mock.patch.object(AEPQueryServiceHook, "_create_connection") as create_connection:
            qs_hook.get_conn()

        (conn_args,), _ = create_connection.call_args
        assert (conn_args["sslmode"], conn_args["dbname"]) == ("disable", "prod:all")
