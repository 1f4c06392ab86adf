"""SegmentJobTrigger: a killed deferred task cancels its segment job."""

from __future__ import annotations

from unittest import mock

import pytest
from aep_hooks.triggers.segmentation import SegmentJobTrigger

from tests.aep_hooks.triggers.test_base import FAR, JOB_PATH


@pytest.mark.asyncio
async def test_on_kill_cancels_the_segment_job():
    with mock.patch("aep_hooks.triggers.base.AEPAsyncHook.request") as request:
        await SegmentJobTrigger("j1", end_time=FAR).on_kill()
    request.assert_awaited_once_with("DELETE", JOB_PATH)
