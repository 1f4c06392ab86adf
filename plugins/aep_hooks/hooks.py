"""
Hooks for Adobe Experience Platform (AEP).

``AEPHook`` talks to the Platform REST gateway (IMS OAuth server-to-server token, gateway headers,
retries, paging and one helper per service call the pipeline makes); ``AEPAsyncHook`` is its
asyncio counterpart for triggers; ``AEPQueryServiceHook`` connects to Query Service over the
PostgreSQL wire protocol with the IMS token as password.

.. seealso::
    https://experienceleague.adobe.com/en/docs/experience-platform/landing/platform-apis/api-authentication
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import requests
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk.log import amask_secret, mask_secret
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_fixed,
)
from tenacity.wait import wait_base

from aep_hooks.exceptions import AEPApiError, AEPAuthError, AEPError, AEPNotReadyError

try:
    from airflow.sdk import BaseHook
except ImportError:
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from sqlalchemy.engine import URL

DEFAULT_PLATFORM_URL = "https://platform.adobe.io"
DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
DEFAULT_SANDBOX = "prod"
DEFAULT_QS_SSLMODE = "require"
DEFAULT_QS_DIALECT = "spark"
# Adobe advises a new token well before the 24 h lifetime ends; short (test) lifetimes refresh at half-life.
TOKEN_REFRESH_LEAD_TIME = 300.0
# Idle Query Service connections are dropped server-side; keep TCP keepalives below 300 s.
QS_KEEPALIVES_IDLE = 240

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, aiohttp.ClientConnectionError, asyncio.TimeoutError)
NOT_READY_FOR_EXPORT = "not ready for dataset export"

CATALOG = "/data/foundation/catalog"
INGESTION = "/data/foundation/import"
SCHEMA_REGISTRY = "/data/foundation/schemaregistry"
QUERY_SERVICE = "/data/foundation/query"
FLOW_SERVICE = "/data/foundation/flowservice"
AD_HOC_RUN = "/data/core/activation/disflowprovider/adhocrun"
SEGMENTATION = "/data/core/ups"

XED_ACCEPT = "application/vnd.adobe.xed+json"
XED_FULL_ACCEPT = "application/vnd.adobe.xed-full+json; version=1"
XED_ONE_ACCEPT = "application/vnd.adobe.xed+json; version=1"
XDM_ACCEPT = "application/vnd.adobe.xdm+json"
DATASET_EXPORT_ACCEPT = "application/vnd.adobe.adhoc.dataset.activation+json; version=1"
AUDIENCE_ACTIVATION_ACCEPT = "application/vnd.adobe.adhoc.activation+json; version=2"
JSON_PATCH = "application/json-patch+json"


def is_retryable(exception: BaseException, *, idempotent: bool) -> bool:
    """
    Tell whether a failed call may be sent again.

    A 429 is always retryable (AEP refused the call, nothing happened). 5xx answers, connection
    errors and timeouts are retryable only for idempotent calls: a create may have taken effect.

    :param exception: what the attempt raised.
    :param idempotent: whether sending the call twice has the effect of sending it once.
    """
    if isinstance(exception, AEPApiError):
        return exception.status == 429 or (idempotent and exception.status >= 500)
    return idempotent and isinstance(exception, TRANSPORT_ERRORS)


class wait_retry_after(wait_base):
    """
    Wait as long as the server's ``Retry-After`` asked, or else as ``fallback`` says.

    :param fallback: the wait strategy used when the failure carries no ``Retry-After``.
    """

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        exception = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exception, AEPApiError) and exception.retry_after is not None:
            return exception.retry_after
        return self.fallback(retry_state)


def parse_retry_after(value: str | None) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    :param value: the header value, if the response had one.
    """
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode_body(content: bytes, text: str) -> Any:
    """The JSON body of a response, its text when it is not JSON, ``None`` when empty."""
    if not content:
        return None
    try:
        return jsonlib.loads(text)
    except ValueError:
        return text


def unwrap_catalog_item(body: dict, resource_id: str) -> dict:
    """Catalog answers ``{id: doc}``; return the doc with its ``id``."""
    if resource_id not in body:
        raise AEPError(f"Catalog answer has no entry for {resource_id}")
    return {**body[resource_id], "id": resource_id}


def first_item(body: dict, what: str) -> dict:
    """Flow Service wraps a GET by id in ``{"items": [doc]}``."""
    if not body.get("items"):
        raise AEPError(f"Flow Service returned no item for {what}")
    return body["items"][0]


def _path_and_query(href: str, current_path: str) -> str:
    """A ``_links.next.href`` (absolute, rooted, or query-only) as a path relative to the platform URL."""
    parts = urlsplit(href)
    path = parts.path or current_path.split("?", 1)[0]
    return f"{path}?{parts.query}" if parts.query else path


