"""The shared retry policy: what may be sent again, and how long to wait."""

from __future__ import annotations

import pytest
import requests
import time_machine
from aep_hooks.exceptions import AEPApiError
from aep_hooks.hooks.base import is_retryable, parse_retry_after


@pytest.mark.parametrize(
    ("exception", "idempotent", "expected"),
    [
        pytest.param(AEPApiError(429, {}, method="POST", url="u"), False, True, id="429-create"),
        pytest.param(AEPApiError(500, {}, method="POST", url="u"), False, False, id="500-create"),
        pytest.param(AEPApiError(500, {}, method="GET", url="u"), True, True, id="500-read"),
        pytest.param(AEPApiError(404, {}, method="GET", url="u"), True, False, id="404-read"),
        pytest.param(requests.exceptions.ConnectTimeout(), False, False, id="timeout-create"),
        pytest.param(TimeoutError(), True, True, id="asyncio-timeout-read"),
        pytest.param(ValueError(), True, False, id="other"),
    ],
)
def test_is_retryable(exception, idempotent, expected):
    assert is_retryable(exception, idempotent=idempotent) is expected


def test_retry_after_http_date():
    with time_machine.travel("2026-01-15 00:00:00+00:00", tick=False):
        assert parse_retry_after("Thu, 15 Jan 2026 00:00:30 GMT") == 30.0
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("soon") is None
