"""Catalog (``/data/foundation/catalog``): datasets and batches, keyed-by-id responses.

Creating a dataset creates its Query Service table from the schema's leaf fields; the table name goes
to ``tags["adobe/pqs/table"]``. The module-level functions (``create_dataset_record``, ``get_dataset``,
``find_dataset_by_table``, ``delete_dataset``) are the contract other services use.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Depends, Request

from aep_emulator import tables
from aep_emulator.db import META_SCHEMA
from aep_emulator.errors import AEPError, problem_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.store import new_id, now_ms
from aep_emulator.xdm import EXPERIENCE_EVENT, JsonPatchError, XDMError, apply_json_patch, leaf_fields, schema_class

router = APIRouter(prefix="/data/foundation/catalog")

DATASET_KIND = "dataSet"
BATCH_KIND = "batch"
TABLE_TAG = "adobe/pqs/table"
SCHEMA_CONTENT_TYPE = "application/vnd.adobe.xed+json;version=1"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Fields Catalog owns; a PATCH may not change them.
_READ_ONLY = ("id", "imsOrg", "created", "createdClient", "createdUser", "version", "schemaRef", "viewId")


class DatasetError(Exception):
    """A dataset cannot be created as asked (unknown schema, taken table name...)."""


def bad_request(detail: str) -> AEPError:
    """Catalog's 400 problem body."""
    return problem_error(400, "BadRequestError", detail)


def not_found(kind: str, id_: str) -> AEPError:
    return problem_error(404, "NotFoundError", f"{kind} {id_} was not found in this sandbox")


def _bump(version: str) -> str:
    major, minor, patch = (version.split(".") + ["0", "0"])[:3]
    return f"{major}.{minor}.{int(patch) + 1}"


def create_dataset_record(
    emu: Emulator,
    sandbox: str,
    *,
    name: str,
    schema_ref: dict | str,
    tags: dict[str, list[str]] | None = None,
    description: str | None = None,
    table_name: str | None = None,
    create_table: bool = True,
    file_description: dict | None = None,
) -> dict:
    """Create a dataset (and, unless told otherwise, its table); return the stored document.

    :param emu: the running emulator.
    :param sandbox: sandbox to create it in.
    :param name: dataset name.
    :param schema_ref: ``{"id": <schema $id>, "contentType": ...}`` or just the schema ``$id``.
    :param tags: initial tags; ``adobe/pqs/table`` is set by Catalog.
    :param description: optional description.
    :param table_name: exact table name to use (CTAS); default: derived from ``name`` and made unique.
    :param create_table: False when the caller has already created the table itself (CTAS).
    :param file_description: the dataset's ``fileDescription``; parquet by default.
    :raises DatasetError: when the schema does not exist or the table name is taken or invalid.
    """
    if isinstance(schema_ref, str):
        schema_ref = {"id": schema_ref, "contentType": SCHEMA_CONTENT_TYPE}
    schema_id = schema_ref.get("id")
    class_id = schema_class(emu, sandbox, schema_id) if schema_id else None
    if class_id is None:
        raise DatasetError(f"schemaRef.id {schema_id!r} is not a schema in sandbox {sandbox}; create the schema first")
    if not create_table and table_name is None:
        raise DatasetError("create_table=False needs the table_name of the existing table")
    try:
        fields = leaf_fields(emu, sandbox, schema_id) if create_table else []
        # The table and its record commit together: no orphan table, no dataset without a table.
        with emu.db.connection() as conn:
            if not create_table:
                _claim_table(conn, sandbox, table_name)
            if create_table and table_name is None:
                table_name = tables.create_unique_table(conn, sandbox, tables.sanitize_table_name(name), fields)
            elif create_table:
                tables.create_table(conn, sandbox, table_name, fields)
            doc = _new_dataset_doc(
                emu, sandbox, name, schema_ref, class_id, tags, description, table_name, file_description
            )
            tables.transactional_store(conn).insert(sandbox, DATASET_KIND, doc["id"], doc, name=name)
    except (XDMError, tables.TableError) as exc:
        raise DatasetError(str(exc)) from exc
    return doc


