"""Schema Registry (``/data/foundation/schemaregistry``): XDM classes, field groups, schemas, descriptors.

Global classes and field groups are built in (:mod:`aep_emulator.xdm`); tenant field groups, schemas
and descriptors are stored per sandbox. Emulator choices where AEP's exact answer is unconfirmed
(docs/aep-behaviour.md#schema-registry): a duplicate title gives **409** ``XDM-1521-409``; an invalid body gives 400
``XDM-1001-400``; Accept problems give ``XDM-1006-400`` (missing), ``XDM-1008-400`` (not a valid
value for the call) and ``XDM-1009-400`` (lookup without ``version``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from aep_emulator.errors import AEPError, xdm_error
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.services.catalog import lookup, property_matches
from aep_emulator.xdm import (
    DESCRIPTOR_KIND,
    FIELD_GROUP_KIND,
    GLOBAL_CLASSES,
    GLOBAL_FIELD_GROUPS,
    SCHEMA_KIND,
    JsonPatchError,
    XDMError,
    alt_id,
    apply_json_patch,
    fields_of,
    find_resource,
    registry_metadata,
    resolved_properties,
    tenant_id,
)

router = APIRouter(prefix="/data/foundation/schemaregistry")

LIST_LIMIT = 300  # AEP caps a listing at 300 items; page with orderby/start beyond that.
DESCRIPTOR_TYPES = (
    "xdm:alternateDisplayInfo",
    "xdm:descriptorIdentity",
    "xdm:descriptorReferenceIdentity",
    "xdm:descriptorOneToOne",
    "xdm:descriptorRelationship",
)
UNION_TAG = "union"
# Path segment -> (stored kind or None, built-in resources of the global container).
_KINDS: dict[str, tuple[str | None, dict[str, dict]]] = {
    "schemas": (SCHEMA_KIND, {}),
    "fieldgroups": (FIELD_GROUP_KIND, GLOBAL_FIELD_GROUPS),
    "mixins": (FIELD_GROUP_KIND, GLOBAL_FIELD_GROUPS),
    "classes": (None, GLOBAL_CLASSES),
}
_ACCEPT = re.compile(r"^application/vnd\.adobe\.(xed|xdm)((?:-[a-z0-9]+)*)\+json\s*(?:;\s*version\s*=\s*([\w.]+))?$")
# Fields the registry owns; a PATCH may not change them.
_READ_ONLY = ("$id", "meta:altId", "meta:resourceType", "meta:containerId", "meta:class", "version", "imsOrg")


def invalid(detail: str) -> AEPError:
    return xdm_error(400, "XDM-1001-400", "Invalid request", detail)


def not_found(ref: str) -> AEPError:
    return xdm_error(404, "XDM-1012-404", "Resource not found", f"No resource found with id or altId {ref!r}")


def _accept(request: Request, family: str, variants: tuple[str, ...], versioned: bool) -> str:
    """Validate the Accept header; return its variant (``-full``, ``-id``...).

    :param family: ``xed`` for schema resources, ``xdm`` for descriptors.
    :param variants: the allowed variant suffixes for this call.
    :param versioned: whether a ``version=`` parameter is required (lookups).
    """
    value = request.headers.get("accept", "").strip().lower()
    if value in ("", "*/*"):
        raise xdm_error(
            400,
            "XDM-1006-400",
            "Accept header missing",
            f"An Accept header is required, e.g. application/vnd.adobe.{family}{'+json; version=1' if versioned else '-id+json'}",
        )
    match = _ACCEPT.match(value)
    if match is None or match.group(1) != family or match.group(2) not in variants:
        allowed = ", ".join(f"application/vnd.adobe.{family}{v}+json" for v in variants)
        raise xdm_error(
            400, "XDM-1008-400", "Invalid Accept header", f"Accept {value!r} is not valid here; use one of {allowed}"
        )
    if versioned and not match.group(3):
        raise xdm_error(
            400,
            "XDM-1009-400",
            "Accept header version missing",
            f"Accept {value!r} needs a major version, e.g. application/vnd.adobe.{family}{match.group(2)}+json; version=1",
        )
    return match.group(2)


def _lookup_variants() -> tuple[str, ...]:
    parts = ("-full", "-notext", "-desc")
    combos = [""]
    for part in parts:
        combos += [c + part for c in combos]
    return tuple(combos)


_LOOKUP_VARIANTS = _lookup_variants()


def _kind(kind: str) -> tuple[str | None, dict[str, dict]]:
    if kind not in _KINDS:
        raise xdm_error(404, "XDM-1012-404", "Resource not found", f"unknown resource type {kind!r}")
    return _KINDS[kind]


def _container(container: str) -> None:
    if container not in ("global", "tenant"):
        raise xdm_error(
            404, "XDM-1012-404", "Resource not found", f"unknown container {container!r}; use global or tenant"
        )


def _without_text(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_text(v) for k, v in node.items() if k not in ("title", "description")}
    if isinstance(node, list):
        return [_without_text(v) for v in node]
    return node


def _descriptors_of(emu: Emulator, sandbox: str, schema_id: str) -> list[dict]:
    return [d for d in emu.store.list(sandbox, DESCRIPTOR_KIND) if d.get("xdm:sourceSchema") == schema_id]


def _render(emu: Emulator, sandbox: str, doc: dict, variant: str) -> dict:
    """A resource as a lookup with this Accept variant returns it."""
    out = dict(doc)
    if "-full" in variant:
        out["properties"] = resolved_properties(emu, sandbox, doc)
    if "-desc" in variant:
        out["meta:descriptors"] = _descriptors_of(emu, sandbox, doc["$id"])
    return _without_text(out) if "-notext" in variant else out


def _list_items(emu: Emulator, sandbox: str, container: str, kind: str) -> list[dict]:
    stored_kind, globals_ = _kind(kind)
    if container == "global":
        return list(globals_.values())
    return emu.store.list(sandbox, stored_kind) if stored_kind else []


def _listing(request: Request, docs: list[dict], variant: str) -> dict:
    """Filter (``property``), order (``orderby``), page (``start``, ``limit``) a listing."""
    params = request.query_params
    docs = [d for d in docs if all(property_matches(d, e) for v in params.getlist("property") for e in v.split(","))]
    order = params.get("orderby") or "title"
    keys = [k.strip() for k in order.split(",") if k.strip()]
    primary = keys[0].lstrip("-")
    for key in reversed(keys):
        field = key.lstrip("-")
        docs.sort(key=lambda d: str(lookup(d, field) or ""), reverse=key.startswith("-"))
    descending = keys[0].startswith("-")
    if "start" in params:
        start = params["start"]
        docs = [
            d
            for d in docs
            if (str(lookup(d, primary) or "") < start if descending else str(lookup(d, primary) or "") > start)
        ]
    try:
        limit = min(int(params.get("limit", LIST_LIMIT)), LIST_LIMIT)
    except ValueError:
        raise invalid(f"limit={params['limit']!r} must be an integer between 1 and {LIST_LIMIT}") from None
    page = docs[: max(limit, 1)]
    if variant == "-id":
        results = [
            {"title": d.get("title"), "$id": d["$id"], "meta:altId": d["meta:altId"], "version": d.get("version")}
            for d in page
        ]
    else:
        results = page
    body: dict[str, Any] = {"results": results, "_page": {"orderby": order, "count": len(page)}, "_links": {}}
    if len(docs) > len(page):
        next_start = str(lookup(page[-1], primary) or "")
        body["_page"]["next"] = next_start
        body["_links"]["next"] = str(request.url.include_query_params(start=next_start))
    return body


# --- stats, descriptors, unions (before the generic /{container}/{kind} routes) ---


@router.get("/stats")
def stats(emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    schemas = emu.store.list(ctx.sandbox, SCHEMA_KIND)
    field_groups = emu.store.list(ctx.sandbox, FIELD_GROUP_KIND)
    recent = sorted(schemas + field_groups, key=lambda d: d["meta:registryMetadata"]["repo:createdDate"], reverse=True)
    return {
        "imsOrg": emu.settings.org_id,
        "tenantId": emu.settings.tenant_id,
        "counts": {
            "schemas": len(schemas),
            "mixins": len(field_groups),
            "datatypes": 0,
            "classes": 0,
            "unions": len({s["meta:class"] for s in schemas if UNION_TAG in s.get("meta:immutableTags", ())}),
        },
        "recentlyCreatedResources": [
            {"title": d.get("title"), "$id": d["$id"], "meta:altId": d["meta:altId"], "version": d["version"]}
            for d in recent[:5]
        ],
        "recentlyUpdatedResources": [],
        "classUsage": [],
    }


def _primary_identity(emu: Emulator, sandbox: str, schema_id: str) -> dict | None:
    for descriptor in _descriptors_of(emu, sandbox, schema_id):
        if descriptor.get("@type") == "xdm:descriptorIdentity" and descriptor.get("xdm:isPrimary"):
            return descriptor
    return None


@router.post("/tenant/descriptors", status_code=201)
@router.post("/tenant/descriptors/", status_code=201, include_in_schema=False)
def create_descriptor(
    body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    kind = body.get("@type")
    if kind not in DESCRIPTOR_TYPES:
        raise invalid(f"@type {kind!r} is not a descriptor type; use one of {', '.join(DESCRIPTOR_TYPES)}")
    for required in ("xdm:sourceSchema", "xdm:sourceVersion", "xdm:sourceProperty"):
        if body.get(required) in (None, ""):
            raise invalid(f"{required} is required for a {kind} descriptor")
    schema = find_resource(emu, ctx.sandbox, body["xdm:sourceSchema"])
    if schema is None or schema.get("meta:resourceType") != "schemas":
        raise invalid(f"xdm:sourceSchema {body['xdm:sourceSchema']!r} is not a tenant schema; create the schema first")
    path = str(body["xdm:sourceProperty"]).strip("/").replace("/", ".")
    if path not in {f.path for f in fields_of(emu, ctx.sandbox, schema)}:
        raise invalid(
            f"xdm:sourceProperty {body['xdm:sourceProperty']!r} is not a field of {schema['$id']}; use a path such as /_{emu.settings.tenant_id}/userid"
        )
    if kind == "xdm:descriptorIdentity":
        if not isinstance(body.get("xdm:namespace"), str) or not body["xdm:namespace"]:
            raise invalid('xdm:namespace is required for an identity descriptor, e.g. "ECID"')
        # AEP documents xdm:code with a namespace code; the reference workflow sends xdm:id with a code.
        if body.get("xdm:property", "xdm:code") not in ("xdm:code", "xdm:id"):
            raise invalid("xdm:property must be xdm:code (namespace code) or xdm:id (namespace id)")
        if body.get("xdm:isPrimary") and _primary_identity(emu, ctx.sandbox, schema["$id"]):
            raise invalid(f"schema {schema['$id']} already has a primary identity; a schema has at most one")
    doc = {
        **body,
        "xdm:sourceSchema": schema["$id"],
        # Clients send the integer 1 (AEP's own examples do); the spec types the answer as a string.
        "xdm:sourceVersion": str(body["xdm:sourceVersion"]),
        "@id": hashlib.sha1(uuid.uuid4().bytes).hexdigest(),
        "imsOrg": emu.settings.org_id,
        "version": "1",
        "meta:containerId": "tenant",
        "meta:sandboxId": ctx.sandbox,
        "meta:sandboxType": "production" if ctx.sandbox == "prod" else "development",
    }
    emu.store.insert(ctx.sandbox, DESCRIPTOR_KIND, doc["@id"], doc)
    return doc


@router.get("/tenant/descriptors")
@router.get("/tenant/descriptors/", include_in_schema=False)
def list_descriptors(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    variant = _accept(request, "xdm", ("", "-id", "-link", "-v2", "-v2-id", "-v2-link"), versioned=False)
    docs = [
        d
        for d in emu.store.list(ctx.sandbox, DESCRIPTOR_KIND)
        if all(property_matches(d, e) for v in request.query_params.getlist("property") for e in v.split(","))
    ]
    if variant.endswith("-id"):
        items = [d["@id"] for d in docs]
    elif variant.endswith("-link"):
        items = [f"{router.prefix}/tenant/descriptors/{d['@id']}" for d in docs]
    else:
        items = docs
    if variant.startswith("-v2"):
        return {"results": items, "_page": {"count": len(items)}}
    grouped: dict[str, list] = {}
    for doc, item in zip(docs, items, strict=True):
        grouped.setdefault(doc["@type"], []).append(item)
    return grouped


@router.get("/tenant/descriptors/{descriptor_id}")
def get_descriptor(descriptor_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    # Descriptors are not versioned, so their lookup needs no Accept header.
    doc = emu.store.get(ctx.sandbox, DESCRIPTOR_KIND, descriptor_id)
    if doc is None:
        raise not_found(descriptor_id)
    return doc


@router.delete("/tenant/descriptors/{descriptor_id}", status_code=204)
def delete_descriptor(descriptor_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    doc = emu.store.get(ctx.sandbox, DESCRIPTOR_KIND, descriptor_id)
    if doc is None:
        raise not_found(descriptor_id)
    schema = find_resource(emu, ctx.sandbox, doc["xdm:sourceSchema"]) or {}
    if doc.get("xdm:isPrimary") and UNION_TAG in schema.get("meta:immutableTags", ()):
        raise invalid("the primary identity of a schema in the Profile union cannot be deleted")
    emu.store.delete(ctx.sandbox, DESCRIPTOR_KIND, descriptor_id)
    return Response(status_code=204)


@router.get("/tenant/unions")
@router.get("/tenant/unions/", include_in_schema=False)
def list_unions(request: Request, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    variant = _accept(request, "xed", ("-id", ""), versioned=False)
    members: dict[str, list[str]] = {}
    for schema in emu.store.list(ctx.sandbox, SCHEMA_KIND):
        if UNION_TAG in schema.get("meta:immutableTags", ()):
            members.setdefault(schema["meta:class"], []).append(schema["$id"])
    unions = []
    for class_id, schema_ids in members.items():
        union_id = f"{class_id}__union"
        title = GLOBAL_CLASSES.get(class_id, {}).get("title", class_id)
        unions.append(
            {
                "$id": union_id,
                "meta:altId": alt_id(union_id),
                "meta:resourceType": "unions",
                "version": f"1.{len(schema_ids)}",
                "title": f"Union for {title}",
                "type": "object",
                "meta:class": class_id,
                "meta:containerId": "tenant",
                "allOf": [{"$ref": s} for s in schema_ids],
                "meta:extends": schema_ids,
            }
        )
    return _listing(request, unions, variant)


# --- tenant field groups and schemas ---


def _check_tenant_fields(emu: Emulator, doc: dict) -> None:
    """Custom top-level fields may not start with ``_`` unless they are the tenant's own namespace."""
    tenant = f"_{emu.settings.tenant_id}"
    for definition in doc.get("definitions", {}).values():
        for name in definition.get("properties", {}):
            if name.startswith("_") and name != tenant:
                raise invalid(
                    f"field {name!r} starts with '_'; put custom fields under the tenant namespace {tenant!r}"
                )


