"""Flow Service (``/data/foundation/flowservice``): dataset export and audience activation.

Connections, source and target connections, flows and runs are stored documents. Runs are started
by the ad-hoc run API (``/data/core/activation/disflowprovider/adhocrun``) and execute in the
background, writing to the target connection's bucket and path in the emulator's S3 (the emulator
writes with its own S3 credentials; the S3 keys in the base connection are only shape-checked).
The Data Landing Zone destination maps onto the destination bucket under ``dlz-destination/``.

[U] The ad-hoc dataset export response body is inferred from client parsing (docs/aep-behaviour.md#flow-service).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from aep_emulator import exports, xdm
from aep_emulator.errors import AEPError, flow_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.services.segmentation import (
    latest_succeeded_job_id,
    patch_document,
    profile_sources,
    sandbox_info,
)
from aep_emulator.store import now_ms

log = logging.getLogger(__name__)

FLOW_PREFIX = "/data/foundation/flowservice"
router = APIRouter()

DATALAKE_SOURCE_SPEC = "23598e46-f560-407b-88d5-ea6207e49db0"
PROFILE_SOURCE_SPEC = "8a9c3494-9708-43d7-ae3f-cda01e5030e1"
S3_SPEC = "4fce964d-3f37-408f-9778-e597338a21ee"
DLZ_SPEC = "10440537-2a7b-4583-ac39-ed38d4b848e8"
S3_DATASET_FLOW_SPEC = "269ba276-16fc-47db-92b0-c1049a3c131f"
DLZ_DATASET_FLOW_SPEC = "cd2fc47e-e838-4f38-a581-8fff2f99b63a"
# "(Beta) Amazon S3 - Segment" in destinations.yaml (FlowSpec_V2).
S3_AUDIENCE_FLOW_SPEC = "1a0514a6-33d4-4c7f-aff8-594799c47549"
DATASET_FLOW_SPECS = (S3_DATASET_FLOW_SPEC, DLZ_DATASET_FLOW_SPEC)
DLZ_FOLDER = "dlz-destination"
PROVIDER_ID = "0ed90a81-07f4-4586-8190-b40eccef1c5a"
ACCEPT_DATASET_EXPORT = "application/vnd.adobe.adhoc.dataset.activation+json"
ACCEPT_ACTIVATION = "application/vnd.adobe.adhoc.activation+json"
NOT_READY_MESSAGE = "Following order ID(s) are not ready for dataset export, please wait for 10 minutes and retry."
DEFAULT_FILENAME_TEMPLATE = "%DESTINATION_NAME%_%SEGMENT_ID%_%DATETIME(YYYYMMdd_HHmmss)%"
_S3_ACCESS_KEY = re.compile(r"^[A-Z2-7]{20}$")
_S3_SECRET_KEY = re.compile(r"^[A-Za-z0-9/+]{40}$")
_LIST_LIMIT_MAX = 100


def _spec(id_: str, name: str, *, source: bool, category: str, auth: list[dict]) -> dict:
    return {
        "id": id_,
        "name": name,
        "providerId": PROVIDER_ID,
        "version": "1.0",
        "authSpec": auth,
        ("sourceSpec" if source else "targetSpec"): {"name": name, "type": "Spec", "spec": {"type": "object"}},
        "attributes": {"category": category, "isSource": source, "isDestination": not source},
    }


_S3_AUTH = [
    {
        "name": "Access Key",
        "type": "KeyBased",
        "spec": {
            "type": "object",
            "properties": {
                "s3AccessKey": {"type": "string", "pattern": _S3_ACCESS_KEY.pattern},
                "s3SecretKey": {"type": "string", "pattern": _S3_SECRET_KEY.pattern, "format": "password"},
            },
            "required": ["s3AccessKey", "s3SecretKey"],
        },
    }
]
CONNECTION_SPECS = {
    spec["id"]: spec
    for spec in (
        _spec(DATALAKE_SOURCE_SPEC, "activation-datalake", source=True, category="Datalake", auth=[]),
        # [U] the Profile-store spec's name; only its id is documented.
        _spec(PROFILE_SOURCE_SPEC, "ProfileStore", source=True, category="Profile", auth=[]),
        _spec(S3_SPEC, "Amazon S3", source=False, category="CloudStorage", auth=_S3_AUTH),
        _spec(DLZ_SPEC, "Data Landing Zone", source=False, category="CloudStorage", auth=[]),
    )
}


def _flow_spec(id_: str, name: str, sources: list[str], targets: list[str]) -> dict:
    return {
        "id": id_,
        "name": name,
        "providerId": PROVIDER_ID,
        "version": "1.0",
        "sourceConnectionSpecIds": sources,
        "targetConnectionSpecIds": targets,
        "attributes": {"isSourceFlow": False, "frequency": "batch"},
    }


# [U] flow spec names; the ids are documented.
FLOW_SPECS = {
    spec["id"]: spec
    for spec in (
        _flow_spec(S3_DATASET_FLOW_SPEC, "Amazon S3 - Dataset", [DATALAKE_SOURCE_SPEC], [S3_SPEC]),
        _flow_spec(DLZ_DATASET_FLOW_SPEC, "Data Landing Zone - Dataset", [DATALAKE_SOURCE_SPEC], [DLZ_SPEC]),
        _flow_spec(S3_AUDIENCE_FLOW_SPEC, "Amazon S3 - Segment", [PROFILE_SOURCE_SPEC], [S3_SPEC]),
    )
}


def _not_found(what: str, id_: str) -> AEPError:
    return flow_error(404, f"{what} with id {id_} not found", "CONNECTOR-1000-404")


def _etag() -> str:
    return f'"{uuid.uuid4().hex[:8]}-0000-0200-0000-{int(time.time()):x}0000"'


def _strip_quotes(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


# --------------------------------------------------------------------------- listing


def _lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(doc, list):
            return [_lookup(item, part) for item in doc]
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


_FILTER = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|>=|<=|>|<|~)\s*(.*?)\s*$")


def _matches(doc: dict, condition: str) -> bool:
    """One ``property=`` condition: ``field==v``, ``!=``, ``~`` (contains), ``>``/``<`` (numeric)."""
    match = _FILTER.match(condition)
    if match is None:
        raise flow_error(400, f"Invalid property filter {condition!r}")
    field, op, expected = match.groups()
    actual = _lookup(doc, field)
    values = actual if isinstance(actual, list) else [actual]
    if op in ("==", "!=", "~"):
        texts = [str(v) for v in values if v is not None]
        hit = any(expected in t for t in texts) if op == "~" else expected in texts
        return hit if op != "!=" else not hit
    try:
        bound = float(expected)
        numbers = [float(v) for v in values if v is not None]
    except (TypeError, ValueError) as exc:
        raise flow_error(400, f"Property filter {condition!r} needs numbers") from exc
    compare = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__}[op]
    return any(compare(n, bound) for n in numbers)


def _encode_token(state: dict) -> str:
    # base64url without padding: the token never contains "=", so next.href has exactly one.
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, json.JSONDecodeError) as exc:
        raise flow_error(400, "Invalid continuationToken") from exc


def _list_response(request: Request, docs: list[dict]) -> dict:
    """Filter, order and page documents the Flow Service way.

    A ``continuationToken`` carries the filters, order and offset, so following ``_links.next.href``
    alone (``?continuationToken=…``) continues the same listing.
    """
    params = request.query_params
    token = params.get("continuationToken")
    if token:
        state = _decode_token(token)
    else:
        try:
            limit = int(params.get("limit", _LIST_LIMIT_MAX))
        except ValueError as exc:
            raise flow_error(400, "limit must be an integer") from exc
        if limit < 1:
            raise flow_error(400, "limit must be positive")
        state = {
            "offset": 0,
            "limit": min(limit, _LIST_LIMIT_MAX),
            "property": params.getlist("property"),
            "orderby": params.get("orderby"),
        }
    selected = [d for d in docs if all(_matches(d, c) for c in state["property"])]
    if state["orderby"]:
        field = state["orderby"].lstrip("+-")
        present = [d for d in selected if _lookup(d, field) is not None]
        present.sort(key=lambda d: _lookup(d, field), reverse=state["orderby"].startswith("-"))
        selected = present + [d for d in selected if _lookup(d, field) is None]
    if params.get("count") == "true":
        return {"count": len(selected)}
    offset, limit = state["offset"], state["limit"]
    body: dict[str, Any] = {"items": [_public(d) for d in selected[offset : offset + limit]], "_links": {}}
    if offset + limit < len(selected):
        body["_links"]["next"] = {"href": "?continuationToken=" + _encode_token({**state, "offset": offset + limit})}
    return body


def _public(doc: dict) -> dict:
    """The document without the emulator's private run task."""
    return {k: v for k, v in doc.items() if k != "_task"}