@dataclass(frozen=True)
class AEPConnectionSettings:
    """
    What an ``aep`` connection holds.

    :param platform_url: the Platform gateway URL (real AEP or the local emulator).
    :param ims_url: the IMS token endpoint.
    :param client_id: the OAuth server-to-server client id (also sent as ``x-api-key``).
    :param client_secret: the client secret.
    :param org_id: the IMS org id (``...@AdobeOrg``).
    :param sandbox: the sandbox name sent as ``x-sandbox-name``.
    :param scopes: comma-separated OAuth scopes.
    :param qs_sslmode: libpq ``sslmode`` for Query Service.
    :param qs_dialect: SQL dialect of Query Service: ``spark`` (AEP) or ``postgres`` (emulator).
    """

    platform_url: str
    ims_url: str
    client_id: str
    client_secret: str = field(repr=False)
    org_id: str
    sandbox: str
    scopes: str
    qs_sslmode: str
    qs_dialect: str

    @classmethod
    def from_connection(
        cls, conn: Connection, extra: dict[str, Any], sandbox: str | None = None
    ) -> AEPConnectionSettings:
        """
        Read the settings from an ``aep`` connection.

        :param conn: the Airflow connection.
        :param extra: the connection's decoded extras.
        :param sandbox: a sandbox that overrides the connection's.
        """
        missing = [
            name
            for name, value in (("login", conn.login), ("password", conn.password), ("org_id", extra.get("org_id")))
            if not value
        ]
        if missing:
            raise ValueError(f"AEP connection {conn.conn_id!r} is missing {', '.join(missing)}")
        host = (conn.host or DEFAULT_PLATFORM_URL).rstrip("/")
        if "://" not in host:
            host = f"https://{host}"
        return cls(
            platform_url=host,
            ims_url=extra.get("ims_url") or DEFAULT_IMS_URL,
            client_id=conn.login,
            client_secret=conn.password,
            org_id=extra["org_id"],
            sandbox=sandbox or extra.get("sandbox") or DEFAULT_SANDBOX,
            scopes=extra.get("scopes") or DEFAULT_SCOPES,
            qs_sslmode=extra.get("qs_sslmode") or DEFAULT_QS_SSLMODE,
            qs_dialect=extra.get("qs_dialect") or DEFAULT_QS_DIALECT,
        )


@dataclass(frozen=True)
class _AccessToken:
    value: str
    refresh_at: float  # epoch seconds

    def is_fresh(self) -> bool:
        return time.time() < self.refresh_at


class _AsyncReply(NamedTuple):
    status: int
    body: Any
    url: str
    request_id: str | None
    retry_after: float | None


class AEPBaseHook(BaseHook):
    """
    Connection settings, IMS token cache, gateway headers and retry policy shared by the AEP hooks.

    :param aep_conn_id: the ``aep`` connection id.
    :param sandbox: a sandbox that overrides the connection's ``sandbox`` extra.
    :param timeout: seconds to wait for each HTTP call.
    :param retry_limit: attempts per call, the first included.
    :param retry_min_wait: first back-off wait in seconds (also the jitter range).
    :param retry_max_wait: longest back-off wait in seconds (a ``Retry-After`` is honoured as sent).
    """

    conn_name_attr = "aep_conn_id"
    default_conn_name = "aep_default"
    conn_type = "aep"
    hook_name = "Adobe Experience Platform"

    def __init__(
        self,
        aep_conn_id: str = default_conn_name,
        *,
        sandbox: str | None = None,
        timeout: float = 60.0,
        retry_limit: int = 6,
        retry_min_wait: float = 1.0,
        retry_max_wait: float = 60.0,
    ) -> None:
        super().__init__()
        if retry_limit < 1:
            raise ValueError("retry_limit must be at least 1")
        self.aep_conn_id = aep_conn_id
        self._sandbox = sandbox
        self.timeout = timeout
        self.retry_limit = retry_limit
        self.retry_min_wait = retry_min_wait
        self.retry_max_wait = retry_max_wait
        self._token: _AccessToken | None = None

    @cached_property
    def settings(self) -> AEPConnectionSettings:
        """The connection's settings, read on first use."""
        conn = self.get_connection(self.aep_conn_id)
        return AEPConnectionSettings.from_connection(conn, conn.extra_dejson, self._sandbox)

    @property
    def platform_url(self) -> str:
        return self.settings.platform_url

    @property
    def ims_url(self) -> str:
        return self.settings.ims_url

    @property
    def org_id(self) -> str:
        return self.settings.org_id

    @property
    def client_id(self) -> str:
        return self.settings.client_id

    @property
    def sandbox(self) -> str:
        return self.settings.sandbox

    @property
    def scopes(self) -> str:
        return self.settings.scopes

    @property
    def qs_sslmode(self) -> str:
        return self.settings.qs_sslmode

    def _retry_args(self, *, idempotent: bool) -> dict[str, Any]:
        """The one retry policy of the AEP hooks, as ``Retrying``/``AsyncRetrying`` arguments."""
        return {
            "stop": stop_after_attempt(self.retry_limit),
            "wait": wait_retry_after(
                wait_exponential_jitter(
                    multiplier=self.retry_min_wait, max=self.retry_max_wait, jitter=self.retry_min_wait
                )
            ),
            "retry": retry_if_exception(partial(is_retryable, idempotent=idempotent)),
            "before_sleep": self._log_retry,
            "reraise": True,
        }

    def _log_retry(self, retry_state: RetryCallState) -> None:
        self.log.warning(
            "AEP call attempt %s of %s failed: %s; retrying in %.1f s",
            retry_state.attempt_number,
            self.retry_limit,
            retry_state.outcome.exception() if retry_state.outcome else None,
            retry_state.next_action.sleep if retry_state.next_action else 0.0,
        )

    @staticmethod
    def _is_idempotent(method: str, idempotent: bool | None) -> bool:
        return method in IDEMPOTENT_METHODS if idempotent is None else idempotent

    def _token_form(self) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "scope": self.settings.scopes,
        }

    def _cache_token(self, body: dict[str, Any]) -> str:
        """Keep a new IMS token (``expires_in`` is in seconds) until shortly before it expires."""
        expires_in = float(body["expires_in"])
        lead_time = min(TOKEN_REFRESH_LEAD_TIME, expires_in / 2)
        self._token = _AccessToken(body["access_token"], time.time() + expires_in - lead_time)
        self.log.info("Fetched an IMS token for connection %s, valid %.0f s", self.aep_conn_id, expires_in)
        return self._token.value

    def _cached_token(self, force_refresh: bool) -> str | None:
        if force_refresh or self._token is None or not self._token.is_fresh():
            return None
        return self._token.value

    def _gateway_headers(self, token: str, request_id: str, headers: dict[str, str] | None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "x-api-key": self.settings.client_id,
            "x-gw-ims-org-id": self.settings.org_id,
            "x-sandbox-name": self.settings.sandbox,
            "x-request-id": request_id,
            **(headers or {}),
        }

    def _url(self, path: str) -> str:
        return self.settings.platform_url + path


