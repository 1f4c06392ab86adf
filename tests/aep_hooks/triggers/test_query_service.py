"""QueryStatusTrigger: a killed deferred task cancels its query."""

from __future__ import annotations

from unittest import mock

import pytest
from aep_hooks.triggers.query_service import QueryStatusTrigger

from tests.aep_hooks.triggers.test_base import FAR, QUERY_PATH


@pytest.mark.asyncio
async def test_on_kill_cancels_the_query():
    with mock.patch("aep_hooks.triggers.base.AEPAsyncHook.request") as request:
        await QueryStatusTrigger("q1", end_time=FAR).on_kill()
    request.assert_awaited_once_with("PATCH", QUERY_PATH, json={"op": "cancel"})
