"""XDM: the built-in global classes and field groups, schema resolution to leaf fields, JSON Patch.

A schema is a class plus field groups (``allOf`` of ``$ref``), each contributing nested ``properties``.
The emulator stores a dataset as a flat table whose columns are the schema's **leaf paths** joined with
dots (``web.webPageDetails.pageViews.value``); :func:`leaf_fields` computes them and :func:`pg_type`
gives each one's PostgreSQL type.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aep_emulator.store import now_ms

if TYPE_CHECKING:
    from aep_emulator.runtime import Emulator

EXPERIENCE_EVENT = "https://ns.adobe.com/xdm/context/experienceevent"
PROFILE = "https://ns.adobe.com/xdm/context/profile"
WEB_FIELD_GROUP = "https://ns.adobe.com/xdm/context/experienceevent-web"
DIRECT_MARKETING_FIELD_GROUP = "https://ns.adobe.com/xdm/context/experienceevent-directmarketing"

SCHEMA_KIND = "schema"
FIELD_GROUP_KIND = "fieldgroup"
DESCRIPTOR_KIND = "descriptor"

# XDM type -> PostgreSQL column type (docs/architecture.md).
_PG_TYPES = {
    "string": "text",
    "number": "double precision",
    "double": "double precision",
    "integer": "bigint",
    "long": "bigint",
    "int": "integer",
    "short": "smallint",
    "byte": "smallint",
    "boolean": "boolean",
    "date": "date",
    "date-time": "timestamptz",
    "array": "jsonb",
    "map": "jsonb",
}
# XDM type -> JSON Schema fragment, used to write ad-hoc schemas.
_JSON_SCHEMA_TYPES = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "double": {"type": "number"},
    "integer": {"type": "integer", "meta:xdmType": "long"},
    "long": {"type": "integer", "meta:xdmType": "long"},
    "int": {"type": "integer", "meta:xdmType": "int"},
    "short": {"type": "integer", "meta:xdmType": "short"},
    "byte": {"type": "integer", "meta:xdmType": "byte"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "date-time": {"type": "string", "format": "date-time"},
    "array": {"type": "array", "items": {"type": "string"}},
    "map": {"type": "object", "additionalProperties": {"type": "string"}},
}


class XDMError(Exception):
    """A schema-level problem; route handlers turn it into an ``XDM-*`` error body."""


class SchemaNotFoundError(XDMError):
    """A ``$ref``, ``$id`` or ``meta:altId`` names no known schema resource."""


@dataclass(frozen=True)
class Field:
    """One leaf of a schema: a table column.

    :param path: dotted leaf path, e.g. ``_acme.userid``.
    :param xdm_type: XDM type (``string``, ``number``, ``long``, ``date-time``, ``map`` ...).
    :param required: whether every record must carry a value.
    """

    path: str
    xdm_type: str
    required: bool = False


def alt_id(resource_id: str) -> str:
    """``meta:altId`` of a ``$id``: ``https://ns.adobe.com/acme/schemas/x`` -> ``_acme.schemas.x``."""
    if resource_id.startswith("https://ns.adobe.com/"):
        return "_" + resource_id[len("https://ns.adobe.com/") :].replace("/", ".")
    return resource_id


def _str(title: str, **extra) -> dict:
    return {"title": title, "type": "string", **extra}


def _measure(title: str) -> dict:
    return {"title": title, "type": "object", "properties": {"value": {"title": "Value", "type": "number"}}}


_IDENTITY_MAP = {
    "title": "Identity map",
    "type": "object",
    "meta:xdmType": "map",
    "additionalProperties": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "authenticatedState": {"type": "string"},
                "primary": {"type": "boolean"},
            },
        },
    },
}


def _global(id_: str, title: str, resource_type: str, definition: str, properties: dict, **meta) -> dict:
    return {
        "$id": id_,
        "meta:altId": alt_id(id_),
        "meta:resourceType": resource_type,
        "version": "1.0",
        "title": title,
        "type": "object",
        "meta:containerId": "global",
        "meta:extensible": True,
        "meta:abstract": True,
        "meta:xdmType": "object",
        "definitions": {definition: {"properties": properties}},
        "allOf": [{"$ref": f"#/definitions/{definition}"}],
        **meta,
    }


