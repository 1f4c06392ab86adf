"""IMS: OAuth server-to-server tokens (``POST /ims/token/v3``)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from aep_emulator.db import META_SCHEMA
from aep_emulator.runtime import Emulator, emulator
from aep_emulator.store import now_ms

router = APIRouter()


@dataclass(frozen=True)
class TokenInfo:
    client_id: str
    org_id: str
    expires_ms: int


class TokenStore:
    """Issued tokens, persisted in PostgreSQL and cached in memory.

    :param emu: the running emulator.
    """

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._cache: dict[str, TokenInfo] = {}
        self._lock = threading.Lock()

    def issue(self, client_id: str) -> tuple[str, int]:
        token = "eyJlbXUiOiJhZXAifQ." + secrets.token_urlsafe(48)
        lifetime = self.emu.settings.token_lifetime_s
        issued = now_ms()
        info = TokenInfo(client_id, self.emu.settings.org_id, issued + lifetime * 1000)
        with self.emu.db.connection() as conn:
            conn.execute(
                f"INSERT INTO {META_SCHEMA}.tokens (token, client_id, org_id, issued_ms, expires_ms)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token, client_id, info.org_id, issued, info.expires_ms),
            )
        with self._lock:
            self._cache[token] = info
        return token, lifetime

    def lookup(self, token: str) -> TokenInfo | None:
        """The token's owner, or None when it is unknown or expired."""
        with self._lock:
            info = self._cache.get(token)
        if info is None:
            with self.emu.db.connection() as conn:
                row = conn.execute(
                    f"SELECT client_id, org_id, expires_ms FROM {META_SCHEMA}.tokens WHERE token=%s", (token,)
                ).fetchone()
            if row is None:
                return None
            info = TokenInfo(*row)
            with self._lock:
                self._cache[token] = info
        return info if info.expires_ms > now_ms() else None

    def expire(self, token: str | None = None) -> int:
        """Expire one token, or every issued token, now (fault injection: early token expiry)."""
        ts = now_ms()
        with self.emu.db.connection() as conn:
            count = conn.execute(
                f"UPDATE {META_SCHEMA}.tokens SET expires_ms=%s WHERE expires_ms > %s AND (%s::text IS NULL OR token=%s)",
                (ts - 1, ts, token, token),
            ).rowcount
        with self._lock:
            self._cache.clear()
        return count


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@router.post("/ims/token/v3")
async def issue_token(request: Request, emu: Emulator = Depends(emulator)):
    """Client-credentials grant; the form body (or query string) carries the credentials."""
    ctype = request.headers.get("content-type", "")
    form = dict(request.query_params)
    if ctype.startswith("application/x-www-form-urlencoded"):
        form.update(dict(await request.form()))
    elif ctype:
        return _oauth_error(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if not client_id:
        return _oauth_error(400, "invalid_request", "client_id is required")
    if client_id != emu.settings.client_id or client_secret != emu.settings.client_secret:
        return _oauth_error(401, "invalid_client", "invalid client_id parameter or client_secret")
    token, lifetime = emu.tokens.issue(client_id)
    return {"access_token": token, "token_type": "bearer", "expires_in": lifetime}
