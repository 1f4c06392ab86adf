"""
Operators for Adobe Experience Platform.

Every operator is safe to retry and to rerun: resources are found by deterministic name before
anything is created, creates are never retried blindly, and the id of a long-running AEP job is
kept in ``task_state_store`` before polling so that a retry reconnects to the job it started while
that job is still in flight. A finished job is never reused: a cleared task runs again.
Waiting is a deferral to a trigger, or (``deferrable=False``) a poll with the same status
classification and the same deadline.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import requests
from airflow.configuration import conf
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from aep_hooks.exceptions import AEPApiError, AEPTerminalStateError
from aep_hooks.hooks import AEPHook, AEPQueryServiceHook
from aep_hooks.links import AEPAudienceLink, AEPBaseLink, AEPBatchLink, AEPDatasetLink, AEPFlowRunLink, AEPQueryLink
from aep_hooks.triggers import (
    AEPJobTrigger,
    BatchStatusTrigger,
    FlowRunTrigger,
    QueryStatusTrigger,
    SegmentJobTrigger,
    classify_batch,
    classify_query,
    classify_run,
    classify_segment_job,
    poll_waits,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
DATASET_EXPORT_SOURCE_SPEC = "23598e46-f560-407b-88d5-ea6207e49db0"
PROFILE_SOURCE_SPEC = "8a9c3494-9708-43d7-ae3f-cda01e5030e1"
S3_DESTINATION_SPEC = "4fce964d-3f37-408f-9778-e597338a21ee"
S3_DATASET_EXPORT_FLOW_SPEC = "269ba276-16fc-47db-92b0-c1049a3c131f"
#: 2100-01-01T00:00:00Z: flows are parked in the far future and driven by ad-hoc runs only.
FAR_FUTURE_EPOCH_S = 4102444800
MAX_FILES_PER_BATCH = 1500
MAX_FILE_BYTES = 256 * 1024 * 1024
_XDM_FORMATS = {"date-time": ("string", "date-time"), "date": ("string", "date")}
_EXPORT_TIME = re.compile(r"exportTime=(\d{12}|\d{14})/")


def _load_json(value: Any) -> Any:
    """A template field that may hold a rendered ``.json`` file (a string) or a Python value."""
    return json.loads(value) if isinstance(value, str) else value


def _task_state(context: Context) -> Any:
    """``context["task_state_store"]`` (Airflow 3.3), or None where it does not exist."""
    return context.get("task_state_store")


class AEPBaseOperator(BaseOperator):
    """
    Arguments and waiting logic shared by the AEP operators.

    :param aep_conn_id: the ``aep`` connection.
    :param sandbox: sandbox to work in (default: the connection's).
    :param deferrable: wait in the triggerer instead of polling in the worker.
    :param poll_interval: seconds between status checks.
    :param timeout: how long to wait for an AEP job before the task fails (and may be retried).
    """

    ui_color = "#fa0f00"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        aep_conn_id: str = "aep_default",
        sandbox: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: timedelta = timedelta(hours=2),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aep_conn_id = aep_conn_id
        self.sandbox = sandbox
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout

    @cached_property
    def hook(self) -> AEPHook:
        return AEPHook(self.aep_conn_id, sandbox=self.sandbox)

    def persist_link(self, context: Context, link: type[AEPBaseLink], resource_id: str) -> None:
        link.persist(context, org_id=self.hook.org_id, sandbox=self.hook.sandbox, resource_id=resource_id)

    def wait_for(
        self,
        context: Context,
        trigger_class: type[AEPJobTrigger],
        resource_id: str,
        fetch: Callable[[str], dict],
        method_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """
        Wait for an AEP job to end, then hand over to ``execute_complete``.

        Deferring hands the job to the trigger; the sync path polls with the trigger's own
        classification and error extraction, a real sleep and the same deadline.

        :param context: the task context.
        :param trigger_class: trigger that watches this kind of job.
        :param resource_id: the job's id.
        :param fetch: reads the job document (sync path).
        :param method_kwargs: extra JSON arguments for ``execute_complete``.
        """
        trigger = trigger_class(
            resource_id,
            aep_conn_id=self.aep_conn_id,
            poll_interval=self.poll_interval,
            end_time=time.time() + self.timeout.total_seconds(),
            sandbox=self.sandbox,
        )
        if self.deferrable:
            state = _task_state(context)
            if method_kwargs and state is not None:
                state.set("defer_kwargs", method_kwargs)
            self.defer(trigger=trigger, method_name="execute_complete", kwargs=method_kwargs, timeout=self.timeout)
        waits = poll_waits(self.poll_interval)
        while True:
            doc = fetch(resource_id)
            status, state = trigger.classify(doc)
            if status != "running":
                event = {"status": status, "id": resource_id, "state": state, "errors": trigger.errors(doc)}
                break
            if time.time() >= trigger.end_time:
                event = {"status": "timeout", "id": resource_id, "state": state, "errors": []}
                break
            wait = min(next(waits), trigger.end_time - time.time())
            self.log.info("AEP %s %s in state %s, sleeping %s s", trigger.kind, resource_id, state, wait)
            time.sleep(wait)
        return self.execute_complete(context, event, **(method_kwargs or {}))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after deferral with the ``defer`` kwargs, which ``dag.test()`` (3.3) replaces by the event."""
        state = _task_state(context)
        if next_kwargs and "event" in next_kwargs and state is not None:
            next_kwargs = {**(state.get("defer_kwargs") or {}), **next_kwargs}
        return super().resume_execution(next_method, next_kwargs, context)

    def check_event(self, kind: str, event: dict[str, Any]) -> str:
        """
        Raise unless the job ended well; return its id.

        A failed job fails the task without retries (AEP's errors are in the message); a job still
        running at the deadline fails the try, and the retry reconnects to it.

        :param kind: what the job is, for messages.
        :param event: a trigger event, or the same shape built by the sync path.
        """
        self.log.info("AEP %s %s ended: %s (%s)", kind, event["id"], event["status"], event.get("state"))
        if event["status"] == "success":
            return event["id"]
        if event["status"] == "timeout":
            raise AirflowException(
                f"AEP {kind} {event['id']} still in state {event.get('state')} at the deadline ({self.timeout})"
            )
        if event["status"] == "error" and event.get("state") is None:
            # The trigger could not read the job (an API error outlasting the hook's retries), which
            # says nothing of the job itself: a task retry reconnects to it from the task state store.
            raise AirflowException(f"AEP {kind} {event['id']} could not be read: {event.get('message')}")
        error = AEPTerminalStateError(kind, event["id"], event.get("state") or "unknown", event.get("errors"))
        raise AirflowFailException(str(error)) from error

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError


# --------------------------------------------------------------------------- XDM and datasets


class AEPEnsureDatasetOperator(AEPBaseOperator):
    """
    Get or create a dataset and its XDM resources by deterministic name; a second run creates nothing.

    The spec (a dict, or a ``.json`` template)::

        {"dataset": "propensity_scores",
         "schema": {"title": "Propensity scores",
                    "class": "https://ns.adobe.com/xdm/context/profile",
                    "field_groups": ["<standard field group $id>", ...],
                    "tenant_field_group": {"title": "Propensity fields",
                                           "fields": {"userid": "string", "propensity": "number"}}},
         "identity": {"field": "userid", "namespace": "ECID"},
         "profile_enabled": true}

    Creates the tenant field group, the schema, the primary identity descriptor, the ``union`` tag and
    the dataset when missing, enables Profile on the dataset, then validates the schema (one primary
    identity, the union tag) and reads the dataset tags back.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/xdm/api/getting-started.html

    :param spec: the dataset spec, or the path of a ``.json`` template holding it.
    :return: ``{"dataset_id", "table_name", "schema_id", "tenant_id"}``.
    """

    template_fields: Sequence[str] = ("spec",)
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"spec": "json"}
    operator_extra_links = (AEPDatasetLink(),)

    def __init__(self, *, spec: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def execute(self, context: Context) -> dict[str, str]:
        spec = _load_json(self.spec)
        tenant_id = self.hook.get_tenant_id()
        schema_spec = spec["schema"]
        field_group_id = self._ensure_field_group(schema_spec, tenant_id)
        schema = self._ensure_schema(schema_spec, field_group_id)
        identity_path = f"/_{tenant_id}/{spec['identity']['field']}"
        self._ensure_identity(schema["$id"], identity_path, spec["identity"]["namespace"])
        if spec.get("profile_enabled"):
            self._ensure_union(schema)
        self._validate_schema(schema["$id"], identity_path, bool(spec.get("profile_enabled")))
        dataset = self._ensure_dataset(spec["dataset"], schema["$id"], bool(spec.get("profile_enabled")))
        self.persist_link(context, AEPDatasetLink, dataset["id"])
        return {
            "dataset_id": dataset["id"],
            "table_name": dataset["tags"]["adobe/pqs/table"][0],
            "schema_id": schema["$id"],
            "tenant_id": tenant_id,
        }

    def _ensure_field_group(self, schema_spec: dict[str, Any], tenant_id: str) -> str:
        group = schema_spec["tenant_field_group"]
        existing = self.hook.find_schema_resource("fieldgroups", group["title"])
        if existing:
            return existing["$id"]
        properties = {}
        for field, xdm_type in group["fields"].items():
            json_type, fmt = _XDM_FORMATS.get(xdm_type, (xdm_type, None))
            properties[field] = {"type": json_type, **({"format": fmt} if fmt else {})}
        created = self.hook.create_schema_resource(
            "fieldgroups",
            {
                "title": group["title"],
                "type": "object",
                "meta:intendedToExtend": [schema_spec["class"]],
                "allOf": [{"$ref": "#/definitions/customFields"}],
                "definitions": {
                    "customFields": {
                        "type": "object",
                        "properties": {f"_{tenant_id}": {"type": "object", "properties": properties}},
                    }
                },
            },
        )
        self.log.info("Created field group %s (%s)", group["title"], created["$id"])
        return created["$id"]

    def _ensure_schema(self, schema_spec: dict[str, Any], field_group_id: str) -> dict[str, Any]:
        existing = self.hook.find_schema_resource("schemas", schema_spec["title"])
        if existing:
            return existing
        refs = [schema_spec["class"], *schema_spec.get("field_groups", []), field_group_id]
        created = self.hook.create_schema_resource(
            "schemas",
            {"title": schema_spec["title"], "type": "object", "allOf": [{"$ref": ref} for ref in refs]},
        )
        self.log.info("Created schema %s (%s)", schema_spec["title"], created["$id"])
        return created

    def _primary_identities(self, schema_id: str) -> list[dict[str, Any]]:
        return [
            d
            for d in self.hook.find_descriptors(schema_id)
            if d.get("@type") == "xdm:descriptorIdentity" and d.get("xdm:isPrimary")
        ]

    def _ensure_identity(self, schema_id: str, path: str, namespace: str) -> None:
        if any(d.get("xdm:sourceProperty") == path for d in self._primary_identities(schema_id)):
            return
        created = self.hook.create_descriptor(
            {
                "@type": "xdm:descriptorIdentity",
                "xdm:sourceSchema": schema_id,
                "xdm:sourceVersion": 1,
                "xdm:sourceProperty": path,
                "xdm:namespace": namespace,
                "xdm:property": "xdm:code",
                "xdm:isPrimary": True,
            }
        )
        self.log.info("Created primary identity %s (%s) on %s: %s", path, namespace, schema_id, created.get("@id"))

    def _ensure_union(self, schema: dict[str, Any]) -> None:
        if "union" in self.hook.get_schema(schema["$id"]).get("meta:immutableTags", []):
            return
        self.hook.patch_schema(schema["meta:altId"], [{"op": "add", "path": "/meta:immutableTags", "value": ["union"]}])
        self.log.info("Tagged schema %s with union (Profile)", schema["$id"])

    def _validate_schema(self, schema_id: str, identity_path: str, profile_enabled: bool) -> None:
        identities = self._primary_identities(schema_id)
        paths = [d.get("xdm:sourceProperty") for d in identities]
        if paths != [identity_path]:
            raise AirflowFailException(
                f"Schema {schema_id} must have exactly one primary identity on {identity_path}, has {paths}"
            )
        if profile_enabled and "union" not in self.hook.get_schema(schema_id).get("meta:immutableTags", []):
            raise AirflowFailException(f"Schema {schema_id} has no union tag; it cannot feed Profile")

    def _ensure_dataset(self, name: str, schema_id: str, profile_enabled: bool) -> dict[str, Any]:
        found = [doc for doc in self.hook.find_datasets(name=name).values() if doc.get("name") == name]
        if len(found) > 1:
            raise AirflowFailException(f"{len(found)} datasets are named {name}: {[d['id'] for d in found]}")
        if found:
            dataset = found[0]
        else:
            dataset_id = self.hook.create_dataset(
                {
                    "name": name,
                    "schemaRef": {"id": schema_id, "contentType": "application/vnd.adobe.xed+json;version=1"},
                    "fileDescription": {"persisted": True, "containerFormat": "parquet", "format": "parquet"},
                }
            )
            self.log.info("Created dataset %s (%s)", name, dataset_id)
            dataset = self.hook.get_dataset(dataset_id)
        if dataset["schemaRef"]["id"] != schema_id:
            raise AirflowFailException(
                f"Dataset {name} ({dataset['id']}) uses schema {dataset['schemaRef']['id']}, not {schema_id}"
            )
        if profile_enabled and not _profile_enabled(dataset):
            self.hook.patch_dataset(
                dataset["id"],
                [
                    {"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]},
                    {"op": "add", "path": "/tags/unifiedIdentity", "value": ["enabled:true"]},
                ],
            )
            dataset = self.hook.get_dataset(dataset["id"])
            if not _profile_enabled(dataset):
                raise AirflowFailException(
                    f"Dataset {dataset['id']} tags do not show Profile enabled: {dataset.get('tags')}"
                )
            self.log.info("Enabled Profile on dataset %s", dataset["id"])
        return dataset


def _profile_enabled(dataset: dict[str, Any]) -> bool:
    tags = dataset.get("tags") or {}
    return "enabled:true" in tags.get("unifiedProfile", []) and "enabled:true" in tags.get("unifiedIdentity", [])


# --------------------------------------------------------------------------- Query Service


class AEPQueryOperator(AEPBaseOperator):
    """
    Run Query Service SQL from a templated file or string.

    ``mode="async"`` submits ``POST /queries`` (CTAS when ``ctas_table`` is set, or the SQL's own
    CTAS / INSERT INTO) and waits for a terminal state; FAILED, KILLED and TIMEOUT fail the task with
    AEP's errors. After a CTAS or INSERT INTO the output dataset must exist and the query must have
    written rows. ``mode="interactive"`` runs the SQL over the PostgreSQL wire and returns its
    (small) result.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/query/api/queries.html

    The SQL template sees, besides Airflow's context, ``dialect`` (``spark`` on AEP, ``postgres`` on
    the emulator, from the connection) and ``tenant`` (the org's tenant id), so one template renders
    for both Query Service back ends; ``sql_vars`` are merged into ``params`` (values known only at
    run time, such as upstream outputs).

    :param sql: the SQL, or the path of a ``.sql`` template.
    :param sql_vars: extra ``params`` for the template (a dict, or an upstream task's output).
    :param query_parameters: values for ``$name`` placeholders (async only).
    :param ctas_table: wrap the SELECT in a CTAS creating this table (async only).
    :param db_name: Query Service database (default ``{sandbox}:all``).
    :param mode: ``"async"`` or ``"interactive"``.
    :param allow_empty: accept a CTAS / INSERT INTO that wrote no rows.
    :param max_rows: interactive only: fail when the result has more rows than this.
    :return: async ``{"query_id", "state", "rowCount", "dataset_id"}``; interactive ``{"rows", "rowCount"}``.
    """

    template_fields: Sequence[str] = ("sql_vars", "sql", "query_parameters", "ctas_table", "db_name")
    template_ext: Sequence[str] = (".sql", ".json")
    template_fields_renderers = {"sql": "sql", "query_parameters": "json", "sql_vars": "json"}
    operator_extra_links = (AEPQueryLink(), AEPDatasetLink())

    def __init__(
        self,
        *,
        sql: str,
        sql_vars: dict[str, Any] | Any = None,
        query_parameters: dict[str, Any] | str | None = None,
        ctas_table: str | None = None,
        db_name: str | None = None,
        mode: str = "async",
        allow_empty: bool = False,
        max_rows: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("async", "interactive"):
            raise ValueError(f"mode must be 'async' or 'interactive', not {mode!r}")
        if mode == "interactive" and (ctas_table or query_parameters):
            raise ValueError("ctas_table and query_parameters need mode='async'")
        self.sql = sql
        self.sql_vars = sql_vars
        self.query_parameters = query_parameters
        self.ctas_table = ctas_table
        self.db_name = db_name
        self.mode = mode
        self.allow_empty = allow_empty
        self.max_rows = max_rows
        self.query_id: str | None = None

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render ``sql_vars`` first, then the other fields with it in ``params``, and ``dialect`` and ``tenant``."""
        jinja_env = jinja_env or self.get_template_env()
        self._do_render_template_fields(self, ("sql_vars",), context, jinja_env, set())
        sql_context = {
            **context,
            "dialect": self.hook.settings.qs_dialect,
            "tenant": self.hook.get_tenant_id(),
            "params": {**(context.get("params") or {}), **(self.sql_vars or {})},
        }
        others = [f for f in self.template_fields if f != "sql_vars"]
        self._do_render_template_fields(self, others, sql_context, jinja_env, set())

    def execute(self, context: Context) -> dict[str, Any]:
        if self.mode == "interactive":
            return self._run_interactive()
        state = _task_state(context)
        query_id = state.get("query_id") if state is not None else None
        if query_id and classify_query(self.hook.get_query(query_id))[0] == "running":
            self.log.info("Reconnecting to query %s submitted by an earlier try", query_id)
        else:
            query_id = self._submit(context)
            if state is not None:
                state.set("query_id", query_id)
        self.query_id = query_id
        self.persist_link(context, AEPQueryLink, query_id)
        return self.wait_for(context, QueryStatusTrigger, query_id, self.hook.get_query)

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        query_id = self.check_event("query", event)
        return self._verify_output(context, self.hook.get_query(query_id))

    def on_kill(self) -> None:
        if self.query_id:
            self.log.info("Cancelling query %s", self.query_id)
            self.hook.cancel_query(self.query_id)

    def _submit(self, context: Context) -> str:
        body: dict[str, Any] = {
            "dbName": self.db_name or f"{self.hook.sandbox}:all",
            "sql": self.sql,
            "name": f"{context['dag'].dag_id}.{self.task_id}",
        }
        if self.query_parameters:
            body["queryParameters"] = _load_json(self.query_parameters)
        if self.ctas_table:
            body["ctasParameters"] = {"datasetName": self.ctas_table, "description": body["name"]}
        query = self.hook.create_query(body)
        self.log.info("Submitted query %s (%s)", query["id"], body["name"])
        return query["id"]

    def _verify_output(self, context: Context, query: dict[str, Any]) -> dict[str, Any]:
        result = {"query_id": query["id"], "state": query["state"], "rowCount": query.get("rowCount", 0)}
        writes = self.ctas_table or query.get("isCTAS") or query.get("isInsertInto")
        if not writes:
            return result
        dataset_id = ((query.get("_links") or {}).get("created_dataset") or {}).get("id")
        if not dataset_id and self.ctas_table:
            named = [
                i for i, d in self.hook.find_datasets(name=self.ctas_table).items() if d.get("name") == self.ctas_table
            ]
            dataset_id = named[0] if named else None
        if dataset_id:
            dataset_id = self.hook.get_dataset(dataset_id)["id"]
        if query.get("isCTAS") or self.ctas_table:
            if not dataset_id:
                raise AirflowFailException(f"Query {query['id']} succeeded but its CTAS dataset does not exist")
            result["dataset_id"] = dataset_id
            self.persist_link(context, AEPDatasetLink, dataset_id)
        if not result["rowCount"] and not self.allow_empty:
            raise AirflowFailException(f"Query {query['id']} succeeded but wrote no rows")
        return result

    def _run_interactive(self) -> dict[str, Any]:
        rows = AEPQueryServiceHook(aep_conn_id=self.aep_conn_id, sandbox=self.sandbox).get_records(self.sql) or []
        if len(rows) > self.max_rows:
            raise AirflowFailException(
                f"Interactive query returned {len(rows)} rows (max_rows={self.max_rows}); use mode='async' with a CTAS"
            )
        return {"rows": json.loads(json.dumps([list(r) for r in rows], default=str)), "rowCount": len(rows)}


# --------------------------------------------------------------------------- Batch ingestion


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
        (doc for doc in batches.values() if classify_batch(doc)[0] == "running"),
        key=lambda doc: (doc["id"] == resume_id, doc.get("created", 0)),
        reverse=True,
    )
    if in_flight:
        batch = in_flight[0]
        return BatchPlan("resume" if batch.get("status") == "loading" else "wait", batch["id"], [])
    active = sorted(
        (doc for doc in batches.values() if classify_batch(doc)[0] == "success"), key=lambda doc: doc.get("created", 0)
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
        state = _task_state(context)
        resume_id = state.get("batch_id") if state is not None else None
        batches = self._find_batches(external_id)
        if resume_id and resume_id not in batches:
            batches[resume_id] = self.hook.get_batch(resume_id)
        plan = plan_batch(batches, resume_id)
        uploaded: list[str] = []
        if plan.action == "create":
            batch_id = self._create_batch(external_id, tags, plan.predecessors, set(batches))
            if state is not None:
                state.set("batch_id", batch_id)
                state.set("uploaded_files", [])
        else:
            batch_id = plan.batch_id
            self.log.info(
                "Batch %s of %s is %s: %s it", batch_id, external_id, batches[batch_id]["status"], plan.action
            )
            if state is not None and batch_id == resume_id:
                uploaded = state.get("uploaded_files") or []
        self.persist_link(context, AEPBatchLink, batch_id)
        self.persist_link(context, AEPDatasetLink, self.dataset_id)
        if plan.action != "wait":
            self._upload(state, batch_id, files, uploaded)
            self.hook.complete_batch(batch_id)
            self.log.info("Completed batch %s with %s files", batch_id, len(files))
        return self.wait_for(context, BatchStatusTrigger, batch_id, self.hook.get_batch)

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        batch = self.hook.get_batch(self.check_event("batch", event))
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

    def _upload(self, state: Any, batch_id: str, files: dict[str, str], uploaded: list[str]) -> None:
        for name, key in sorted(files.items()):
            if name in uploaded:
                continue
            data = self.s3_hook.get_key(key, self.s3_bucket).get()["Body"].read()
            self.hook.upload_file(batch_id, self.dataset_id, name, data)
            uploaded.append(name)
            if state is not None:
                state.set("uploaded_files", uploaded)
            self.log.info(
                "Uploaded s3://%s/%s to batch %s as %s (%s bytes)", self.s3_bucket, key, batch_id, name, len(data)
            )


# --------------------------------------------------------------------------- Flow Service


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
        return self.wait_for(
            context,
            FlowRunTrigger,
            pending[0],
            self.hook.get_run,
            method_kwargs={"run_ids": run_ids},
        )

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> Any:
        self.check_event("flow run", event)
        run_ids = kwargs["run_ids"]
        runs = {r: self.hook.get_run(r) for r in run_ids}
        pending = [r for r, run in runs.items() if classify_run(run)[0] == "running"]
        if pending:
            return self.wait_for_runs(context, run_ids, pending)
        # Every run must have succeeded, not only the one the last wait watched.
        for run_id, run in runs.items():
            status, state = classify_run(run)
            if status != "success":
                self.check_event(
                    "flow run", {"status": status, "id": run_id, "state": state, "errors": FlowRunTrigger.errors(run)}
                )
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
        state = _task_state(context)
        run_ids = (state.get("run_ids") if state is not None else None) or []
        if run_ids and any(classify_run(self.hook.get_run(r))[0] == "running" for r in run_ids):
            self.log.info("Reconnecting to flow runs %s started by an earlier try", run_ids)
            return run_ids
        try:
            run_ids = start()
        except AEPApiError as err:
            if err.status != 400 or "already" not in str(err.message).lower():
                raise
            run_ids = [run["id"] for run in self.hook.find_runs(flow_id) if classify_run(run)[0] == "running"]
            if not run_ids:
                raise
            self.log.warning("AEP says a run is already going on for flow %s: adopting %s", flow_id, run_ids)
        if state is not None:
            state.set("run_ids", run_ids)
        return run_ids


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


# --------------------------------------------------------------------------- Segmentation and activation


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
        segment_ids = {a["name"]: self._upsert(a) for a in _load_json(self.audiences)}
        self.persist_link(context, AEPAudienceLink, next(iter(segment_ids.values())))
        state = _task_state(context)
        job_id = state.get("segment_job_id") if state is not None else None
        if job_id and classify_segment_job(self.hook.get_segment_job(job_id))[0] == "running":
            self.log.info("Reconnecting to segment job %s started by an earlier try", job_id)
        else:
            job_id = self.hook.create_segment_job(list(segment_ids.values()))["id"]
            self.log.info("Started segment job %s for %s", job_id, sorted(segment_ids))
            if state is not None:
                state.set("segment_job_id", job_id)
        self.job_id = job_id
        return self.wait_for(
            context,
            SegmentJobTrigger,
            job_id,
            self.hook.get_segment_job,
            method_kwargs={"segment_ids": segment_ids},
        )

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
        job = self.hook.get_segment_job(self.check_event("segment job", event))
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
        audience_ids = _load_json(self.audience_ids)
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
                for s in self.hook.iter_flow_service("/flowSpecs")
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