GLOBAL_CLASSES: dict[str, dict] = {
    EXPERIENCE_EVENT: _global(
        EXPERIENCE_EVENT,
        "XDM ExperienceEvent",
        "classes",
        "experienceevent",
        {
            "_id": _str("Identifier"),
            "timestamp": _str("Timestamp", format="date-time"),
            "eventType": _str("Event Type"),
            "producedBy": _str("Produced By"),
            "identityMap": _IDENTITY_MAP,
        },
        required=["_id", "timestamp"],
        **{"meta:extends": ["https://ns.adobe.com/xdm/data/time-series"]},
    ),
    PROFILE: _global(
        PROFILE,
        "XDM Individual Profile",
        "classes",
        "profile",
        {
            "_id": _str("Identifier"),
            "personID": _str("Person ID"),
            "createdByBatchID": _str("Created By Batch Identifier"),
            "modifiedByBatchID": _str("Modified By Batch Identifier"),
            "identityMap": _IDENTITY_MAP,
        },
        **{"meta:extends": ["https://ns.adobe.com/xdm/data/record"]},
    ),
}

GLOBAL_FIELD_GROUPS: dict[str, dict] = {
    WEB_FIELD_GROUP: _global(
        WEB_FIELD_GROUP,
        "Web Details",
        "mixins",
        "experienceevent-web",
        {
            "web": {
                "type": "object",
                "properties": {
                    "webPageDetails": {
                        "type": "object",
                        "properties": {
                            "URL": _str("URL"),
                            "name": _str("Name"),
                            "siteSection": _str("Site Section"),
                            "server": _str("Server"),
                            "isHomePage": {"title": "Home Page", "type": "boolean"},
                            "pageViews": _measure("Page Views"),
                        },
                    },
                    "webInteraction": {
                        "type": "object",
                        "properties": {
                            "URL": _str("URL"),
                            "name": _str("Name"),
                            "type": _str("Type"),
                            "linkClicks": _measure("Link Clicks"),
                        },
                    },
                    "webReferrer": {
                        "type": "object",
                        "properties": {"URL": _str("URL"), "type": _str("Type")},
                    },
                },
            }
        },
        **{"meta:intendedToExtend": [EXPERIENCE_EVENT]},
    ),
    DIRECT_MARKETING_FIELD_GROUP: _global(
        DIRECT_MARKETING_FIELD_GROUP,
        "Direct Marketing Details",
        "mixins",
        "experienceevent-directmarketing",
        {
            "directMarketing": {
                "type": "object",
                "properties": {
                    "emailDelivered": _measure("Email Delivered"),
                    "sends": _measure("Sends"),
                    "opens": _measure("Opens"),
                    "clicks": _measure("Clicks"),
                    "offerOpens": _measure("Offer Opens"),
                    "unsubscribes": _measure("Unsubscribes"),
                    "emailBounced": _measure("Email Bounced"),
                    "emailVisitorID": _str("Email Visitor ID"),
                    "hashedEmail": _str("Hashed Email"),
                    "messageID": _str("Message ID"),
                    "mailingName": _str("Mailing Name"),
                },
            }
        },
        **{"meta:intendedToExtend": [EXPERIENCE_EVENT]},
    ),
}


def pg_type(xdm_type: str) -> str:
    """PostgreSQL column type of an XDM leaf type.

    :param xdm_type: XDM type, e.g. ``date-time``.
    """
    try:
        return _PG_TYPES[xdm_type]
    except KeyError:
        raise XDMError(f"XDM type {xdm_type!r} has no PostgreSQL mapping; use one of {sorted(_PG_TYPES)}") from None


def global_resource(ref: str) -> dict | None:
    """A built-in class or field group by ``$id`` or ``meta:altId``."""
    for resources in (GLOBAL_CLASSES, GLOBAL_FIELD_GROUPS):
        for id_, doc in resources.items():
            if ref in (id_, doc["meta:altId"]):
                return doc
    return None


def find_resource(emu: Emulator, sandbox: str, ref: str) -> dict | None:
    """A global class or field group, or a tenant schema or field group, by ``$id`` or ``meta:altId``.

    :param emu: the running emulator.
    :param sandbox: sandbox of tenant resources.
    :param ref: the resource's ``$id`` (as used in ``$ref``) or ``meta:altId``.
    """
    found = global_resource(ref)
    if found is not None:
        return found
    key = alt_id(ref)
    for kind in (SCHEMA_KIND, FIELD_GROUP_KIND):
        doc = emu.store.get(sandbox, kind, key)
        if doc is not None:
            return doc
    return None


