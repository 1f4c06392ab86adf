"""Emulator-only admin routes (``/_emulator/...``): health, fault injection, token expiry."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends

from aep_emulator.runtime import Emulator, emulator

router = APIRouter(prefix="/_emulator")


@router.get("/health")
def health(emu: Emulator = Depends(emulator)):
    with emu.db.connection() as conn:
        conn.execute("SELECT 1")
    return {"status": "ok", "org": emu.settings.org_id, "sandboxes": list(emu.settings.sandboxes)}


@router.get("/faults")
def get_faults(emu: Emulator = Depends(emulator)):
    return emu.faults.describe()


@router.put("/faults")
def put_faults(spec: dict = Body(...), emu: Emulator = Depends(emulator)):
    """Replace the fault rules, e.g. ``{"rules":[{"path":".*","rate_429":0.1,"rate_5xx":0.1}],
    "force_failures":{"batch":1}}``."""
    return emu.faults.configure(spec)


@router.delete("/faults")
def clear_faults(emu: Emulator = Depends(emulator)):
    emu.faults.reset()
    return emu.faults.describe()


@router.post("/tokens/expire")
def expire_tokens(spec: dict | None = Body(None), emu: Emulator = Depends(emulator)):
    """Expire ``{"token": ...}`` now, or every token when no body is sent."""
    return {"expired": emu.tokens.expire((spec or {}).get("token"))}
