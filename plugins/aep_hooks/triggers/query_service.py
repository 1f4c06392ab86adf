"""Trigger that waits for a Query Service query."""

from __future__ import annotations

from typing import Any

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.query_service import CANCEL_QUERY, QUERIES
from aep_hooks.hooks.rest import AEPAsyncHook
from aep_hooks.triggers.base import AEPJobTrigger
from aep_hooks.utils.job_states import QUERY


class QueryStatusTrigger(AEPJobTrigger):
    """
    Wait for a Query Service query to end.

    .. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/query/api/queries

    :param query_id: the query id; the other arguments are :class:`~aep_hooks.triggers.base.AEPJobTrigger`'s.
    """

    job = QUERY
    id_kwarg = "query_id"

    def __init__(self, query_id: str, **kwargs: Any) -> None:
        super().__init__(query_id, **kwargs)

    async def fetch(self, hook: AEPAsyncHook) -> dict:
        return await hook.get_json(item_path(QUERIES, self.resource_id))

    def summarize(self, doc: dict) -> dict[str, Any]:
        created = (doc.get("_links") or {}).get("created_dataset") or {}
        return {"rowCount": doc.get("rowCount"), "elapsedTime": doc.get("elapsedTime"), "dataset_id": created.get("id")}

    async def on_kill(self) -> None:
        """Cancel the query when a user kills the deferred task."""
        self.log.info("Cancelling AEP query %s", self.resource_id)
        await self.get_async_hook().request("PATCH", item_path(QUERIES, self.resource_id), json=CANCEL_QUERY)