def _new_resource(emu: Emulator, ctx: CallContext, body: dict, path_kind: str, resource_type: str) -> dict:
    if not isinstance(body.get("title"), str) or not body["title"].strip():
        raise invalid("title is required: give the resource a unique, non-empty title")
    if body.get("type", "object") != "object":
        raise invalid('type must be "object"')
    if not isinstance(body.get("allOf", []), list):
        raise invalid('allOf must be a list of {"$ref": ...} entries')
    id_, alt = tenant_id(emu, path_kind, uuid.uuid4().hex)
    return {
        **body,
        "$id": id_,
        "meta:altId": alt,
        "meta:resourceType": resource_type,
        "version": "1.0",
        "type": "object",
        "meta:containerId": "tenant",
        "meta:sandboxId": ctx.sandbox,
        "meta:sandboxType": "production" if ctx.sandbox == "prod" else "development",
        "meta:tenantNamespace": f"_{emu.settings.tenant_id}",
        "meta:xdmType": "object",
        "meta:registryMetadata": registry_metadata(emu),
        "imsOrg": emu.settings.org_id,
    }


def _insert_unique(emu: Emulator, ctx: CallContext, kind: str, doc: dict) -> dict:
    if not emu.store.insert_unique_name(ctx.sandbox, kind, doc["meta:altId"], doc, doc["title"]):
        raise xdm_error(
            409,
            "XDM-1521-409",
            "Title already in use",
            f"A {doc['meta:resourceType']} resource titled {doc['title']!r} already exists in this sandbox; "
            "titles are unique: look it up by title or choose another",
        )
    return doc