# --------------------------------------------------------------------------- specs


@router.get(FLOW_PREFIX + "/connectionSpecs")
def list_connection_specs(request: Request):
    return _list_response(request, list(CONNECTION_SPECS.values()))


@router.get(FLOW_PREFIX + "/connectionSpecs/{spec_id}")
def read_connection_spec(spec_id: str):
    if spec_id not in CONNECTION_SPECS:
        raise _not_found("Connection spec", spec_id)
    return {"items": [CONNECTION_SPECS[spec_id]]}


@router.get(FLOW_PREFIX + "/flowSpecs")
def list_flow_specs(request: Request):
    return _list_response(request, list(FLOW_SPECS.values()))


@router.get(FLOW_PREFIX + "/flowSpecs/{spec_id}")
def read_flow_spec(spec_id: str):
    if spec_id not in FLOW_SPECS:
        raise _not_found("Flow spec", spec_id)
    return {"items": [FLOW_SPECS[spec_id]]}


# --------------------------------------------------------------------------- connections and flows


def _new_resource(ctx: CallContext) -> dict:
    """Id, timestamps, audit and sandbox fields every Flow Service resource (and run) starts with."""
    ts = now_ms()
    return {
        "id": str(uuid.uuid4()),
        "createdAt": ts,
        "updatedAt": ts,
        "createdBy": f"{ctx.client_id}@AdobeID",
        "updatedBy": f"{ctx.client_id}@AdobeID",
        "createdClient": ctx.client_id,
        "updatedClient": ctx.client_id,
        "sandboxId": sandbox_info(ctx.sandbox)["sandboxId"],
        "sandboxName": ctx.sandbox,
        "imsOrgId": ctx.org_id,
    }


