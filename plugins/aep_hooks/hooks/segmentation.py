"""
Segmentation: segment definitions, segment jobs, audiences.

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/segmentation/api/overview
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.rest import AEPRestHook

SEGMENTATION = "/data/core/ups"
SEGMENT_DEFINITIONS = f"{SEGMENTATION}/segment/definitions"
SEGMENT_JOBS = f"{SEGMENTATION}/segment/jobs"


class AEPSegmentationHook(AEPRestHook):
    """Segmentation calls. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`."""

    def iter_segment_definitions(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """
        Walk the segment definitions list paged by 1-based ``page`` numbers.

        :param params: filters (``limit``, ``sort``...).
        """
        params = {**(params or {}), "page": 1}
        while True:
            body = self.get_json(SEGMENT_DEFINITIONS, params=params) or {}
            segments = body.get("segments", [])
            yield from segments
            if not segments or params["page"] >= body.get("page", {}).get("totalPages", 0):
                return
            params["page"] += 1

    def find_segment_definition(self, name: str) -> dict | None:
        """
        Return the segment definition with this name, if any.

        :param name: the definition name (unique per sandbox).
        """
        return next((d for d in self.iter_segment_definitions() if d.get("name") == name), None)

    def create_segment_definition(self, body: dict) -> dict:
        """
        Create a segment definition (never retried on 5xx: look it up by name first).

        :param body: ``{name, profileInstanceId, expression, schema, evaluationInfo...}``.
        """
        return self.post_json(SEGMENT_DEFINITIONS, body)

    def update_segment_definition(self, definition_id: str, body: Any) -> dict:
        """
        Update a segment definition.

        :param definition_id: the definition id.
        :param body: the PATCH body (JSON Patch operations).
        """
        return self._send_json("PATCH", item_path(SEGMENT_DEFINITIONS, definition_id), body)

    def create_segment_job(self, segment_ids: list[str]) -> dict:
        """
        Start a segment job (retried on 429 "too many jobs", never on 5xx).

        :param segment_ids: the segment definitions to evaluate.
        """
        return self.post_json(SEGMENT_JOBS, [{"segmentId": sid} for sid in segment_ids])

    def get_segment_job(self, job_id: str) -> dict:
        """
        Return a segment job with its ``status`` and ``metrics``.

        :param job_id: the job id.
        """
        return self.get_json(item_path(SEGMENT_JOBS, job_id))

    def cancel_segment_job(self, job_id: str) -> None:
        """
        Cancel a segment job.

        :param job_id: the job id.
        """
        self.request("DELETE", item_path(SEGMENT_JOBS, job_id))
