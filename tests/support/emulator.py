"""Run the emulator on a real HTTP port for a test session, and a small client that talks to it."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import requests
import uvicorn

from aep_emulator.app import create_app
from aep_emulator.config import Settings, get_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningEmulator:
    """An emulator served by uvicorn in a background thread.

    :param settings: emulator settings (ports are replaced by free ones).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(update={"port": free_port(), "qs_port": free_port()})
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.settings.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return self.settings.base_url

    @property
    def emu(self):
        return self.app.state.emulator

    def start(self) -> RunningEmulator:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.started:
                return self
            if not self.thread.is_alive():
                raise RuntimeError("emulator failed to start; is the local stack running? (bin/stack up)")
            time.sleep(0.05)
        raise RuntimeError("emulator did not start within 30 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def admin(self, method: str, route: str, **kwargs) -> requests.Response:
        """Call an emulator-only route (``/_emulator/<route>``) with the admin token."""
        headers = {"Authorization": f"Bearer {self.settings.admin_token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/_emulator/{route}", headers=headers, timeout=30, **kwargs)


def session_settings() -> Settings:
    """Settings for a test session: the configured services and a sandbox of the session's own and
    nothing else, so test runs sharing one PostgreSQL (and the local stack's emulator) never see,
    or recover, each other's state."""
    base = get_settings()
    sandbox = os.environ.get("AEP_TEST_SANDBOX") or f"t{uuid.uuid4().hex[:8]}"
    update = {"sandboxes": (sandbox,), "state_latency_s": 0.05, "admin_token": secrets.token_urlsafe(16)}
    return base.model_copy(update=update), sandbox


@dataclass
class AEPClient:
    """Authenticated ``requests`` calls to the emulator, with the gateway headers.

    :param base_url: emulator URL.
    :param settings: emulator settings (credentials, org).
    :param sandbox: sandbox sent as ``x-sandbox-name``.
    """

    base_url: str
    settings: Settings
    sandbox: str
    token: str | None = None

    def __post_init__(self) -> None:
        self.session = requests.Session()

    def fetch_token(self) -> str:
        resp = self.session.post(
            f"{self.base_url}/ims/token/v3",
            data={
                "grant_type": "client_credentials",
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret,
                "scope": "openid,AdobeID,read_organizations",
            },
            timeout=30,
        )
        resp.raise_for_status()
        self.token = resp.json()["access_token"]
        return self.token

    def headers(self, extra: dict | None = None) -> dict:
        if self.token is None:
            self.fetch_token()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "x-api-key": self.settings.client_id,
            "x-gw-ims-org-id": self.settings.org_id,
            "x-sandbox-name": self.sandbox,
        }
        headers.update(extra or {})
        return headers

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs) -> requests.Response:
        if "json" in kwargs and not (headers and "Content-Type" in headers):
            headers = {"Content-Type": "application/json", **(headers or {})}
        return self.session.request(method, self.base_url + path, headers=self.headers(headers), timeout=60, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)
