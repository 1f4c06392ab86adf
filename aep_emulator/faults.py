"""Run-time fault injection: throttling, server errors, latency, forced failures.

Off by default. Tests configure it through ``PUT /_emulator/faults``; every rule applies to the
Platform routes whose path matches its regular expression (and method, when given).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultRule:
    """One fault rule.

    :param path: regular expression searched in the request path.
    :param method: HTTP method, or None for any.
    :param rate_429: share of matching calls answered 429.
    :param rate_5xx: share of matching calls answered 500/502/503.
    :param retry_after: ``Retry-After`` seconds sent with a 429 (None: no header).
    :param latency_s: extra seconds before answering.
    :param first_n: fail only the first N matching calls (429 when rate_429 > 0, else 503).
    """

    path: str = ".*"
    method: str | None = None
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    retry_after: int | None = 1
    latency_s: float = 0.0
    first_n: int | None = None
    _seen: int = field(default=0, repr=False)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and re.search(self.path, path) is not None


class Faults:
    """Fault rules plus one-shot forced failures (``batch``, ``query``, ``segment_job``, ``export``)."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._forced: dict[str, int] = {}
        self._random = random.Random(seed)

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        rules = [FaultRule(**r) for r in spec.get("rules", [])]
        with self._lock:
            self._rules = rules
            self._forced = {k: int(v) for k, v in spec.get("force_failures", {}).items()}
            if "seed" in spec:
                self._random.seed(spec["seed"])
        return self.describe()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rules": [{k: v for k, v in r.__dict__.items() if not k.startswith("_")} for r in self._rules],
                "force_failures": dict(self._forced),
            }

    def reset(self) -> None:
        self.configure({})

    def pick(self, method: str, path: str) -> tuple[float, int | None, int | None]:
        """``(latency_s, status or None, retry_after)`` for one incoming call."""
        latency, status, retry_after = 0.0, None, None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                latency += rule.latency_s
                if status is not None:
                    continue
                if rule.first_n is not None:
                    rule._seen += 1
                    if rule._seen <= rule.first_n:
                        status = 429 if rule.rate_429 > 0 else 503
                else:
                    draw = self._random.random()
                    if draw < rule.rate_429:
                        status = 429
                    elif draw < rule.rate_429 + rule.rate_5xx:
                        status = self._random.choice((500, 502, 503))
                if status == 429:
                    retry_after = rule.retry_after
        return latency, status, retry_after

    def take_forced_failure(self, what: str) -> bool:
        """Consume one forced failure of ``what`` (``batch``, ``query``, ``segment_job``, ``export``)."""
        with self._lock:
            left = self._forced.get(what, 0)
            if left <= 0:
                return False
            self._forced[what] = left - 1
            return True
