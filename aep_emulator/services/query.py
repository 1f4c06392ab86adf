"""Query Service REST API (``/data/foundation/query``): connection parameters, queries, templates.

Queries run in the background against PostgreSQL, in the sandbox's schema and in one transaction,
moving ``SUBMITTED -> IN_PROGRESS -> SUCCESS | FAILED | KILLED | TIMEOUT``. A CTAS registers a
Catalog dataset (with an ad-hoc schema) named after its table; DROP TABLE removes it again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import psycopg
from fastapi import APIRouter, Body, Depends, Request
from psycopg import errors as pg_errors

from aep_emulator import qs_exec, qs_sql
from aep_emulator.db import quote_ident, sandbox_schema
from aep_emulator.errors import query_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.services import catalog, identity, segmentation
from aep_emulator.tables import sanitize_table_name

log = logging.getLogger(__name__)

router = APIRouter(prefix="/data/foundation/query")

QUERY_KIND = "query"
TEMPLATE_KIND = "queryTemplate"
TERMINAL_STATES = frozenset({"SUCCESS", "FAILED", "KILLED", "TIMEOUT"})
# Query-document key of the soft-delete flag; stripped from responses (AEP only hides the query).
_SOFT_DELETED = "_softDeleted"
_QUERY_FIELDS = (
    "dbName",
    "sql",
    "templateId",
    "queryParameters",
    "name",
    "description",
    "ctasParameters",
    "insertIntoParameters",
)
# SQLSTATE classes that are the caller's fault (syntax, data, integrity, unsupported feature).
_USER_ERROR_CLASSES = frozenset({"0A", "21", "22", "23", "42", "44"})
_FILTER_OPERATORS = (">=", "<=", "==", "!=", ">", "<", "~")
_MAX_PAGE = 1000


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(code: str, message: str) -> dict:
    error_type = "USER_ERROR" if code[:2] in _USER_ERROR_CLASSES else "SYSTEM_ERROR"
    return {"code": code, "message": message, "errorType": error_type}


def _public(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != _SOFT_DELETED}


# --- connection parameters ---------------------------------------------------------------------


@router.get("/connection_parameters")
def connection_parameters(
    request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """PostgreSQL connection settings for the interactive endpoint (:mod:`aep_emulator.qs_proxy`).

    The emulator does not compress tokens: ``compressedToken`` is the token itself, which the proxy
    accepts as the password like the plain one. AEP answers ``websocketHost`` although its spec spells
    it ``websoketHost`` (docs/aep-behaviour.md#query-service); the emulator serves no websocket, so it names the host.
    """
    token = request.headers["authorization"].partition(" ")[2].strip()
    # The host the caller reached the REST API on also serves the wire endpoint (the bind address,
    # e.g. 0.0.0.0 in a container, is not one a client can connect to).
    host = request.url.hostname
    return {
        "username": ctx.org_id,
        "dbName": f"{ctx.sandbox}:all",
        "host": host,
        "port": emu.settings.qs_port,
        "version": 1,
        "token": token,
        "compressedToken": token,
        "websocketHost": host,
    }


# --- running queries ---------------------------------------------------------------------------


class ActiveRuns:
    """Running queries' PostgreSQL backends and pending cancel requests, so a cancel can reach them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend_pids: dict[str, int] = {}
        self._cancelled: set[str] = set()

    def started(self, query_id: str, backend_pid: int) -> None:
        with self._lock:
            self._backend_pids[query_id] = backend_pid

    def finished(self, query_id: str) -> None:
        with self._lock:
            self._backend_pids.pop(query_id, None)
            self._cancelled.discard(query_id)

    def request_cancel(self, query_id: str) -> int | None:
        """Flag the query as cancelled; return its backend pid when a statement may be running."""
        with self._lock:
            self._cancelled.add(query_id)
            return self._backend_pids.get(query_id)

    def is_cancelled(self, query_id: str) -> bool:
        with self._lock:
            return query_id in self._cancelled


_active_runs = ActiveRuns()


BATCH_QUERY_WORK_MEM = "64MB"


def _execute(emu: Emulator, sandbox: str, doc: dict) -> qs_exec.Outcome:
    """Run the query's statements in one transaction, as the sandbox's role.

    The datasets of the tables a DROP TABLE removed are deleted, and those of CTAS tables registered,
    after the commit (by the emulator's own role: the sandbox's cannot touch Catalog's records).
    """
    schema = sandbox_schema(sandbox)
    # Batch queries aggregate whole datasets: give their sorts and hashes room (PostgreSQL's 4 MB
    # default spills a million-row featurization to disk).
    with qs_exec.connect(emu, sandbox, work_mem=BATCH_QUERY_WORK_MEM) as conn:
        _active_runs.started(doc["id"], conn.info.backend_pid)
        executor = qs_exec.Executor(emu, conn, sandbox, schema, cancelled=lambda: _active_runs.is_cancelled(doc["id"]))
        return executor.run(doc["effectiveSQL"])


def _referenced_datasets(emu: Emulator, sandbox: str, sql: str) -> list[dict]:
    """Links to the datasets whose tables the SQL names (matched as words: good enough for links)."""
    words = set(re.findall(r"[a-z_][a-z0-9_$]*", sql.lower()))
    return [
        {"id": dataset["id"], "href": f"{emu.settings.base_url}/data/foundation/catalog/dataSets/{dataset['id']}"}
        for dataset in emu.store.list(sandbox, catalog.DATASET_KIND)
        if catalog.dataset_table(dataset).lower() in words
    ]


def _start(emu: Emulator, sandbox: str, query_id: str) -> dict | None:
    """Move a SUBMITTED query to IN_PROGRESS, resolving its referenced datasets as AEP does then;
    None when it was cancelled (or deleted) meanwhile."""
    query = emu.store.get(sandbox, QUERY_KIND, query_id)
    if query is None:
        return None
    referenced = _referenced_datasets(emu, sandbox, query["effectiveSQL"])

    def to_in_progress(doc: dict) -> dict:
        if doc["state"] == "SUBMITTED":
            doc.update(
                state="IN_PROGRESS", updated=_iso_now(), _links={**doc["_links"], "referenced_datasets": referenced}
            )
        return doc

    doc = emu.store.mutate(sandbox, QUERY_KIND, query_id, to_in_progress)
    return doc if doc is not None and doc["state"] == "IN_PROGRESS" else None


def _finish(emu: Emulator, sandbox: str, query_id: str, state: str, started: float, **fields: Any) -> None:
    """Record the query's terminal state (at most once)."""

    def to_terminal(doc: dict) -> dict:
        if doc["state"] in TERMINAL_STATES:
            return doc
        doc.update(fields, state=state, updated=_iso_now(), elapsedTime=int((time.monotonic() - started) * 1000))
        return doc

    emu.store.mutate(sandbox, QUERY_KIND, query_id, to_terminal)
    log.info("query %s in sandbox %s ended %s", query_id, sandbox, state)


def run_query(emu: Emulator, sandbox: str, query_id: str) -> None:
    """Background task: run one submitted query to a terminal state.

    :param emu: the running emulator.
    :param sandbox: the query's sandbox.
    :param query_id: the query to run.
    """
    time.sleep(emu.settings.state_latency_s)
    doc = _start(emu, sandbox, query_id)
    if doc is None:
        return
    started = time.monotonic()
    if emu.faults.take_forced_failure("query"):
        message = "Batch query execution gets : [Analysis error encountered. Reason: [Injected failure]]"
        _finish(emu, sandbox, query_id, "FAILED", started, errors=[_error("58000", message)])
        return
    try:
        outcome = _execute(emu, sandbox, doc)
    except (qs_exec.QueryKilled, pg_errors.QueryCanceled) as exc:
        if _active_runs.is_cancelled(query_id):
            _finish(emu, sandbox, query_id, "KILLED", started)
        else:  # statement_timeout fired: AEP's TIMEOUT state
            _finish(emu, sandbox, query_id, "TIMEOUT", started, errors=[_error("57014", str(exc))])
        return
    except qs_exec.QueryFailed as exc:
        _finish(emu, sandbox, query_id, "FAILED", started, errors=[_error(exc.code, str(exc))])
        return
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        _finish(emu, sandbox, query_id, "FAILED", started, errors=[_error(exc.sqlstate or "58000", message)])
        return
    except Exception as exc:
        # A query must end: AEP's system-error code, the traceback in the log.
        log.exception("query %s failed unexpectedly", query_id)
        _finish(emu, sandbox, query_id, "FAILED", started, errors=[_error("58000", f"System error: {exc}")])
        return
    finally:
        _active_runs.finished(query_id)
    try:
        created_link = qs_exec.record_catalog_effects(
            emu, sandbox, doc["id"], outcome, doc["request"].get("ctasParameters")
        )
    except Exception as exc:  # the query must still reach a terminal state; the cause is logged
        log.exception("query %s: registering its CTAS dataset failed", query_id)
        _finish(
            emu, sandbox, query_id, "FAILED", started, errors=[_error("58000", f"Dataset registration failed: {exc}")]
        )
        return
    links = dict(doc["_links"], created_dataset=created_link) if created_link else doc["_links"]
    _finish(emu, sandbox, query_id, "SUCCESS", started, rowCount=outcome.row_count, _links=links)


# --- queries -----------------------------------------------------------------------------------


def _resolve_sql(emu: Emulator, sandbox: str, body: dict) -> tuple[str, dict, str | None]:
    """``(sql, parameters, template name)`` of a query request (its own SQL or its template's)."""
    parameters = body.get("queryParameters") or {}
    if not isinstance(parameters, dict):
        raise query_error(400, "queryParameters must be an object of key/value pairs")
    if body.get("sql"):
        return body["sql"], parameters, None
    template_id = body.get("templateId")
    if not template_id:
        raise query_error(400, "Either sql or templateId must be provided")
    template = emu.store.get(sandbox, TEMPLATE_KIND, template_id)
    if template is None:
        raise query_error(400, f"Query template {template_id} not found")
    return template["sql"], {**(template.get("queryParameters") or {}), **parameters}, template["name"]


def _wrap_last_statement(sql: str, wrap: Callable[[str], str]) -> str:
    """Rewrite the last statement of ``sql`` (the SELECT that ``ctasParameters`` and co. target)."""
    try:
        statements = qs_sql.split_statements(sql)
    except qs_sql.ScriptError as exc:
        raise query_error(400, str(exc)) from None
    if not statements:
        raise query_error(400, "The SQL has no statement")
    return ";\n".join([*statements[:-1], wrap(statements[-1])])


def _effective_sql(emu: Emulator, sandbox: str, sql: str, body: dict) -> str:
    """The SQL to run: ``ctasParameters`` and ``insertIntoParameters`` wrap the last SELECT."""
    ctas = body.get("ctasParameters")
    insert = body.get("insertIntoParameters")
    if ctas and insert:
        raise query_error(400, "ctasParameters and insertIntoParameters cannot be combined")
    if ctas:
        if not ctas.get("datasetName"):
            raise query_error(400, "ctasParameters.datasetName is required")
        table = quote_ident(sanitize_table_name(ctas["datasetName"]))
        title = ctas.get("targetSchemaTitle")
        options = " WITH (schema='{}')".format(title.replace("'", "''")) if title else ""
        return _wrap_last_statement(sql, lambda select: f"CREATE TABLE {table}{options} AS ({select})")
    if insert:
        if not insert.get("datasetName"):
            raise query_error(400, "insertIntoParameters.datasetName is required")
        dataset = emu.store.find_by_name(sandbox, catalog.DATASET_KIND, insert["datasetName"])
        table = catalog.dataset_table(dataset) if dataset else sanitize_table_name(insert["datasetName"])
        return _wrap_last_statement(sql, lambda select: f"INSERT INTO {quote_ident(table)} {select}")
    return sql


def _links(emu: Emulator, query_id: str) -> dict:
    href = f"{emu.settings.base_url}/data/foundation/query/queries/{query_id}"
    return {
        "self": {"href": href, "method": "GET"},
        "soft_delete": {"href": href, "method": "PATCH", "body": '{ "op": "soft_delete"}'},
        "cancel": {"href": href, "method": "PATCH", "body": '{ "op": "cancel"}'},
    }


@router.post("/queries", status_code=202)
def create_query(body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    """Submit a query; it runs in the background."""
    db_name = body.get("dbName")
    if not isinstance(db_name, str) or db_name.partition(":")[0] != ctx.sandbox:
        raise query_error(400, f"dbName must be '{ctx.sandbox}:all' or '{ctx.sandbox}:<table>'")
    sql, parameters, template_name = _resolve_sql(emu, ctx.sandbox, body)
    try:
        sql = qs_sql.substitute_parameters(sql, parameters)
    except qs_sql.MissingQueryParameter as exc:
        raise query_error(400, f"No value was provided for the query parameter ${exc}") from None
    effective_sql = _effective_sql(emu, ctx.sandbox, sql, body)
    try:
        kinds = qs_exec.script_kinds(effective_sql)
    except qs_sql.ScriptError as exc:
        raise query_error(400, str(exc)) from None
    now = _iso_now()
    query_id = str(uuid.uuid4())
    doc = {
        "id": query_id,
        "request": {k: body[k] for k in _QUERY_FIELDS if k in body},
        "effectiveSQL": effective_sql,
        "isCTAS": "ctas" in kinds,
        "isInsertInto": "insert" in kinds,
        "state": "SUBMITTED",
        "rowCount": 0,
        "errors": [],
        "elapsedTime": 0,
        "created": now,
        "updated": now,
        "client": "API",
        "userId": f"{ctx.client_id}@techacct.adobe.com",
        "version": 1,
        "_links": _links(emu, query_id),
    }
    if template_name is not None:
        doc["templateName"] = template_name
    emu.store.insert(ctx.sandbox, QUERY_KIND, query_id, doc, name=body.get("name"))
    emu.submit(run_query, emu, ctx.sandbox, query_id)
    return doc


@router.get("/queries/{query_id}")
def get_query(query_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    doc = emu.store.get(ctx.sandbox, QUERY_KIND, query_id)
    if doc is None:
        raise query_error(404, f"Query {query_id} not found")
    return _public(doc)


@router.patch("/queries/{query_id}", status_code=202)
def patch_query(
    query_id: str, body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """``{"op": "cancel"}`` or ``{"op": "soft_delete"}``.

    A cancel is a request, as in AEP: a query whose last statement already finished still ends SUCCESS.
    """
    op = body.get("op")
    if op == "soft_delete":
        if emu.store.mutate(ctx.sandbox, QUERY_KIND, query_id, lambda doc: {**doc, _SOFT_DELETED: True}) is None:
            raise query_error(404, f"Query {query_id} not found")
        return {"message": "Query soft delete request received", "statusCode": 202}
    if op != "cancel":
        raise query_error(400, "op must be one of: cancel, soft_delete")

    def cancel(doc: dict) -> dict:
        if doc["state"] in TERMINAL_STATES:
            raise query_error(409, f"Query {query_id} has already ended in state {doc['state']}")
        if doc["state"] == "SUBMITTED":  # not picked up yet: it never starts
            doc.update(state="KILLED", updated=_iso_now())
        return doc

    doc = emu.store.mutate(ctx.sandbox, QUERY_KIND, query_id, cancel)
    if doc is None:
        raise query_error(404, f"Query {query_id} not found")
    if doc["state"] == "IN_PROGRESS":
        # The runner records KILLED once PostgreSQL has cancelled the statement (or between statements).
        backend_pid = _active_runs.request_cancel(query_id)
        if backend_pid is not None:
            with emu.db.connection() as conn:
                conn.execute("SELECT pg_cancel_backend(%s)", (backend_pid,))
    return {"message": "Query cancel request received", "statusCode": 202}


def _parse_filters(expression: str | None, allowed: dict[str, tuple[str, ...]]) -> list[tuple[str, str, str]]:
    """``property=a==1,b~x`` -> ``[(a, ==, 1), (b, ~, x)]``, checked against ``allowed`` operators."""
    filters = []
    for clause in filter(None, (expression or "").split(",")):
        for op in _FILTER_OPERATORS:
            name, sep, value = clause.partition(op)
            if sep and name.strip() and not any(o in name for o in _FILTER_OPERATORS):
                break
        else:
            raise query_error(400, f"Invalid property filter {clause!r}")
        name = name.strip()
        if op not in allowed.get(name, ()):
            raise query_error(400, f"Property filter {name}{op} is not supported")
        filters.append((name, op, value.strip()))
    return filters


def _matches(value: Any, op: str, wanted: str) -> bool:
    values = value if isinstance(value, list) else [value]
    if op == "==":
        return any(str(v) in wanted.split("||") for v in values)
    if op == "~":
        return any(wanted.lower() in str(v).lower() for v in values)
    if op == "!=":
        return all(str(v) != wanted for v in values)
    compare = {">": str.__gt__, "<": str.__lt__, ">=": str.__ge__, "<=": str.__le__}[op]
    return any(v is not None and compare(str(v), wanted) for v in values)


def _page(emu: Emulator, docs: list[dict], params: dict, path: str, items_key: str) -> dict:
    """One page of ``docs``: ``orderby`` (±created|updated), ``limit``, ``start`` timestamp cursor."""
    orderby = params.get("orderby") or "-created"
    order_field = orderby.lstrip("+- ")
    if order_field not in ("created", "updated"):
        raise query_error(400, "orderby must be one of: created, updated (prefixed with + or -)")
    descending = not orderby.startswith(("+", " "))
    try:
        limit = int(params.get("limit") or 20)
    except ValueError:
        raise query_error(400, "limit must be an integer") from None
    if not 1 <= limit <= _MAX_PAGE:
        raise query_error(400, f"limit must be between 1 and {_MAX_PAGE}")
    ordered = sorted(docs, key=lambda d: (d[order_field], d["id"]), reverse=descending)
    start = params.get("start")
    if start:
        ordered = [d for d in ordered if (d[order_field] < start if descending else d[order_field] > start)]
    page = ordered[:limit]
    body: dict[str, Any] = {
        items_key: page,
        "_page": {"orderby": orderby, "count": len(page)},
        "_links": {},
        "version": 1,
    }
    if page:
        body["_page"]["start"] = page[0][order_field]
    if params.get("property"):
        body["_page"]["property"] = params["property"]
    # No next link on the last page: aepp follows a repeated one forever (docs/aep-behaviour.md#query-service).
    if len(ordered) > limit:
        cursor = page[-1][order_field]
        body["_page"]["next"] = cursor
        query = {k: v for k, v in params.items() if k not in ("start", "orderby")}
        query.update(orderby=orderby, start=cursor)
        body["_links"]["next"] = {"href": f"{emu.settings.base_url}/data/foundation/query{path}?{urlencode(query)}"}
    return body


_QUERY_FILTERS = {
    "created": _FILTER_OPERATORS,
    "updated": _FILTER_OPERATORS,
    "state": _FILTER_OPERATORS,
    "id": _FILTER_OPERATORS,
    "referenced_datasets": ("==",),
    "userId": ("==",),
    "templateId": ("==",),
    "client": ("==",),
    "scheduleId": ("==",),
    "sql": ("~",),
    "templateName": ("~",),
}


def _query_property(doc: dict, name: str) -> Any:
    if name == "sql":
        return [doc["request"].get("sql"), doc.get("effectiveSQL")]
    if name == "templateId":
        return doc["request"].get("templateId")
    if name == "referenced_datasets":
        return [d["id"] for d in doc["_links"].get("referenced_datasets", [])]
    return doc.get(name)


@router.get("/queries")
def list_queries(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    params = dict(request.query_params)
    filters = _parse_filters(params.get("property"), _QUERY_FILTERS)
    include_soft_deleted = params.get("excludeSoftDeleted", "true").lower() == "false"
    docs = [
        _public(doc)
        for doc in emu.store.list(ctx.sandbox, QUERY_KIND)
        if (include_soft_deleted or not doc.get(_SOFT_DELETED))
        and all(_matches(_query_property(doc, name), op, value) for name, op, value in filters)
    ]
    return _page(emu, docs, params, "/queries", "queries")


# --- query templates ---------------------------------------------------------------------------

_TEMPLATE_FILTERS = {"name": ("~",), "userId": ("==",), "lastUpdatedBy": ("==",)}


def _template_body(body: dict) -> tuple[str, str, dict]:
    name, sql, parameters = body.get("name"), body.get("sql"), body.get("queryParameters") or {}
    if not isinstance(name, str) or not name or not isinstance(sql, str) or not sql:
        raise query_error(400, "A query template needs a name and sql")
    if not isinstance(parameters, dict):
        raise query_error(400, "queryParameters must be an object of key/value pairs")
    return name, sql, parameters


def _template_links(emu: Emulator, template_id: str) -> dict:
    href = f"{emu.settings.base_url}/data/foundation/query/query-templates/{template_id}"
    return {
        "self": {"href": href, "method": "GET"},
        "update": {"href": href, "method": "PUT", "body": '{"sql" : "new sql", "name" : "new name"}'},
        "delete": {"href": href, "method": "DELETE"},
    }


@router.post("/query-templates", status_code=202)
def create_template(
    body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    name, sql, parameters = _template_body(body)
    template_id = str(uuid.uuid4())
    user = f"{ctx.client_id}@techacct.adobe.com"
    now = _iso_now()
    doc = {
        "id": template_id,
        "name": name,
        "sql": sql,
        "queryParameters": parameters,
        "userId": user,
        "lastUpdatedBy": user,
        "created": now,
        "updated": now,
        "_links": _template_links(emu, template_id),
    }
    return emu.store.insert(ctx.sandbox, TEMPLATE_KIND, template_id, doc, name=name)


@router.get("/query-templates")
def list_templates(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    params = dict(request.query_params)
    filters = _parse_filters(params.get("property"), _TEMPLATE_FILTERS)
    docs = [
        doc
        for doc in emu.store.list(ctx.sandbox, TEMPLATE_KIND)
        if all(_matches(doc.get(name), op, value) for name, op, value in filters)
    ]
    return _page(emu, docs, params, "/query-templates", "templates")


@router.get("/query-templates/count")
def count_templates(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    filters = _parse_filters(request.query_params.get("property"), {"userId": ("==",)})
    docs = emu.store.list(ctx.sandbox, TEMPLATE_KIND)
    count = sum(all(_matches(doc.get(name), op, value) for name, op, value in filters) for doc in docs)
    return {"totalCount": count, "version": 1}


def _get_template(emu: Emulator, sandbox: str, template_id: str) -> dict:
    doc = emu.store.get(sandbox, TEMPLATE_KIND, template_id)
    if doc is None:
        raise query_error(404, f"Query template {template_id} not found")
    return doc


@router.get("/query-templates/{template_id}")
def get_template(template_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return _get_template(emu, ctx.sandbox, template_id)


@router.put("/query-templates/{template_id}", status_code=202)
def update_template(
    template_id: str,
    body: dict = Body(...),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    name, sql, parameters = _template_body(body)
    doc = _get_template(emu, ctx.sandbox, template_id)
    doc.update(
        name=name,
        sql=sql,
        queryParameters=parameters,
        lastUpdatedBy=f"{ctx.client_id}@techacct.adobe.com",
        updated=_iso_now(),
    )
    return emu.store.update(ctx.sandbox, TEMPLATE_KIND, template_id, doc, name=name)


@router.delete("/query-templates/{template_id}", status_code=202)
def delete_template(template_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    """Delete a template. ``statusCode`` is a string, as the spec's ``query_template_delete`` declares."""
    if not emu.store.delete(ctx.sandbox, TEMPLATE_KIND, template_id):
        raise query_error(404, f"Query template {template_id} not found")
    return {"message": "Deleted", "statusCode": "202"}


# --- SQL functions and start-up ------------------------------------------------------------------

# Dropped and re-created (not CREATE OR REPLACE, which cannot rename a parameter) in one transaction.
# The bodies use $1, not the parameter's name: in SQL functions a same-named column wins.
_SQL_FUNCTIONS = """
DROP FUNCTION IF EXISTS {schema}.table_exists(text);
CREATE FUNCTION {schema}.table_exists(table_name text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT EXISTS (
        SELECT 1 FROM information_schema.tables
        WHERE table_schema = '{schema}' AND table_name IN ($1, lower($1))
    )
$fn$;
DROP FUNCTION IF EXISTS {schema}.history_meta(text);
DROP FUNCTION IF EXISTS {schema}.snapshot_batches(text, text, text);
DROP FUNCTION IF EXISTS {schema}.sample_meta(text);
DROP FUNCTION IF EXISTS {schema}.batch_snapshots(text);
CREATE FUNCTION {schema}.batch_snapshots(table_name text)
RETURNS TABLE (batch_id text, snapshot_id bigint, records bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    WITH dataset AS (
        SELECT id FROM aep_meta.resources
        WHERE sandbox = '{sandbox}' AND kind = '{dataset_kind}'
          AND doc -> 'tags' -> '{table_tag}' ->> 0 IN ($1, lower($1))
        ORDER BY created_ms LIMIT 1
    )
    SELECT b.id, COALESCE((b.doc ->> 'completed')::bigint, b.updated_ms),
           (b.doc -> 'metrics' ->> 'outputRecordCount')::bigint
    FROM aep_meta.resources b JOIN dataset d
      ON b.doc -> 'relatedObjects' @> jsonb_build_array(jsonb_build_object('type', '{dataset_kind}', 'id', d.id))
    WHERE b.sandbox = '{sandbox}' AND b.kind = '{batch_kind}' AND b.doc ->> 'status' = 'success'
$fn$;
CREATE FUNCTION {schema}.history_meta(table_name text)
RETURNS TABLE (snapshot_id bigint, parent_id bigint, is_current boolean, snapshot_generation bigint,
               made_current_at timestamptz, is_current_ancestor boolean, output_record_count bigint)
LANGUAGE sql STABLE AS $fn$
    SELECT snapshot_id, lag(snapshot_id) OVER w, row_number() OVER w = count(*) OVER (), row_number() OVER w,
           to_timestamp(snapshot_id / 1000.0), true, records
    FROM {schema}.batch_snapshots($1) WINDOW w AS (ORDER BY snapshot_id, batch_id)
    ORDER BY snapshot_id, batch_id
$fn$;
CREATE FUNCTION {schema}.snapshot_batches(table_name text, since text, until text)
RETURNS TABLE (batch_id text)
LANGUAGE sql STABLE AS $fn$
    SELECT batch_id FROM {schema}.batch_snapshots($1)
    WHERE snapshot_id > COALESCE(NULLIF($2, '')::bigint, -1)
      AND snapshot_id <= COALESCE(NULLIF($3, '')::bigint, 9223372036854775807)
$fn$;
CREATE OR REPLACE VIEW {schema}.qsaccel_profile_agg_adwh_dim_merge_policies AS
    SELECT 1 AS "MERGE_POLICY_ID", '{merge_policy}'::text AS "MERGE_POLICY",
           'Default Timebased'::text AS "MERGE_POLICY_NAME", true AS "IS_DEFAULT_MERGE_POLICY";
CREATE OR REPLACE VIEW {schema}.qsaccel_profile_agg_adwh_dim_namespaces AS
    SELECT n.id AS "NAMESPACE_ID", n.code AS "NAMESPACE_DESCRIPTION", 1 AS "MERGE_POLICY_ID"
    FROM (VALUES {namespaces}) AS n(id, code);
CREATE FUNCTION {schema}.sample_meta(table_name text)
RETURNS TABLE (sample_table_name text, sample_dataset_id text, parent_dataset_id text, sample_type text,
               filter_condition_on_source_dataset text, sample_ratio double precision,
               parent_dataset_size bigint, sample_dataset_size bigint, sample_status text,
               sample_creation_date timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT s.doc -> 'tags' -> '{table_tag}' ->> 0, s.id, p.id, 'uniform', NULL,
           (s.doc -> 'tags' -> '{sample_rate_tag}' ->> 0)::double precision / 100, NULL::bigint, NULL::bigint,
           'COMPLETED', to_timestamp(s.created_ms / 1000.0)
    FROM aep_meta.resources s
    LEFT JOIN aep_meta.resources p
      ON p.sandbox = s.sandbox AND p.kind = s.kind AND p.doc -> 'tags' -> '{table_tag}' ->> 0 = lower($1)
    WHERE s.sandbox = '{sandbox}' AND s.kind = '{dataset_kind}'
      AND s.doc -> 'tags' -> '{sample_of_tag}' ->> 0 = lower($1)
    ORDER BY s.created_ms
$fn$;
DROP FUNCTION IF EXISTS {schema}.qs_refuse(text, text);
CREATE FUNCTION {schema}.qs_refuse(code text, message text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END
$fn$;
"""


def install_sql_functions(emu: Emulator) -> None:
    """Create ``table_exists('t')``, ``history_meta('t')``, ``sample_meta('t')``, the
    ``snapshot_batches`` behind ``SNAPSHOT`` clauses, the Query Accelerated Store's merge-policy
    and namespace dimensions (``qsaccel.profile_agg.adwh_dim_*``) and ``qs_refuse(code, message)``
    in every sandbox schema.

    A snapshot is a successful batch of the table's dataset. Its ``snapshot_id`` is the batch's
    completion time in epoch milliseconds: a number, as AEP's are, so ``SNAPSHOT SINCE $id`` takes it
    unquoted, and ordered, so ``SINCE a`` (after a) and ``AS OF b`` (up to b) are ranges of it.
    ``batch_snapshots`` (behind ``history_meta`` and ``snapshot_batches``) and ``sample_meta`` read
    Catalog's records, which the sandbox's role cannot: they run with their owner's rights (SECURITY
    DEFINER, names resolved in pg_catalog only), on this sandbox's records only. The dimensions are
    constant views (the sandbox's merge policy, the standard namespaces) the sandbox's role reads.
    ``qs_refuse`` is what the wire endpoint runs in place of a refused statement
    (:mod:`aep_emulator.qs_guard`).
    """
    with emu.db.connection() as conn:
        # Emulators sharing one PostgreSQL may start together; concurrent DDL on one function conflicts.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('aep_emulator.qs_functions'))")
        for sandbox in emu.settings.sandboxes:
            functions = _SQL_FUNCTIONS.format(
                schema=sandbox_schema(sandbox),
                sandbox=sandbox.replace("'", "''"),
                dataset_kind=catalog.DATASET_KIND,
                batch_kind=catalog.BATCH_KIND,
                table_tag=catalog.TABLE_TAG,
                sample_of_tag=qs_exec.SAMPLE_OF_TAG,
                sample_rate_tag=qs_exec.SAMPLE_RATE_TAG,
                merge_policy=segmentation.default_merge_policy_id(sandbox),
                namespaces=", ".join(f"({ns[0]}, '{ns[1]}')" for ns in identity.STANDARD),
            )
            conn.execute(functions)


def recover(emu: Emulator) -> None:
    """Start-up: install the SQL functions and re-run queries a restart interrupted.

    Re-running is safe because a query's statements run in one transaction, which PostgreSQL rolled
    back when the old process's connection went away; so an interrupted query had changed nothing.
    """
    install_sql_functions(emu)
    for sandbox, doc in emu.store.list_all_sandboxes(QUERY_KIND):
        if sandbox not in emu.settings.sandboxes or doc["state"] not in ("SUBMITTED", "IN_PROGRESS"):
            continue
        log.info("re-running query %s in sandbox %s, interrupted by a restart", doc["id"], sandbox)
        emu.store.mutate(sandbox, QUERY_KIND, doc["id"], lambda d: {**d, "state": "SUBMITTED", "updated": _iso_now()})
        emu.submit(run_query, emu, sandbox, doc["id"])
