"""The sync and async REST hooks: gateway headers, the token, the retry policy, ``_links.next`` paging."""

from __future__ import annotations

import logging
import uuid
from unittest import mock

import pytest
import requests
import time_machine
from aep_hooks.exceptions import (
    AEPApiError,
    AEPAuthError,
    AEPConflictError,
    AEPNotFoundError,
    AEPRequestError,
    AEPThrottledError,
)
from aep_hooks.hooks import AEPAsyncHook, AEPHook
from aep_hooks.hooks.base import TOKEN_REFRESH_LEAD_TIME
from airflow.sdk.exceptions import AirflowFailException

from tests.aep_hooks.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    EXPIRES_IN,
    IMS,
    ORG,
    PLATFORM,
    STATS,
)


def bearer(request) -> str:
    return request.headers["Authorization"].removeprefix("Bearer ")


class TestGateway:
    def test_no_io_in_init(self, requests_mock):
        with mock.patch.object(AEPHook, "get_connection") as get_connection:
            AEPHook()
        get_connection.assert_not_called()
        assert requests_mock.call_count == 0

    def test_sends_gateway_headers_and_a_request_id_per_call(self, hook, ims, requests_mock):
        stats = requests_mock.get(STATS, json={"tenantId": "acme"})

        hook.get_json("/data/foundation/schemaregistry/stats")
        hook.get_json("/data/foundation/schemaregistry/stats")

        first, second = stats.request_history
        assert first.headers["Authorization"] == "Bearer token-1"
        assert first.headers["x-api-key"] == CLIENT_ID
        assert first.headers["x-gw-ims-org-id"] == ORG
        assert first.headers["x-sandbox-name"] == "dev"
        assert uuid.UUID(first.headers["x-request-id"]) != uuid.UUID(second.headers["x-request-id"])
        assert first.verify not in (False, None)
        assert ims.call_count == 1
        form = dict(pair.split("=") for pair in ims.last_request.text.split("&"))
        assert form["grant_type"] == "client_credentials"
        assert form["client_id"] == CLIENT_ID

    def test_sandbox_argument_overrides_the_connection(self, ims, requests_mock):
        stats = requests_mock.get(STATS, json={"tenantId": "acme"})
        AEPHook(sandbox="prod").get_json("/data/foundation/schemaregistry/stats")
        assert stats.last_request.headers["x-sandbox-name"] == "prod"

    def test_token_and_secret_never_logged(self, hook, ims, requests_mock, caplog, capsys):
        requests_mock.get(STATS, [{"status_code": 401, "json": {}}, {"json": {"tenantId": "acme"}}])
        # Masking off, so the test shows the hook never logs the secrets rather than the masker hiding them.
        with caplog.at_level(logging.DEBUG), mock.patch("aep_hooks.hooks.rest.mask_secret"):
            hook.get_tenant_id()
        captured = capsys.readouterr()
        output = caplog.text + captured.out + captured.err
        assert "x-request-id" in output
        for secret in ("token-1", "token-2", CLIENT_SECRET):
            assert secret not in output

    def test_token_is_registered_with_the_secret_masker(self, hook, ims):
        with mock.patch("aep_hooks.hooks.rest.mask_secret") as mask_secret:
            hook.get_token()
        mask_secret.assert_called_once_with("token-1")


