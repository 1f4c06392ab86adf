"""Segmentation: the segment definitions' paging."""

from __future__ import annotations

from tests.aep_hooks.conftest import PLATFORM


def test_segment_definitions_one_based_pages(hook, ims, requests_mock):
    definitions = requests_mock.get(
        f"{PLATFORM}/data/core/ups/segment/definitions",
        [
            {"json": {"segments": [{"name": "s1"}], "page": {"totalPages": 2}}},
            {"json": {"segments": [{"name": "s2"}], "page": {"totalPages": 2}}},
        ],
    )

    assert hook.find_segment_definition("s2") == {"name": "s2"}
    assert [r.qs["page"] for r in definitions.request_history] == [["1"], ["2"]]
