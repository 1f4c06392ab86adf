"""Segmentation Service and Audiences API (``/data/core/ups``).

Segment definitions and audiences are one resource: a ``segmentDefinition`` document carrying both
APIs' fields, with ``audienceId == id``. A definition created through either API is listed, read,
evaluated and activated through both (the ``audience`` kind is therefore not used).

Evaluation (a segment job) builds the merged Profile view: every Profile-enabled dataset whose schema
class is Profile contributes, per primary identity (from its schema's identity descriptor), its latest
record (by ``_acp_system_metadata.ingestTime``); fragments of the same identity merge attribute by
attribute, newest non-null value first. Each segment's PQL runs as SQL over that view and the members
are stored in ``aep_meta.segment_members`` per job, so counts and activation files agree.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response

from aep_emulator import pql, tables, xdm
from aep_emulator.db import META_SCHEMA, quote_ident, sandbox_schema
from aep_emulator.errors import ups_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.store import now_ms

log = logging.getLogger(__name__)

router = APIRouter(prefix="/data/core/ups")

PROFILE_SCHEMA_NAME = "_xdm.context.profile"
KIND_DEFINITION = "segmentDefinition"
KIND_JOB = "segmentJob"
MEMBERS_TABLE = f"{META_SCHEMA}.segment_members"
TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
# Error codes: UPAPI-113430-404 and UPAPI-113434-400 appear in Adobe's examples; the others are [U].
CODE_NOT_FOUND = "UPAPI-113430-404"
CODE_INVALID = "UPAPI-113434-400"
CODE_INVALID_PQL = "UPAPI-113437-400"
CODE_DUPLICATE_NAME = "UPAPI-113422-422"

_MEMBERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {MEMBERS_TABLE} (
    sandbox    text  NOT NULL,
    job_id     text  NOT NULL,
    segment_id text  NOT NULL,
    namespace  text  NOT NULL,
    identity   text  NOT NULL,
    attributes jsonb NOT NULL,
    PRIMARY KEY (sandbox, job_id, segment_id, namespace, identity)
)
"""
# Column aliases of the merged view that cannot clash with XDM paths (which never start with "__").
_NS, _IDENTITY = "__namespace", "__identity"
_SYSTEM_COLUMNS = ("_acp_batchid", "_acp_system_metadata.ingestTime")


def sandbox_info(sandbox: str) -> dict[str, Any]:
    """The ``sandbox`` object AEP embeds in resources; the id is stable per sandbox name."""
    return {
        "sandboxId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aep-emulator/sandbox/{sandbox}")),
        "sandboxName": sandbox,
        "type": "production" if sandbox == "prod" else "development",
        "default": sandbox == "prod",
    }