class TestToken:
    def test_cached_until_shortly_before_expiry(self, hook, ims, requests_mock):
        stats = requests_mock.get(STATS, json={"tenantId": "acme"})
        with time_machine.travel("2026-01-15 00:00:00+00:00", tick=False) as clock:
            hook.get_tenant_id()
            clock.shift(EXPIRES_IN - TOKEN_REFRESH_LEAD_TIME - 1)
            hook.get_tenant_id()
            assert ims.call_count == 1
            clock.shift(2)
            hook.get_tenant_id()
        assert ims.call_count == 2
        assert [bearer(r) for r in stats.request_history] == ["token-1", "token-1", "token-2"]

    def test_refreshed_once_on_401(self, hook, ims, requests_mock):
        stats = requests_mock.get(
            STATS, [{"status_code": 401, "json": {"error_code": "401013"}}, {"json": {"tenantId": "a"}}]
        )

        assert hook.get_tenant_id() == "a"

        assert ims.call_count == 2
        assert [bearer(r) for r in stats.request_history] == ["token-1", "token-2"]

    def test_second_401_raises(self, hook, ims, requests_mock):
        body = {"error_code": "401013", "message": "Oauth token is not valid"}
        stats = requests_mock.get(STATS, status_code=401, json=body)

        with pytest.raises(AEPApiError) as err:
            hook.get_tenant_id()

        assert (err.value.status, err.value.error_code, err.value.body) == (401, "401013", body)
        assert (ims.call_count, stats.call_count) == (2, 2)

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            pytest.param(
                401, {"error": "invalid_client", "error_description": "invalid client_id parameter"}, id="401"
            ),
            pytest.param(400, {"error": "invalid_scope", "error_description": "invalid scope"}, id="400"),
        ],
    )
    def test_ims_rejection_is_an_auth_error_that_fails_the_task(self, hook, requests_mock, sleep, status, body):
        ims = requests_mock.post(IMS, status_code=status, json=body)

        with pytest.raises(AEPAuthError) as err:
            hook.get_token()

        assert (err.value.status, err.value.error_code, err.value.message) == (
            status,
            body["error"],
            body["error_description"],
        )
        assert isinstance(err.value, AirflowFailException)
        assert "check login (client id), password (client secret)" in str(err.value)
        assert "connection 'aep_default'" in str(err.value)
        assert ims.call_count == 1

    def test_ims_outage_is_retried(self, hook, requests_mock, sleep):
        ims = requests_mock.post(
            IMS,
            [
                {"status_code": 503, "json": {"error": "server_error"}},
                {"json": {"access_token": "token-1", "expires_in": EXPIRES_IN}},
            ],
        )

        assert hook.get_token() == "token-1"
        assert ims.call_count == 2


