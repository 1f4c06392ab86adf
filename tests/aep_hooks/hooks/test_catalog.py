"""Catalog: offset paging, the ``{id: doc}`` unwrap, JSON Patch."""

from __future__ import annotations

from tests.aep_hooks.conftest import PLATFORM


def test_catalog_limit_start(hook, ims, requests_mock):
    pages = [{"a": {}, "b": {}}, {"c": {}, "d": {}}, {"e": {"name": "last"}}]
    catalog = requests_mock.get(f"{PLATFORM}/data/foundation/catalog/dataSets", [{"json": p} for p in pages])

    items = list(hook.iter_catalog("/data/foundation/catalog/dataSets", {"name": "x"}, page_size=2))

    assert [i for i, _ in items] == ["a", "b", "c", "d", "e"]
    assert items[-1][1] == {"id": "e", "name": "last"}
    assert [(r.qs["start"], r.qs["limit"], r.qs["name"]) for r in catalog.request_history] == [
        (["0"], ["2"], ["x"]),
        (["2"], ["2"], ["x"]),
        (["4"], ["2"], ["x"]),
    ]


def test_create_dataset_returns_the_id(hook, ims, requests_mock):
    requests_mock.post(f"{PLATFORM}/data/foundation/catalog/dataSets", status_code=201, json=["@/dataSets/ds42"])
    assert hook.create_dataset({"name": "scores"}) == "ds42"


def test_get_batch_unwraps(hook, ims, requests_mock):
    requests_mock.get(f"{PLATFORM}/data/foundation/catalog/batches/b1", json={"b1": {"status": "success"}})
    assert hook.get_batch("b1") == {"id": "b1", "status": "success"}


def test_patch_dataset_sends_json_patch(hook, ims, requests_mock):
    patch = requests_mock.patch(f"{PLATFORM}/data/foundation/catalog/dataSets/ds1", json=["@/dataSets/ds1"])
    hook.patch_dataset("ds1", [{"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]}])
    assert patch.last_request.headers["Content-Type"] == "application/json-patch+json"
