"""The Flow Service operators: the export folder, the destination secret, every run checked, ad-hoc runs adopted."""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest import mock

import pytest
from aep_hooks.exceptions import AEPApiError
from aep_hooks.operators.flow_service import AEPActivateAudiencesOperator, AEPDatasetExportOperator
from airflow.sdk.exceptions import AirflowFailException

from tests.aep_hooks.operators.conftest import PLATFORM, FakeS3

pytestmark = pytest.mark.usefixtures("aep_conn")


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
