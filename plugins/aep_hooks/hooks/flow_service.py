"""
Flow Service: connections, flows and their runs; the ad-hoc runs of dataset exports and audience activations.

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/destinations/api/export-datasets
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from aep_hooks.exceptions import AEPApiError, AEPError, AEPNotReadyError
from aep_hooks.hooks.base import decode_body, item_path
from aep_hooks.hooks.rest import AEPRestHook

FLOW_SERVICE = "/data/foundation/flowservice"
FLOWS = f"{FLOW_SERVICE}/flows"
RUNS = f"{FLOW_SERVICE}/runs"
FLOW_SPECS = f"{FLOW_SERVICE}/flowSpecs"
AD_HOC_RUN = "/data/core/activation/disflowprovider/adhocrun"
NOT_READY_FOR_EXPORT = "not ready for dataset export"


def first_item(body: dict, what: str) -> dict:
    """Flow Service wraps a GET by id in ``{"items": [doc]}``."""
    if not body.get("items"):
        raise AEPError(f"Flow Service returned no item for {what}")
    return body["items"][0]


class AEPFlowServiceHook(AEPRestHook):
    """Flow Service calls. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`."""

    def iter_flow_service(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """
        Walk a Flow Service list paged by ``continuationToken`` to the end.

        :param path: the list's path, e.g. ``RUNS``.
        :param params: filters (``property``, ``orderby``...), kept on every page.
        """
        params = dict(params or {})
        while True:
            body = self.get_json(path, params=params) or {}
            yield from body.get("items", [])
            href = body.get("_links", {}).get("next", {}).get("href")
            token = parse_qs(urlsplit(href).query).get("continuationToken") if href else None
            if not token:
                return
            params["continuationToken"] = token[0]

    def find_flow_items(self, kind: str, name: str) -> dict | None:
        """
        Return the Flow Service item with this name, if any.

        :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
        :param name: the item name.
        """
        items = self.iter_flow_service(item_path(FLOW_SERVICE, kind), {"property": f"name=={name}"})
        return next((item for item in items if item.get("name") == name), None)

    def create_flow_item(self, kind: str, body: dict) -> dict:
        """
        Create a Flow Service item and return ``{id, etag}`` (never retried on 5xx).

        :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
        :param body: the item.
        """
        return self.post_json(item_path(FLOW_SERVICE, kind), body)

    def get_flow(self, flow_id: str) -> dict:
        """
        Return a flow (with its ``etag``).

        :param flow_id: the flow id.
        """
        return first_item(self.get_json(item_path(FLOWS, flow_id)), f"flow {flow_id}")

    def delete_flow(self, flow_id: str) -> None:
        """
        Delete a flow (idempotent: a retry after a lost answer finds it gone, which is the goal).

        :param flow_id: the flow id.
        """
        try:
            self.request("DELETE", item_path(FLOWS, flow_id))
        except AEPApiError as err:
            if err.status != 404:
                raise

    def patch_flow(self, flow_id: str, ops: list[dict]) -> dict:
        """
        Apply a JSON Patch to a flow, guarded by its current ``etag`` (``If-Match``).

        A retried PATCH whose first attempt took effect fails with 412 instead of applying twice.

        :param flow_id: the flow id.
        :param ops: JSON Patch operations.
        """
        etag = self.get_flow(flow_id)["etag"]
        response = self.request(
            "PATCH", item_path(FLOWS, flow_id), json=ops, headers={"If-Match": etag}, idempotent=True
        )
        return decode_body(response.content, response.text)

    def get_run(self, run_id: str) -> dict:
        """
        Return a flow run with its metrics.

        :param run_id: the run id.
        """
        return first_item(self.get_json(item_path(RUNS, run_id)), f"run {run_id}")

    def find_runs(self, flow_id: str) -> list[dict]:
        """
        Return every run of a flow.

        :param flow_id: the flow id.
        """
        return list(self.iter_flow_service(RUNS, {"property": f"flowId=={flow_id}"}))

    def iter_flow_specs(self) -> Iterator[dict]:
        """Walk the flow specs AEP offers (a flow's spec depends on its source and target)."""
        return self.iter_flow_service(FLOW_SPECS)

    def run_dataset_export(
        self, flow_id: str, dataset_id: str, not_ready_wait: float = 60.0, not_ready_attempts: int = 15
    ) -> str:
        """
        Start an ad-hoc dataset export run and return its run id.

        Only the "not ready for dataset export" answer (a flow younger than ~10 minutes) is retried,
        with a fixed wait; "run already exists" and every other error is raised.

        :param flow_id: the dataset export flow id.
        :param dataset_id: the dataset to export.
        :param not_ready_wait: seconds between attempts while the flow is not ready.
        :param not_ready_attempts: attempts before giving up on a not-ready flow.
        """
        retrying = Retrying(
            stop=stop_after_attempt(not_ready_attempts),
            wait=wait_fixed(not_ready_wait),
            retry=retry_if_exception_type(AEPNotReadyError),
            before_sleep=self._log_retry,
            reraise=True,
        )
        body = retrying(self._start_dataset_export, flow_id, dataset_id)
        status_url = body["destinations"][0]["datasets"][0]["statusURL"]
        return status_url.rstrip("/").rsplit("/", 1)[-1]

    def _start_dataset_export(self, flow_id: str, dataset_id: str) -> dict:
        try:
            return self.post_json(
                AD_HOC_RUN,
                {"activationInfo": {"destinations": [{"flowId": flow_id, "datasets": [{"id": dataset_id}]}]}},
                headers={"Accept": "application/vnd.adobe.adhoc.dataset.activation+json; version=1"},
            )
        except AEPApiError as err:
            if err.status == 400 and NOT_READY_FOR_EXPORT in err.message.lower():
                raise AEPNotReadyError(
                    err.status, err.body, method=err.method, url=err.url, request_id=err.request_id
                ) from err
            raise

    def run_audience_activation(self, flow_id: str, audience_ids: list[str]) -> dict:
        """
        Start an ad-hoc activation of audiences through a destination flow.

        :param flow_id: the destination dataflow id.
        :param audience_ids: the audiences to activate.
        """
        return self.post_json(
            AD_HOC_RUN,
            {"activationInfo": {flow_id: list(audience_ids)}},
            headers={"Accept": "application/vnd.adobe.adhoc.activation+json; version=2"},
        )
