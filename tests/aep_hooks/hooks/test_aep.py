"""``AEPHook``, the ``aep`` connection type's hook: its connection test."""

from __future__ import annotations

import pytest
from aep_hooks.hooks import AEPHook

from tests.aep_hooks.conftest import IMS, STATS


class TestTestConnection:
    def test_success(self, hook, ims, requests_mock):
        requests_mock.get(STATS, json={"tenantId": "acme"})
        ok, message = hook.test_connection()
        assert ok is True
        assert "acme" in message

    def test_bad_credentials(self, hook, requests_mock, sleep):
        requests_mock.post(IMS, status_code=401, json={"error": "invalid_client", "error_description": "bad secret"})
        ok, message = hook.test_connection()
        assert ok is False
        assert "invalid_client" in message
        assert "bad secret" in message


@pytest.mark.integration
def test_connection_against_the_emulator(emulator, sandbox, monkeypatch):
    from tests.aep_hooks.conftest import aep_connection

    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", aep_connection(emulator, sandbox))

    ok, message = AEPHook().test_connection()

    assert ok, message