def _claim_table(conn, sandbox: str, table: str) -> None:
    """Make sure no other dataset has the existing ``table``, locked until the transaction ends (two
    queries whose CTAS ended up on one table must not register two datasets for it).

    :raises DatasetError: a dataset already has the table.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{sandbox}/table/{table.lower()}",))
    owner = conn.execute(
        f"SELECT id FROM {META_SCHEMA}.resources WHERE sandbox = %s AND kind = %s"
        " AND lower(doc -> 'tags' -> %s ->> 0) = lower(%s)",
        (sandbox, DATASET_KIND, TABLE_TAG, table),
    ).fetchone()
    if owner is not None:
        raise DatasetError(f"table {table!r} already belongs to dataset {owner[0]}")


def _new_dataset_doc(
    emu: Emulator,
    sandbox: str,
    name: str,
    schema_ref: dict,
    class_id: str,
    tags: dict | None,
    description: str | None,
    table_name: str,
    file_description: dict | None,
) -> dict:
    id_ = new_id()
    ts = now_ms()
    return {
        "id": id_,
        "name": name,
        "description": description or "",
        "imsOrg": emu.settings.org_id,
        "sandboxName": sandbox,
        "tags": {**(tags or {}), TABLE_TAG: [table_name]},
        "version": "1.0.0",
        "created": ts,
        "updated": ts,
        "createdClient": emu.settings.client_id,
        "createdUser": f"{emu.settings.client_id}@AdobeID",
        "updatedUser": f"{emu.settings.client_id}@AdobeID",
        "viewId": new_id(),
        "files": f"@/dataSetFiles?dataSetId={id_}",
        "schemaRef": {"id": schema_ref["id"], "contentType": schema_ref.get("contentType", SCHEMA_CONTENT_TYPE)},
        "fileDescription": file_description or {"persisted": True, "containerFormat": "parquet", "format": "parquet"},
        "state": "DRAFT",
        "classification": {
            "dataBehavior": "time-series" if class_id == EXPERIENCE_EVENT else "record",
            "managedBy": "CUSTOMER",
        },
    }


def get_dataset(emu: Emulator, sandbox: str, dataset_id: str) -> dict | None:
    """The dataset document, or None."""
    return emu.store.get(sandbox, DATASET_KIND, dataset_id)


def dataset_table(dataset: dict) -> str:
    """The Query Service table name of a dataset document."""
    return dataset["tags"][TABLE_TAG][0]


def find_dataset_by_table(emu: Emulator, sandbox: str, table: str) -> dict | None:
    """The dataset whose ``adobe/pqs/table`` tag is ``table`` (case-insensitive), or None."""
    wanted = table.lower()
    for doc in emu.store.list(sandbox, DATASET_KIND):
        if dataset_table(doc).lower() == wanted:
            return doc
    return None


def delete_dataset(emu: Emulator, sandbox: str, dataset_id: str) -> bool:
    """Delete a dataset record and drop its table, atomically; False when it does not exist."""
    doc = get_dataset(emu, sandbox, dataset_id)
    if doc is None:
        return False
    with emu.db.connection() as conn:
        tables.drop_table(conn, sandbox, dataset_table(doc))
        tables.transactional_store(conn).delete(sandbox, DATASET_KIND, dataset_id)
    return True


# --- listing: filters, order, paging, projection (shared by datasets and batches) ---


def lookup(doc: dict, dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def property_matches(doc: dict, expression: str) -> bool:
    """One ``property=`` filter: ``field~regex``, ``field==value``, ``field!=value`` or ``field`` (exists)."""
    match = re.match(r"^([\w.:/-]+?)(~|==|!=|<=|>=|<|>)(.*)$", expression)
    if match is None:
        return lookup(doc, expression) is not None
    field, op, value = match.groups()
    actual = lookup(doc, field)
    if isinstance(actual, list):
        return any(property_matches({"v": item}, f"v{op}{value}") for item in actual)
    if op == "~":
        return actual is not None and re.search(value, str(actual)) is not None
    if op == "==":
        return actual is not None and str(actual) == value
    if op == "!=":
        return actual is None or str(actual) != value
    try:
        left, right = float(actual), float(value)
    except (TypeError, ValueError):
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


def _tags_match(doc: dict, spec: str) -> bool:
    """``tags=k:v,k2:*``: every listed tag exists, with the value unless ``*``."""
    tags = doc.get("tags") or {}
    for item in spec.split(","):
        key, _, value = item.partition(":")
        if key not in tags or (value not in ("", "*") and value not in tags[key]):
            return False
    return True


def _int_param(params, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"query parameter {name}={raw!r} must be an integer") from None


def list_documents(request: Request, docs: list[dict], filters: dict[str, str]) -> dict[str, dict]:
    """Filter, order, page and project documents as Catalog lists do; keyed by id.

    :param request: the request whose query parameters apply.
    :param docs: the documents, in creation order.
    :param filters: query parameter -> top-level field it matches by equality (e.g. ``dataSet``).
    """
    params = request.query_params
    limit = _int_param(params, "limit")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit={limit} is out of range; use 1 to {MAX_LIMIT} and page with start")
    start = _int_param(params, "start") or 0
    if start < 0:
        raise bad_request(f"start={start} must be a non-negative offset")
    after, before = _int_param(params, "createdAfter"), _int_param(params, "createdBefore")
    selected = []
    for doc in docs:
        if after is not None and not doc.get("created", 0) > after:
            continue
        if before is not None and not doc.get("created", 0) < before:
            continue
        if any(p in params and not _filter_value_matches(doc, field, params[p]) for p, field in filters.items()):
            continue
        if "tags" in params and not _tags_match(doc, params["tags"]):
            continue
        if not all(property_matches(doc, expr) for value in params.getlist("property") for expr in value.split(",")):
            continue
        selected.append(doc)
    order = params.get("orderBy") or params.get("orderby")
    if order:
        direction, _, field = order.rpartition(":")
        if direction not in ("", "asc", "desc"):
            raise bad_request(f"orderBy={order!r} is not valid; use e.g. desc:created or asc:name")
        selected.sort(key=lambda d: (lookup(d, field) is None, lookup(d, field) or 0), reverse=direction == "desc")
    page = selected[start : start + limit]
    projection = [p for p in params.get("properties", "").split(",") if p]
    return {d["id"]: {k: v for k, v in d.items() if k in projection} if projection else d for d in page}


def _filter_value_matches(doc: dict, field: str, wanted: str) -> bool:
    if field == "dataSet":
        return any(o.get("type") == "dataSet" and o.get("id") == wanted for o in doc.get("relatedObjects", ()))
    return str(doc.get(field)) in wanted.split(",")


# --- routes ---


@router.post("/dataSets", status_code=201)
@router.post("/dataSets/", status_code=201, include_in_schema=False)
def create_dataset(body: dict, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("name is required: give the dataset a non-empty name")
    schema_ref = body.get("schemaRef")
    if not isinstance(schema_ref, dict) or not schema_ref.get("id"):
        raise bad_request("schemaRef.id is required: pass the $id of the dataset's XDM schema")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, list) for v in tags.values()):
        raise bad_request('tags must map each tag to a list of strings, e.g. {"team": ["ds"]}')
    try:
        doc = create_dataset_record(
            emu,
            ctx.sandbox,
            name=name,
            schema_ref=schema_ref,
            tags={k: v for k, v in tags.items() if k != TABLE_TAG},
            description=body.get("description"),
            file_description=body.get("fileDescription"),
        )
    except DatasetError as exc:
        raise bad_request(str(exc)) from exc
    return [f"@/dataSets/{doc['id']}"]


@router.get("/dataSets")
@router.get("/dataSets/", include_in_schema=False)
def list_datasets(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return list_documents(request, emu.store.list(ctx.sandbox, DATASET_KIND), {"name": "name"})


@router.get("/dataSets/{dataset_id}")
def get_dataset_route(
    dataset_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    doc = get_dataset(emu, ctx.sandbox, dataset_id)
    if doc is None:
        raise not_found("dataSet", dataset_id)
    projection = [p for p in request.query_params.get("properties", "").split(",") if p]
    return {dataset_id: {k: v for k, v in doc.items() if k in projection} if projection else doc}


@router.patch("/dataSets/{dataset_id}")
async def patch_dataset(
    dataset_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    if not request.headers.get("content-type", "").lower().startswith("application/json-patch+json"):
        raise bad_request("PATCH /dataSets needs Content-Type: application/json-patch+json and a JSON Patch array body")
    try:
        operations = await request.json()
    except ValueError:
        raise bad_request("the body is not valid JSON; send a JSON Patch array") from None
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise bad_request("the body must be a JSON Patch array of operation objects")
    for op in operations:
        root = str(op.get("path", "")).lstrip("/").split("/")[0]
        if root in _READ_ONLY or str(op.get("path", "")).startswith(f"/tags/{TABLE_TAG.replace('/', '~1')}"):
            raise bad_request(f"{op.get('path')} is read-only; it cannot be patched")

    def patch(doc: dict) -> dict:
        try:
            patched = apply_json_patch(doc, operations)
        except JsonPatchError as exc:
            raise bad_request(str(exc)) from exc
        if (patched.get("tags") or {}).get(TABLE_TAG) != doc["tags"][TABLE_TAG]:
            # The table tag links the dataset to its Query Service table: /tags as a whole cannot drop it.
            raise bad_request(f"tags.{TABLE_TAG} is read-only; patch individual tags instead of /tags")
        patched["version"] = _bump(doc.get("version", "1.0.0"))
        patched["updated"] = now_ms()
        return patched

    doc = await asyncio.to_thread(emu.store.mutate, ctx.sandbox, DATASET_KIND, dataset_id, patch)
    if doc is None:
        raise not_found("dataSet", dataset_id)
    return [f"@/dataSets/{dataset_id}"]


@router.delete("/dataSets/{dataset_id}")
def delete_dataset_route(dataset_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    if not delete_dataset(emu, ctx.sandbox, dataset_id):
        raise not_found("dataSet", dataset_id)
    return [f"@/dataSets/{dataset_id}"]


@router.get("/batches")
@router.get("/batches/", include_in_schema=False)
def list_batches(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    filters = {"dataSet": "dataSet", "dataSetId": "dataSet", "status": "status", "externalId": "externalId"}
    return list_documents(request, emu.store.list(ctx.sandbox, BATCH_KIND), filters)


@router.get("/batches/{batch_id}")
def get_batch(batch_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    doc = emu.store.get(ctx.sandbox, BATCH_KIND, batch_id)
    if doc is None:
        raise not_found("batch", batch_id)
    return {batch_id: doc}
