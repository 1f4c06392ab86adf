"""Adobe I/O gateway checks, throttling and fault injection, in front of every Platform route.

Checks run in AEP's order (token, API key, org, sandbox, content type) before service routing, and
answer with the gateway's ``{error_code, message}`` bodies; then the client's calls are counted
against its limits (:mod:`aep_emulator.throttle`).
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aep_emulator.errors import AEPError, gateway_error, problem_error
from aep_emulator.runtime import CallContext, Emulator

PLATFORM_PREFIX = "/data/"
# Content types accepted on requests with a body.
_BODY_TYPES = ("application/json", "application/octet-stream", "application/json-patch+json", "application/vnd.adobe")


def _check(emu: Emulator, method: str, path: str, headers: dict[str, str]) -> CallContext:
    auth = headers.get("authorization")
    if not auth:
        raise gateway_error(403, "403010", "Oauth token is missing.")
    scheme, _, token = auth.partition(" ")
    info = emu.tokens.lookup(token.strip()) if scheme.lower() == "bearer" else None
    if info is None:
        raise gateway_error(401, "401013", "Oauth token is not valid")
    api_key = headers.get("x-api-key")
    if not api_key:
        raise gateway_error(403, "403000", "Api Key is required")
    if api_key != info.client_id:
        raise gateway_error(403, "403003", "Api Key is invalid")
    org = headers.get("x-gw-ims-org-id")
    if not org:
        raise gateway_error(400, "400003", "Missing header x-gw-ims-org-id")
    if org != info.org_id:
        raise gateway_error(403, "403025", "Profile is not valid")
    sandbox = headers.get("x-sandbox-name")
    if not sandbox:
        raise gateway_error(400, "400003", "Missing header x-sandbox-name")
    if sandbox not in emu.settings.sandboxes:
        raise gateway_error(403, "403027", f"Sandbox {sandbox} is not valid or is not accessible to this client")
    if method in ("POST", "PUT", "PATCH") and headers.get("content-length", "0") not in ("0", ""):
        ctype = headers.get("content-type", "").lower()
        if not ctype.startswith(_BODY_TYPES):
            raise problem_error(400, "BadRequestError", "A valid content-type must be specified")
    return CallContext(
        sandbox=sandbox,
        org_id=org,
        client_id=api_key,
        request_id=headers.get("x-request-id") or str(uuid.uuid4()),
    )


def _too_many_requests(retry_after: int | None) -> AEPError:
    """The gateway's 429, with ``Retry-After`` seconds when given."""
    return AEPError(
        429,
        {"error_code": "429050", "message": "Too many requests"},
        {"Retry-After": str(retry_after)} if retry_after is not None else None,
    )


class GatewayMiddleware:
    """ASGI middleware: authenticate Platform calls, inject configured faults.

    :param app: the wrapped ASGI app.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PLATFORM_PREFIX):
            return await self.app(scope, receive, send)
        emu: Emulator = scope["app"].state.emulator
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        try:
            ctx = await asyncio.to_thread(_check, emu, method, path, headers)
            wait_s = emu.throttle.take(ctx.client_id, method, path)
            if wait_s is not None:
                raise _too_many_requests(wait_s)
            latency, status, retry_after = emu.faults.pick(method, path)
            if latency:
                await asyncio.sleep(latency)
            if status == 429:
                raise _too_many_requests(retry_after)
            if status is not None:
                raise AEPError(status, {"error_code": f"{status}000", "message": "Injected server error"})
        except AEPError as exc:
            return await _send_error(send, exc, headers.get("x-request-id"))
        scope["aep_context"] = ctx
        return await self.app(scope, receive, send)


async def _send_error(send, exc: AEPError, request_id: str | None) -> None:
    body = json.dumps(exc.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    headers += [(k.lower().encode(), str(v).encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
