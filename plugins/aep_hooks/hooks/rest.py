"""
Calls to the Platform REST gateway: :class:`AEPRestHook` (requests) for operators and sensors,
:class:`AEPAsyncHook` (aiohttp) for triggers. Both send the gateway headers with a cached IMS token,
fetch a new token once on a 401 and retry under the one policy of :class:`AEPBaseHook`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import cached_property
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import requests
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import amask_secret, mask_secret
from tenacity import AsyncRetrying, Retrying

from aep_hooks.hooks.base import (
    AEPBaseHook,
    AEPConnectionSettings,
    connection_not_found,
    decode_body,
    parse_retry_after,
)


def _path_and_query(href: str, current_path: str) -> str:
    """A ``_links.next.href`` (absolute, rooted, or query-only) as a path relative to the platform URL."""
    parts = urlsplit(href)
    path = parts.path or current_path.split("?", 1)[0]
    return f"{path}?{parts.query}" if parts.query else path


class _AsyncReply(NamedTuple):
    status: int
    body: Any
    url: str
    request_id: str | None
    retry_after: float | None


class AEPRestHook(AEPBaseHook):
    """
    Call the Platform REST APIs synchronously; the service hooks build on it.

    The connection's host is the Platform URL (``https://platform.adobe.io`` or the emulator), its
    login and password the OAuth server-to-server client id and secret; extras ``org_id``,
    ``sandbox``, ``ims_url``, ``scopes`` and ``qs_sslmode``. Arguments as
    :class:`~aep_hooks.hooks.base.AEPBaseHook`.
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
            raise self._api_error(
                response.status_code,
                decode_body(response.content, response.text),
                method="POST",
                url=self.settings.ims_url,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                token_call=True,
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
        :raises AEPApiError: on a non-2xx answer, once retries (if any) are used up: the subclass
            :meth:`~aep_hooks.exceptions.AEPApiError.for_status` picks (those no retry can fix fail the task).
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
            raise self._api_error(
                response.status_code,
                decode_body(response.content, response.text),
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
        return decode_body(response.content, response.text)

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
        return decode_body(response.content, response.text)

    def _send_json(self, method: str, path: str, json: Any, headers: dict[str, str] | None = None) -> Any:
        response = self.request(method, path, json=json, headers=headers)
        return decode_body(response.content, response.text)

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


class AEPAsyncHook(AEPBaseHook):
    """
    Asyncio counterpart of :class:`AEPRestHook` for triggers: same token handling and retry policy,
    a new aiohttp session per call. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`.
    """

    async def _load_settings(self) -> None:
        if "settings" not in self.__dict__:
            try:
                conn = await self.aget_connection(self.aep_conn_id)
            except AirflowNotFoundException as err:
                raise connection_not_found(self.aep_conn_id, err) from err
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
        Call a Platform API and return the decoded body; arguments and retries as :meth:`AEPRestHook.request`'s.
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
            body = decode_body(await response.read(), await response.text())
            if response.status >= 400:
                raise self._api_error(
                    response.status,
                    body,
                    method="POST",
                    url=self.settings.ims_url,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    token_call=True,
                )
            return body

    async def _send(self, session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self._send_once(session, method, path, await self._get_token(session), **kwargs)
        if reply.status == 401:
            self.log.info("AEP rejected the token on %s %s; fetching a new one", method, path)
            token = await self._get_token(session, force_refresh=True)
            reply = await self._send_once(session, method, path, token, **kwargs)
        if reply.status >= 400:
            raise self._api_error(
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
            body = decode_body(await response.read(), await response.text())
            self.log.info("AEP %s %s -> %s (x-request-id %s)", method, path, response.status, request_id)
            return _AsyncReply(
                response.status,
                body,
                str(response.url),
                request_id,
                parse_retry_after(response.headers.get("Retry-After")),
            )
