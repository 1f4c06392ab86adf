"""Unit tests of the AEP hooks against HTTP fakes (requests-mock, aioresponses)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from unittest import mock

import pytest
import pytest_asyncio
import requests
import time_machine
from aep_hooks.exceptions import AEPApiError, AEPAuthError, AEPNotReadyError
from aep_hooks.hooks import (
    TOKEN_REFRESH_LEAD_TIME,
    AEPAsyncHook,
    AEPHook,
    AEPQueryServiceHook,
    is_retryable,
    parse_retry_after,
)
from aiohttp import web
from aiohttp.test_utils import TestServer

PLATFORM = "https://platform.test"
IMS = "https://ims.test/ims/token/v3"
ORG = "ORG0000@AdobeOrg"
CLIENT_ID = "client-0001"
CLIENT_SECRET = "secret-0001-do-not-log"
STATS = f"{PLATFORM}/data/foundation/schemaregistry/stats"
EXPIRES_IN = 86399


def connection_json(**extra) -> str:
    return json.dumps(
        {
            "conn_type": "aep",
            "host": PLATFORM,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "extra": {"org_id": ORG, "sandbox": "dev", "ims_url": IMS, **extra},
        }
    )


@pytest.fixture(autouse=True)
def aep_connection_env(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", connection_json())


@pytest.fixture
def hook() -> AEPHook:
    return AEPHook(retry_limit=4, retry_min_wait=0, retry_max_wait=0)


@pytest.fixture
def sleep():
    """tenacity's sleep between attempts (``tenacity.nap.sleep`` calls ``time.sleep``)."""
    with mock.patch("tenacity.nap.time.sleep") as patched:
        yield patched


