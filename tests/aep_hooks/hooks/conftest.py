"""Fixtures for the hook tests: an ``aep`` connection to a fake Platform, IMS issuing numbered tokens."""

from __future__ import annotations

from unittest import mock

import pytest
from aep_hooks.hooks import AEPHook

from tests.aep_hooks.conftest import EXPIRES_IN, IMS, connection_json


@pytest.fixture(autouse=True)
def aep_connection_env(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", connection_json())


@pytest.fixture
def hook() -> AEPHook:
    return AEPHook(retry_limit=4, retry_min_wait=0, retry_max_wait=0)


@pytest.fixture
def sleep():
    """tenacity's sleep between attempts (``tenacity.nap.sleep`` calls ``time.sleep``)."""
    with mock.patch("tenacity.nap.time.sleep") as patched:
        yield patched


@pytest.fixture
def ims(requests_mock):
    """IMS issuing ``token-1``, ``token-2``, ... on successive calls."""
    tokens = iter(f"token-{n}" for n in range(1, 100))
    return requests_mock.post(
        IMS,
        json=lambda request, context: {"access_token": next(tokens), "token_type": "bearer", "expires_in": EXPIRES_IN},
    )