class TestRetryPolicy:
    def test_429_then_500_then_200_honours_retry_after(self, ims, requests_mock, sleep):
        stats = requests_mock.get(
            STATS,
            [
                {"status_code": 429, "headers": {"Retry-After": "7"}, "json": {"message": "slow down"}},
                {"status_code": 500, "json": {"message": "boom"}},
                {"json": {"tenantId": "acme"}},
            ],
        )
        hook = AEPHook(retry_limit=4, retry_min_wait=0, retry_max_wait=30)

        assert hook.get_tenant_id() == "acme"

        assert stats.call_count == 3
        assert [c.args[0] for c in sleep.call_args_list][0] == 7.0

    @pytest.mark.parametrize(
        ("retry_after", "waited"),
        [
            pytest.param("2", 2.0, id="as-asked"),
            pytest.param("3600", 30.0, id="bounded-by-retry_max_wait"),
            pytest.param("Thu, 01 Jan 2099 00:00:00 GMT", 30.0, id="far-http-date-bounded"),
        ],
    )
    def test_retry_after_is_honoured_within_a_bound(self, ims, requests_mock, sleep, retry_after, waited):
        requests_mock.get(
            STATS,
            [
                {"status_code": 429, "headers": {"Retry-After": retry_after}, "json": {"message": "slow down"}},
                {"json": {"tenantId": "acme"}},
            ],
        )
        hook = AEPHook(retry_limit=3, retry_min_wait=0, retry_max_wait=30)

        assert hook.get_tenant_id() == "acme"

        assert [c.args[0] for c in sleep.call_args_list] == [waited]

    def test_throttled_to_the_end_says_so_and_stays_retryable(self, ims, requests_mock, sleep):
        stats = requests_mock.get(
            STATS, status_code=429, headers={"Retry-After": "5"}, json={"message": "Too many requests"}
        )
        hook = AEPHook(retry_limit=3, retry_min_wait=0, retry_max_wait=30)

        with pytest.raises(AEPThrottledError) as err:
            hook.get_tenant_id()

        assert stats.call_count == 3
        assert [c.args[0] for c in sleep.call_args_list] == [5.0, 5.0]
        assert str(err.value).startswith(f"AEP throttled GET {STATS} 3 times, giving up: Too many requests")
        assert "asked to wait 5 s" in str(err.value)
        assert (err.value.attempts, err.value.status) == (3, 429)
        # Throttling passes: the task's own retry may go through, so it is not a fail-fast error.
        assert not isinstance(err.value, AirflowFailException)

    @pytest.mark.parametrize(
        ("status", "error_type", "fix"),
        [
            pytest.param(400, AEPRequestError, "a retry would be refused the same way", id="400"),
            pytest.param(401, AEPAuthError, "check login (client id), password (client secret)", id="401"),
            pytest.param(403, AEPAuthError, "may not make this call in sandbox 'dev'", id="403"),
            pytest.param(404, AEPNotFoundError, "does not exist in sandbox 'dev'", id="404"),
            pytest.param(405, AEPRequestError, "fix what AEP's message names", id="405"),
            pytest.param(422, AEPRequestError, "fix what AEP's message names", id="422"),
            pytest.param(428, AEPRequestError, "fix what AEP's message names", id="428"),
        ],
    )
    def test_errors_no_retry_can_fix_are_sent_once_and_fail_the_task(
        self, hook, ims, requests_mock, sleep, status, error_type, fix
    ):
        stats = requests_mock.get(STATS, status_code=status, json={"error_code": f"E{status}", "message": "refused"})

        with pytest.raises(AirflowFailException) as err:
            hook.get_tenant_id()

        assert type(err.value) is error_type
        # A 401 is sent again once with a new token (the old one may have expired); never more.
        assert stats.call_count == (2 if status == 401 else 1)
        assert f"HTTP {status} [E{status}]: refused" in str(err.value)
        assert fix in str(err.value)
        sleep.assert_not_called()

    @pytest.mark.parametrize("status", [409, 412])
    def test_races_are_not_retried_by_the_hook_but_by_the_task(self, hook, ims, requests_mock, sleep, status):
        stats = requests_mock.get(STATS, status_code=status, json={"message": "changed meanwhile"})

        with pytest.raises(AEPConflictError) as err:
            hook.get_tenant_id()

        assert stats.call_count == 1
        assert not isinstance(err.value, AirflowFailException)
        assert "a retry of the task reads it again" in str(err.value)

    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param({"status_code": 429, "json": {"message": "slow down"}}, id="429"),
            pytest.param({"status_code": 500, "json": {"message": "boom"}}, id="500"),
            pytest.param({"status_code": 502, "text": "<html>Bad gateway</html>"}, id="502"),
            pytest.param({"status_code": 503, "json": {"message": "busy"}}, id="503"),
            pytest.param({"status_code": 504, "json": {"message": "gateway timeout"}}, id="504"),
            pytest.param({"exc": requests.exceptions.ReadTimeout}, id="read-timeout"),
            pytest.param({"exc": requests.exceptions.ConnectTimeout}, id="connect-timeout"),
            pytest.param({"exc": requests.ConnectionError}, id="connection-error"),
        ],
    )
    def test_transient_faults_are_retried(self, hook, ims, requests_mock, sleep, failure):
        stats = requests_mock.get(STATS, [failure, failure, {"json": {"tenantId": "acme"}}])

        assert hook.get_tenant_id() == "acme"

        assert stats.call_count == 3

    def test_gives_up_after_retry_limit_with_the_last_error(self, hook, ims, requests_mock, sleep):
        stats = requests_mock.get(STATS, status_code=503, json={"message": "unavailable"})

        with pytest.raises(AEPApiError) as err:
            hook.get_tenant_id()

        assert stats.call_count == hook.retry_limit == 4
        assert (err.value.status, err.value.message) == (503, "unavailable")

    @pytest.mark.parametrize("exc", [requests.ConnectionError, requests.exceptions.ReadTimeout])
    def test_transport_errors_retried_on_reads(self, hook, ims, requests_mock, sleep, exc):
        stats = requests_mock.get(STATS, [{"exc": exc}, {"json": {"tenantId": "acme"}}])
        assert hook.get_tenant_id() == "acme"
        assert stats.call_count == 2

    @pytest.mark.parametrize(
        "response",
        [
            pytest.param({"status_code": 500, "json": {"message": "boom"}}, id="500"),
            pytest.param({"status_code": 503, "json": {"message": "busy"}}, id="503"),
            pytest.param({"exc": requests.exceptions.ReadTimeout}, id="timeout"),
            pytest.param({"exc": requests.ConnectionError}, id="connection-error"),
        ],
    )
    def test_create_never_sent_twice(self, hook, ims, requests_mock, sleep, response):
        create = requests_mock.post(f"{PLATFORM}/data/foundation/import/batches", [response, {"json": {"id": "b1"}}])

        with pytest.raises((AEPApiError, requests.RequestException)):
            hook.create_batch({"datasetId": "ds1", "inputFormat": {"format": "parquet"}})

        assert create.call_count == 1

    def test_create_retried_on_429(self, hook, ims, requests_mock, sleep):
        jobs = requests_mock.post(
            f"{PLATFORM}/data/core/ups/segment/jobs",
            [{"status_code": 429, "json": {"message": "too many jobs"}}, {"json": {"id": "job1", "status": "NEW"}}],
        )

        assert hook.create_segment_job(["seg1"])["id"] == "job1"

        assert jobs.call_count == 2
        assert jobs.last_request.json() == [{"segmentId": "seg1"}]


