"""AEP's error bodies, parsed into typed exceptions."""

from __future__ import annotations

import re

import pytest
from aep_hooks.exceptions import AEPApiError

PLATFORM = "https://platform.test"


class TestApiError:
    @pytest.mark.parametrize(
        ("body", "code", "message"),
        [
            pytest.param(
                {"error_code": "403010", "message": "Oauth token is missing."},
                "403010",
                "Oauth token is missing.",
                id="gateway",
            ),
            pytest.param({"error": "invalid_client", "error_description": "bad"}, "invalid_client", "bad", id="ims"),
            pytest.param(
                {"message": "syntax error", "statusCode": 400, "errorCode": "42601"},
                "42601",
                "syntax error",
                id="query",
            ),
            pytest.param(
                {"requestId": "r", "errors": {"422": [{"code": "UPAPI-113434-422", "message": "dup"}]}, "title": "dup"},
                "UPAPI-113434-422",
                "dup",
                id="ups",
            ),
            pytest.param(
                {"type": "/placeholder/type/uri", "status": 400, "title": "BadRequestError", "detail": "content-type"},
                None,
                "content-type",
                id="problem",
            ),
            pytest.param("<html>Bad gateway</html>", None, "<html>Bad gateway</html>", id="text"),
        ],
    )
    def test_parses_each_error_body(self, body, code, message):
        err = AEPApiError(400, body, method="GET", url=f"{PLATFORM}/x", request_id="rid-1")
        assert (err.status, err.error_code, err.message, err.body, err.request_id) == (
            400,
            code,
            message,
            body,
            "rid-1",
        )
        assert re.search(rf"GET {PLATFORM}/x failed with HTTP 400.*{re.escape(message)}", str(err))