def _base_doc(ctx: CallContext, body: dict) -> dict:
    if not isinstance(body.get("name"), str) or not body["name"].strip():
        raise flow_error(400, "name is required")
    etag = _etag()
    return {
        **_new_resource(ctx),
        "name": body["name"],
        "description": body.get("description", ""),
        "state": "enabled",
        "version": etag,
        "etag": etag,
    }


def _connection_spec(body: dict, allowed: tuple[str, ...]) -> dict:
    spec = body.get("connectionSpec") or {}
    if spec.get("id") not in allowed:
        raise flow_error(
            400, f"connectionSpec.id {spec.get('id')!r} is not supported here (expected one of {list(allowed)})"
        )
    return {"id": spec["id"], "version": str(spec.get("version", "1.0"))}


def _get(emu: Emulator, sandbox: str, kind: str, id_: str, what: str) -> dict:
    doc = emu.store.get(sandbox, kind, id_)
    if doc is None:
        raise _not_found(what, id_)
    return doc


def _new_connection(emu: Emulator, ctx: CallContext, body: dict) -> dict:
    doc = _base_doc(ctx, body)
    doc["connectionSpec"] = _connection_spec(body, tuple(CONNECTION_SPECS))
    auth = body.get("auth")
    if doc["connectionSpec"]["id"] == S3_SPEC:
        params = (auth or {}).get("params") or {}
        if (auth or {}).get("specName") != "Access Key":
            raise flow_error(400, "Amazon S3 connections need auth.specName 'Access Key'")
        if not _S3_ACCESS_KEY.match(str(params.get("s3AccessKey", ""))):
            raise flow_error(400, "auth.params.s3AccessKey must match ^[A-Z2-7]{20}$")
        if not _S3_SECRET_KEY.match(str(params.get("s3SecretKey", ""))):
            raise flow_error(400, "auth.params.s3SecretKey must match ^[A-Za-z0-9/+]{40}$")
        # Secrets are never echoed back.
        auth = {"specName": "Access Key", "params": {"s3AccessKey": params["s3AccessKey"], "s3SecretKey": "***"}}
    if auth is not None:
        doc["auth"] = auth
    return doc


def _inherited(emu: Emulator, sandbox: str, connection: dict) -> dict:
    base_id = connection.get("baseConnectionId")
    base = emu.store.get(sandbox, "connection", base_id) if base_id else None
    inherited = {"id": connection["id"], "connectionSpec": connection["connectionSpec"]}
    if base is not None:
        inherited["baseConnection"] = {"id": base["id"], "connectionSpec": base["connectionSpec"]}
    return inherited


def _new_source_connection(emu: Emulator, ctx: CallContext, body: dict) -> dict:
    doc = _base_doc(ctx, body)
    doc["connectionSpec"] = _connection_spec(body, (DATALAKE_SOURCE_SPEC, PROFILE_SOURCE_SPEC))
    if body.get("baseConnectionId"):
        _get(emu, ctx.sandbox, "connection", body["baseConnectionId"], "Connection")
        doc["baseConnectionId"] = body["baseConnectionId"]
    params = body.get("params") or {}
    if doc["connectionSpec"]["id"] == DATALAKE_SOURCE_SPEC:
        datasets = params.get("datasets")
        if (
            not isinstance(datasets, list)
            or not datasets
            or not all(isinstance(d, dict) and d.get("dataSetId") for d in datasets)
        ):
            raise flow_error(400, 'params.datasets must be a non-empty list of {"dataSetId", "name"}')
        for dataset in datasets:
            if emu.store.get(ctx.sandbox, "dataSet", dataset["dataSetId"]) is None:
                raise flow_error(400, f"Dataset {dataset['dataSetId']} does not exist in sandbox {ctx.sandbox}")
        doc["data"] = body.get("data") or {"format": "parquet"}
    else:
        doc["typeInfo"] = {"type": "ProfileFragments", "id": "ups"}
    doc["params"] = params
    doc["inheritedAttributes"] = {k: v for k, v in _inherited(emu, ctx.sandbox, doc).items() if k == "baseConnection"}
    return doc


