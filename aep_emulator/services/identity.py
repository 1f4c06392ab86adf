"""Identity Service: identity namespaces (``/data/core/idnamespace/identities``).

The standard namespaces every org has, plus custom ones created per sandbox (they cannot be
deleted, as in AEP). Numeric ids of the standard namespaces are unconfirmed [U]. The spec spells
``idType`` two ways: ``Cookie``/``Cross_device``/``Mobile`` for a single namespace (create, get) and
``COOKIE``/``CROSS_DEVICE``/``MOBILE`` in the list (Adobe's documentation shows the latter); the emulator
answers each route as its spec says and accepts either spelling on create.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Body, Depends

from aep_emulator.errors import AEPError
from aep_emulator.runtime import CallContext, Emulator, call_context, emulator
from aep_emulator.store import now_ms

router = APIRouter(prefix="/data/core/idnamespace")

KIND = "identityNamespace"
ID_TYPES = ("Cookie", "Cross_device", "Device", "Email", "Mobile", "Non_people", "Phone")
LIST_ID_TYPES = {"Cookie": "COOKIE", "Cross_device": "CROSS_DEVICE", "Mobile": "MOBILE"}
# (id, code, name, idType, description)
STANDARD = (
    (4, "ECID", "Experience Cloud ID", "Cookie", "Adobe Experience Cloud ID"),
    (6, "Email", "Email", "Email", "E-mail address"),
    (7, "Phone", "Phone", "Phone", "Phone number"),
    (10, "AAID", "Adobe Analytics (Legacy ID)", "Cookie", "Adobe Analytics ID"),
    (20914, "GAID", "Google Ad ID", "Device", "Google Advertising ID"),
    (20915, "IDFA", "Apple IDFA", "Device", "Apple ID for Advertisers"),
)
FIRST_CUSTOM_ID = 10_000_000


def _namespace_error(status: int, title: str, description: str) -> AEPError:
    return AEPError(
        status,
        {
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": "http://ns.adobe.com/adobecloud/problem/namespacevalidation",
            "status": status,
            "title": title,
            "description": description,
        },
    )


def _standard() -> list[dict]:
    return [
        {
            "id": id_,
            "code": code,
            "name": name,
            "idType": id_type,
            "description": description,
            "status": "ACTIVE",
            "custom": False,
            "createTime": 0,
            "updateTime": 0,
        }
        for id_, code, name, id_type, description in STANDARD
    ]


def namespaces(emu: Emulator, sandbox: str) -> list[dict]:
    """Every namespace of the sandbox: the standard ones, then the custom ones by creation."""
    return _standard() + emu.store.list(sandbox, KIND)


@router.get("/identities")
def list_namespaces(emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    return [{**n, "idType": LIST_ID_TYPES.get(n["idType"], n["idType"])} for n in namespaces(emu, ctx.sandbox)]


@router.get("/identities/{namespace_id}")
def get_namespace(namespace_id: str, emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)):
    for namespace in namespaces(emu, ctx.sandbox):
        if str(namespace["id"]) == namespace_id:
            return namespace
    raise _namespace_error(404, "NAMESPACE_NOT_FOUND", f"Namespace {namespace_id} does not exist in this sandbox")


@router.post("/identities")
def create_namespace(
    body: dict = Body(...), emu: Emulator = Depends(emulator), ctx: CallContext = Depends(call_context)
):
    """Create a custom namespace ``{name, code, idType, description}``; a taken code is a 409."""
    missing = [field for field in ("name", "code", "idType") if not body.get(field)]
    if missing:
        raise _namespace_error(400, "INVALID_REQUEST", f"{', '.join(missing)} required to create a namespace")
    id_type = next((t for t in ID_TYPES if t.lower() == str(body["idType"]).lower()), None)
    if id_type is None:
        raise _namespace_error(400, "INVALID_REQUEST", f"idType must be one of {', '.join(ID_TYPES)}")
    existing = namespaces(emu, ctx.sandbox)
    if any(n["code"].lower() == str(body["code"]).lower() for n in existing):
        raise _namespace_error(
            409, "NAMESPACE_CODE_CONFLICT", "Namespace code already exists. Please use a different code"
        )
    ts = now_ms()
    namespace = {
        "id": FIRST_CUSTOM_ID + len(existing),
        "code": body["code"],
        "name": body["name"],
        "idType": id_type,
        "description": body.get("description", ""),
        "status": "ACTIVE",
        "custom": True,
        "createTime": ts,
        "updateTime": ts,
    }
    if not emu.store.insert_unique_name(ctx.sandbox, KIND, str(namespace["id"]), namespace, name=body["code"]):
        raise _namespace_error(
            409, "NAMESPACE_CODE_CONFLICT", "Namespace code already exists. Please use a different code"
        )
    return namespace
