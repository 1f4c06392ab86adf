"""Batch ingestion of S3 files into a dataset, one batch per DAG, date and dataset."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import requests
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.exceptions import AirflowFailException

from aep_hooks.exceptions import AEPApiError
from aep_hooks.links import AEPBatchLink, AEPDatasetLink
from aep_hooks.operators.base import AEPBaseOperator, TaskState
from aep_hooks.triggers.ingestion import BatchStatusTrigger
from aep_hooks.utils.job_states import BATCH, RUNNING, SUCCESS

if TYPE_CHECKING:
    from airflow.sdk import Context

MAX_FILES_PER_BATCH = 1500
MAX_FILE_BYTES = 256 * 1024 * 1024


class BatchPlan(NamedTuple):
    """What a batch-ingest try does: ``resume`` (upload + COMPLETE), ``wait``, or ``create``."""

    action: str
    batch_id: str | None
    predecessors: list[str]


def plan_batch(batches: dict[str, dict[str, Any]], resume_id: str | None = None) -> BatchPlan:
    """
    Decide what to do with the batches already carrying this run's batch identity.

    A batch still loading is resumed and one being processed is waited for (the state-store id
    first, then the newest); otherwise a new batch is created, replaying every successful one.

    :param batches: ``{id: Catalog batch}`` with this date's identity.
    :param resume_id: batch id kept in ``task_state_store`` by an earlier try.
    """
    in_flight = sorted(
        (doc for doc in batches.values() if BATCH.classify(doc)[0] == RUNNING),
        key=lambda doc: (doc["id"] == resume_id, doc.get("created", 0)),
        reverse=True,
    )
    if in_flight:
        batch = in_flight[0]
        return BatchPlan("resume" if batch.get("status") == "loading" else "wait", batch["id"], [])
    active = sorted(
        (doc for doc in batches.values() if BATCH.classify(doc)[0] == SUCCESS), key=lambda doc: doc.get("created", 0)
    )
    return BatchPlan("create", None, [doc["id"] for doc in active])


class AEPBatchIngestOperator(AEPBaseOperator):
    """
    Ingest files from S3 into a dataset as one batch, keyed by DAG, date and dataset.

    The batch carries a deterministic identity (``externalId`` and tags). A retry resumes the batch
    an earlier try left loading (uploading only the missing files) or waits for the one it completed;
    a rerun of a date that already has a successful batch creates a replay batch with that batch as
    predecessor (``reason: replace``). Uploads and COMPLETE are retried in the hook; the create never is.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/ingestion/batch/api-overview.html

    :param dataset_id: target dataset.
    :param s3_bucket: bucket holding the files.
    :param s3_keys: the file keys; or
    :param s3_prefix: every file under this prefix (names starting with ``_`` or ``.`` are skipped).
    :param file_format: ``parquet`` or ``json`` (JSON Lines).
    :param as_of_date: the date the batch belongs to (part of its identity).
    :param partial_ingestion_percentage: share of rows allowed to fail (0: all or nothing).
    :param s3_conn_id: the ``aws`` connection for the bucket.
    :return: ``{"batch_id", "rows", "failed_rows", "replaced"}``.
    """

    template_fields: Sequence[str] = ("dataset_id", "s3_bucket", "s3_keys", "s3_prefix", "as_of_date")
    operator_extra_links = (AEPBatchLink(), AEPDatasetLink())

    def __init__(
        self,
        *,
        dataset_id: str,
        s3_bucket: str,
        s3_keys: list[str] | None = None,
        s3_prefix: str | None = None,
        file_format: str = "parquet",
        as_of_date: str = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}",
        partial_ingestion_percentage: int = 0,
        s3_conn_id: str = "aep_s3",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (s3_keys is None) == (s3_prefix is None):
            raise ValueError("Pass exactly one of s3_keys and s3_prefix")
        self.dataset_id = dataset_id
        self.s3_bucket = s3_bucket
        self.s3_keys = s3_keys
        self.s3_prefix = s3_prefix
        self.file_format = file_format
        self.as_of_date = as_of_date
        self.partial_ingestion_percentage = partial_ingestion_percentage
        self.s3_conn_id = s3_conn_id

    @cached_property
    def s3_hook(self) -> S3Hook:
        return S3Hook(aws_conn_id=self.s3_conn_id)

    def batch_identity(self, dag_id: str) -> tuple[str, dict[str, list[str]]]:
        """``(externalId, tags)`` shared by every batch of this DAG, date and dataset."""
        tags = {
            "airflow_dag_id": [dag_id],
            "airflow_as_of_date": [self.as_of_date],
            "airflow_dataset_id": [self.dataset_id],
        }
        return f"airflow:{dag_id}:{self.as_of_date}:{self.dataset_id}", tags

    def execute(self, context: Context) -> dict[str, Any]:
        files = self._list_files()
        external_id, tags = self.batch_identity(context["dag"].dag_id)
        state = TaskState(context)
        resume_id = state.get("batch_id")
        batches = self._find_batches(external_id)
        if resume_id and resume_id not in batches:
            batches[resume_id] = self.hook.get_batch(resume_id)
        plan = plan_batch(batches, resume_id)
        if plan.batch_id:
            self.log.info(
                "Batch %s of %s is %s: %s it", plan.batch_id, external_id, batches[plan.batch_id]["status"], plan.action
            )
        batch_id = self.start_or_reattach(
            context,
            BATCH,
            "batch_id",
            lambda: self._create_batch(external_id, tags, plan.predecessors, set(batches)),
            # In flight is what Catalog holds under this run's identity (the kept id first), not only the kept id.
            find_in_flight=lambda kept: plan.batch_id,
        )
        if batch_id == resume_id:
            uploaded = state.get("uploaded_files") or []
        else:
            uploaded = []
            state.set("uploaded_files", uploaded)
        self.persist_link(context, AEPBatchLink, batch_id)
        self.persist_link(context, AEPDatasetLink, self.dataset_id)
        if plan.action != "wait":
            self._upload(state, batch_id, files, uploaded)
            self.hook.complete_batch(batch_id)
            self.log.info("Completed batch %s with %s files", batch_id, len(files))
        return self.wait_for(context, BatchStatusTrigger, batch_id)

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        batch = self.hook.get_batch(self.check_event(BATCH.name, event))
        metrics = batch.get("metrics") or {}
        failed_rows = metrics.get("failedRecordCount", 0)
        if failed_rows:
            self.log.warning(
                "Batch %s: %s rows failed (partial ingestion %s%%)",
                batch["id"],
                failed_rows,
                self.partial_ingestion_percentage,
            )
        return {
            "batch_id": batch["id"],
            "rows": metrics.get("outputRecordCount", 0),
            "failed_rows": failed_rows,
            "replaced": [p.lstrip("$") for p in (batch.get("replay") or {}).get("predecessors", [])],
        }

    def _list_files(self) -> dict[str, str]:
        """``{file name in the batch: S3 key}``, checked against the batch limits."""
        if self.s3_keys is not None:
            files = {posixpath.basename(key): key for key in self.s3_keys}
            if len(files) != len(self.s3_keys):
                raise AirflowFailException(f"s3_keys have clashing file names: {self.s3_keys}")
        else:
            prefix = self.s3_prefix.rstrip("/") + "/"
            keys = self.s3_hook.list_keys(bucket_name=self.s3_bucket, prefix=prefix) or []
            files = {
                key[len(prefix) :]: key
                for key in keys
                if not key.endswith("/") and not posixpath.basename(key).startswith(("_", "."))
            }
        if not files:
            raise AirflowFailException(f"No files to ingest in s3://{self.s3_bucket}/{self.s3_prefix or self.s3_keys}")
        if len(files) > MAX_FILES_PER_BATCH:
            raise AirflowFailException(f"{len(files)} files exceed the {MAX_FILES_PER_BATCH} files of one batch")
        for key in files.values():
            size = self.s3_hook.head_object(key, self.s3_bucket)["ContentLength"]
            if size > MAX_FILE_BYTES:
                raise AirflowFailException(
                    f"s3://{self.s3_bucket}/{key} has {size} bytes, over the 256 MB upload limit"
                )
        return files

    def _find_batches(self, external_id: str) -> dict[str, dict[str, Any]]:
        """This dataset's batches with the identity (Catalog tags cannot be filtered server-side)."""
        return {
            batch_id: {**doc, "id": batch_id}
            for batch_id, doc in self.hook.find_batches(dataSet=self.dataset_id).items()
            if doc.get("externalId") == external_id
        }

    def _create_batch(
        self, external_id: str, tags: dict[str, list[str]], predecessors: list[str], known: set[str]
    ) -> str:
        body: dict[str, Any] = {
            "datasetId": self.dataset_id,
            "inputFormat": {"format": self.file_format},
            "externalId": external_id,
            "tags": tags,
            "enableErrorDiagnostics": True,
            "partialIngestionPercentage": self.partial_ingestion_percentage,
        }
        if predecessors:
            body["replay"] = {"predecessors": [f"${p}" for p in predecessors], "reason": "replace"}
        try:
            batch_id = self.hook.create_batch(body)["id"]
        except (AEPApiError, requests.RequestException) as err:
            if isinstance(err, AEPApiError) and err.status < 500:
                raise
            # The create may have reached AEP: adopt what it created, never send it again.
            created = plan_batch({i: d for i, d in self._find_batches(external_id).items() if i not in known})
            if created.action != "resume":
                raise
            self.log.warning(
                "Create of batch %s failed (%s) but AEP created %s: using it", external_id, err, created.batch_id
            )
            return created.batch_id
        self.log.info("Created batch %s (%s), replacing %s", batch_id, external_id, predecessors or "nothing")
        return batch_id

    def _upload(self, state: TaskState, batch_id: str, files: dict[str, str], uploaded: list[str]) -> None:
        for name, key in sorted(files.items()):
            if name in uploaded:
                continue
            data = self.s3_hook.get_key(key, self.s3_bucket).get()["Body"].read()
            self.hook.upload_file(batch_id, self.dataset_id, name, data)
            uploaded.append(name)
            state.set("uploaded_files", uploaded)
            self.log.info(
                "Uploaded s3://%s/%s to batch %s as %s (%s bytes)", self.s3_bucket, key, batch_id, name, len(data)
            )