def _leaf_type(node: dict) -> str | None:
    """The XDM leaf type of a property node, or None when it is an object with sub-properties."""
    xdm_type = node.get("meta:xdmType")
    json_type = node.get("type")
    if json_type == "object" and node.get("properties"):
        return None
    if xdm_type in _PG_TYPES:
        return xdm_type
    if json_type == "object":
        return "map"
    if json_type == "string":
        return {"date-time": "date-time", "date": "date"}.get(node.get("format"), "string")
    if json_type in ("number", "boolean", "array", "integer"):
        return "long" if json_type == "integer" else json_type
    raise XDMError(
        f"property type {json_type!r} is not an XDM type; use string, number, integer, boolean, object or array"
    )


def _walk(properties: dict, required: Iterable[str], prefix: str, parent_required: bool, out: dict[str, Field]) -> None:
    required = set(required)
    for name, node in properties.items():
        path = f"{prefix}{name}"
        is_required = parent_required and name in required
        leaf = _leaf_type(node)
        if leaf is None:
            _walk(node["properties"], node.get("required", ()), path + ".", is_required, out)
        else:
            out[path] = Field(path, leaf, is_required)


def _collect(emu: Emulator, sandbox: str, doc: dict, out: dict[str, Field], seen: set[str]) -> None:
    """Add the leaves of a resource: its own properties, its definitions and the resources it references."""
    required = doc.get("required", ())
    _walk(doc.get("properties", {}), required, "", True, out)
    for part in doc.get("allOf", ()):
        ref = part.get("$ref")
        if ref is None:
            _walk(part.get("properties", {}), part.get("required", required), "", True, out)
        elif ref.startswith("#/definitions/"):
            definition = doc.get("definitions", {}).get(ref[len("#/definitions/") :])
            if definition is None:
                raise XDMError(f"{doc.get('$id')} refers to missing definition {ref}")
            _walk(definition.get("properties", {}), definition.get("required", required), "", True, out)
        elif ref not in seen:
            seen.add(ref)
            target = find_resource(emu, sandbox, ref)
            if target is None:
                raise SchemaNotFoundError(f"{doc.get('$id')} refers to unknown resource {ref}")
            _collect(emu, sandbox, target, out, seen)


def resolved_properties(emu: Emulator, sandbox: str, doc: dict) -> dict:
    """The merged nested ``properties`` of a resource and everything it references (``-full`` view)."""
    merged: dict = {}

    def merge(target: dict, source: dict) -> None:
        for name, node in source.items():
            if name in target and target[name].get("properties") and node.get("properties"):
                merge(target[name]["properties"], node["properties"])
            else:
                target[name] = copy.deepcopy(node)

    merge(merged, doc.get("properties", {}))
    for part in doc.get("allOf", ()):
        ref = part.get("$ref", "")
        if ref.startswith("#/definitions/"):
            merge(merged, doc.get("definitions", {}).get(ref[len("#/definitions/") :], {}).get("properties", {}))
        elif ref:
            target = find_resource(emu, sandbox, ref)
            if target is not None:
                merge(merged, resolved_properties(emu, sandbox, target))
    return merged


def leaf_fields(emu: Emulator, sandbox: str, schema_id: str) -> list[Field]:
    """The dotted leaf fields of a schema (class, field groups and tenant fields), in schema order.

    :param emu: the running emulator.
    :param sandbox: sandbox holding the schema.
    :param schema_id: the schema's ``$id`` or ``meta:altId``.
    :raises SchemaNotFoundError: when the schema or a resource it references does not exist.
    """
    doc = find_resource(emu, sandbox, schema_id)
    if doc is None or doc.get("meta:resourceType") not in ("schemas", "classes"):
        raise SchemaNotFoundError(f"schema {schema_id} does not exist in sandbox {sandbox}; create it first")
    return fields_of(emu, sandbox, doc)


def fields_of(emu: Emulator, sandbox: str, doc: dict) -> list[Field]:
    """The dotted leaf fields of a resource document (stored or about to be).

    :raises XDMError: when the document refers to a resource or definition that does not exist.
    """
    out: dict[str, Field] = {}
    _collect(emu, sandbox, doc, out, {doc.get("$id", "")})
    return list(out.values())


def schema_class(emu: Emulator, sandbox: str, schema_id: str) -> str | None:
    """The ``meta:class`` of a schema, or None when the schema does not exist."""
    doc = find_resource(emu, sandbox, schema_id)
    return doc.get("meta:class") if doc else None


def tenant_id(emu: Emulator, kind: str, hash_: str) -> tuple[str, str]:
    """``($id, meta:altId)`` of a new tenant resource.

    :param kind: path segment of the resource type: ``schemas``, ``mixins`` or ``classes``.
    :param hash_: the resource's unique hash.
    """
    id_ = f"https://ns.adobe.com/{emu.settings.tenant_id}/{kind}/{hash_}"
    return id_, alt_id(id_)