@router.post("/tenant/fieldgroups", status_code=201)
@router.post("/tenant/fieldgroups/", status_code=201, include_in_schema=False)
@router.post("/tenant/mixins", status_code=201, include_in_schema=False)
@router.post("/tenant/mixins/", status_code=201, include_in_schema=False)
def create_field_group(
    body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    doc = _new_resource(emu, ctx, body, "mixins", "mixins")
    doc.setdefault("meta:intendedToExtend", [])
    doc.setdefault("meta:abstract", True)
    doc.setdefault("meta:extensible", True)
    _check_tenant_fields(emu, doc)
    try:
        fields_of(emu, ctx.sandbox, doc)
    except XDMError as exc:
        raise invalid(str(exc)) from exc
    return _insert_unique(emu, ctx, FIELD_GROUP_KIND, doc)


def _compose(emu: Emulator, sandbox: str, doc: dict) -> dict:
    """Check a schema's ``allOf`` (one class, compatible field groups) and set ``meta:class``/``meta:extends``."""
    classes, field_groups = [], []
    for part in doc.get("allOf", []):
        ref = part.get("$ref") if isinstance(part, dict) else None
        if not ref:
            raise invalid('each allOf entry must be {"$ref": <class or field group $id>}')
        if ref in GLOBAL_CLASSES:
            classes.append(ref)
            continue
        target = find_resource(emu, sandbox, ref)
        if target is None or target.get("meta:resourceType") != "mixins":
            raise invalid(f"allOf $ref {ref!r} is not a known class or field group; create it or fix the $ref")
        field_groups.append(target)
    if len(classes) != 1:
        raise invalid(
            f'a schema needs exactly one class in allOf (found {len(classes)}); add e.g. {{"$ref": "{next(iter(GLOBAL_CLASSES))}"}}'
        )
    class_id = classes[0]
    for group in field_groups:
        extends = group.get("meta:intendedToExtend") or []
        if extends and class_id not in extends:
            raise invalid(f"field group {group['$id']} extends {extends}, not the schema's class {class_id}")
    if doc.get("meta:class", class_id) != class_id:
        raise invalid(f"the schema's class cannot change from {doc['meta:class']} to {class_id}")
    doc["meta:class"] = class_id
    doc["meta:extends"] = [
        class_id,
        *GLOBAL_CLASSES[class_id].get("meta:extends", []),
        *(g["$id"] for g in field_groups),
    ]
    try:
        fields_of(emu, sandbox, doc)
    except XDMError as exc:
        raise invalid(str(exc)) from exc
    return doc


@router.post("/tenant/schemas", status_code=201)
@router.post("/tenant/schemas/", status_code=201, include_in_schema=False)
def create_schema(body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    doc = _new_resource(emu, ctx, body, "schemas", "schemas")
    doc.update({"meta:abstract": False, "meta:extensible": False})
    doc.pop("meta:immutableTags", None)  # tags are added by PATCH, after a primary identity exists
    return _insert_unique(emu, ctx, SCHEMA_KIND, _compose(emu, ctx.sandbox, doc))


def _tenant_schema(emu: Emulator, sandbox: str, ref: str) -> dict:
    doc = emu.store.get(sandbox, SCHEMA_KIND, alt_id(ref.rstrip("/")))
    if doc is None:
        raise not_found(ref)
    return doc


@router.patch("/tenant/schemas/{ref:path}")
def patch_schema(
    ref: str, operations: Any = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    current = _tenant_schema(emu, ctx.sandbox, ref)
    for op in operations if isinstance(operations, list) else ():
        root = str(op.get("path", "")).lstrip("/").split("/")[0] if isinstance(op, dict) else ""
        if root in _READ_ONLY:
            raise invalid(f"{op.get('path')} is read-only; it cannot be patched")
    try:
        patched = apply_json_patch(current, operations)
    except JsonPatchError as exc:
        raise invalid(str(exc)) from exc
    before = set(current.get("meta:immutableTags", ()))
    after = patched.get("meta:immutableTags", [])
    if not isinstance(after, list) or not before <= set(after):
        raise invalid(f"meta:immutableTags {sorted(before)} cannot be removed: immutable tags are permanent")
    if UNION_TAG in after and UNION_TAG not in before and _primary_identity(emu, ctx.sandbox, current["$id"]) is None:
        raise invalid(
            f"schema {current['$id']} has no primary identity; create an xdm:descriptorIdentity with "
            "xdm:isPrimary true before adding the union tag"
        )
    patched = _compose(emu, ctx.sandbox, patched)
    major, _, minor = current.get("version", "1.0").partition(".")
    patched["version"] = f"{major}.{int(minor or 0) + 1}"
    patched["meta:registryMetadata"] = {
        **current["meta:registryMetadata"],
        **{k: v for k, v in registry_metadata(emu).items() if k != "repo:createdDate"},
    }
    if patched.get("title") != current.get("title"):
        other = emu.store.find_by_name(ctx.sandbox, SCHEMA_KIND, patched.get("title"))
        if other is not None:
            raise xdm_error(
                409, "XDM-1521-409", "Title already in use", f"a schema titled {patched.get('title')!r} already exists"
            )
    emu.store.update(ctx.sandbox, SCHEMA_KIND, current["meta:altId"], patched, name=patched.get("title"))
    return patched


@router.delete("/tenant/schemas/{ref:path}", status_code=204)
def delete_schema(ref: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    doc = _tenant_schema(emu, ctx.sandbox, ref)
    emu.store.delete(ctx.sandbox, SCHEMA_KIND, doc["meta:altId"])
    return Response(status_code=204)


# --- generic listings and lookups: /{container}/{schemas|fieldgroups|mixins|classes} ---


@router.get("/{container}/{kind}")
@router.get("/{container}/{kind}/", include_in_schema=False)
def list_resources(
    container: str,
    kind: str,
    request: Request,
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    _container(container)
    _kind(kind)
    variant = _accept(request, "xed", ("-id", ""), versioned=False)
    return _listing(request, _list_items(emu, ctx.sandbox, container, kind), variant)


@router.get("/{container}/{kind}/{ref:path}")
def get_resource(
    container: str,
    kind: str,
    ref: str,
    request: Request,
    emu: Emulator = Depends(emulator),
    ctx: CallContext = Depends(call_context),
):
    _container(container)
    stored_kind, globals_ = _kind(kind)
    variant = _accept(request, "xed", _LOOKUP_VARIANTS, versioned=True)
    ref = ref.rstrip("/")
    if container == "global":
        doc = next((d for i, d in globals_.items() if ref in (i, d["meta:altId"])), None)
    else:
        doc = emu.store.get(ctx.sandbox, stored_kind, alt_id(ref)) if stored_kind else None
    if doc is None:
        raise not_found(ref)
    return _render(emu, ctx.sandbox, doc, variant)
