"""The emulator's ASGI app."""

from __future__ import annotations

import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from aep_emulator.config import Settings, get_settings
from aep_emulator.errors import AEPError
from aep_emulator.gateway import GatewayMiddleware
from aep_emulator.qs_proxy import QSProxy
from aep_emulator.runtime import Emulator
from aep_emulator.services.ims import TokenStore

log = logging.getLogger(__name__)

# Service modules under aep_emulator.services, in routing order.
SERVICES = (
    "ims",
    "admin",
    "schema_registry",
    "catalog",
    "ingestion",
    "data_access",
    "query",
    "flow",
    "segmentation",
    "identity",
)


def _load_services():
    modules = []
    for name in SERVICES:
        try:
            modules.append(importlib.import_module(f"aep_emulator.services.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"aep_emulator.services.{name}":
                raise
            log.warning("service module %s is not present", name)
    return modules


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the emulator starts (database, buckets, recovery) in its lifespan.

    :param settings: emulator settings; defaults to the environment's.
    """
    emu = Emulator(settings or get_settings())
    emu.tokens = TokenStore(emu)
    modules = _load_services()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        emu.start()
        for module in modules:
            recover = getattr(module, "recover", None)
            if recover is not None:
                recover(emu)
        qs_proxy = await QSProxy(emu).start()
        yield
        await qs_proxy.stop()
        emu.stop()

    app = FastAPI(
        title="AEP emulator", lifespan=lifespan, docs_url="/_emulator/docs", openapi_url="/_emulator/openapi.json"
    )
    app.state.emulator = emu
    for module in modules:
        app.include_router(module.router)
        if hasattr(module, "admin_router"):
            app.include_router(module.admin_router)
    app.add_middleware(GatewayMiddleware)

    @app.exception_handler(AEPError)
    async def aep_error(request: Request, exc: AEPError):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    return app
