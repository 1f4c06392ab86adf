"""Trigger that waits for a segment job."""

from __future__ import annotations

from typing import Any

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.rest import AEPAsyncHook
from aep_hooks.hooks.segmentation import SEGMENT_JOBS
from aep_hooks.triggers.base import AEPJobTrigger
from aep_hooks.utils.job_states import SEGMENT_JOB


class SegmentJobTrigger(AEPJobTrigger):
    """
    Wait for a segment job to end.

    .. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/segmentation/api/segment-jobs

    :param job_id: the segment job id; the other arguments are :class:`~aep_hooks.triggers.base.AEPJobTrigger`'s.
    """

    job = SEGMENT_JOB
    id_kwarg = "job_id"

    def __init__(self, job_id: str, **kwargs: Any) -> None:
        super().__init__(job_id, **kwargs)

    async def fetch(self, hook: AEPAsyncHook) -> dict:
        return await hook.get_json(item_path(SEGMENT_JOBS, self.resource_id))

    def summarize(self, doc: dict) -> dict[str, Any]:
        metrics = doc.get("metrics") or {}
        return {
            "totalProfiles": metrics.get("totalProfiles"),
            "segmentedProfileCounter": metrics.get("segmentedProfileCounter") or {},
        }

    async def on_kill(self) -> None:
        """Cancel the segment job when a user kills the deferred task."""
        self.log.info("Cancelling AEP segment job %s", self.resource_id)
        await self.get_async_hook().request("DELETE", item_path(SEGMENT_JOBS, self.resource_id))
