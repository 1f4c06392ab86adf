"""Fakes for the operator unit tests: an ``aep`` connection to a fake Platform, a task state store, S3."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace
from unittest import mock

import pytest

PLATFORM = "https://aep.test"
CATALOG = f"{PLATFORM}/data/foundation/catalog"
ORG = "TEST0000000000000000000@AdobeOrg"


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


@pytest.fixture
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


def calls(requests_mock, method: str, url_part: str) -> list:
    return [r for r in requests_mock.request_history if r.method == method and url_part in r.url]


def requests_mock_any(prefix: str):
    return re.compile(re.escape(prefix) + ".*")