class TestPaging:
    def test_query_service_links_next(self, hook, ims, requests_mock):
        url = f"{PLATFORM}/data/foundation/query/queries"
        requests_mock.get(
            url,
            [
                {"json": {"queries": [{"id": "q1"}], "_links": {"next": {"href": f"{url}?start=2026-01-01&limit=1"}}}},
                {
                    "json": {
                        "queries": [{"id": "q2"}],
                        "_links": {"next": {"href": "/data/foundation/query/queries?start=z"}},
                    }
                },
                {"json": {"queries": [{"id": "q3"}], "_links": {}}},
            ],
        )

        ids = [q["id"] for q in hook.iter_query_service("/data/foundation/query/queries", "queries", {"limit": 1})]

        assert ids == ["q1", "q2", "q3"]
        assert [r.qs for r in requests_mock.request_history[1:]] == [
            {"limit": ["1"]},
            {"start": ["2026-01-01"], "limit": ["1"]},
            {"start": ["z"]},
        ]


def test_api_error_carries_the_request_id_sent(hook, ims, requests_mock):
    stats = requests_mock.get(STATS, status_code=404, json={"message": "gone"})
    with pytest.raises(AEPApiError) as err:
        hook.get_tenant_id()
    assert err.value.request_id == stats.last_request.headers["x-request-id"]
    assert (err.value.method, err.value.url) == ("GET", STATS)


class TestAsyncHook:
    STATS_PATH = "/data/foundation/schemaregistry/stats"

    @pytest.mark.asyncio
    async def test_shares_the_retry_policy_and_refreshes_on_401(self, platform):
        for n in (1, 2):
            platform.add("POST", "/ims/token/v3", body={"access_token": f"atoken-{n}", "expires_in": EXPIRES_IN})
        platform.add("GET", self.STATS_PATH, 429, {"message": "slow down"})
        platform.add("GET", self.STATS_PATH, 401, {"error_code": "401013"})
        platform.add("GET", self.STATS_PATH, body={"tenantId": "acme"})
        hook = AEPAsyncHook(retry_limit=3, retry_min_wait=0, retry_max_wait=0)

        # Zero waits: no sleep to patch (patching the global asyncio.sleep would catch other loops' ticks).
        assert await hook.get_json(self.STATS_PATH) == {"tenantId": "acme"}

        gets = platform.calls("GET", self.STATS_PATH)
        assert [r.headers["Authorization"] for r in gets] == ["Bearer atoken-1", "Bearer atoken-1", "Bearer atoken-2"]
        assert gets[0].headers["x-sandbox-name"] == "dev"
        assert gets[0].headers["x-gw-ims-org-id"] == ORG
        assert len(platform.calls("POST", "/ims/token/v3")) == 2

    @pytest.mark.asyncio
    async def test_create_not_retried_on_5xx(self, platform):
        path = "/data/foundation/query/queries"
        platform.add("POST", "/ims/token/v3", body={"access_token": "atoken-1", "expires_in": EXPIRES_IN})
        platform.add("POST", path, 500, {"message": "boom"})
        platform.add("POST", path, body={"id": "q1"})
        hook = AEPAsyncHook(retry_limit=3, retry_min_wait=0, retry_max_wait=0)

        with pytest.raises(AEPApiError) as err:
            await hook.request("POST", path, json={"sql": "SELECT 1"})

        assert (err.value.status, err.value.message) == (500, "boom")
        assert len(platform.calls("POST", path)) == 1

    @pytest.mark.asyncio
    async def test_throttled_to_the_end_gives_up_with_the_count(self, platform):
        platform.add("POST", "/ims/token/v3", body={"access_token": "atoken-1", "expires_in": EXPIRES_IN})
        for _ in range(3):
            platform.add("GET", self.STATS_PATH, 429, {"message": "Too many requests"}, {"Retry-After": "0"})
        hook = AEPAsyncHook(retry_limit=3, retry_min_wait=0, retry_max_wait=0)

        with pytest.raises(AEPThrottledError, match=r"AEP throttled GET \S+ 3 times, giving up: Too many requests"):
            await hook.get_json(self.STATS_PATH)

        assert len(platform.calls("GET", self.STATS_PATH)) == 3

    @pytest.mark.asyncio
    async def test_forbidden_fails_the_task_after_one_call(self, platform):
        platform.add("POST", "/ims/token/v3", body={"access_token": "atoken-1", "expires_in": EXPIRES_IN})
        platform.add("GET", self.STATS_PATH, 403, {"error_code": "403003", "message": "Api Key is invalid"})
        hook = AEPAsyncHook(retry_limit=3, retry_min_wait=0, retry_max_wait=0)

        with pytest.raises(AEPAuthError, match="may not make this call in sandbox 'dev'") as err:
            await hook.get_json(self.STATS_PATH)

        assert isinstance(err.value, AirflowFailException)
        assert len(platform.calls("GET", self.STATS_PATH)) == 1
