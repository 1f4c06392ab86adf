"""Extra links from AEP operators to the Experience Platform UI, built from the ids the operators push to XCom."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

AEP_UI_URL = "https://experience.adobe.com/#/@{org}/sname:{sandbox}/platform/{path}"
#: XCom key holding ``{"org_id", "sandbox"}`` of the call, shared by every link of a task.
AEP_UI_CONTEXT_KEY = "aep_ui_context"


class AEPBaseLink(BaseOperatorLink):
    """A link to one AEP resource: its id is the XCom value under ``key``, formatted into ``path``."""

    name: ClassVar[str]
    key: ClassVar[str]
    path: ClassVar[str]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """
        Build the AEP UI address of the resource the task worked on.

        :param operator: the operator the link belongs to.
        :param ti_key: the task instance to build the link for.
        :return: the address, or an empty string when the task pushed no id.
        """
        resource_id = XCom.get_value(key=self.key, ti_key=ti_key)
        ui_context = XCom.get_value(key=AEP_UI_CONTEXT_KEY, ti_key=ti_key)
        if not resource_id or not ui_context:
            return ""
        return AEP_UI_URL.format(
            org=quote(ui_context["org_id"], safe="@"),
            sandbox=quote(ui_context["sandbox"], safe=""),
            path=self.path.format(id=quote(str(resource_id), safe="")),
        )

    @classmethod
    def persist(cls, context: Context, *, org_id: str, sandbox: str, resource_id: Any) -> None:
        """
        Push the id (and the org and sandbox it lives in) for the link.

        :param context: the task context.
        :param org_id: IMS org of the call.
        :param sandbox: sandbox of the call.
        :param resource_id: id of the AEP resource.
        """
        ti = context["ti"]
        ti.xcom_push(key=AEP_UI_CONTEXT_KEY, value={"org_id": org_id, "sandbox": sandbox})
        ti.xcom_push(key=cls.key, value=resource_id)


class AEPDatasetLink(AEPBaseLink):
    """Link to a dataset's page."""

    name = "AEP Dataset"
    key = "aep_dataset_id"
    path = "dataset/browse/{id}"


class AEPBatchLink(AEPBaseLink):
    """Link to a batch's page."""

    name = "AEP Batch"
    key = "aep_batch_id"
    path = "dataset/activity/batches/{id}"


class AEPQueryLink(AEPBaseLink):
    """Link to a Query Service query's log entry."""

    name = "AEP Query"
    key = "aep_query_id"
    path = "query/log/{id}"


class AEPAudienceLink(AEPBaseLink):
    """Link to an audience (segment definition)."""

    name = "AEP Audience"
    key = "aep_audience_id"
    path = "segment/browse/{id}"


class AEPFlowRunLink(AEPBaseLink):
    """Link to a Flow Service dataflow run (dataset export or audience activation)."""

    name = "AEP Dataflow Run"
    key = "aep_flow_run_id"
    path = "destination/dataflows/runs/{id}"
