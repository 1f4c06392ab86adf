"""Flow Service: continuation-token paging, ``If-Match`` patches, the dataset export's "not ready" wait."""

from __future__ import annotations

import pytest
from aep_hooks.exceptions import AEPApiError, AEPNotReadyError

from tests.aep_hooks.conftest import PLATFORM


def test_flow_service_continuation_token(hook, ims, requests_mock):
    flows = requests_mock.get(
        f"{PLATFORM}/data/foundation/flowservice/flows",
        [
            {"json": {"items": [{"id": "f1"}], "_links": {"next": {"href": "?continuationToken=XYZ"}}}},
            {"json": {"items": [{"id": "f2"}]}},
        ],
    )

    ids = [f["id"] for f in hook.iter_flow_service("/data/foundation/flowservice/flows", {"property": "name==x"})]

    assert ids == ["f1", "f2"]
    assert flows.last_request.qs == {"property": ["name==x"], "continuationtoken": ["xyz"]}


def test_patch_flow_sends_the_current_etag(hook, ims, requests_mock):
    flow = f"{PLATFORM}/data/foundation/flowservice/flows/f1"
    requests_mock.get(flow, json={"items": [{"id": "f1", "etag": '"e-1"'}]})
    patch = requests_mock.patch(flow, json={"id": "f1", "etag": '"e-2"'})

    assert hook.patch_flow("f1", [{"op": "add", "path": "/x", "value": 1}]) == {"id": "f1", "etag": '"e-2"'}
    assert patch.last_request.headers["If-Match"] == '"e-1"'


def test_dataset_export_waits_while_not_ready(hook, ims, requests_mock, sleep):
    not_ready = {
        "message": "Following order ID(s) are not ready for dataset export, please wait for 10 minutes and retry."
    }
    status_url = "https://platform.test/data/foundation/flowservice/runs/run-7"
    adhoc = requests_mock.post(
        f"{PLATFORM}/data/core/activation/disflowprovider/adhocrun",
        [
            {"status_code": 400, "json": not_ready},
            {"status_code": 400, "json": not_ready},
            {"json": {"destinations": [{"flowId": "f1", "datasets": [{"id": "ds1", "statusURL": status_url}]}]}},
        ],
    )

    assert hook.run_dataset_export("f1", "ds1", not_ready_wait=60.0) == "run-7"

    assert adhoc.call_count == 3
    assert [c.args[0] for c in sleep.call_args_list] == [60.0, 60.0]
    assert adhoc.last_request.json() == {
        "activationInfo": {"destinations": [{"flowId": "f1", "datasets": [{"id": "ds1"}]}]}
    }


def test_dataset_export_gives_up_on_a_flow_never_ready(hook, ims, requests_mock, sleep):
    message = {"message": "not ready for dataset export, please wait for 10 minutes and retry."}
    adhoc = requests_mock.post(
        f"{PLATFORM}/data/core/activation/disflowprovider/adhocrun", status_code=400, json=message
    )
    with pytest.raises(AEPNotReadyError):
        hook.run_dataset_export("f1", "ds1", not_ready_wait=1.0, not_ready_attempts=3)
    assert adhoc.call_count == 3


def test_dataset_export_run_already_exists_not_retried(hook, ims, requests_mock, sleep):
    adhoc = requests_mock.post(
        f"{PLATFORM}/data/core/activation/disflowprovider/adhocrun",
        status_code=400,
        json={"message": "Run already exists for flow f1"},
    )
    with pytest.raises(AEPApiError) as err:
        hook.run_dataset_export("f1", "ds1")
    assert not isinstance(err.value, AEPNotReadyError)
    assert adhoc.call_count == 1
