"""Flow Service: dataset exports and audience activations to S3, each through a flow got or created by name."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.exceptions import AirflowFailException

from aep_hooks.exceptions import AEPApiError
from aep_hooks.links import AEPAudienceLink, AEPDatasetLink, AEPFlowRunLink
from aep_hooks.operators.base import AEPBaseOperator, load_json
from aep_hooks.triggers.flow_service import FlowRunTrigger
from aep_hooks.utils.job_states import FLOW_RUN, RUNNING, SUCCESS

if TYPE_CHECKING:
    from airflow.sdk import Context

DATASET_EXPORT_SOURCE_SPEC = "23598e46-f560-407b-88d5-ea6207e49db0"
PROFILE_SOURCE_SPEC = "8a9c3494-9708-43d7-ae3f-cda01e5030e1"
S3_DESTINATION_SPEC = "4fce964d-3f37-408f-9778-e597338a21ee"
S3_DATASET_EXPORT_FLOW_SPEC = "269ba276-16fc-47db-92b0-c1049a3c131f"
#: 2100-01-01T00:00:00Z: flows are parked in the far future and driven by ad-hoc runs only.
FAR_FUTURE_EPOCH_S = 4102444800
_EXPORT_TIME = re.compile(r"exportTime=(\d{12}|\d{14})/")


class _AEPFlowOperator(AEPBaseOperator):
    """
    Get-or-create of Flow Service items by name, and waiting for flow runs one after the other.

    :param s3_bucket: destination bucket.
    :param s3_path: folder in the bucket.
    :param s3_conn_id: the ``aws`` connection used to read what AEP wrote.
    :param destination_conn_id: the ``aws`` connection whose keys AEP writes to the bucket with
        (default: ``s3_conn_id``); they go to AEP's S3 base connection and nowhere else.
    """

    def __init__(
        self,
        *,
        s3_bucket: str,
        s3_path: str,
        s3_conn_id: str = "aep_s3",
        destination_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_bucket = s3_bucket
        self.s3_path = s3_path
        self.s3_conn_id = s3_conn_id
        self.destination_conn_id = destination_conn_id or s3_conn_id

    @cached_property
    def s3_hook(self) -> S3Hook:
        return S3Hook(aws_conn_id=self.s3_conn_id)

    def ensure_flow_item(self, kind: str, body: dict[str, Any]) -> str:
        """
        Id of the Flow Service item named ``body["name"]``, created from ``body`` when missing.

        :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
        :param body: the create body; its ``name`` is the deterministic key.
        """
        existing = self.hook.find_flow_items(kind, body["name"])
        if existing:
            return existing["id"]
        created = self.hook.create_flow_item(kind, body)
        self.log.info("Created %s %s (%s)", kind, body["name"], created["id"])
        return created["id"]

    def ensure_s3_target(self, name: str, extra_params: dict[str, Any]) -> str:
        """Base connection (S3 keys) and target connection (bucket, path) named after ``name``."""
        credentials = S3Hook(aws_conn_id=self.destination_conn_id).get_credentials()
        base_id = self.ensure_flow_item(
            "connections",
            {
                "name": f"{name} S3",
                "auth": {
                    "specName": "Access Key",
                    "params": {"s3AccessKey": credentials.access_key, "s3SecretKey": credentials.secret_key},
                },
                "connectionSpec": {"id": S3_DESTINATION_SPEC, "version": "1.0"},
            },
        )
        return self.ensure_flow_item(
            "targetConnections",
            {
                "name": f"{name} target",
                "baseConnectionId": base_id,
                "connectionSpec": {"id": S3_DESTINATION_SPEC, "version": "1.0"},
                "params": {
                    "mode": "Server-to-server",
                    "bucketName": self.s3_bucket,
                    "path": self.s3_path,
                    **extra_params,
                },
            },
        )

    def wait_for_runs(self, context: Context, run_ids: list[str], pending: list[str] | None = None) -> Any:
        """Wait for the runs one after the other; ``execute_complete`` continues with the next pending one.

        :param context: the task context.
        :param run_ids: every run of this task (the result covers them all).
        :param pending: the runs not known to have ended yet (default: all).
        """
        pending = pending or run_ids
        self.persist_link(context, AEPFlowRunLink, pending[0])
        return self.wait_for(context, FlowRunTrigger, pending[0], method_kwargs={"run_ids": run_ids})

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> Any:
        self.check_event(FLOW_RUN.name, event)
        run_ids = kwargs["run_ids"]
        runs = {r: self.hook.get_run(r) for r in run_ids}
        pending = [r for r, run in runs.items() if FLOW_RUN.classify(run)[0] == RUNNING]
        if pending:
            return self.wait_for_runs(context, run_ids, pending)
        # Every run must have succeeded, not only the one the last wait watched.
        for run_id, run in runs.items():
            outcome = FLOW_RUN.outcome(run_id, run)
            if outcome["status"] != SUCCESS:
                self.check_event(FLOW_RUN.name, outcome)
        return self.result(context, list(runs.values()))

    def result(self, context: Context, runs: list[dict[str, Any]]) -> Any:
        raise NotImplementedError

    def adhoc_run_ids(self, context: Context, flow_id: str, start: Callable[[], list[str]]) -> list[str]:
        """Runs an earlier try started and that are still in flight, else the runs ``start`` starts.

        When AEP answers that a run is already going on (an earlier try started it but never heard
        back), that run is adopted from the flow's runs: another is never started beside it.

        :param context: the task context.
        :param flow_id: the flow the runs belong to.
        :param start: starts the ad-hoc run(s) and returns their ids.
        """

        def start_or_adopt() -> list[str]:
            try:
                return start()
            except AEPApiError as err:
                if err.status != 400 or "already" not in str(err.message).lower():
                    raise
                run_ids = [run["id"] for run in self.hook.find_runs(flow_id) if FLOW_RUN.classify(run)[0] == RUNNING]
                if not run_ids:
                    raise
                self.log.warning("AEP says a run is already going on for flow %s: adopting %s", flow_id, run_ids)
                return run_ids

        return self.start_or_reattach(context, FLOW_RUN, "run_ids", start_or_adopt)


def _run_metrics(run: dict[str, Any], block: str) -> dict[str, Any]:
    return (run.get("metrics") or {}).get(block) or {}


def _export_time_ms(value: str) -> int:
    """Epoch ms of an ``exportTime`` folder value (``YYYYMMDDHHMM`` or ``YYYYMMDDHHMMSS``, UTC)."""
    fmt = "%Y%m%d%H%M%S" if len(value) == 14 else "%Y%m%d%H%M"
    return int(datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp() * 1000)


class AEPDatasetExportOperator(_AEPFlowOperator):
    """
    Export a dataset to S3 through a Flow Service dataset-export flow, and return the exact export folder.

    Gets or creates (by names derived from ``flow_name``) the S3 base connection, the data-lake source
    connection holding the dataset, the target connection (bucket, path, PARQUET, GZIP) and the flow,
    parked with a far-future schedule. Starts one ad-hoc run (waiting out AEP's "not ready" answer in
    the hook), waits for it, and locates the export folder through the run's own time window, never
    by listing order.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/destinations/api/export-datasets.html

    :param dataset_id: dataset to export.
    :param s3_bucket: destination bucket.
    :param s3_path: folder in the bucket.
    :param flow_name: deterministic name of the flow (and prefix of its connections' names).
    :param s3_conn_id: the ``aws`` connection whose keys AEP writes with (also used to list the files).
    :return: ``{"flow_id", "run_id", "export_path", "files", "records"}``.
    """

    template_fields: Sequence[str] = ("dataset_id", "s3_bucket", "s3_path", "flow_name")
    operator_extra_links = (AEPFlowRunLink(), AEPDatasetLink())

    def __init__(self, *, dataset_id: str, flow_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataset_id = dataset_id
        self.flow_name = flow_name

    def execute(self, context: Context) -> Any:
        flow_id = self._ensure_flow()
        run_ids = self.adhoc_run_ids(context, flow_id, lambda: [self.hook.run_dataset_export(flow_id, self.dataset_id)])
        return self.wait_for_runs(context, run_ids)

    def _ensure_flow(self) -> str:
        dataset = self.hook.get_dataset(self.dataset_id)
        source_id = self.ensure_flow_item(
            "sourceConnections",
            {
                "name": f"{self.flow_name} source {self.dataset_id}",
                "connectionSpec": {"id": DATASET_EXPORT_SOURCE_SPEC, "version": "1.0"},
                "params": {"datasets": [{"dataSetId": self.dataset_id, "name": dataset["name"]}]},
            },
        )
        target_id = self.ensure_s3_target(self.flow_name, {"compression": "GZIP", "datasetFileType": "PARQUET"})
        existing = self.hook.find_flow_items("flows", self.flow_name)
        if existing and source_id not in self.hook.get_flow(existing["id"]).get("sourceConnectionIds", []):
            # The flow's dataset was rebuilt (a rerun's CTAS makes a new dataset): the flow follows it,
            # like the date's other outputs. A source connection's dataset list cannot change.
            self.log.info("Flow %s (%s) exports a replaced dataset: recreating it", self.flow_name, existing["id"])
            self.hook.delete_flow(existing["id"])
        flow_id = self.ensure_flow_item(
            "flows",
            {
                "name": self.flow_name,
                "flowSpec": {"id": S3_DATASET_EXPORT_FLOW_SPEC, "version": "1.0"},
                "sourceConnectionIds": [source_id],
                "targetConnectionIds": [target_id],
                "transformations": [],
                "scheduleParams": {"interval": 3, "timeUnit": "hour", "startTime": FAR_FUTURE_EPOCH_S},
            },
        )
        return flow_id

    def result(self, context: Context, runs: list[dict[str, Any]]) -> dict[str, Any]:
        run = runs[0]
        prefix, files = self._locate_export(run)
        return {
            "flow_id": run.get("flowId"),
            "run_id": run["id"],
            "export_path": f"s3://{self.s3_bucket}/{prefix}",
            "files": files,
            "records": _run_metrics(run, "recordSummary").get("outputRecordCount", 0),
        }

    def _locate_export(self, run: dict[str, Any]) -> tuple[str, list[str]]:
        """
        The ``exportTime=`` folder the run wrote, and its part files.

        The files come from the run's manifest when it lists them, else from the dataset's folder;
        either way only a folder whose time lies within the run's own window qualifies.
        """
        duration = _run_metrics(run, "durationSummary")
        started_minute = duration["startedAtUTC"] // 60_000 * 60_000
        root = f"{self.s3_path.strip('/')}/{self.dataset_id}/".lstrip("/")
        manifest = (_run_metrics(run, "fileSummary").get("manifest") or {}).get("fileInfo") or []
        keys = [f["path"] for f in manifest] or self.s3_hook.list_keys(bucket_name=self.s3_bucket, prefix=root) or []
        folders: dict[str, list[str]] = {}
        for key in keys:
            match = _EXPORT_TIME.match(key[len(root) :]) if key.startswith(root) else None
            if match and started_minute <= _export_time_ms(match.group(1)) <= duration["completedAtUTC"]:
                folders.setdefault(root + match.group(0), []).append(key)
        if len(folders) != 1:
            raise AirflowFailException(
                f"Run {run['id']} should have written one exportTime folder under s3://{self.s3_bucket}/{root}, found {sorted(folders)}"
            )
        prefix, files = folders.popitem()
        return prefix, sorted(k for k in files if posixpath.basename(k).startswith("part-"))


class AEPActivateAudiencesOperator(_AEPFlowOperator):
    """
    Activate audiences to an S3 destination through Flow Service and wait for the runs.

    Gets or creates (by names derived from ``destination_name``) the Profile-store source, the S3
    target (bucket, path, CSV) and the audience-activation flow (its spec is the one in AEP's
    ``/flowSpecs`` listing from the Profile store to Amazon S3), maps the audiences the flow lacks
    (PATCH with ``If-Match``), starts one ad-hoc activation (v2) and waits for every run.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/destinations/api/ad-hoc-activation-api.html

    :param audience_ids: segment definition ids to activate.
    :param destination_name: deterministic name of the activation flow (and prefix of its connections').
    :param s3_bucket: destination bucket.
    :param s3_path: folder in the bucket.
    :param compression: ``GZIP`` or ``NONE``.
    :param schedule_start_date: the audience selectors' schedule start date (YYYY-MM-DD).
    :return: ``{"flow_id", "runs": {run_id: {"files", "records"}}}`` (one run per activated audience).
    """

    template_fields: Sequence[str] = ("audience_ids", "destination_name", "s3_bucket", "s3_path", "schedule_start_date")
    template_fields_renderers = {"audience_ids": "json"}
    operator_extra_links = (AEPFlowRunLink(), AEPAudienceLink())

    def __init__(
        self,
        *,
        audience_ids: list[str] | str,
        destination_name: str,
        compression: str = "GZIP",
        schedule_start_date: str = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.audience_ids = audience_ids
        self.destination_name = destination_name
        self.compression = compression
        self.schedule_start_date = schedule_start_date

    def execute(self, context: Context) -> Any:
        audience_ids = load_json(self.audience_ids)
        flow_id = self._ensure_flow()
        self._map_audiences(flow_id, audience_ids)
        self.persist_link(context, AEPAudienceLink, audience_ids[0])

        def start() -> list[str]:
            order = self.hook.run_audience_activation(flow_id, audience_ids)["order"]
            return [item["statusURL"].rstrip("/").rsplit("/", 1)[-1] for item in order]

        return self.wait_for_runs(context, self.adhoc_run_ids(context, flow_id, start))

    def _ensure_flow(self) -> str:
        spec = next(
            (
                s
                for s in self.hook.iter_flow_specs()
                if PROFILE_SOURCE_SPEC in s.get("sourceConnectionSpecIds", [])
                and S3_DESTINATION_SPEC in s.get("targetConnectionSpecIds", [])
            ),
            None,
        )
        if spec is None:
            raise AirflowFailException("AEP lists no audience-activation flow spec from the Profile store to Amazon S3")
        profile_spec = {"id": PROFILE_SOURCE_SPEC, "version": "1.0"}
        base_id = self.ensure_flow_item(
            "connections", {"name": f"{self.destination_name} profile", "connectionSpec": profile_spec}
        )
        source_id = self.ensure_flow_item(
            "sourceConnections",
            {"name": f"{self.destination_name} source", "baseConnectionId": base_id, "connectionSpec": profile_spec},
        )
        target_id = self.ensure_s3_target(self.destination_name, {"fileType": "CSV", "compression": self.compression})
        return self.ensure_flow_item(
            "flows",
            {
                "name": self.destination_name,
                "flowSpec": {"id": spec["id"], "version": "1.0"},
                "sourceConnectionIds": [source_id],
                "targetConnectionIds": [target_id],
                "transformations": [
                    {
                        "name": "GeneralTransform",
                        "params": {"segmentSelectors": {"selectors": []}, "profileSelectors": {"selectors": []}},
                    }
                ],
                "scheduleParams": {"interval": 24, "timeUnit": "hour", "startTime": FAR_FUTURE_EPOCH_S},
            },
        )

    def _map_audiences(self, flow_id: str, audience_ids: list[str]) -> None:
        selectors = self.hook.get_flow(flow_id)["transformations"][0]["params"]["segmentSelectors"]["selectors"]
        mapped = {(s.get("value") or {}).get("id") for s in selectors}
        ops = [
            {
                "op": "add",
                "path": "/transformations/0/params/segmentSelectors/selectors/-",
                "value": {
                    "type": "PLATFORM_SEGMENT",
                    "value": {
                        "id": audience_id,
                        "name": audience_id,
                        "filenameTemplate": "%DESTINATION_NAME%_%SEGMENT_ID%_%DATETIME(YYYYMMdd_HHmmss)%",
                        "exportMode": "DAILY_FULL_EXPORT",
                        "schedule": {"frequency": "ONCE", "startDate": self.schedule_start_date},
                    },
                },
            }
            for audience_id in audience_ids
            if audience_id not in mapped
        ]
        if ops:
            self.hook.patch_flow(flow_id, ops)
            self.log.info("Mapped audiences %s to flow %s", [op["value"]["value"]["id"] for op in ops], flow_id)

    def result(self, context: Context, runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "flow_id": runs[0].get("flowId"),
            "runs": {
                run["id"]: {
                    "files": [
                        f["path"] for f in (_run_metrics(run, "fileSummary").get("manifest") or {}).get("fileInfo", [])
                    ],
                    "records": _run_metrics(run, "recordSummary").get("outputRecordCount", 0),
                }
                for run in runs
            },
        }
