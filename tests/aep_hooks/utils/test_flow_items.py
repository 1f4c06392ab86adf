"""A flow and its connections kept in step with the task: reused while unchanged, replaced and deleted when not."""

from __future__ import annotations

import itertools

import pytest
from aep_hooks.exceptions import AEPApiError
from aep_hooks.utils.flow_items import FlowItem, credentials_fingerprint, reconcile, serves

SPEC = {"id": "s3-spec", "version": "1.0"}


class FakeFlowService:
    """The Flow Service calls ``reconcile`` makes, over an in-memory store (names need not be unique, as in AEP)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, dict]] = {}
        self.ids = (f"id{n}" for n in itertools.count(1))
        self.calls: list[tuple[str, str, str]] = []

    def find_flow_items(self, kind, name):
        return next((doc for k, doc in self.items.values() if k == kind and doc["name"] == name), None)

    def create_flow_item(self, kind, body):
        item_id = next(self.ids)
        self.items[item_id] = (kind, {**body, "id": item_id})
        self.calls.append(("create", kind, body["name"]))
        return {"id": item_id, "etag": "1"}

    def get_flow_item(self, kind, item_id):
        if item_id not in self.items:
            raise AEPApiError.for_status(404, {"message": "gone"}, method="GET", url=item_id)
        return self.items[item_id][1]

    def delete_flow_item(self, kind, item_id):
        kind_, doc = self.items.pop(item_id)
        self.calls.append(("delete", kind_, doc["name"]))

    def count(self) -> dict[str, int]:
        return {
            k: sum(1 for kind, _ in self.items.values() if kind == k)
            for k in sorted({k for k, _ in self.items.values()})
        }


def chain(dataset="ds1", bucket="dest", path="exports", keys=("AKIAOLD", "secret-old")) -> list[FlowItem]:
    """An export flow's items as the export operator builds them."""
    return [
        FlowItem(
            "sourceConnections",
            "f source",
            lambda ids: {
                "name": "f source",
                "connectionSpec": {"id": "dl"},
                "params": {"datasets": [{"dataSetId": dataset}]},
            },
        ),
        FlowItem(
            "connections",
            "f S3",
            lambda ids: {"name": "f S3", "description": credentials_fingerprint(*keys), "connectionSpec": SPEC},
        ),
        FlowItem(
            "targetConnections",
            "f target",
            lambda ids: {
                "name": "f target",
                "baseConnectionId": ids["f S3"],
                "connectionSpec": SPEC,
                "params": {"bucketName": bucket, "path": path, "compression": "gzip"},
            },
        ),
        FlowItem(
            "flows",
            "f",
            lambda ids: {
                "name": "f",
                "flowSpec": {"id": "export"},
                "sourceConnectionIds": [ids["f source"]],
                "targetConnectionIds": [ids["f target"]],
            },
        ),
    ]


@pytest.fixture
def aep() -> FakeFlowService:
    service = FakeFlowService()
    reconcile(service, "f ", chain())
    service.calls.clear()
    return service


def test_a_rerun_with_nothing_changed_reuses_everything(aep):
    before = dict(aep.items)
    for _ in range(3):
        reconcile(aep, "f ", chain())
    assert aep.calls == []
    assert aep.items == before


@pytest.mark.parametrize(
    ("change", "replaced"),
    [
        pytest.param({"dataset": "ds2"}, ["sourceConnections", "flows"], id="rebuilt-dataset"),
        pytest.param({"bucket": "other"}, ["targetConnections", "flows"], id="changed-bucket"),
        pytest.param({"path": "Exports"}, ["targetConnections", "flows"], id="changed-path-case"),
        pytest.param(
            {"keys": ("AKIANEW", "secret-new")}, ["connections", "targetConnections", "flows"], id="rotated-keys"
        ),
        pytest.param(
            {"keys": ("AKIAOLD", "secret-fixed")}, ["connections", "targetConnections", "flows"], id="changed-secret"
        ),
    ],
)
def test_a_changed_argument_replaces_what_it_concerns_and_leaves_nothing_behind(aep, change, replaced):
    ids = reconcile(aep, "f ", chain(**change))

    # Deleted top-down (the flow before what it uses), created bottom-up, each replaced item once.
    deletes = [kind for op, kind, _ in aep.calls if op == "delete"]
    creates = [kind for op, kind, _ in aep.calls if op == "create"]
    assert deletes == sorted(replaced, key=["flows", "targetConnections", "sourceConnections", "connections"].index)
    assert sorted(creates) == sorted(replaced)
    assert aep.count() == {"connections": 1, "flows": 1, "sourceConnections": 1, "targetConnections": 1}
    flow = aep.get_flow_item("flows", ids["f"])
    assert flow["sourceConnectionIds"] == [ids["f source"]] and flow["targetConnectionIds"] == [ids["f target"]]


def test_the_source_of_an_earlier_naming_goes_with_its_flow():
    """Before, each rebuilt dataset got a source named after it: the replaced flow's one is deleted too."""
    aep = FakeFlowService()
    legacy = aep.create_flow_item("sourceConnections", {"name": "f source ds0", "params": {}})["id"]
    foreign = aep.create_flow_item("targetConnections", {"name": "someone else's", "params": {}})["id"]
    aep.create_flow_item(
        "flows",
        {"name": "f", "flowSpec": {"id": "export"}, "sourceConnectionIds": [legacy], "targetConnectionIds": [foreign]},
    )

    reconcile(aep, "f ", chain())

    names = sorted(doc["name"] for _, doc in aep.items.values())
    assert names == ["f", "f S3", "f source", "f target", "someone else's"]


def test_upper_cased_enumerations_still_serve():
    wanted = {"connectionSpec": SPEC, "baseConnectionId": "b", "params": {"compression": "gzip", "path": "p"}}
    existing = {**wanted, "params": {"compression": "GZIP", "path": "p", "mode": "Server-to-server"}}
    assert serves("targetConnections", existing, wanted)
    assert not serves("targetConnections", {**existing, "params": {"compression": "GZIP", "path": "P"}}, wanted)


def test_the_fingerprint_hides_the_secret_and_tells_keys_apart():
    one = credentials_fingerprint("AKIAOLD", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert one == credentials_fingerprint("AKIAOLD", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert one != credentials_fingerprint("AKIAOLD", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ")
    assert "wJalr" not in one and "AKIA" not in one
