"""
The shared base of the AEP hooks: connection settings, the IMS token cache, the gateway headers and
the one retry policy (tenacity: 429 always, 5xx and transport errors only for idempotent calls).

.. seealso::
    https://experienceleague.adobe.com/en/docs/experience-platform/landing/platform-apis/api-authentication
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import re
import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import aiohttp
import requests
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.wait import wait_base

from aep_hooks.exceptions import AEPApiError, AEPConnectionError, AEPThrottledError

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_PLATFORM_URL = "https://platform.adobe.io"
DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
DEFAULT_SANDBOX = "prod"
DEFAULT_QS_SSLMODE = "require"
LIBPQ_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# Adobe advises a new token well before the 24 h lifetime ends; short (test) lifetimes refresh at half-life.
TOKEN_REFRESH_LEAD_TIME = 300.0

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, aiohttp.ClientConnectionError, asyncio.TimeoutError)


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
    Wait as long as the server's ``Retry-After`` asked, up to ``longest``, or else as ``fallback`` says.

    :param fallback: the wait strategy used when the failure carries no ``Retry-After``.
    :param longest: the longest wait in seconds, whatever the server asked (a call never hangs on it).
    """

    def __init__(self, fallback: wait_base, longest: float) -> None:
        self.fallback = fallback
        self.longest = longest

    def __call__(self, retry_state: RetryCallState) -> float:
        exception = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exception, AEPApiError) and exception.retry_after is not None:
            return min(exception.retry_after, self.longest)
        return self.fallback(retry_state)


def give_up(retry_state: RetryCallState) -> NoReturn:
    """
    End the retries with the last error; a call still throttled says so, and how many times.

    :param retry_state: tenacity's state after the last attempt.
    """
    exception = retry_state.outcome.exception()
    if isinstance(exception, AEPThrottledError):
        raise exception.giving_up(retry_state.attempt_number) from exception
    raise exception


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


def item_path(collection: str, item_id: str) -> str:
    """
    The path of one item of a Platform collection, e.g. ``item_path(RUNS, run_id)``.

    :param collection: the collection's path.
    :param item_id: the item's id or name, quoted as one path segment (a schema ``$id`` is a URL).
    """
    return f"{collection}/{quote(item_id, safe='')}"


def decode_body(content: bytes, text: str) -> Any:
    """The JSON body of a response, its text when it is not JSON, ``None`` when empty."""
    if not content:
        return None
    try:
        return jsonlib.loads(text)
    except ValueError:
        return text


def _checked_extras(conn: Connection, extra: Any) -> dict[str, Any]:
    """The decoded extras; extras that are not a JSON object fail with what is wrong (Airflow only logs it)."""
    if isinstance(extra, dict) and (extra or not (conn.extra or "").strip()):
        return extra
    try:
        decoded = jsonlib.loads(conn.extra)
    except ValueError as err:
        raise AEPConnectionError(f"Airflow connection {conn.conn_id!r} has extras that are not JSON: {err}") from err
    if not isinstance(decoded, dict):
        raise AEPConnectionError(f"Airflow connection {conn.conn_id!r} has extras that are not a JSON object")
    return decoded


def connection_not_found(conn_id: str, err: Exception) -> AEPConnectionError:
    """The error for an ``aep`` connection Airflow does not know, naming how to define it."""
    return AEPConnectionError(
        f"Airflow connection {conn_id!r} is not defined ({err}): create it with conn type 'aep' (host = platform URL,"
        " login/password = client id/secret, extras org_id and sandbox), e.g. as AIRFLOW_CONN_"
        f"{conn_id.upper()} (bin/stack env prints the local one)"
    )


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
    """

    platform_url: str
    ims_url: str
    client_id: str
    client_secret: str = field(repr=False)
    org_id: str
    sandbox: str
    scopes: str
    qs_sslmode: str

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
        extra = _checked_extras(conn, extra)
        missing = [
            what
            for what, value in (
                ("login (the client id)", conn.login),
                ("password (the client secret)", conn.password),
                ("org_id extra (the IMS org id, …@AdobeOrg)", extra.get("org_id")),
            )
            if not value
        ]
        if missing:
            raise AEPConnectionError(
                f"Airflow connection {conn.conn_id!r} has no {', '.join(missing)}: set them from the Developer"
                " Console project's OAuth server-to-server credential"
            )
        if not str(extra["org_id"]).endswith("@AdobeOrg"):
            raise AEPConnectionError(
                f"Airflow connection {conn.conn_id!r} has org_id {extra['org_id']!r}, not an IMS org id: set the"
                " org_id extra to the id that ends in @AdobeOrg"
            )
        sslmode = extra.get("qs_sslmode") or DEFAULT_QS_SSLMODE
        if sslmode not in LIBPQ_SSLMODES:
            raise AEPConnectionError(
                f"Airflow connection {conn.conn_id!r} has qs_sslmode {sslmode!r}: use one of {sorted(LIBPQ_SSLMODES)}"
            )
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
            qs_sslmode=sslmode,
        )


@dataclass(frozen=True)
class _AccessToken:
    value: str
    refresh_at: float  # epoch seconds

    def is_fresh(self) -> bool:
        return time.time() < self.refresh_at


class AEPBaseHook(BaseHook):
    """
    Connection settings, IMS token cache, gateway headers and retry policy shared by the AEP hooks.

    :param aep_conn_id: the ``aep`` connection id.
    :param sandbox: a sandbox that overrides the connection's ``sandbox`` extra.
    :param timeout: seconds to wait for each HTTP call.
    :param retry_limit: attempts per call, the first included.
    :param retry_min_wait: first back-off wait in seconds (also the jitter range).
    :param retry_max_wait: longest wait between attempts in seconds, also for a longer ``Retry-After``.
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
        try:
            conn = self.get_connection(self.aep_conn_id)
        except AirflowNotFoundException as err:
            raise connection_not_found(self.aep_conn_id, err) from err
        return AEPConnectionSettings.from_connection(conn, conn.extra_dejson, self._sandbox)

    def _retry_args(self, *, idempotent: bool) -> dict[str, Any]:
        """The one retry policy of the AEP hooks, as ``Retrying``/``AsyncRetrying`` arguments."""
        return {
            "stop": stop_after_attempt(self.retry_limit),
            "wait": wait_retry_after(
                wait_exponential_jitter(
                    multiplier=self.retry_min_wait, max=self.retry_max_wait, jitter=self.retry_min_wait
                ),
                longest=self.retry_max_wait,
            ),
            "retry": retry_if_exception(partial(is_retryable, idempotent=idempotent)),
            "before_sleep": self._log_retry,
            "retry_error_callback": give_up,
        }

    def _log_retry(self, retry_state: RetryCallState) -> None:
        self.log.warning(
            "AEP call attempt %s of %s failed: %s; retrying in %.1f s",
            retry_state.attempt_number,
            self.retry_limit,
            retry_state.outcome.exception() if retry_state.outcome else None,
            retry_state.next_action.sleep if retry_state.next_action else 0.0,
        )

    def _api_error(self, status: int, body: Any, **kwargs: Any) -> AEPApiError:
        """The typed error of a non-2xx answer, naming this hook's connection and sandbox for the fix."""
        return AEPApiError.for_status(status, body, conn_id=self.aep_conn_id, sandbox=self.settings.sandbox, **kwargs)

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