@pytest.fixture
def ims(requests_mock):
    """IMS issuing ``token-1``, ``token-2``, ... on successive calls."""
    tokens = iter(f"token-{n}" for n in range(1, 100))
    return requests_mock.post(
        IMS,
        json=lambda request, context: {"access_token": next(tokens), "token_type": "bearer", "expires_in": EXPIRES_IN},
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
        with caplog.at_level(logging.DEBUG), mock.patch("aep_hooks.hooks.mask_secret"):
            hook.get_tenant_id()
        captured = capsys.readouterr()
        output = caplog.text + captured.out + captured.err
        assert "x-request-id" in output
        for secret in ("token-1", "token-2", CLIENT_SECRET):
            assert secret not in output

    def test_token_is_registered_with_the_secret_masker(self, hook, ims):
        with mock.patch("aep_hooks.hooks.mask_secret") as mask_secret:
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

    def test_complete_is_retried_as_idempotent(self, hook, ims, requests_mock, sleep):
        complete = requests_mock.post(
            f"{PLATFORM}/data/foundation/import/batches/b1?action=COMPLETE",
            [{"status_code": 502}, {"status_code": 200}],
        )
        hook.complete_batch("b1")
        assert complete.call_count == 2

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
    def test_is_retryable(self, exception, idempotent, expected):
        assert is_retryable(exception, idempotent=idempotent) is expected

    def test_retry_after_http_date(self):
        with time_machine.travel("2026-01-15 00:00:00+00:00", tick=False):
            assert parse_retry_after("Thu, 15 Jan 2026 00:00:30 GMT") == 30.0
        assert parse_retry_after("12") == 12.0
        assert parse_retry_after("soon") is None


class TestPaging:
    def test_catalog_limit_start(self, hook, ims, requests_mock):
        pages = [{"a": {}, "b": {}}, {"c": {}, "d": {}}, {"e": {"name": "last"}}]
        catalog = requests_mock.get(f"{PLATFORM}/data/foundation/catalog/dataSets", [{"json": p} for p in pages])

        items = list(hook.iter_catalog("/dataSets", {"name": "x"}, page_size=2))

        assert [i for i, _ in items] == ["a", "b", "c", "d", "e"]
        assert items[-1][1] == {"id": "e", "name": "last"}
        assert [(r.qs["start"], r.qs["limit"], r.qs["name"]) for r in catalog.request_history] == [
            (["0"], ["2"], ["x"]),
            (["2"], ["2"], ["x"]),
            (["4"], ["2"], ["x"]),
        ]

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

    def test_flow_service_continuation_token(self, hook, ims, requests_mock):
        flows = requests_mock.get(
            f"{PLATFORM}/data/foundation/flowservice/flows",
            [
                {"json": {"items": [{"id": "f1"}], "_links": {"next": {"href": "?continuationToken=XYZ"}}}},
                {"json": {"items": [{"id": "f2"}]}},
            ],
        )

        ids = [f["id"] for f in hook.iter_flow_service("/flows", {"property": "name==x"})]

        assert ids == ["f1", "f2"]
        assert flows.last_request.qs == {"property": ["name==x"], "continuationtoken": ["xyz"]}

    def test_audiences_page_next(self, hook, ims, requests_mock):
        audiences = requests_mock.get(
            f"{PLATFORM}/data/core/ups/audiences",
            [
                {"json": {"children": [{"name": "a"}, {"name": "b"}], "_page": {"next": 2}}},
                {"json": {"children": [{"name": "c"}], "_page": {"next": 0}}},
            ],
        )

        assert [a["name"] for a in hook.iter_audiences({"limit": 2})] == ["a", "b", "c"]
        assert audiences.last_request.qs == {"limit": ["2"], "start": ["2"]}

    def test_segment_definitions_one_based_pages(self, hook, ims, requests_mock):
        definitions = requests_mock.get(
            f"{PLATFORM}/data/core/ups/segment/definitions",
            [
                {"json": {"segments": [{"name": "s1"}], "page": {"totalPages": 2}}},
                {"json": {"segments": [{"name": "s2"}], "page": {"totalPages": 2}}},
            ],
        )

        assert hook.find_segment_definition("s2") == {"name": "s2"}
        assert [r.qs["page"] for r in definitions.request_history] == [["1"], ["2"]]


class TestServiceHelpers:
    def test_create_dataset_returns_the_id(self, hook, ims, requests_mock):
        requests_mock.post(f"{PLATFORM}/data/foundation/catalog/dataSets", status_code=201, json=["@/dataSets/ds42"])
        assert hook.create_dataset({"name": "scores"}) == "ds42"

    def test_get_batch_unwraps(self, hook, ims, requests_mock):
        requests_mock.get(f"{PLATFORM}/data/foundation/catalog/batches/b1", json={"b1": {"status": "success"}})
        assert hook.get_batch("b1") == {"id": "b1", "status": "success"}

    def test_patch_dataset_sends_json_patch(self, hook, ims, requests_mock):
        patch = requests_mock.patch(f"{PLATFORM}/data/foundation/catalog/dataSets/ds1", json=["@/dataSets/ds1"])
        hook.patch_dataset("ds1", [{"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]}])
        assert patch.last_request.headers["Content-Type"] == "application/json-patch+json"

    def test_upload_file_puts_raw_bytes(self, hook, ims, requests_mock):
        put = requests_mock.put(f"{PLATFORM}/data/foundation/import/batches/b1/datasets/ds1/files/dt=1/part-0.parquet")
        hook.upload_file("b1", "ds1", "dt=1/part-0.parquet", b"PAR1")
        assert (put.last_request.body, put.last_request.headers["Content-Type"]) == (
            b"PAR1",
            "application/octet-stream",
        )

    def test_patch_flow_sends_the_current_etag(self, hook, ims, requests_mock):
        flow = f"{PLATFORM}/data/foundation/flowservice/flows/f1"
        requests_mock.get(flow, json={"items": [{"id": "f1", "etag": '"e-1"'}]})
        patch = requests_mock.patch(flow, json={"id": "f1", "etag": '"e-2"'})

        assert hook.patch_flow("f1", [{"op": "add", "path": "/x", "value": 1}]) == {"id": "f1", "etag": '"e-2"'}
        assert patch.last_request.headers["If-Match"] == '"e-1"'

    def test_dataset_export_waits_while_not_ready(self, hook, ims, requests_mock, sleep):
        not_ready = {
            "message": "Following order ID(s) are not ready for dataset export, please wait for 10 minutes and retry."
        }
        status_url = "https://platform.test/data/foundation/flowservice/runs/run-7"
        adhoc = requests_mock.post(
            f"{PLATFORM}/data/core/activation/disflowprovider/adhocrun",
            [
                {"status_code": 400, "json": not_ready},
                {"status_code": 400, "json": not_ready},
                {"json": {"destinations": [{"flowId": "f1", "datasets": [{"id": "ds1", "statusURL": status_url}]}]}},
            ],
        )

        assert hook.run_dataset_export("f1", "ds1", not_ready_wait=60.0) == "run-7"

        assert adhoc.call_count == 3
        assert [c.args[0] for c in sleep.call_args_list] == [60.0, 60.0]
        assert adhoc.last_request.json() == {
            "activationInfo": {"destinations": [{"flowId": "f1", "datasets": [{"id": "ds1"}]}]}
        }

    def test_dataset_export_gives_up_on_a_flow_never_ready(self, hook, ims, requests_mock, sleep):
        message = {"message": "not ready for dataset export, please wait for 10 minutes and retry."}
        adhoc = requests_mock.post(
            f"{PLATFORM}/data/core/activation/disflowprovider/adhocrun", status_code=400, json=message
        )
        with pytest.raises(AEPNotReadyError):
            hook.run_dataset_export("f1", "ds1", not_ready_wait=1.0, not_ready_attempts=3)
        assert adhoc.call_count == 3

    def test_dataset_export_run_already_exists_not_retried(self, hook, ims, requests_mock, sleep):
        adhoc = requests_mock.post(
            f"{PLATFORM}/data/core/activation/disflowprovider/adhocrun",
            status_code=400,
            json={"message": "Run already exists for flow f1"},
        )
        with pytest.raises(AEPApiError) as err:
            hook.run_dataset_export("f1", "ds1")
        assert not isinstance(err.value, AEPNotReadyError)
        assert adhoc.call_count == 1


class TestTestConnection:
    def test_success(self, hook, ims, requests_mock):
        requests_mock.get(STATS, json={"tenantId": "acme"})
        ok, message = hook.test_connection()
        assert ok is True
        assert "acme" in message

    def test_bad_credentials(self, hook, requests_mock, sleep):
        requests_mock.post(IMS, status_code=401, json={"error": "invalid_client", "error_description": "bad secret"})
        ok, message = hook.test_connection()
        assert ok is False
        assert "invalid_client" in message
        assert "bad secret" in message


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

    def test_carries_the_request_id_sent(self, hook, ims, requests_mock):
        stats = requests_mock.get(STATS, status_code=404, json={"message": "gone"})
        with pytest.raises(AEPApiError) as err:
            hook.get_tenant_id()
        assert err.value.request_id == stats.last_request.headers["x-request-id"]
        assert (err.value.method, err.value.url) == ("GET", STATS)


class ScriptedPlatform:
    """
    A real HTTP server (aiohttp) standing in for IMS and the Platform gateway: each
    ``(method, path)`` answers its scripted responses in order and records the requests.
    """

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[tuple[int, dict]]] = {}
        self.requests: list[web.Request] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app)

    def add(self, method: str, path: str, status: int = 200, body: dict | None = None) -> None:
        self.script.setdefault((method, path), []).append((status, body or {}))

    def calls(self, method: str, path: str) -> list[web.Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        status, body = self.script[(request.method, request.path)].pop(0)
        return web.json_response(body, status=status)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest_asyncio.fixture
async def platform(monkeypatch):
    scripted = ScriptedPlatform()
    await scripted.server.start_server()
    conn = json.loads(connection_json())
    conn["host"] = scripted.url
    conn["extra"]["ims_url"] = f"{scripted.url}/ims/token/v3"
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(conn))
    yield scripted
    await scripted.server.close()


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


class TestQueryServiceHook:
    @pytest.fixture
    def connection_parameters(self, ims, requests_mock):
        return requests_mock.get(
            f"{PLATFORM}/data/foundation/query/connection_parameters",
            json={"username": ORG, "dbName": "dev:all", "host": "org.platform-query.test", "port": 80, "token": "x"},
        )

    def test_connects_with_a_fresh_token_and_require_ssl(self, connection_parameters):
        qs_hook = AEPQueryServiceHook()
        with mock.patch.object(AEPQueryServiceHook, "_create_connection") as create_connection:
            qs_hook.get_conn()

        (conn_args,), _ = create_connection.call_args
        assert conn_args == {
            "host": "org.platform-query.test",
            "port": 80,
            "user": ORG,
            "password": "token-1",
            "dbname": "dev:all",
            "sslmode": "require",
            "keepalives_idle": 240,
        }
        assert connection_parameters.call_count == 1

    def test_emulator_settings(self, monkeypatch, connection_parameters):
        monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", connection_json(qs_sslmode="disable", qs_dialect="postgres"))
        qs_hook = AEPQueryServiceHook(sandbox="prod")
        with mock.patch.object(AEPQueryServiceHook, "_create_connection") as create_connection:
            qs_hook.get_conn()

        (conn_args,), _ = create_connection.call_args
        assert (conn_args["sslmode"], conn_args["dbname"]) == ("disable", "prod:all")
        assert qs_hook.dialect_name == "postgres"

    def test_default_dialect_is_spark(self):
        assert AEPQueryServiceHook().dialect_name == "spark"


@pytest.mark.integration
def test_connection_against_the_emulator(emulator, sandbox, monkeypatch):
    from tests.aep_hooks.conftest import aep_connection

    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", aep_connection(emulator, sandbox))

    ok, message = AEPHook().test_connection()

    assert ok, message