def default_merge_policy_id(sandbox: str) -> str:
    """The sandbox's default merge policy id (stable, since the emulator has exactly one per sandbox)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"aep-emulator/merge-policy/{sandbox}"))


def patch_document(doc: dict, operations: Any) -> dict:
    """Apply a JSON Patch whose op names may be capitalised (AEP's examples send ``Replace``).

    :raises xdm.JsonPatchError: when an operation cannot be applied.
    """
    if isinstance(operations, list):
        operations = [{**op, "op": str(op.get("op", "")).lower()} if isinstance(op, dict) else op for op in operations]
    return xdm.apply_json_patch(doc, operations)


# --------------------------------------------------------------------------- Profile union


@dataclass(frozen=True)
class ProfileSource:
    """One Profile-enabled dataset feeding the merged Profile view.

    :param table: schema-qualified, quoted table name.
    :param identity_column: the XDM leaf path of the primary identity.
    :param namespace: the identity namespace code.
    :param columns: XDM column -> PostgreSQL type (system columns excluded).
    """

    table: str
    identity_column: str
    namespace: str
    columns: dict[str, str]


def _primary_identity(descriptors: list[dict], schema_id: str) -> tuple[str, str] | None:
    for descriptor in descriptors:
        if (
            descriptor.get("@type") == "xdm:descriptorIdentity"
            and descriptor.get("xdm:sourceSchema") == schema_id
            and descriptor.get("xdm:isPrimary")
        ):
            column = descriptor["xdm:sourceProperty"].strip("/").replace("/", ".")
            return column, str(descriptor.get("xdm:namespace"))
    return None


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """XDM column -> PostgreSQL type of a table, system columns excluded; empty when there is no table."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    return {name: type_ for name, type_ in rows if name not in _SYSTEM_COLUMNS}


def profile_sources(emu: Emulator, sandbox: str, klass: str = xdm.PROFILE) -> list[ProfileSource]:
    """The Profile-enabled datasets of ``klass`` (Profile, or ExperienceEvent for ``xEvent``) with a
    primary identity and a table."""
    descriptors = emu.store.list(sandbox, "descriptor")
    schema_name = sandbox_schema(sandbox)
    sources = []
    with emu.db.connection() as conn:
        for dataset in emu.store.list(sandbox, "dataSet"):
            tags = dataset.get("tags") or {}
            if "enabled:true" not in tags.get("unifiedProfile", []) or not tags.get("adobe/pqs/table"):
                continue
            schema_id = (dataset.get("schemaRef") or {}).get("id")
            if not schema_id or xdm.schema_class(emu, sandbox, schema_id) != klass:
                continue
            identity = _primary_identity(descriptors, schema_id)
            table = tags["adobe/pqs/table"][0]
            try:
                tables.check_inert(conn, sandbox, table)
            except tables.TableError as exc:
                log.warning("dataset %s left out of the Profile: %s", dataset["id"], exc)
                continue
            columns = table_columns(conn, schema_name, table)
            if identity is None or identity[0] not in columns:
                continue
            sources.append(ProfileSource(f"{schema_name}.{quote_ident(table)}", identity[0], identity[1], columns))
    return sources


def union_columns(sources: list[ProfileSource]) -> dict[str, str]:
    """XDM column -> type over every source (the first source's type wins on a conflict)."""
    columns: dict[str, str] = {}
    for source in sources:
        for name, type_ in source.columns.items():
            columns.setdefault(name, type_)
    return columns


def _union_select_list(source: ProfileSource, columns: dict[str, str]) -> str:
    """Every union column from one source, NULL where the source lacks it (typed, for UNION ALL)."""
    return ", ".join(
        f"{quote_ident(name)}::{type_} AS {quote_ident(name)}"
        if name in source.columns
        else f"NULL::{type_} AS {quote_ident(name)}"
        for name, type_ in columns.items()
    )


def _merged_profiles_sql(sources: list[ProfileSource], columns: dict[str, str]) -> tuple[str, list]:
    """SELECT producing one row per (namespace, identity) with every union column merged."""
    fragments, params = [], []
    for source in sources:
        identity = quote_ident(source.identity_column)
        selected = _union_select_list(source, columns)
        fragments.append(
            f"(SELECT DISTINCT ON ({identity}) %s::text AS {_NS}, {identity}::text AS {_IDENTITY},"
            f' "_acp_system_metadata.ingestTime" AS __ingest, {selected}'
            f" FROM {source.table} WHERE {identity} IS NOT NULL"
            f' ORDER BY {identity}, "_acp_system_metadata.ingestTime" DESC NULLS LAST)'
        )
        params.append(source.namespace)
    merged = ", ".join(
        f"(array_agg({quote_ident(name)} ORDER BY __ingest DESC NULLS LAST)"
        f" FILTER (WHERE {quote_ident(name)} IS NOT NULL))[1] AS {quote_ident(name)}"
        for name in columns
    )
    sql = (
        f"SELECT {_NS}, {_IDENTITY}, {merged} FROM ({' UNION ALL '.join(fragments)}) fragments"
        f" GROUP BY {_NS}, {_IDENTITY}"
    )
    return sql, params


def event_relation(emu: Emulator, sandbox: str) -> pql.EventRelation | None:
    """The Profile-enabled experience events as one relation for ``xEvent``: the identity (namespace,
    value) that ties each event to its profile, and every event column (NULL where a dataset lacks it)."""
    sources = profile_sources(emu, sandbox, xdm.EXPERIENCE_EVENT)
    if not sources:
        return None
    columns = union_columns(sources)
    fragments, params = [], []
    for source in sources:
        selected = _union_select_list(source, columns)
        fragments.append(
            f"SELECT %s::text AS {_NS}, {quote_ident(source.identity_column)}::text AS {_IDENTITY}, {selected}"
            f" FROM {source.table}"
        )
        params.append(source.namespace)
    return pql.EventRelation(" UNION ALL ".join(fragments), params, columns)


def validate_expression(emu: Emulator, sandbox: str, expression: Any) -> None:
    """Raise 400 unless ``expression`` is PQL text over fields of the Profile union."""
    if not isinstance(expression, dict) or expression.get("type", "PQL") != "PQL":
        raise ups_error(400, CODE_INVALID_PQL, "expression must be {type: PQL, format: pql/text, value}")
    if expression.get("format", "pql/text") != "pql/text":
        raise ups_error(400, CODE_INVALID_PQL, "only the pql/text expression format is supported")
    try:
        pql.compile_predicate(
            str(expression.get("value", "")), union_columns(profile_sources(emu, sandbox)), event_relation(emu, sandbox)
        )
    except pql.PQLError as exc:
        raise ups_error(400, CODE_INVALID_PQL, str(exc)) from exc


# --------------------------------------------------------------------------- definitions / audiences


def _new_definition(emu: Emulator, ctx: CallContext, body: dict, audience_api: bool) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        raise ups_error(400, CODE_INVALID, "There is a problem in segment validation. name is a mandatory field")
    schema = body.get("schema") or {"name": PROFILE_SCHEMA_NAME}
    if schema.get("name") != PROFILE_SCHEMA_NAME:
        raise ups_error(400, CODE_INVALID, f"Only the {PROFILE_SCHEMA_NAME} schema is supported")
    expression = body.get("expression") or {}
    validate_expression(emu, ctx.sandbox, expression)
    segment_id = str(uuid.uuid4())
    ts = now_ms()
    doc = {
        "id": segment_id,
        "audienceId": body.get("audienceId") or segment_id,
        "name": body["name"],
        "description": body.get("description", ""),
        "imsOrgId": ctx.org_id,
        "sandbox": sandbox_info(ctx.sandbox),
        "profileInstanceId": body.get("profileInstanceId", "ups"),
        "schema": schema,
        "expression": {"type": "PQL", "format": "pql/text", "value": expression["value"]},
        "mergePolicyId": body.get("mergePolicyId") or default_merge_policy_id(ctx.sandbox),
        "evaluationInfo": body.get("evaluationInfo")
        or {"batch": {"enabled": True}, "continuous": {"enabled": False}, "synchronous": {"enabled": False}},
        "dataGovernancePolicy": {"excludeOptOut": True},
        "ttlInDays": body.get("ttlInDays", 30),
        "namespace": "AEPSegments",
        "type": "SegmentDefinition",
        "lifecycleState": body.get("lifecycleState", "published"),
        "labels": body.get("labels", []),
        "originName": "REAL_TIME_CUSTOMER_PROFILE",
        "isSystem": False,
        "dependents": [],
        "dependencies": [],
        "definedOn": [
            {
                "meta:resourceType": "unions",
                "meta:containerId": "tenant",
                "$ref": "https://ns.adobe.com/xdm/context/profile__union",
            }
        ],
        "createdBy": ctx.client_id,
        "creationTime": ts,
        "updateTime": ts,
        "createEpoch": ts // 1000,
        "updateEpoch": ts // 1000,
        "_etag": _etag(),
    }
    if "payloadSchema" in body:
        doc["payloadSchema"] = body["payloadSchema"]
    if doc["lifecycleState"] == "deleted":
        raise ups_error(
            400, CODE_INVALID, "There is a problem in audience validation. Cannot set lifecycleState as deleted"
        )
    if not emu.store.insert_unique_name(ctx.sandbox, KIND_DEFINITION, segment_id, doc, doc["name"]):
        message = f"Segment definition with name {doc['name']!r} already exists"
        raise ups_error(400, CODE_INVALID, message) if audience_api else ups_error(422, CODE_DUPLICATE_NAME, message)
    return doc


def _etag() -> str:
    return f'"{uuid.uuid4().hex[:8]}-0000-0200-0000-{int(time.time()):x}0000"'


def get_definition(emu: Emulator, sandbox: str, segment_id: str) -> dict:
    """The segment definition (= audience) or a 404 ``UPAPI-113430-404``."""
    doc = emu.store.get(sandbox, KIND_DEFINITION, segment_id)
    if doc is None:
        raise ups_error(404, CODE_NOT_FOUND, f"The audience {segment_id} could not be found")
    return doc


def _save_changes(emu: Emulator, ctx: CallContext, current: dict, changed: dict) -> dict:
    """Validate and store an updated definition (id, org, sandbox and creation fields are immutable)."""
    for key in ("id", "imsOrgId", "sandbox", "creationTime", "createEpoch", "createdBy"):
        changed[key] = current[key]
    if changed.get("lifecycleState") == "deleted":
        raise ups_error(
            400, CODE_INVALID, "There is a problem in audience validation. Cannot set lifecycleState as deleted"
        )
    if changed.get("expression") != current.get("expression"):
        validate_expression(emu, ctx.sandbox, changed.get("expression"))
    if changed.get("name") != current["name"]:
        other = emu.store.find_by_name(ctx.sandbox, KIND_DEFINITION, changed.get("name"))
        if not changed.get("name") or (other and other["id"] != current["id"]):
            raise ups_error(400, CODE_INVALID, f"Segment definition name {changed.get('name')!r} is empty or taken")
    ts = now_ms()
    changed.update(updateTime=ts, updateEpoch=ts // 1000, _etag=_etag())
    return emu.store.update(ctx.sandbox, KIND_DEFINITION, current["id"], changed, name=changed["name"])


def _patched(doc: dict, body: Any) -> dict:
    try:
        return patch_document(doc, body)
    except xdm.JsonPatchError as exc:
        raise ups_error(400, CODE_INVALID, str(exc)) from exc


def _sort_key(sort: str | None) -> tuple[str, bool]:
    field, _, direction = (sort or "updateTime:desc").partition(":")
    return field, direction.lower() != "asc"


def _sorted(docs: list[dict], sort: str | None) -> list[dict]:
    """Sort by ``field:asc|desc``; documents without the field go last."""
    field, descending = _sort_key(sort)
    present = [d for d in docs if d.get(field) is not None]
    return sorted(present, key=lambda d: d[field], reverse=descending) + [d for d in docs if d.get(field) is None]


def _int_param(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError as exc:
        raise ups_error(400, CODE_INVALID, f"{name} must be an integer") from exc
    if value < minimum:
        raise ups_error(400, CODE_INVALID, f"{name} must be at least {minimum}")
    return value


@router.post("/segment/definitions")
def create_definition(
    request: Request,
    body: Any = Body(None),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    """Create a segment definition: 200 (not 201), with an ``X-Location`` header."""
    doc = _new_definition(emu, ctx, body, audience_api=False)
    return JSONResponse(doc, headers={"X-Location": f"{request.url.path}/{doc['id']}"})


@router.get("/segment/definitions")
def list_definitions(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    """1-based ``page`` paging with a ``page`` object."""
    limit = min(_int_param(request, "limit", 100, 1), 1000)
    page = _int_param(request, "page", 1, 1)
    sort = request.query_params.get("sort")
    docs = _sorted(emu.store.list(ctx.sandbox, KIND_DEFINITION), sort)
    field, descending = _sort_key(sort)
    return {
        "segments": docs[(page - 1) * limit : page * limit],
        "page": {
            "totalCount": len(docs),
            "totalPages": math.ceil(len(docs) / limit),
            "sortField": field,
            "sort": "desc" if descending else "asc",
            "pageSize": len(docs[(page - 1) * limit : page * limit]),
            "limit": limit,
        },
        "link": {},
    }


@router.get("/segment/definitions/{segment_id}")
def read_definition(segment_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return get_definition(emu, ctx.sandbox, segment_id)


@router.patch("/segment/definitions/{segment_id}")
def patch_definition(
    segment_id: str, body: Any = Body(None), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """JSON Patch, e.g. ``[{"op":"add","path":"/expression/value","value":"..."}]``."""
    current = get_definition(emu, ctx.sandbox, segment_id)
    return _save_changes(emu, ctx, current, _patched(current, body))


@router.delete("/segment/definitions/{segment_id}")
def delete_definition(segment_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    get_definition(emu, ctx.sandbox, segment_id)
    emu.store.delete(ctx.sandbox, KIND_DEFINITION, segment_id)
    return {"status": True, "message": f"Segment definition {segment_id} deleted"}


@router.post("/audiences", status_code=201)
def create_audience(
    body: Any = Body(None), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    return _new_definition(emu, ctx, body, audience_api=True)


def _audience_filter(request: Request):
    name = (request.query_params.get("name") or "").lower()
    description = (request.query_params.get("description") or "").lower()
    entity_type = request.query_params.get("entityType")
    conditions = []
    for prop in request.query_params.getlist("property"):
        field, sep, value = prop.partition("==")
        negate = not sep
        if negate:
            field, sep, value = prop.partition("!=")
        if not sep:
            raise ups_error(400, CODE_INVALID, f"property filter {prop!r} must be field==value or field!=value")
        conditions.append((field.strip(), value.strip(), negate))

    def keep(doc: dict) -> bool:
        return (
            name in doc["name"].lower()
            and description in (doc.get("description") or "").lower()
            and (entity_type is None or doc["schema"]["name"] == entity_type)
            and all((str(doc.get(field)) == value) != negate for field, value, negate in conditions)
        )

    return keep


@router.get("/audiences")
def list_audiences(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    """Offset paging: ``_page.next`` is the next ``start`` as an integer, 0 on the last page."""
    limit = min(_int_param(request, "limit", 20, 1), 1000)
    start = _int_param(request, "start", 0, 0)
    sort = request.query_params.get("sort")
    docs = _sorted([d for d in emu.store.list(ctx.sandbox, KIND_DEFINITION) if _audience_filter(request)(d)], sort)
    children = docs[start : start + limit]
    next_start = start + limit if start + limit < len(docs) else 0
    field, descending = _sort_key(sort)
    body: dict[str, Any] = {
        "children": children,
        "_page": {
            "totalCount": len(docs),
            "totalPages": math.ceil(len(docs) / limit),
            "sortField": field,
            "sort": "desc" if descending else "asc",
            "pageSize": len(children),
            "limit": limit,
            "start": start,
            "next": next_start,
        },
        "_links": {},
    }
    if next_start:
        query = request.query_params.multi_items()
        params = [(k, v) for k, v in query if k not in ("start", "limit")] + [("start", next_start), ("limit", limit)]
        body["_links"]["next"] = {"href": f"{request.url.path}?" + "&".join(f"{k}={v}" for k, v in params)}
    return body


@router.get("/audiences/{audience_id}")
def read_audience(audience_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return get_definition(emu, ctx.sandbox, audience_id)


@router.put("/audiences/{audience_id}", status_code=201)
def replace_audience(
    audience_id: str,
    body: Any = Body(None),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    """Replace an audience (201 per the spec)."""
    current = get_definition(emu, ctx.sandbox, audience_id)
    if not isinstance(body, dict):
        raise ups_error(400, CODE_INVALID, "the body must be an audience object")
    return _save_changes(emu, ctx, current, {**current, **body})


@router.patch("/audiences/{audience_id}", status_code=201)
def patch_audience(
    audience_id: str,
    body: Any = Body(None),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    """JSON Patch an audience (201 per the spec)."""
    current = get_definition(emu, ctx.sandbox, audience_id)
    return _save_changes(emu, ctx, current, _patched(current, body))


@router.delete("/audiences/{audience_id}", status_code=204)
def delete_audience(audience_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    get_definition(emu, ctx.sandbox, audience_id)
    emu.store.delete(ctx.sandbox, KIND_DEFINITION, audience_id)
    return Response(status_code=204)


# --------------------------------------------------------------------------- segment jobs


@router.post("/segment/jobs")
def create_job(
    request: Request,
    body: Any = Body(None),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    """Create a batch segmentation job over ``[{"segmentId"}]``; it advances in the background."""
    if not isinstance(body, list) or not body or not all(isinstance(s, dict) and s.get("segmentId") for s in body):
        raise ups_error(400, CODE_INVALID, 'The body must be a non-empty array of {"segmentId": "..."}')
    segments = []
    for item in body:
        definition = get_definition(emu, ctx.sandbox, item["segmentId"])
        segments.append(
            {
                "segmentId": definition["id"],
                "segment": {
                    "id": definition["id"],
                    "expression": definition["expression"],
                    "mergePolicyId": definition["mergePolicyId"],
                    "mergePolicy": {"id": definition["mergePolicyId"], "version": 1},
                },
            }
        )
    job_id = str(uuid.uuid4())
    ts = now_ms()
    job_path = f"{request.url.path.rstrip('/')}/{job_id}"
    job = {
        "id": job_id,
        "imsOrgId": ctx.org_id,
        "sandbox": sandbox_info(ctx.sandbox),
        "profileInstanceId": "ups",
        "source": "api",
        "status": "NEW",
        "segments": segments,
        "metrics": {"totalTime": {"startTimeInMs": ts}, "profileSegmentationTime": {}},
        "requestId": ctx.request_id,
        "schema": {"name": PROFILE_SCHEMA_NAME},
        "properties": {"scheduleType": "AD_HOC"},
        "creationTime": ts,
        "updateTime": ts,
        "updateEpoch": ts // 1000,
        "_links": {
            "cancel": {"href": job_path, "method": "DELETE"},
            "checkStatus": {"href": job_path, "method": "GET"},
        },
    }
    emu.store.insert(ctx.sandbox, KIND_JOB, job_id, job)
    emu.submit(run_job, emu, ctx.sandbox, job_id)
    return job


def _get_job(emu: Emulator, sandbox: str, job_id: str) -> dict:
    job = emu.store.get(sandbox, KIND_JOB, job_id)
    if job is None:
        raise ups_error(404, "UPAPI-113020-404", f"Segment job {job_id} not found")
    return job


@router.get("/segment/jobs/{job_id}")
def read_job(job_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return _get_job(emu, ctx.sandbox, job_id)


@router.delete("/segment/jobs/{job_id}", status_code=204)
def cancel_job(job_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    """Mark a running job CANCELLING (the worker moves it to CANCELLED); a finished job is left as is."""
    _get_job(emu, ctx.sandbox, job_id)

    def cancel(job: dict) -> dict:
        if job["status"] not in TERMINAL_JOB_STATES:
            job.update(status="CANCELLING", updateTime=now_ms())
        return job

    emu.store.mutate(ctx.sandbox, KIND_JOB, job_id, cancel)
    return Response(status_code=204)


def _advance(emu: Emulator, sandbox: str, job_id: str, status: str, **fields) -> bool:
    """Move a job to ``status`` unless it is being cancelled (then to CANCELLED); True when moved.

    Checked and changed under the job's row lock, and only forward: a second runner of the same job
    (a restart's recovery while the first still runs) can neither move it back nor end it twice.
    """

    def step(job: dict) -> dict:
        current = job["status"]
        if current in TERMINAL_JOB_STATES or (
            current in _JOB_ORDER and status in _JOB_ORDER and _JOB_ORDER.index(status) <= _JOB_ORDER.index(current)
        ):
            return job
        ts = now_ms()
        job.update(updateTime=ts, updateEpoch=ts // 1000)
        if current in ("CANCELLING", "CANCELLED"):
            job["status"] = "CANCELLED"
        else:
            job["status"] = status
            job.update(fields)
        return job

    return emu.store.mutate(sandbox, KIND_JOB, job_id, step)["status"] == status


_JOB_ORDER = ("NEW", "QUEUED", "PROCESSING")


def run_job(emu: Emulator, sandbox: str, job_id: str) -> None:
    """The job's life: NEW → QUEUED → PROCESSING → SUCCEEDED | FAILED (or CANCELLED when asked)."""
    current = emu.store.get(sandbox, KIND_JOB, job_id)["status"]
    # A job resumed after a restart continues from where it was, never back to an earlier state
    # (a CANCELLING job takes the steps, which turn it CANCELLED).
    reached = _JOB_ORDER.index(current) if current in _JOB_ORDER else 0
    for status in _JOB_ORDER[reached + 1 :]:
        time.sleep(emu.settings.state_latency_s)
        if not _advance(emu, sandbox, job_id, status):
            return
    job = emu.store.get(sandbox, KIND_JOB, job_id)
    started = now_ms()
    if emu.faults.take_forced_failure("segment_job"):
        _fail_job(emu, sandbox, job, started, "0100", "Segment job failed (forced failure injected by the emulator)")
        return
    try:
        metrics = evaluate(emu, sandbox, job)
    except (pql.PQLError, psycopg.Error) as exc:
        log.warning("segment job %s failed: %s", job_id, exc)
        _fail_job(emu, sandbox, job, started, "0101", f"Segment evaluation failed: {exc}")
        return
    except Exception as exc:
        # A job must end: left PROCESSING, its pollers would wait until their deadline.
        log.exception("segment job %s failed unexpectedly", job_id)
        _fail_job(emu, sandbox, job, started, "0101", f"Segment evaluation failed: internal error: {exc}")
        return
    ended = now_ms()
    metrics["totalTime"] = {
        "startTimeInMs": job["creationTime"],
        "endTimeInMs": ended,
        "totalTimeInMs": ended - job["creationTime"],
    }
    metrics["profileSegmentationTime"] = {
        "startTimeInMs": started,
        "endTimeInMs": ended,
        "totalTimeInMs": ended - started,
    }
    if not _advance(emu, sandbox, job_id, "SUCCEEDED", metrics=metrics):
        _delete_members(emu, sandbox, job_id)


def _fail_job(emu: Emulator, sandbox: str, job: dict, started: int, code: str, message: str) -> None:
    ended = now_ms()
    metrics = {
        **job["metrics"],
        "profileSegmentationTime": {"startTimeInMs": started, "endTimeInMs": ended, "totalTimeInMs": ended - started},
    }
    _advance(emu, sandbox, job["id"], "FAILED", metrics=metrics, errors=[{"code": code, "msg": message}])


def _delete_members(emu: Emulator, sandbox: str, job_id: str) -> None:
    with emu.db.connection() as conn:
        conn.execute(f"DELETE FROM {MEMBERS_TABLE} WHERE sandbox=%s AND job_id=%s", (sandbox, job_id))


def evaluate(emu: Emulator, sandbox: str, job: dict) -> dict:
    """Evaluate every segment of a job, store the members and return the job's count metrics."""
    sources = profile_sources(emu, sandbox)
    columns = union_columns(sources)
    events = event_relation(emu, sandbox)
    predicates = {
        s["segmentId"]: pql.compile_predicate(s["segment"]["expression"]["value"], columns, events)
        for s in job["segments"]
    }
    counters: dict[str, int] = {}
    by_namespace: dict[str, dict[str, int]] = {}
    by_status: dict[str, dict[str, int]] = {}
    previous = {seg: latest_succeeded_job_id(emu, sandbox, seg) for seg in predicates}
    _delete_members(emu, sandbox, job["id"])
    with emu.db.connection() as conn:
        total = 0
        if sources:
            merged_sql, merged_params = _merged_profiles_sql(sources, columns)
            conn.execute(f"CREATE TEMP TABLE merged_profiles ON COMMIT DROP AS {merged_sql}", merged_params)
            total = conn.execute("SELECT count(*) FROM merged_profiles").fetchone()[0]
        for segment_id, (predicate, params) in predicates.items():
            if sources:
                conn.execute(
                    f"INSERT INTO {MEMBERS_TABLE} (sandbox, job_id, segment_id, namespace, identity, attributes)"
                    f" SELECT %s, %s, %s, {_NS}, {_IDENTITY}, jsonb_strip_nulls(to_jsonb(p) - '{_NS}' - '{_IDENTITY}')"
                    f" FROM merged_profiles p WHERE COALESCE({predicate}, false)",
                    [sandbox, job["id"], segment_id, *params],
                )
            rows = conn.execute(
                f"SELECT namespace, count(*) FROM {MEMBERS_TABLE} WHERE sandbox=%s AND job_id=%s AND segment_id=%s"
                " GROUP BY namespace",
                (sandbox, job["id"], segment_id),
            ).fetchall()
            by_namespace[segment_id] = {ns: n for ns, n in rows}
            counters[segment_id] = sum(by_namespace[segment_id].values())
            by_status[segment_id] = _status_counts(conn, sandbox, segment_id, job["id"], previous[segment_id])
    return {
        "totalProfiles": total,
        "totalProfilesByMergePolicy": {default_merge_policy_id(sandbox): total},
        "segmentedProfileCounter": counters,
        "segmentedProfileByNamespaceCounter": by_namespace,
        "segmentedProfileByStatusCounter": by_status,
    }


def _status_counts(
    conn: psycopg.Connection, sandbox: str, segment_id: str, job_id: str, previous_job: str | None
) -> dict:
    """realized (new members), existing (members in the previous run too) and exited (dropped out)."""
    row = conn.execute(
        f"""SELECT count(*) FILTER (WHERE cur.identity IS NOT NULL AND prev.identity IS NULL),
                   count(*) FILTER (WHERE cur.identity IS NOT NULL AND prev.identity IS NOT NULL),
                   count(*) FILTER (WHERE cur.identity IS NULL)
            FROM (SELECT namespace, identity FROM {MEMBERS_TABLE} WHERE sandbox=%s AND job_id=%s AND segment_id=%s) cur
            FULL JOIN (SELECT namespace, identity FROM {MEMBERS_TABLE} WHERE sandbox=%s AND job_id=%s AND segment_id=%s) prev
            USING (namespace, identity)""",
        (sandbox, job_id, segment_id, sandbox, previous_job, segment_id),
    ).fetchone()
    return {"realized": row[0], "existing": row[1], "exited": row[2]}


def latest_succeeded_job_id(emu: Emulator, sandbox: str, segment_id: str) -> str | None:
    """The newest SUCCEEDED job that evaluated ``segment_id`` (its members are the audience)."""
    jobs = [
        job
        for job in emu.store.list(sandbox, KIND_JOB)
        if job["status"] == "SUCCEEDED" and any(s["segmentId"] == segment_id for s in job["segments"])
    ]
    return jobs[-1]["id"] if jobs else None


def iter_members(
    emu: Emulator, sandbox: str, job_id: str, segment_id: str, chunk_size: int = 10_000
) -> Iterator[list[tuple[str, str, dict]]]:
    """``(namespace, identity, attributes)`` of a job's members, in chunks, via a server-side cursor."""
    with emu.db.connection() as conn, conn.cursor(name=f"members_{uuid.uuid4().hex}") as cur:
        cur.execute(
            f"SELECT namespace, identity, attributes FROM {MEMBERS_TABLE}"
            " WHERE sandbox=%s AND job_id=%s AND segment_id=%s ORDER BY namespace, identity",
            (sandbox, job_id, segment_id),
        )
        while rows := cur.fetchmany(chunk_size):
            yield rows


def recover(emu: Emulator) -> None:
    """Create the members table; restart jobs a previous emulator process left unfinished."""
    with emu.db.connection() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('aep_emulator.segment_members'))")
        conn.execute(_MEMBERS_DDL)
    for sandbox, job in emu.store.list_all_sandboxes(KIND_JOB):
        if sandbox in emu.settings.sandboxes and job["status"] not in TERMINAL_JOB_STATES:
            log.info("resuming segment job %s in sandbox %s (status %s)", job["id"], sandbox, job["status"])
            emu.submit(run_job, emu, sandbox, job["id"])
