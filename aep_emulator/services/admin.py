"""Emulator-only admin routes (``/_emulator/...``): health, fault injection, token expiry.

Every route but ``/health`` takes ``Authorization: Bearer <AEP_ADMIN_TOKEN>``: a client of the AEP
APIs must not be able to expire other clients' tokens or inject faults.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Body, Depends, Request

from aep_emulator.errors import gateway_error
from aep_emulator.runtime import Emulator, emulator

router = APIRouter(prefix="/_emulator")


def require_admin(request: Request, emu: Emulator = Depends(emulator)) -> None:
    """FastAPI dependency: the caller holds the admin token.

    :raises AEPError: 403 when the emulator has no admin token, 401 when the caller's is missing or wrong.
    """
    expected = emu.settings.admin_token
    if not expected:
        raise gateway_error(403, "403010", "the emulator's admin routes are off: set AEP_ADMIN_TOKEN to turn them on")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected.encode()):
        raise gateway_error(
            401, "401013", "admin token missing or not valid: send Authorization: Bearer $AEP_ADMIN_TOKEN"
        )


admin_router = APIRouter(prefix="/_emulator", dependencies=[Depends(require_admin)])


@router.get("/health")
def health(emu: Emulator = Depends(emulator)):
    with emu.db.connection() as conn:
        conn.execute("SELECT 1")
    return {"status": "ok", "org": emu.settings.org_id, "sandboxes": list(emu.settings.sandboxes)}


@admin_router.get("/faults")
def get_faults(emu: Emulator = Depends(emulator)):
    return emu.faults.describe()


@admin_router.put("/faults")
def put_faults(spec: dict = Body(...), emu: Emulator = Depends(emulator)):
    """Replace the fault rules, e.g. ``{"rules":[{"path":".*","rate_429":0.1,"rate_5xx":0.1}],
    "force_failures":{"batch":1}}``."""
    return emu.faults.configure(spec)


@admin_router.delete("/faults")
def clear_faults(emu: Emulator = Depends(emulator)):
    emu.faults.reset()
    return emu.faults.describe()


@admin_router.post("/tokens/expire")
def expire_tokens(spec: dict | None = Body(None), emu: Emulator = Depends(emulator)):
    """Expire ``{"token": ...}`` now, or every token when no body is sent."""
    return {"expired": emu.tokens.expire((spec or {}).get("token"))}