def _new_target_connection(emu: Emulator, ctx: CallContext, body: dict) -> dict:
    doc = _base_doc(ctx, body)
    doc["connectionSpec"] = _connection_spec(body, (S3_SPEC, DLZ_SPEC))
    base = _get(emu, ctx.sandbox, "connection", str(body.get("baseConnectionId")), "Connection")
    if base["connectionSpec"]["id"] != doc["connectionSpec"]["id"]:
        raise flow_error(400, "the target connection's connectionSpec differs from its base connection's")
    params = dict(body.get("params") or {})
    required = ("bucketName", "path") if doc["connectionSpec"]["id"] == S3_SPEC else ("path",)
    missing = [p for p in required if not params.get(p)]
    if missing:
        raise flow_error(400, f"params {missing} are required")
    params["compression"] = str(params.get("compression", "NONE")).upper()
    if params["compression"] not in ("GZIP", "NONE"):
        raise flow_error(400, "params.compression must be GZIP or NONE")
    for key, allowed in (("datasetFileType", ("PARQUET", "JSON")), ("fileType", ("CSV", "JSON", "PARQUET"))):
        if key in params:
            params[key] = str(params[key]).upper()
            if params[key] not in allowed:
                raise flow_error(400, f"params.{key} must be one of {list(allowed)}")
    doc.update(baseConnectionId=base["id"], params=params, data=body.get("data") or {})
    doc["inheritedAttributes"] = {"baseConnection": {"id": base["id"], "connectionSpec": base["connectionSpec"]}}
    return doc


def _new_flow(emu: Emulator, ctx: CallContext, body: dict) -> dict:
    doc = _base_doc(ctx, body)
    spec = FLOW_SPECS.get((body.get("flowSpec") or {}).get("id"))
    if spec is None:
        raise flow_error(400, f"flowSpec.id must be one of {list(FLOW_SPECS)}")
    sources = [
        _get(emu, ctx.sandbox, "sourceConnection", i, "Source connection")
        for i in body.get("sourceConnectionIds") or []
    ]
    targets = [
        _get(emu, ctx.sandbox, "targetConnection", i, "Target connection")
        for i in body.get("targetConnectionIds") or []
    ]
    if len(sources) != 1 or len(targets) != 1:
        raise flow_error(400, "a flow needs exactly one source and one target connection id")
    if sources[0]["connectionSpec"]["id"] not in spec["sourceConnectionSpecIds"] or (
        targets[0]["connectionSpec"]["id"] not in spec["targetConnectionSpecIds"]
    ):
        raise flow_error(400, f"the connections' specs do not fit flow spec {spec['id']}")
    transformations = body.get("transformations", [])
    if not isinstance(transformations, list):
        raise flow_error(400, "transformations must be a list")
    doc.update(
        flowSpec={"id": spec["id"], "version": str(body["flowSpec"].get("version", "1.0"))},
        sourceConnectionIds=[s["id"] for s in sources],
        targetConnectionIds=[t["id"] for t in targets],
        inheritedAttributes={
            "properties": {"isDestinationFlow": True},
            "sourceConnections": [_inherited(emu, ctx.sandbox, s) for s in sources],
            "targetConnections": [_inherited(emu, ctx.sandbox, t) for t in targets],
        },
        transformations=transformations,
        scheduleParams=body.get("scheduleParams") or {},
    )
    return doc


_COLLECTIONS = {
    "connections": ("connection", "Connection", _new_connection),
    "sourceConnections": ("sourceConnection", "Source connection", _new_source_connection),
    "targetConnections": ("targetConnection", "Target connection", _new_target_connection),
    "flows": ("flow", "Flow", _new_flow),
}


