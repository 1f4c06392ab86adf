"""Trigger that waits for an ingestion batch (its status is Catalog's batch record)."""

from __future__ import annotations

from typing import Any

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.catalog import BATCHES, unwrap_catalog_item
from aep_hooks.hooks.rest import AEPAsyncHook
from aep_hooks.triggers.base import AEPJobTrigger
from aep_hooks.utils.job_states import BATCH


class BatchStatusTrigger(AEPJobTrigger):
    """
    Wait for an ingestion batch to reach a terminal Catalog status.

    .. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/ingestion/batch/troubleshooting

    :param batch_id: the batch id; the other arguments are :class:`~aep_hooks.triggers.base.AEPJobTrigger`'s.
    """

    job = BATCH
    id_kwarg = "batch_id"

    def __init__(self, batch_id: str, **kwargs: Any) -> None:
        super().__init__(batch_id, **kwargs)

    async def fetch(self, hook: AEPAsyncHook) -> dict:
        return unwrap_catalog_item(await hook.get_json(item_path(BATCHES, self.resource_id)), self.resource_id)

    def summarize(self, doc: dict) -> dict[str, Any]:
        return {"metrics": doc.get("metrics") or {}}
