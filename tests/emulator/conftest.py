"""Fixtures of the emulator service tests."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture
def held_worker(emulator):
    """Occupies the emulator's background workers until released, so runs and jobs stay in flight meanwhile."""
    release = threading.Event()
    futures = [emulator.emu.worker.submit(release.wait) for _ in range(emulator.emu.worker._max_workers)]
    yield release
    release.set()
    for future in futures:
        future.result(timeout=10)


@pytest.fixture
def conn_params(aep) -> dict:
    """Query Service wire-endpoint keywords from GET /connection_parameters, as a client builds them."""
    params = aep.get("/data/foundation/query/connection_parameters").json()
    return {
        "host": params["host"],
        "port": params["port"],
        "user": params["username"],
        "password": params["token"],
        "dbname": params["dbName"],
        "sslmode": "disable",  # AEP requires TLS; the emulator offers none (see aep_emulator.qs_proxy)
    }
