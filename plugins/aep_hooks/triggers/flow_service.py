"""Trigger that waits for a Flow Service run (a dataset export or an audience activation)."""

from __future__ import annotations

from typing import Any

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.flow_service import RUNS, first_item
from aep_hooks.hooks.rest import AEPAsyncHook
from aep_hooks.triggers.base import AEPJobTrigger
from aep_hooks.utils.job_states import FLOW_RUN


class FlowRunTrigger(AEPJobTrigger):
    """
    Wait for a Flow Service run (dataset export or activation) to finish.

    .. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/destinations/api/export-datasets

    :param run_id: the flow run id; the other arguments are :class:`~aep_hooks.triggers.base.AEPJobTrigger`'s.
    """

    job = FLOW_RUN
    id_kwarg = "run_id"

    def __init__(self, run_id: str, **kwargs: Any) -> None:
        super().__init__(run_id, **kwargs)

    async def fetch(self, hook: AEPAsyncHook) -> dict:
        return first_item(await hook.get_json(item_path(RUNS, self.resource_id)), f"run {self.resource_id}")

    def summarize(self, doc: dict) -> dict[str, Any]:
        metrics = doc.get("metrics") or {}
        return {
            "completedAtUTC": (metrics.get("durationSummary") or {}).get("completedAtUTC"),
            "recordSummary": metrics.get("recordSummary") or {},
            "fileSummary": metrics.get("fileSummary") or {},
        }