class AEPHook(AEPBaseHook):
    """
    Interact with the Adobe Experience Platform REST APIs.

    The connection's host is the Platform URL (``https://platform.adobe.io`` or the emulator), its
    login and password the OAuth server-to-server client id and secret; extras ``org_id``,
    ``sandbox``, ``ims_url``, ``scopes``, ``qs_sslmode`` and ``qs_dialect``.

    :param aep_conn_id: the ``aep`` connection id.
    :param sandbox: a sandbox that overrides the connection's ``sandbox`` extra.
    :param timeout: seconds to wait for each HTTP call.
    :param retry_limit: attempts per call, the first included.
    :param retry_min_wait: first back-off wait in seconds.
    :param retry_max_wait: longest back-off wait in seconds.
    """

    @cached_property
    def session(self) -> requests.Session:
        """The HTTP session (TLS verification on)."""
        session = requests.Session()
        session.verify = True
        return session

    def get_conn(self) -> requests.Session:
        """Return the HTTP session."""
        return self.session

    def get_token(self, force_refresh: bool = False) -> str:
        """
        Return an IMS access token, fetching a new one when none is cached or it is about to expire.

        :param force_refresh: fetch a new token even if the cached one looks valid.
        """
        token = self._cached_token(force_refresh)
        if token is None:
            token = self._cache_token(Retrying(**self._retry_args(idempotent=True))(self._fetch_token))
            mask_secret(token)
        return token

    def _fetch_token(self) -> dict[str, Any]:
        response = self.session.post(self.settings.ims_url, data=self._token_form(), timeout=self.timeout)
        if not response.ok:
            raise AEPAuthError(
                response.status_code,
                _decode_body(response.content, response.text),
                method="POST",
                url=self.settings.ims_url,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response.json()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """
        Call a Platform API with the gateway headers, retrying transient failures.

        :param method: HTTP method.
        :param path: path after the Platform URL, e.g. ``/data/foundation/catalog/dataSets``.
        :param params: query parameters.
        :param json: JSON body.
        :param data: raw body (e.g. a file upload).
        :param headers: extra headers (``Accept``, ``Content-Type``, ``If-Match``...).
        :param idempotent: whether the call may be re-sent after a 5xx or timeout; by default true
            for GET/HEAD/PUT/DELETE, false for POST/PATCH. A 429 is retried either way.
        :return: the 2xx response.
        :raises AEPApiError: on a non-2xx answer, once retries (if any) are used up.
        """
        method = method.upper()
        retrying = Retrying(**self._retry_args(idempotent=self._is_idempotent(method, idempotent)))
        return retrying(self._send, method, path, params=params, json=json, data=data, headers=headers)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._send_once(method, path, self.get_token(), **kwargs)
        if response.status_code == 401:
            self.log.info("AEP rejected the token on %s %s; fetching a new one", method, path)
            response = self._send_once(method, path, self.get_token(force_refresh=True), **kwargs)
        if not response.ok:
            raise AEPApiError(
                response.status_code,
                _decode_body(response.content, response.text),
                method=method,
                url=response.url,
                request_id=response.request.headers.get("x-request-id"),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response

    def _send_once(
        self, method: str, path: str, token: str, *, headers: dict[str, str] | None, **kwargs: Any
    ) -> requests.Response:
        request_id = str(uuid.uuid4())
        response = self.session.request(
            method,
            self._url(path),
            headers=self._gateway_headers(token, request_id, headers),
            timeout=self.timeout,
            **kwargs,
        )
        self.log.info("AEP %s %s -> %s (x-request-id %s)", method, path, response.status_code, request_id)
        return response

    def get_json(self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        """
        GET a Platform path and return the decoded JSON body.

        :param path: path after the Platform URL.
        :param params: query parameters.
        :param headers: extra headers.
        """
        response = self.request("GET", path, params=params, headers=headers)
        return _decode_body(response.content, response.text)

    def post_json(
        self, path: str, json: Any = None, headers: dict[str, str] | None = None, idempotent: bool = False
    ) -> Any:
        """
        POST a JSON body and return the decoded answer (``None`` when empty).

        :param path: path after the Platform URL.
        :param json: the JSON body.
        :param headers: extra headers.
        :param idempotent: whether the POST may be re-sent after a 5xx or timeout (a create must not).
        """
        response = self.request("POST", path, json=json, headers=headers, idempotent=idempotent)
        return _decode_body(response.content, response.text)

    def _send_json(self, method: str, path: str, json: Any, headers: dict[str, str] | None = None) -> Any:
        response = self.request(method, path, json=json, headers=headers)
        return _decode_body(response.content, response.text)

    # Paging -------------------------------------------------------------------------------------

    def iter_catalog(
        self, path: str, params: dict[str, Any] | None = None, page_size: int = 100
    ) -> Iterator[tuple[str, dict]]:
        """
        Walk a Catalog list (``limit``/``start`` offsets) to the end, yielding ``(id, doc)``.

        :param path: path after the Catalog base, e.g. ``/dataSets``.
        :param params: filters (``name``, ``dataSet``, ``status``, ``orderBy``...).
        :param page_size: ``limit`` per page, 1 to 100.
        """
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be between 1 and 100")
        start = 0
        while True:
            page = self.get_json(CATALOG + path, params={**(params or {}), "limit": page_size, "start": start}) or {}
            for resource_id, doc in page.items():
                yield resource_id, {**doc, "id": resource_id}
            if len(page) < page_size:
                return
            start += len(page)

    def iter_query_service(
        self, path: str, items_key: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Iterator[dict]:
        """
        Walk a list paged by ``_links.next`` (Query Service, Schema Registry) to the end.

        :param path: path after the Platform URL.
        :param items_key: the key of the page's items, e.g. ``queries`` or ``templates``.
        :param params: query parameters of the first page (later pages follow the next link).
        :param headers: extra headers (e.g. Schema Registry's ``Accept``).
        """
        next_path: str | None = path
        while next_path:
            body = self.get_json(next_path, params=params, headers=headers) or {}
            yield from body.get(items_key, [])
            href = body.get("_links", {}).get("next", {}).get("href")
            next_path, params = (_path_and_query(href, next_path), None) if href else (None, None)

    def iter_flow_service(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """
        Walk a Flow Service list paged by ``continuationToken`` to the end.

        :param path: path after the Flow Service base, e.g. ``/flows``.
        :param params: filters (``property``, ``orderby``...), kept on every page.
        """
        params = dict(params or {})
        while True:
            body = self.get_json(FLOW_SERVICE + path, params=params) or {}
            yield from body.get("items", [])
            href = body.get("_links", {}).get("next", {}).get("href")
            token = parse_qs(urlsplit(href).query).get("continuationToken") if href else None
            if not token:
                return
            params["continuationToken"] = token[0]

    def iter_audiences(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """
        Walk the audiences list paged by the integer ``_page.next`` (0 or absent on the last page).

        :param params: filters (``name``, ``property``, ``sort``, ``limit``...).
        """
        params = dict(params or {})
        while True:
            body = self.get_json(SEGMENTATION + "/audiences", params=params) or {}
            yield from body.get("children", [])
            next_start = body.get("_page", {}).get("next")
            if not next_start:
                return
            params["start"] = next_start

    def iter_segment_definitions(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """
        Walk the segment definitions list paged by 1-based ``page`` numbers.

        :param params: filters (``limit``, ``sort``...).
        """
        params = {**(params or {}), "page": 1}
        while True:
            body = self.get_json(SEGMENTATION + "/segment/definitions", params=params) or {}
            segments = body.get("segments", [])
            yield from segments
            if not segments or params["page"] >= body.get("page", {}).get("totalPages", 0):
                return
            params["page"] += 1

    # Schema Registry ----------------------------------------------------------------------------

    def get_tenant_id(self) -> str:
        """Return the org's tenant id (custom XDM fields live under ``_{tenantId}``)."""
        return self.get_json(SCHEMA_REGISTRY + "/stats", headers={"Accept": "application/json"})["tenantId"]

    def find_schema_resource(self, kind: str, title: str) -> dict | None:
        """
        Return the tenant schema or field group with this title, if any.

        :param kind: ``schemas`` or ``fieldgroups``.
        :param title: the resource title (unique per sandbox).
        """
        resources = self.iter_query_service(
            f"{SCHEMA_REGISTRY}/tenant/{kind}",
            "results",
            params={"property": f"title=={title}"},
            headers={"Accept": XED_ACCEPT},
        )
        return next((resource for resource in resources if resource.get("title") == title), None)

    def create_schema_resource(self, kind: str, body: dict) -> dict:
        """
        Create a tenant schema or field group (never retried on 5xx: look it up first).

        :param kind: ``schemas`` or ``fieldgroups``.
        :param body: the XDM resource.
        """
        return self.post_json(f"{SCHEMA_REGISTRY}/tenant/{kind}", body)

    def get_schema(self, id_or_alt_id: str, full: bool = False) -> dict:
        """
        Return a tenant schema.

        :param id_or_alt_id: the schema ``$id`` or ``meta:altId``.
        :param full: resolve the ``$ref``s (``xed-full``).
        """
        return self.get_json(
            f"{SCHEMA_REGISTRY}/tenant/schemas/{quote(id_or_alt_id, safe='')}",
            headers={"Accept": XED_FULL_ACCEPT if full else XED_ONE_ACCEPT},
        )

    def patch_schema(self, schema_id: str, ops: list[dict]) -> dict:
        """
        Apply a JSON Patch to a tenant schema.

        :param schema_id: the schema ``$id`` or ``meta:altId``.
        :param ops: JSON Patch operations.
        """
        return self._send_json("PATCH", f"{SCHEMA_REGISTRY}/tenant/schemas/{quote(schema_id, safe='')}", ops)

    def find_descriptors(self, schema_id: str) -> list[dict]:
        """
        Return the descriptors whose source schema is ``schema_id``.

        :param schema_id: the schema ``$id``.
        """
        body = self.get_json(
            f"{SCHEMA_REGISTRY}/tenant/descriptors",
            params={"property": f"xdm:sourceSchema=={schema_id}"},
            headers={"Accept": XDM_ACCEPT},
        )
        descriptors = [d for group in body.values() for d in group] if isinstance(body, dict) else body or []
        return [d for d in descriptors if isinstance(d, dict) and d.get("xdm:sourceSchema") == schema_id]

    def create_descriptor(self, body: dict) -> dict:
        """
        Create a descriptor (e.g. a primary identity).

        :param body: the descriptor.
        """
        return self.post_json(f"{SCHEMA_REGISTRY}/tenant/descriptors", body)

    # Catalog ------------------------------------------------------------------------------------

    def get_dataset(self, dataset_id: str) -> dict:
        """
        Return a dataset, unwrapped from Catalog's ``{id: doc}``, with its ``id``.

        :param dataset_id: the dataset id.
        """
        return unwrap_catalog_item(self.get_json(f"{CATALOG}/dataSets/{dataset_id}"), dataset_id)

    def find_datasets(self, **params: Any) -> dict[str, dict]:
        """
        Return the datasets matching Catalog filters, keyed by id.

        :param params: Catalog filters, e.g. ``name="scores"`` or ``property="name~^propensity"``.
        """
        return dict(self.iter_catalog("/dataSets", params))

    def create_dataset(self, body: dict) -> str:
        """
        Create a dataset and return its id (never retried on 5xx: look it up by name first).

        :param body: ``{name, schemaRef, fileDescription?, tags?}``.
        """
        created = self.post_json(f"{CATALOG}/dataSets", body)
        return created[0].rsplit("/", 1)[-1]

    def patch_dataset(self, dataset_id: str, ops: list[dict]) -> None:
        """
        Apply a JSON Patch to a dataset (e.g. enable it for Profile).

        :param dataset_id: the dataset id.
        :param ops: JSON Patch operations.
        """
        self.request("PATCH", f"{CATALOG}/dataSets/{dataset_id}", json=ops, headers={"Content-Type": JSON_PATCH})

    def get_batch(self, batch_id: str) -> dict:
        """
        Return a batch's Catalog record (status, metrics, errors), with its ``id``.

        :param batch_id: the batch id.
        """
        return unwrap_catalog_item(self.get_json(f"{CATALOG}/batches/{batch_id}"), batch_id)

    def find_batches(self, **params: Any) -> dict[str, dict]:
        """
        Return the batches matching Catalog filters, keyed by id.

        :param params: Catalog filters, e.g. ``dataSet=<id>``, ``status="success"``.
        """
        return dict(self.iter_catalog("/batches", params))

    # Batch ingestion ----------------------------------------------------------------------------

    def create_batch(self, body: dict) -> dict:
        """
        Create a batch (never retried on 5xx: look it up by ``externalId`` first).

        :param body: ``{datasetId, inputFormat, externalId?, replay?, tags?...}``.
        """
        return self.post_json(f"{INGESTION}/batches", body)

    def upload_file(self, batch_id: str, dataset_id: str, file_name: str, data: bytes) -> None:
        """
        Upload one file (at most 256 MB) to a batch; re-sending the same name overwrites it.

        :param batch_id: the batch id.
        :param dataset_id: the batch's dataset id.
        :param file_name: the file's name in the batch (may contain ``/``).
        :param data: the file's bytes.
        """
        self.request(
            "PUT",
            f"{INGESTION}/batches/{batch_id}/datasets/{dataset_id}/files/{quote(file_name, safe='/=')}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def complete_batch(self, batch_id: str) -> None:
        """
        Signal that all files are uploaded (documented idempotent, so retried like a read).

        :param batch_id: the batch id.
        """
        self.request("POST", f"{INGESTION}/batches/{batch_id}", params={"action": "COMPLETE"}, idempotent=True)

    def abort_batch(self, batch_id: str) -> None:
        """
        Abort a batch that is still loading or processing.

        :param batch_id: the batch id.
        """
        self.request("POST", f"{INGESTION}/batches/{batch_id}", params={"action": "ABORT"})

    # Query Service ------------------------------------------------------------------------------

    def create_query(self, body: dict) -> dict:
        """
        Submit an asynchronous query (never retried on 5xx).

        :param body: ``{dbName, sql | templateId, queryParameters?, ctasParameters?...}``.
        """
        return self.post_json(f"{QUERY_SERVICE}/queries", body)

    def get_query(self, query_id: str) -> dict:
        """
        Return a query with its ``state``, ``errors`` and ``rowCount``.

        :param query_id: the query id.
        """
        return self.get_json(f"{QUERY_SERVICE}/queries/{query_id}")

    def cancel_query(self, query_id: str) -> None:
        """
        Ask Query Service to cancel a running query.

        :param query_id: the query id.
        """
        self.request("PATCH", f"{QUERY_SERVICE}/queries/{query_id}", json={"op": "cancel"})

    def find_query_template(self, name: str) -> dict | None:
        """
        Return the query template with this name, if any.

        :param name: the template name.
        """
        templates = self.iter_query_service(
            f"{QUERY_SERVICE}/query-templates", "templates", params={"property": f"name=={name}"}
        )
        return next((template for template in templates if template.get("name") == name), None)

    def create_query_template(self, body: dict) -> dict:
        """
        Create a query template (never retried on 5xx: look it up by name first).

        :param body: ``{name, sql, queryParameters?}``.
        """
        return self.post_json(f"{QUERY_SERVICE}/query-templates", body)

    def update_query_template(self, template_id: str, body: dict) -> None:
        """
        Replace a query template's name and SQL.

        :param template_id: the template id.
        :param body: ``{name, sql, queryParameters?}``.
        """
        self.request("PUT", f"{QUERY_SERVICE}/query-templates/{template_id}", json=body)

    def get_connection_parameters(self) -> dict:
        """Return the PostgreSQL connection parameters of Query Service (host, port, dbName, username)."""
        return self.get_json(f"{QUERY_SERVICE}/connection_parameters")

    # Flow Service -------------------------------------------------------------------------------

    def find_flow_items(self, kind: str, name: str) -> dict | None:
        """
        Return the Flow Service item with this name, if any.

        :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
        :param name: the item name.
        """
        items = self.iter_flow_service(f"/{kind}", {"property": f"name=={name}"})
        return next((item for item in items if item.get("name") == name), None)

    def create_flow_item(self, kind: str, body: dict) -> dict:
        """
        Create a Flow Service item and return ``{id, etag}`` (never retried on 5xx).

        :param kind: ``connections``, ``sourceConnections``, ``targetConnections`` or ``flows``.
        :param body: the item.
        """
        return self.post_json(f"{FLOW_SERVICE}/{kind}", body)

    def get_flow(self, flow_id: str) -> dict:
        """
        Return a flow (with its ``etag``).

        :param flow_id: the flow id.
        """
        return first_item(self.get_json(f"{FLOW_SERVICE}/flows/{flow_id}"), f"flow {flow_id}")

    def delete_flow(self, flow_id: str) -> None:
        """
        Delete a flow (idempotent: a retry after a lost answer finds it gone, which is the goal).

        :param flow_id: the flow id.
        """
        try:
            self.request("DELETE", f"{FLOW_SERVICE}/flows/{flow_id}")
        except AEPApiError as err:
            if err.status != 404:
                raise

    def patch_flow(self, flow_id: str, ops: list[dict]) -> dict:
        """
        Apply a JSON Patch to a flow, guarded by its current ``etag`` (``If-Match``).

        A retried PATCH whose first attempt took effect fails with 412 instead of applying twice.

        :param flow_id: the flow id.
        :param ops: JSON Patch operations.
        """
        etag = self.get_flow(flow_id)["etag"]
        response = self.request(
            "PATCH", f"{FLOW_SERVICE}/flows/{flow_id}", json=ops, headers={"If-Match": etag}, idempotent=True
        )
        return _decode_body(response.content, response.text)

    def get_run(self, run_id: str) -> dict:
        """
        Return a flow run with its metrics.

        :param run_id: the run id.
        """
        return first_item(self.get_json(f"{FLOW_SERVICE}/runs/{run_id}"), f"run {run_id}")

    def find_runs(self, flow_id: str) -> list[dict]:
        """
        Return every run of a flow.

        :param flow_id: the flow id.
        """
        return list(self.iter_flow_service("/runs", {"property": f"flowId=={flow_id}"}))

    def find_connection_spec(self, name: str) -> dict:
        """
        Return the connection spec with this name.

        :param name: the spec name, e.g. ``Amazon S3`` or ``activation-datalake``.
        :raises AEPError: when no spec has this name.
        """
        specs = self.iter_flow_service("/connectionSpecs", {"property": f"name=={name}"})
        spec = next((spec for spec in specs if spec.get("name") == name), None)
        if spec is None:
            raise AEPError(f"No Flow Service connection spec named {name!r}")
        return spec

    def run_dataset_export(
        self, flow_id: str, dataset_id: str, not_ready_wait: float = 60.0, not_ready_attempts: int = 15
    ) -> str:
        """
        Start an ad-hoc dataset export run and return its run id.

        Only the "not ready for dataset export" answer (a flow younger than ~10 minutes) is retried,
        with a fixed wait; "run already exists" and every other error is raised.

        :param flow_id: the dataset export flow id.
        :param dataset_id: the dataset to export.
        :param not_ready_wait: seconds between attempts while the flow is not ready.
        :param not_ready_attempts: attempts before giving up on a not-ready flow.
        """
        retrying = Retrying(
            stop=stop_after_attempt(not_ready_attempts),
            wait=wait_fixed(not_ready_wait),
            retry=retry_if_exception_type(AEPNotReadyError),
            before_sleep=self._log_retry,
            reraise=True,
        )
        body = retrying(self._start_dataset_export, flow_id, dataset_id)
        status_url = body["destinations"][0]["datasets"][0]["statusURL"]
        return status_url.rstrip("/").rsplit("/", 1)[-1]

    def _start_dataset_export(self, flow_id: str, dataset_id: str) -> dict:
        try:
            return self.post_json(
                AD_HOC_RUN,
                {"activationInfo": {"destinations": [{"flowId": flow_id, "datasets": [{"id": dataset_id}]}]}},
                headers={"Accept": DATASET_EXPORT_ACCEPT},
            )
        except AEPApiError as err:
            if err.status == 400 and NOT_READY_FOR_EXPORT in err.message.lower():
                raise AEPNotReadyError(
                    err.status, err.body, method=err.method, url=err.url, request_id=err.request_id
                ) from err
            raise

    def run_audience_activation(self, flow_id: str, audience_ids: list[str]) -> dict:
        """
        Start an ad-hoc activation of audiences through a destination flow.

        :param flow_id: the destination dataflow id.
        :param audience_ids: the audiences to activate.
        """
        return self.post_json(
            AD_HOC_RUN,
            {"activationInfo": {flow_id: list(audience_ids)}},
            headers={"Accept": AUDIENCE_ACTIVATION_ACCEPT},
        )

    # Segmentation -------------------------------------------------------------------------------

    def find_segment_definition(self, name: str) -> dict | None:
        """
        Return the segment definition with this name, if any.

        :param name: the definition name (unique per sandbox).
        """
        return next((d for d in self.iter_segment_definitions() if d.get("name") == name), None)

    def create_segment_definition(self, body: dict) -> dict:
        """
        Create a segment definition (never retried on 5xx: look it up by name first).

        :param body: ``{name, profileInstanceId, expression, schema, evaluationInfo...}``.
        """
        return self.post_json(f"{SEGMENTATION}/segment/definitions", body)

    def update_segment_definition(self, definition_id: str, body: Any) -> dict:
        """
        Update a segment definition.

        :param definition_id: the definition id.
        :param body: the PATCH body (JSON Patch operations).
        """
        return self._send_json("PATCH", f"{SEGMENTATION}/segment/definitions/{definition_id}", body)

    def create_segment_job(self, segment_ids: list[str]) -> dict:
        """
        Start a segment job (retried on 429 "too many jobs", never on 5xx).

        :param segment_ids: the segment definitions to evaluate.
        """
        return self.post_json(f"{SEGMENTATION}/segment/jobs", [{"segmentId": sid} for sid in segment_ids])

    def get_segment_job(self, job_id: str) -> dict:
        """
        Return a segment job with its ``status`` and ``metrics``.

        :param job_id: the job id.
        """
        return self.get_json(f"{SEGMENTATION}/segment/jobs/{job_id}")

    def cancel_segment_job(self, job_id: str) -> None:
        """
        Cancel a segment job.

        :param job_id: the job id.
        """
        self.request("DELETE", f"{SEGMENTATION}/segment/jobs/{job_id}")

    def find_audience(self, name: str) -> dict | None:
        """
        Return the audience with this name, if any.

        :param name: the audience name.
        """
        return next((a for a in self.iter_audiences({"name": name}) if a.get("name") == name), None)

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token and read the Schema Registry stats of the sandbox."""
        try:
            tenant_id = self.get_tenant_id()
        except (AEPError, requests.RequestException, ValueError) as err:
            return False, str(err)
        return True, f"Connected to {self.platform_url}, sandbox {self.sandbox}, tenant {tenant_id}"


class AEPAsyncHook(AEPBaseHook):
    """
    Asyncio counterpart of :class:`AEPHook` for triggers: same token handling and retry policy,
    a new aiohttp session per call.

    :param aep_conn_id: the ``aep`` connection id.
    :param sandbox: a sandbox that overrides the connection's ``sandbox`` extra.
    :param timeout: seconds to wait for each HTTP call.
    :param retry_limit: attempts per call, the first included.
    :param retry_min_wait: first back-off wait in seconds.
    :param retry_max_wait: longest back-off wait in seconds.
    """

    async def _load_settings(self) -> None:
        if "settings" not in self.__dict__:
            conn = await self.aget_connection(self.aep_conn_id)
            self.settings = AEPConnectionSettings.from_connection(conn, await conn.aextra_dejson(), self._sandbox)

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """
        GET a Platform path and return the decoded JSON body.

        :param path: path after the Platform URL.
        :param params: query parameters.
        """
        return await self.request("GET", path, params=params)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """
        Call a Platform API and return the decoded body, retrying like :meth:`AEPHook.request`.

        :param method: HTTP method.
        :param path: path after the Platform URL.
        :param params: query parameters.
        :param json: JSON body.
        :param idempotent: whether the call may be re-sent after a 5xx or timeout.
        """
        method = method.upper()
        await self._load_settings()
        retrying = AsyncRetrying(**self._retry_args(idempotent=self._is_idempotent(method, idempotent)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            return await retrying(self._send, session, method, path, params=params, json=json)

    async def _get_token(self, session: aiohttp.ClientSession, force_refresh: bool = False) -> str:
        token = self._cached_token(force_refresh)
        if token is None:
            retrying = AsyncRetrying(**self._retry_args(idempotent=True))
            token = self._cache_token(await retrying(self._fetch_token, session))
            await amask_secret(token)
        return token

    async def _fetch_token(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.post(self.settings.ims_url, data=self._token_form()) as response:
            body = _decode_body(await response.read(), await response.text())
            if response.status >= 400:
                raise AEPAuthError(
                    response.status,
                    body,
                    method="POST",
                    url=self.settings.ims_url,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            return body

    async def _send(self, session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self._send_once(session, method, path, await self._get_token(session), **kwargs)
        if reply.status == 401:
            self.log.info("AEP rejected the token on %s %s; fetching a new one", method, path)
            token = await self._get_token(session, force_refresh=True)
            reply = await self._send_once(session, method, path, token, **kwargs)
        if reply.status >= 400:
            raise AEPApiError(
                reply.status,
                reply.body,
                method=method,
                url=reply.url,
                request_id=reply.request_id,
                retry_after=reply.retry_after,
            )
        return reply.body

    async def _send_once(
        self, session: aiohttp.ClientSession, method: str, path: str, token: str, **kwargs: Any
    ) -> _AsyncReply:
        request_id = str(uuid.uuid4())
        async with session.request(
            method, self._url(path), headers=self._gateway_headers(token, request_id, None), **kwargs
        ) as response:
            body = _decode_body(await response.read(), await response.text())
            self.log.info("AEP %s %s -> %s (x-request-id %s)", method, path, response.status, request_id)
            return _AsyncReply(
                response.status,
                body,
                str(response.url),
                request_id,
                parse_retry_after(response.headers.get("Retry-After")),
            )


class AEPQueryServiceHook(PostgresHook):
    """
    Query Service over the PostgreSQL wire protocol, from an ``aep`` connection.

    Connection parameters come from ``GET /connection_parameters``; the password is a fresh IMS
    token fetched at connect time; ``sslmode`` is the connection's ``qs_sslmode`` extra (default
    ``require``). No AEP-only extra reaches libpq.

    :param aep_conn_id: the ``aep`` connection id.
    :param sandbox: a sandbox that overrides the connection's (``dbname`` becomes ``{sandbox}:all``).
    :param database: a ``dbname`` other than ``{sandbox}:all``, e.g. ``prod:my_table``.
    """

    conn_name_attr = "aep_conn_id"
    default_conn_name = "aep_default"
    conn_type = "aep"
    hook_name = "Adobe Experience Platform Query Service"

    def __init__(self, *args: Any, sandbox: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sandbox = sandbox

    @cached_property
    def aep_hook(self) -> AEPHook:
        """The REST hook that reads the connection parameters and the token."""
        return AEPHook(self.get_conn_id(), sandbox=self._sandbox)

    @property
    def dialect_name(self) -> str:
        """``spark`` against AEP, ``postgres`` against the emulator (the ``qs_dialect`` extra)."""
        return self.aep_hook.settings.qs_dialect

    def _connect_kwargs(self) -> dict[str, Any]:
        params = self.aep_hook.get_connection_parameters()
        return {
            "host": params["host"],
            "port": int(params["port"]),
            "user": params.get("username") or self.aep_hook.org_id,
            "password": self.aep_hook.get_token(),
            "dbname": self.database or f"{self.aep_hook.sandbox}:all",
            "sslmode": self.aep_hook.qs_sslmode,
        }

    def get_conn(self):
        """Connect to Query Service with a fresh token as password."""
        self.conn = self._create_connection({**self._connect_kwargs(), "keepalives_idle": QS_KEEPALIVES_IDLE})
        return self.conn

    @property
    def sqlalchemy_url(self) -> URL:
        """The SQLAlchemy URL of Query Service (fresh token as password)."""
        from sqlalchemy.engine import URL

        kwargs = self._connect_kwargs()
        return URL.create(
            drivername=self.sqlalchemy_scheme,
            username=kwargs["user"],
            password=kwargs["password"],
            host=kwargs["host"],
            port=kwargs["port"],
            database=kwargs["dbname"],
            query={"sslmode": kwargs["sslmode"]},
        )