def registry_metadata(emu: Emulator) -> dict:
    """``meta:registryMetadata`` of a resource created or changed now."""
    ts = now_ms()
    return {
        "repo:createdDate": ts,
        "repo:lastModifiedDate": ts,
        "xdm:createdClientId": emu.settings.client_id,
        "xdm:lastModifiedClientId": emu.settings.client_id,
        "eTag": uuid.uuid4().hex,
    }


def register_adhoc_schema(emu: Emulator, sandbox: str, title: str, fields: Iterable[Field]) -> dict:
    """Store a generated ad-hoc schema (as Query Service CTAS does) and return its document.

    :param emu: the running emulator.
    :param sandbox: sandbox to create it in.
    :param title: schema title, usually the CTAS table name.
    :param fields: the leaf fields; dotted paths become nested objects.
    """
    properties: dict = {}
    for field in fields:
        if field.xdm_type not in _JSON_SCHEMA_TYPES:
            raise XDMError(
                f"field {field.path!r} has XDM type {field.xdm_type!r}; use one of {sorted(_JSON_SCHEMA_TYPES)}"
            )
        *parents, leaf = field.path.split(".")
        node = properties
        for parent in parents:
            node = node.setdefault(parent, {"type": "object", "properties": {}})["properties"]
        node[leaf] = dict(_JSON_SCHEMA_TYPES[field.xdm_type])
    hash_ = uuid.uuid4().hex
    schema_id, schema_alt_id = tenant_id(emu, "schemas", hash_)
    class_id, _ = tenant_id(emu, "classes", hash_)
    doc = {
        "$id": schema_id,
        "meta:altId": schema_alt_id,
        "meta:resourceType": "schemas",
        "version": "1.0",
        "title": title,
        "type": "object",
        "description": "Ad hoc schema generated for a Query Service table",
        "properties": properties,
        "meta:class": class_id,
        "meta:extends": [class_id, "https://ns.adobe.com/xdm/data/adhoc"],
        "meta:xdmType": "object",
        "meta:containerId": "tenant",
        "meta:tenantNamespace": f"_{emu.settings.tenant_id}",
        "meta:registryMetadata": registry_metadata(emu),
        "imsOrg": emu.settings.org_id,
    }
    emu.store.insert(sandbox, SCHEMA_KIND, schema_alt_id, doc, name=title)
    return doc


class JsonPatchError(ValueError):
    """A JSON Patch operation cannot be applied."""


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise JsonPatchError(f"JSON Patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(doc: dict, operations: Any) -> dict:
    """Apply an RFC 6902 patch (``add``, ``replace``, ``remove``, ``test``) to a copy of ``doc``.

    :param doc: the document to patch.
    :param operations: the list of patch operations.
    :raises JsonPatchError: naming the operation that cannot be applied.
    """
    if not isinstance(operations, list):
        raise JsonPatchError('the body must be a JSON Patch array, e.g. [{"op":"add","path":"/x","value":1}]')
    result = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise JsonPatchError(f"patch operation {op!r} needs 'op' and 'path'")
        kind = op["op"]
        if kind not in ("add", "replace", "remove", "test"):
            raise JsonPatchError(f"unsupported JSON Patch op {kind!r}; use add, replace, remove or test")
        if kind in ("add", "replace") and "value" not in op:
            raise JsonPatchError(f"'{kind}' on {op['path']!r} needs a 'value'")
        *parents, last = _pointer(op["path"])
        node: Any = result
        for part in parents:
            if isinstance(node, list) and re.fullmatch(r"\d+", part) and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {}) if kind == "add" else node.get(part)
            else:
                node = None
            if node is None:
                raise JsonPatchError(f"path {op['path']!r} does not exist")
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= index <= len(node) or (kind != "add" and index == len(node)):
                raise JsonPatchError(f"array index in {op['path']!r} is out of range")
            if kind == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                node.pop(index)
            elif kind == "test" and node[index] != op.get("value"):
                raise JsonPatchError(f"test failed at {op['path']!r}")
        elif isinstance(node, dict):
            if kind in ("replace", "remove", "test") and last not in node:
                raise JsonPatchError(f"path {op['path']!r} does not exist")
            if kind in ("add", "replace"):
                node[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[last]
            elif kind == "test" and node[last] != op.get("value"):
                raise JsonPatchError(f"test failed at {op['path']!r}")
        else:
            raise JsonPatchError(f"path {op['path']!r} does not point into an object or array")
    return result
