"""The sync and async REST hooks: gateway headers, the token, the retry policy, ``_links.next`` paging."""

from __future__ import annotations

import logging
import uuid
from unittest import mock

import pytest
import requests
import time_machine
from aep_hooks.exceptions import AEPApiError, AEPAuthError
from aep_hooks.hooks import AEPAsyncHook, AEPHook
from aep_hooks.hooks.base import TOKEN_REFRESH_LEAD_TIME

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

    def test_ims_rejection_is_an_auth_error(self, hook, requests_mock, sleep):
        body = {"error": "invalid_client", "error_description": "invalid client_id parameter"}
        ims = requests_mock.post(IMS, status_code=401, json=body)

        with pytest.raises(AEPAuthError) as err:
            hook.get_token()

        assert (err.value.status, err.value.error_code, err.value.message) == (
            401,
            "invalid_client",
            "invalid client_id parameter",
        )
        assert ims.call_count == 1


class TestRetryPolicy:
    def test_429_then_500_then_200_honours_retry_after(self, hook, ims, requests_mock, sleep):
        stats = requests_mock.get(
            STATS,
            [
                {"status_code": 429, "headers": {"Retry-After": "7"}, "json": {"message": "slow down"}},
                {"status_code": 500, "json": {"message": "boom"}},
                {"json": {"tenantId": "acme"}},
            ],
        )

        assert hook.get_tenant_id() == "acme"

        assert stats.call_count == 3
        assert [c.args[0] for c in sleep.call_args_list] == [7.0, 0.0]

    @pytest.mark.parametrize("status", [400, 403, 404, 409, 412, 422])
    def test_other_4xx_not_retried(self, hook, ims, requests_mock, sleep, status):
        body = {
            "type": "http://ns.adobe.com/aep/errors/XDM-1012-404",
            "title": "Nope",
            "status": status,
            "detail": "bad",
        }
        stats = requests_mock.get(STATS, status_code=status, json=body)

        with pytest.raises(AEPApiError) as err:
            hook.get_tenant_id()

        assert stats.call_count == 1
        assert (err.value.status, err.value.error_code, err.value.message, err.value.body) == (
            status,
            "XDM-1012-404",
            "bad",
            body,
        )
        sleep.assert_not_called()

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
