"""Segmentation: segment definitions upserted by name and evaluated in one segment job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aep_hooks.links import AEPAudienceLink
from aep_hooks.operators.base import AEPBaseOperator, load_json
from aep_hooks.triggers.segmentation import SegmentJobTrigger
from aep_hooks.utils.job_states import SEGMENT_JOB

if TYPE_CHECKING:
    from airflow.sdk import Context


class AEPAudienceOperator(AEPBaseOperator):
    """
    Upsert segment definitions by name and evaluate them all in one segment job.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/segmentation/api/segment-jobs.html

    :param audiences: ``[{"name", "pql", "description"}]``, or the path of a ``.json`` template holding it.
    :return: ``{name: {"id", "count"}}`` (profiles qualified by the job).
    """

    template_fields: Sequence[str] = ("audiences",)
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"audiences": "json"}
    operator_extra_links = (AEPAudienceLink(),)

    def __init__(self, *, audiences: list[dict[str, str]] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audiences = audiences
        self.job_id: str | None = None

    def execute(self, context: Context) -> dict[str, dict[str, Any]]:
        segment_ids = {a["name"]: self._upsert(a) for a in load_json(self.audiences)}
        self.persist_link(context, AEPAudienceLink, next(iter(segment_ids.values())))
        self.job_id = self.start_or_reattach(context, SEGMENT_JOB, "segment_job_id", lambda: self._start(segment_ids))
        return self.wait_for(
            context,
            SegmentJobTrigger,
            self.job_id,
            method_kwargs={"segment_ids": segment_ids},
        )

    def _start(self, segment_ids: dict[str, str]) -> str:
        job_id = self.hook.create_segment_job(list(segment_ids.values()))["id"]
        self.log.info("Started segment job %s for %s", job_id, sorted(segment_ids))
        return job_id

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
        job = self.hook.get_segment_job(self.check_event(SEGMENT_JOB.name, event))
        counts = (job.get("metrics") or {}).get("segmentedProfileCounter") or {}
        return {name: {"id": sid, "count": counts.get(sid, 0)} for name, sid in kwargs["segment_ids"].items()}

    def on_kill(self) -> None:
        if self.job_id:
            self.log.info("Cancelling segment job %s", self.job_id)
            self.hook.cancel_segment_job(self.job_id)

    def _upsert(self, audience: dict[str, str]) -> str:
        body = {
            "name": audience["name"],
            "profileInstanceId": "ups",
            "description": audience.get("description", ""),
            "expression": {"type": "PQL", "format": "pql/text", "value": audience["pql"]},
            "evaluationInfo": {
                "batch": {"enabled": True},
                "continuous": {"enabled": False},
                "synchronous": {"enabled": False},
            },
            "schema": {"name": "_xdm.context.profile"},
        }
        existing = self.hook.find_segment_definition(audience["name"])
        if existing is None:
            created = self.hook.create_segment_definition(body)
            self.log.info("Created segment definition %s (%s)", audience["name"], created["id"])
            return created["id"]
        if (existing["expression"]["value"], existing.get("description", "")) != (audience["pql"], body["description"]):
            self.hook.update_segment_definition(
                existing["id"],
                [
                    {"op": "add", "path": "/expression/value", "value": audience["pql"]},
                    {"op": "add", "path": "/description", "value": body["description"]},
                ],
            )
            self.log.info("Updated segment definition %s (%s)", audience["name"], existing["id"])
        return existing["id"]
