"""AEP's error bodies, parsed into typed exceptions."""

from __future__ import annotations

import re

import pytest
from aep_hooks.exceptions import (
    AEPApiError,
    AEPAuthError,
    AEPConflictError,
    AEPNotFoundError,
    AEPRequestError,
    AEPServerError,
    AEPThrottledError,
)
from airflow.sdk.exceptions import AirflowFailException

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


@pytest.mark.parametrize(
    ("status", "token_call", "error_type", "fails_the_task"),
    [
        (429, False, AEPThrottledError, False),
        (429, True, AEPThrottledError, False),
        (500, False, AEPServerError, False),
        (503, True, AEPServerError, False),
        (409, False, AEPConflictError, False),
        (412, False, AEPConflictError, False),
        (401, False, AEPAuthError, True),
        (403, False, AEPAuthError, True),
        (400, True, AEPAuthError, True),
        (404, False, AEPNotFoundError, True),
        (400, False, AEPRequestError, True),
        (422, False, AEPRequestError, True),
    ],
)
def test_for_status_types_the_error_by_what_a_retry_can_do(status, token_call, error_type, fails_the_task):
    err = AEPApiError.for_status(status, {"message": "m"}, method="GET", url="u", token_call=token_call, sandbox="dev")
    assert type(err) is error_type
    assert isinstance(err, AirflowFailException) is fails_the_task
