"""Throttling like AEP's gateway: token buckets per client and route class, 429 with Retry-After."""

from __future__ import annotations

import pytest

from aep_emulator.config import default_settings
from aep_emulator.throttle import Limits, Throttle, route_class
from tests.emulator import CATALOG, IMPORT


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_route_classes():
    assert route_class("POST", f"{IMPORT}/batches") == "batch_creates"
    assert route_class("POST", f"{IMPORT}/batches/") == "batch_creates"
    assert route_class("POST", f"{IMPORT}/batches/abc") == "writes"  # COMPLETE is not a create
    assert route_class("PUT", f"{IMPORT}/batches/abc/datasets/d/files/f") == "writes"
    assert route_class("GET", f"{CATALOG}/dataSets") == "reads"


def test_a_client_bursts_one_minute_then_waits_for_its_rate():
    clock = Clock()
    throttle = Throttle(Limits(batch_creates=2, writes=0, reads=60), clock)
    assert [throttle.take("c", "POST", f"{IMPORT}/batches") for _ in range(3)] == [None, None, 30]
    clock.now = 29.0
    assert throttle.take("c", "POST", f"{IMPORT}/batches") == 1
    clock.now = 31.0
    assert throttle.take("c", "POST", f"{IMPORT}/batches") is None
    # Other classes, other clients and unlimited classes count apart.
    assert throttle.take("other", "POST", f"{IMPORT}/batches") is None
    assert all(throttle.take("c", "PUT", f"{IMPORT}/batches/x") is None for _ in range(1000))
    assert all(throttle.take("c", "GET", CATALOG) is None for _ in range(60))
    assert throttle.take("c", "GET", CATALOG) == 1


def test_defaults_are_on_and_off_turns_every_class_off():
    settings = default_settings()
    assert settings.throttle and Limits.from_settings(settings) == Limits(138, 1200, 6000)
    assert Limits.from_settings(settings.model_copy(update={"throttle": False})) == Limits(0, 0, 0)


@pytest.fixture
def tight_limits(emulator):
    saved = emulator.emu.throttle.limits
    emulator.emu.throttle.configure(Limits(batch_creates=1, writes=0, reads=2))
    yield
    emulator.emu.throttle.configure(saved)


def test_the_gateway_answers_429_with_retry_after(aep, tight_limits):
    assert [aep.get(f"{CATALOG}/dataSets").status_code for _ in range(2)] == [200, 200]
    throttled = aep.get(f"{CATALOG}/dataSets")
    assert throttled.status_code == 429
    assert throttled.json() == {"error_code": "429050", "message": "Too many requests"}
    assert int(throttled.headers["Retry-After"]) == 30  # 2 per minute: one call per 30 s
    created = aep.post(f"{IMPORT}/batches", json={"datasetId": "none"})
    assert created.status_code == 400, "the first create passes the throttle (and fails validation)"
    assert aep.post(f"{IMPORT}/batches", json={"datasetId": "none"}).status_code == 429