def _register_collection(collection: str, kind: str, what: str, build) -> None:
    path = f"{FLOW_PREFIX}/{collection}"

    @router.post(path, status_code=201, name=f"create_{kind}")
    def create(body: Any = Body(None), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
        if not isinstance(body, dict):
            raise flow_error(400, "the body must be a JSON object")
        doc = build(emu, ctx, body)
        emu.store.insert(ctx.sandbox, kind, doc["id"], doc, name=doc["name"])
        return {"id": doc["id"], "etag": doc["etag"]}

    @router.get(path, name=f"list_{kind}")
    def list_(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
        return _list_response(request, emu.store.list(ctx.sandbox, kind))

    @router.get(path + "/{id_}", name=f"read_{kind}")
    def read(id_: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
        return {"items": [_get(emu, ctx.sandbox, kind, id_, what)]}

    @router.delete(path + "/{id_}", status_code=204, name=f"delete_{kind}")
    def delete(id_: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
        if not emu.store.delete(ctx.sandbox, kind, id_):
            raise _not_found(what, id_)
        return Response(status_code=204)


for _collection, (_kind, _what, _build) in _COLLECTIONS.items():
    _register_collection(_collection, _kind, _what, _build)


def _check_if_match(request: Request, flow: dict, required: bool) -> None:
    if_match = request.headers.get("if-match")
    if if_match is None:
        if required:
            raise flow_error(428, "The If-Match header with the flow's etag is required", "CONNECTOR-1001-428")
        return
    if _strip_quotes(if_match) != _strip_quotes(flow["etag"]):
        raise flow_error(
            412, f"If-Match {if_match} does not match the current etag {flow['etag']}", "CONNECTOR-1001-412"
        )


def _validate_selectors(emu: Emulator, sandbox: str, flow: dict) -> None:
    """Every PLATFORM_SEGMENT selector must name an existing audience; stamp its times."""
    for transformation in flow.get("transformations") or []:
        selectors = (((transformation.get("params") or {}).get("segmentSelectors") or {}).get("selectors")) or []
        for selector in selectors:
            value = selector.get("value") or {}
            if emu.store.get(sandbox, "segmentDefinition", str(value.get("id"))) is None:
                raise flow_error(400, f"Segment {value.get('id')!r} does not exist in sandbox {sandbox}")
            now_s = str(int(time.time()))
            value.setdefault("createTime", now_s)
            value["updateTime"] = now_s


def _update_flow(
    emu: Emulator, ctx: CallContext, request: Request, flow_id: str, change, *, require_if_match: bool
) -> dict:
    """Apply ``change(flow)`` under a row lock after the If-Match check; a new etag; ``{id, etag}``."""
    _get(emu, ctx.sandbox, "flow", flow_id, "Flow")

    def mutate(flow: dict) -> dict:
        _check_if_match(request, flow, required=require_if_match)
        flow = change(flow)
        etag = _etag()
        flow.update(etag=etag, version=etag, updatedAt=now_ms(), updatedClient=ctx.client_id)
        return flow

    flow = emu.store.mutate(ctx.sandbox, "flow", flow_id, mutate)
    return {"id": flow["id"], "etag": flow["etag"]}


def _set_state_enabled(flow: dict) -> dict:
    return {**flow, "state": "enabled"}


def _set_state_disabled(flow: dict) -> dict:
    return {**flow, "state": "disabled"}


@router.patch(FLOW_PREFIX + "/flows/{flow_id}")
def patch_flow(
    flow_id: str,
    request: Request,
    body: Any = Body(None),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    """JSON Patch a flow; needs ``If-Match: <etag>`` (412 on a stale etag, 428 without one)."""

    def change(flow: dict) -> dict:
        try:
            patched = patch_document(flow, body)
        except xdm.JsonPatchError as exc:
            raise flow_error(400, str(exc)) from exc
        for immutable in ("id", "flowSpec", "sourceConnectionIds", "targetConnectionIds", "createdAt", "imsOrgId"):
            patched[immutable] = flow[immutable]
        _validate_selectors(emu, ctx.sandbox, patched)
        return patched

    return _update_flow(emu, ctx, request, flow_id, change, require_if_match=True)


@router.post(FLOW_PREFIX + "/flows/{flow_id}/action")
def flow_action(
    flow_id: str, request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """``?op=enable|disable``; If-Match is checked when sent (clients omit it [U])."""
    ops = {"enable": _set_state_enabled, "disable": _set_state_disabled}
    op = request.query_params.get("op")
    if op not in ops:
        raise flow_error(400, "op must be enable or disable")
    return _update_flow(emu, ctx, request, flow_id, ops[op], require_if_match=False)


# --------------------------------------------------------------------------- runs


@router.get(FLOW_PREFIX + "/runs")
def list_runs(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return _list_response(request, emu.store.list(ctx.sandbox, "run"))


@router.get(FLOW_PREFIX + "/runs/{run_id}")
def read_run(run_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return {"items": [_public(_get(emu, ctx.sandbox, "run", run_id, "Run"))]}


def _new_run(ctx: CallContext, flow: dict, task: dict) -> dict:
    ts = now_ms()
    return {
        **_new_resource(ctx),
        "flowId": flow["id"],
        "flowSpec": flow["flowSpec"],
        "providerRefId": str(uuid.uuid4()),
        "etag": _etag(),
        "metrics": {
            "durationSummary": {"startedAtUTC": ts},
            "sizeSummary": {"inputBytes": 0, "outputBytes": 0},
            "recordSummary": {
                "inputRecordCount": 0,
                "outputRecordCount": 0,
                "failedRecordCount": 0,
                "sourceSummaries": [],
            },
            "fileSummary": {"inputFileCount": 0, "outputFileCount": 0, "manifest": {"fileInfo": []}},
            "statusSummary": {"status": "processing"},
        },
        "activities": [],
        "_task": task,
    }


def _active_run(emu: Emulator, sandbox: str, flow_id: str, key: str, value: str) -> dict | None:
    for run in emu.store.list(sandbox, "run"):
        if (
            run["flowId"] == flow_id
            and run["_task"].get(key) == value
            and "completedAtUTC" not in run["metrics"]["durationSummary"]
        ):
            return run
    return None


def _status_url(request: Request, run_id: str) -> str:
    return f"{request.base_url}{FLOW_PREFIX.lstrip('/')}/runs/{run_id}"


def _adhoc_error(status: int, message: str) -> AEPError:
    return AEPError(status, {"message": message})


def _flow_or_404(emu: Emulator, sandbox: str, flow_id: str) -> dict:
    flow = emu.store.get(sandbox, "flow", str(flow_id))
    if flow is None:
        raise _adhoc_error(404, f"Flow for id {flow_id} not found")
    return flow


def _start_runs(emu: Emulator, ctx: CallContext, flow_id: str, planned: list[tuple[dict, dict]]) -> list[dict]:
    """Check for in-flight runs and create the planned ones under one per-flow lock."""
    with emu.db.connection() as conn:
        # Serialises ad-hoc requests on one flow so two cannot both pass the "already running" check.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{ctx.sandbox}/adhocrun/{flow_id}",))
        for flow, task in planned:
            key = "datasetId" if task["type"] == "dataset" else "segmentId"
            active = _active_run(emu, ctx.sandbox, flow["id"], key, task[key])
            if active is not None and task["type"] == "dataset":
                raise _adhoc_error(
                    400,
                    f"A run already exists for flow {flow['id']} and dataset {task[key]} "
                    f"(run id {active['id']}); wait for it to finish",
                )
            if active is not None:
                raise _adhoc_error(
                    400,
                    f"Run already going on for audience {task[key]} for order {flow['id']} with run id {active['id']}",
                )
        runs = [_new_run(ctx, flow, task) for flow, task in planned]
        for run in runs:
            emu.store.insert(ctx.sandbox, "run", run["id"], run)
    for run in runs:
        emu.submit(execute_run, emu, ctx.sandbox, run["id"])
    return runs


def _plan_dataset_exports(emu: Emulator, ctx: CallContext, body: dict) -> list[tuple[str, list[tuple[dict, dict]]]]:
    destinations = (body.get("activationInfo") or {}).get("destinations")
    if not isinstance(destinations, list) or not destinations:
        raise _adhoc_error(400, 'activationInfo.destinations must be a list of {"flowId", "datasets": [{"id"}]}')
    plans = []
    for destination in destinations:
        flow = _flow_or_404(emu, ctx.sandbox, destination.get("flowId"))
        if flow["flowSpec"]["id"] not in DATASET_FLOW_SPECS:
            raise _adhoc_error(
                400,
                f"Flow for id {flow['id']} is incorrect. Error is "
                f"[Adhoc run can not be executed for Flow spec={flow['flowSpec']['id']}]",
            )
        if now_ms() - flow["createdAt"] < emu.settings.export_not_ready_s * 1000:
            raise _adhoc_error(400, NOT_READY_MESSAGE)
        source = _get(emu, ctx.sandbox, "sourceConnection", flow["sourceConnectionIds"][0], "Source connection")
        allowed = {d["dataSetId"] for d in source["params"]["datasets"]}
        datasets = destination.get("datasets") or []
        unknown = [d.get("id") for d in datasets if d.get("id") not in allowed]
        if not datasets or unknown:
            raise _adhoc_error(400, f"Dataset(s) {unknown} are not part of flow {flow['id']}")
        plans.append((flow["id"], [(flow, {"type": "dataset", "datasetId": d["id"]}) for d in datasets]))
    return plans


def _plan_activations(emu: Emulator, ctx: CallContext, body: dict) -> list[tuple[str, list[tuple[dict, dict]]]]:
    info = body.get("activationInfo")
    if not isinstance(info, dict) or not info or not all(isinstance(v, list) and v for v in info.values()):
        raise _adhoc_error(400, "activationInfo must map destination (flow) ids to lists of audience ids")
    plans = []
    for flow_id, audience_ids in info.items():
        flow = _flow_or_404(emu, ctx.sandbox, flow_id)
        mapped = {
            (s.get("value") or {}).get("id")
            for t in flow.get("transformations") or []
            for s in ((t.get("params") or {}).get("segmentSelectors") or {}).get("selectors") or []
        }
        outside = [a for a in audience_ids if a not in mapped]
        if flow["flowSpec"]["id"] in DATASET_FLOW_SPECS or outside:
            raise _adhoc_error(
                400,
                f"Segments {', '.join(map(str, outside or audience_ids))} are not part of this "
                "dataflow or out of schedule range!",
            )
        plans.append((flow["id"], [(flow, {"type": "audience", "segmentId": a}) for a in audience_ids]))
    return plans


@router.post("/data/core/activation/disflowprovider/adhocrun")
def adhoc_run(
    request: Request,
    body: Any = Body(None),
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    """Ad-hoc dataset export (Accept ``…adhoc.dataset.activation+json; version=1``) or audience
    activation (Accept ``…adhoc.activation+json; version=2``; v1 without Accept needs ``exportIds``)."""
    if not isinstance(body, dict):
        raise _adhoc_error(400, "the body must be a JSON object")
    accept = request.headers.get("accept", "")
    dataset_export = ACCEPT_DATASET_EXPORT in accept
    if not dataset_export and ACCEPT_ACTIVATION not in accept and not body.get("exportIds"):
        raise _adhoc_error(400, "exportIds are required without the Accept header of ad-hoc activation v2")
    plans = _plan_dataset_exports(emu, ctx, body) if dataset_export else _plan_activations(emu, ctx, body)
    started = {flow_id: _start_runs(emu, ctx, flow_id, planned) for flow_id, planned in plans}
    if dataset_export:
        return {
            "destinations": [
                {
                    "flowId": flow_id,
                    "datasets": [
                        {"id": r["_task"]["datasetId"], "statusURL": _status_url(request, r["id"])} for r in runs
                    ],
                }
                for flow_id, runs in started.items()
            ]
        }
    return {
        "order": [
            {"segment": r["_task"]["segmentId"], "order": flow_id, "statusURL": _status_url(request, r["id"])}
            for flow_id, runs in started.items()
            for r in runs
        ]
    }


def _destination(emu: Emulator, target: dict) -> tuple[str, str]:
    """``(bucket, key prefix)`` of a target connection."""
    params = target["params"]
    path = params.get("path", "").strip("/")
    if target["connectionSpec"]["id"] == DLZ_SPEC:
        return emu.settings.destination_bucket, f"{DLZ_FOLDER}/{path}".rstrip("/")
    return params["bucketName"], path


def _filename(template: str, flow: dict, segment: dict, at: datetime) -> str:
    """Expand an activation ``filenameTemplate`` (``%DESTINATION_NAME%``, ``%SEGMENT_ID%``,
    ``%SEGMENT_NAME%``, ``%DATETIME(YYYYMMdd_HHmmss)%``, ``%TIMESTAMP%``)."""
    java_to_strftime = {"YYYY": "%Y", "yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}

    def datetime_macro(match: re.Match) -> str:
        pattern = re.sub("|".join(java_to_strftime), lambda m: java_to_strftime[m.group(0)], match.group(1))
        return at.strftime(pattern)

    name = re.sub(r"%DATETIME\(([^)]*)\)%", datetime_macro, template)
    # [U] %DESTINATION_NAME% expands to the dataflow (destination instance) name.
    for macro, value in (
        ("%DESTINATION_NAME%", flow["name"]),
        ("%SEGMENT_ID%", segment["id"]),
        ("%SEGMENT_NAME%", segment["name"]),
        ("%TIMESTAMP%", str(int(at.timestamp()))),
    ):
        name = name.replace(macro, value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _selector(flow: dict, segment_id: str) -> dict:
    for transformation in flow.get("transformations") or []:
        for selector in ((transformation.get("params") or {}).get("segmentSelectors") or {}).get("selectors") or []:
            if (selector.get("value") or {}).get("id") == segment_id:
                return selector["value"]
    raise exports.ExportError(f"audience {segment_id} is no longer mapped to flow {flow['id']}")


def _profile_attributes(flow: dict) -> list[str]:
    return [
        s["value"]["path"]
        for t in flow.get("transformations") or []
        for s in ((t.get("params") or {}).get("profileSelectors") or {}).get("selectors") or []
        if (s.get("value") or {}).get("path")
    ]


def _export_dataset(emu: Emulator, sandbox: str, flow: dict, target: dict, run: dict) -> exports.ExportResult:
    dataset_id = run["_task"]["datasetId"]
    dataset = emu.store.get(sandbox, "dataSet", dataset_id)
    if dataset is None or not (dataset.get("tags") or {}).get("adobe/pqs/table"):
        raise exports.ExportError(f"dataset {dataset_id} has no table")
    bucket, path = _destination(emu, target)
    export_time = datetime.fromtimestamp(run["createdAt"] / 1000, UTC).strftime("%Y%m%d%H%M")
    prefix = "/".join(p for p in (path, dataset_id, f"exportTime={export_time}") if p)
    return exports.export_dataset(
        emu,
        sandbox,
        dataset["tags"]["adobe/pqs/table"][0],
        bucket,
        prefix,
        file_type=target["params"].get("datasetFileType", "PARQUET"),
        compression=target["params"].get("compression", "NONE"),
    )


def _activate_audience(emu: Emulator, sandbox: str, flow: dict, target: dict, run: dict) -> exports.ExportResult:
    segment_id = run["_task"]["segmentId"]
    segment = emu.store.get(sandbox, "segmentDefinition", segment_id)
    job_id = latest_succeeded_job_id(emu, sandbox, segment_id)
    if segment is None or job_id is None:
        raise exports.ExportError(f"audience {segment_id} has no successful segmentation result to activate")
    selector = _selector(flow, segment_id)
    bucket, path = _destination(emu, target)
    gzipped = target["params"].get("compression") == "GZIP"
    at = datetime.fromtimestamp(run["createdAt"] / 1000, UTC)
    filename = _filename(selector.get("filenameTemplate") or DEFAULT_FILENAME_TEMPLATE, flow, segment, at)
    key = "/".join(p for p in (path, f"{filename}.csv{'.gz' if gzipped else ''}") if p)
    namespaces = sorted({source.namespace for source in profile_sources(emu, sandbox)})
    return exports.write_audience_csv(
        emu,
        sandbox,
        job_id,
        segment_id,
        bucket,
        key,
        namespaces=namespaces,
        attributes=_profile_attributes(flow),
        csv_options=target["params"].get("csvOptions") or {},
        gzipped=gzipped,
    )


def _finish_run(
    emu: Emulator, sandbox: str, run_id: str, result: exports.ExportResult | None, error: str | None
) -> None:
    def finish(run: dict) -> dict:
        # At most once, under the run's row lock: a second runner (after a restart) cannot rewrite it.
        if run["metrics"]["durationSummary"].get("completedAtUTC"):
            return run
        ended = now_ms()
        metrics = run["metrics"]
        metrics["durationSummary"]["completedAtUTC"] = ended
        status = (
            {"status": "failed", "errors": [{"code": "CONNECTOR-2001-500", "message": error}]}
            if error
            else {"status": "success"}
        )
        if result is not None:
            metrics["sizeSummary"]["outputBytes"] = result.output_bytes
            metrics["recordSummary"].update(inputRecordCount=result.records, outputRecordCount=result.records)
            metrics["fileSummary"].update(
                outputFileCount=len(result.keys), manifest={"fileInfo": [{"path": key} for key in result.keys]}
            )
        metrics["statusSummary"] = status
        run["activities"] = [
            {
                "id": str(uuid.uuid4()),
                "name": "Export" if run["_task"]["type"] == "dataset" else "Activation",
                "updatedAtUTC": ended,
                "durationSummary": dict(metrics["durationSummary"]),
                "sizeSummary": dict(metrics["sizeSummary"]),
                "recordSummary": dict(metrics["recordSummary"]),
                "fileSummary": {"inputFileCount": 0, "outputFileCount": metrics["fileSummary"]["outputFileCount"]},
                "statusSummary": status,
            }
        ]
        run.update(updatedAt=ended, etag=_etag())
        return run

    run = emu.store.mutate(sandbox, "run", run_id, finish)

    def last_run(flow: dict) -> dict:
        flow["lastRunDetails"] = {
            "id": run_id,
            "state": run["metrics"]["statusSummary"]["status"],
            "startedAtUTC": run["metrics"]["durationSummary"]["startedAtUTC"],
            "completedAtUTC": run["metrics"]["durationSummary"]["completedAtUTC"],
        }
        return flow

    emu.store.mutate(sandbox, "flow", run["flowId"], last_run)


def execute_run(emu: Emulator, sandbox: str, run_id: str) -> None:
    """Run one export or activation and record its metrics (status ``success`` or ``failed``)."""
    time.sleep(emu.settings.state_latency_s)
    run = emu.store.get(sandbox, "run", run_id)
    if emu.faults.take_forced_failure("export"):
        _finish_run(emu, sandbox, run_id, None, "Export failed (forced failure injected by the emulator)")
        return
    try:
        flow = _get(emu, sandbox, "flow", run["flowId"], "Flow")
        target = _get(emu, sandbox, "targetConnection", flow["targetConnectionIds"][0], "Target connection")
        execute = _export_dataset if run["_task"]["type"] == "dataset" else _activate_audience
        result = execute(emu, sandbox, flow, target, run)
    except (AEPError, exports.ExportError, psycopg.Error, ClientError, BotoCoreError) as exc:
        log.warning("run %s failed: %s", run_id, exc)
        _finish_run(emu, sandbox, run_id, None, str(exc))
        return
    except Exception as exc:
        # A run must end: left in progress, it would refuse every later ad-hoc run of its flow.
        log.exception("run %s failed unexpectedly", run_id)
        _finish_run(emu, sandbox, run_id, None, f"Internal error: {exc}")
        return
    _finish_run(emu, sandbox, run_id, result, None)


def recover(emu: Emulator) -> None:
    """Fail runs a previous emulator process left unfinished: their partial output is not trusted."""
    for sandbox, run in emu.store.list_all_sandboxes("run"):
        if sandbox in emu.settings.sandboxes and "completedAtUTC" not in run["metrics"]["durationSummary"]:
            log.info("failing run %s of sandbox %s interrupted by a restart", run["id"], sandbox)
            _finish_run(emu, sandbox, run["id"], None, "The run was interrupted by an emulator restart")


# --------------------------------------------------------------------------- Data Landing Zone

_DLZ_CONTAINERS = {"dlz_destination": DLZ_FOLDER, "user_drop_zone": "dlz-user-container"}


def _dlz_container(request: Request) -> str:
    type_ = request.query_params.get("type")
    if type_ not in _DLZ_CONTAINERS:
        raise flow_error(400, f"type must be one of {list(_DLZ_CONTAINERS)}")
    return _DLZ_CONTAINERS[type_]


@router.get("/data/foundation/connectors/landingzone")
def landing_zone(request: Request):
    return {"containerName": _dlz_container(request), "containerTTL": "7"}


@router.get("/data/foundation/connectors/landingzone/credentials")
def landing_zone_credentials(request: Request, emu: Emulator = Depends(emulator)):
    """The AWS-hosted DLZ shape [U], pointing at the emulator's S3 (destination bucket)."""
    return {
        "dlzProvider": "Amazon S3",
        "dlzPath": {"bucketName": emu.settings.destination_bucket, "dlzFolder": _dlz_container(request)},
        "credentials": {
            "awsAccessKeyId": emu.settings.s3_access_key,
            "awsSecretAccessKey": emu.settings.s3_secret_key,
            "awsSessionToken": "",
        },
        "dlzEndpoint": emu.settings.s3_endpoint,
    }
