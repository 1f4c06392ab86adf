"""
Fakes for the operator unit tests (an ``aep`` connection to a fake Platform, a task state store, S3),
and for the emulator tests the connections to the emulator, S3 and per-test names and data.
"""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace
from unittest import mock

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aep_hooks.hooks import AEPHook
from aep_hooks.operators.catalog import PROFILE_CLASS

from tests.aep_hooks.conftest import S3_ACCESS_KEY, S3_ENDPOINT, S3_SECRET_KEY, aep_connection, s3_connection
from tests.aep_hooks.operators.emulator_dag import AS_OF, DESTINATION_SECRET, STAGING_BUCKET, USERS

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
        """As S3Hook's: None for a missing key."""
        return {"ContentLength": len(self.objects[key])} if key in self.objects else None

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
    # A CTAS rebuilt on every run, as the pipeline's featurize query is: a new dataset each time.
    (tmp_path / "rebuild.sql").write_text(
        "DROP TABLE IF EXISTS high_{{ params.suffix }}; CREATE TABLE high_{{ params.suffix }} AS"
        ' SELECT _acme.userid AS userid FROM {{ ti.xcom_pull("ensure")["table_name"] }} WHERE _acme.propensity >= 0.5'
    )
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
