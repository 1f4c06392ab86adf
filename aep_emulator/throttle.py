"""Request throttling like AEP's gateway: per API client and route class, 429 with ``Retry-After``.

Each (client, route class) has a token bucket holding one minute's allowance: a client may burst
up to its per-minute limit, then gets one call per ``60 / limit`` seconds. Limits are the
emulator's choice where AEP publishes none (docs/aep-behaviour.md#throttling).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from aep_emulator.config import Settings

BATCH_CREATE_PATH = "/data/foundation/import/batches"


@dataclass(frozen=True)
class Limits:
    """Calls per minute by route class; 0 is unlimited.

    :param batch_creates: ``POST /data/foundation/import/batches`` (AEP: 138 per minute per user).
    :param writes: every other POST, PUT, PATCH and DELETE.
    :param reads: GET and HEAD.
    """

    batch_creates: int
    writes: int
    reads: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        if not settings.throttle:
            return cls(0, 0, 0)
        return cls(
            settings.throttle_batch_creates_per_min, settings.throttle_writes_per_min, settings.throttle_reads_per_min
        )


def route_class(method: str, path: str) -> str:
    """``batch_creates``, ``writes`` or ``reads``: the field of :class:`Limits` a call counts against."""
    if method == "POST" and path.rstrip("/") == BATCH_CREATE_PATH:
        return "batch_creates"
    return "reads" if method in ("GET", "HEAD", "OPTIONS") else "writes"


class Throttle:
    """Token buckets per (client, route class).

    :param limits: the limits to enforce.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, limits: Limits, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self.limits = limits

    def configure(self, limits: Limits) -> None:
        """Enforce new limits from now on, every bucket full."""
        with self._lock:
            self.limits = limits
            self._buckets.clear()

    def take(self, client: str, method: str, path: str) -> int | None:
        """Count one call; None when it may go on, else the seconds to wait (``Retry-After``)."""
        klass = route_class(method, path)
        per_minute = getattr(self.limits, klass)
        if per_minute <= 0:
            return None
        rate = per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get((client, klass), (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[(client, klass)] = (tokens - 1.0, now)
                return None
            self._buckets[(client, klass)] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / rate))
