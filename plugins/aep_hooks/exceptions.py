"""Typed exceptions raised by the AEP hooks, triggers and operators."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException


def _last_path_segment(uri: str) -> str | None:
    segment = uri.rstrip("/").rsplit("/", 1)[-1]
    return segment if "-" in segment else None


def parse_error_body(body: Any) -> tuple[str | None, str]:
    """
    Return ``(error_code, message)`` from any of AEP's error bodies.

    Understands the gateway ``{error_code, message}``, IMS ``{error, error_description}``,
    problem JSON ``{type, title, detail}`` (Catalog, Schema Registry, Flow Service), Query Service
    ``{message, errorCode}`` and Segmentation ``{errors: {"400": [{code, message}]}}`` bodies.

    :param body: the decoded JSON body, or the response text when it was not JSON.
    """
    if not isinstance(body, dict):
        return None, str(body or "").strip()[:500]
    nested: dict[str, Any] = {}
    if isinstance(body.get("errors"), dict):
        nested = next((items[0] for items in body["errors"].values() if items), {})
    code = (
        body.get("error_code")
        or body.get("code")
        or body.get("errorCode")
        or nested.get("code")
        or (body["error"] if isinstance(body.get("error"), str) else None)
        or (_last_path_segment(body["type"]) if isinstance(body.get("type"), str) else None)
    )
    message = (
        body.get("message")
        or body.get("error_description")
        or nested.get("message")
        or body.get("detail")
        or body.get("title")
        or ""
    )
    return (str(code) if code is not None else None), str(message)


class AEPError(AirflowException):
    """Base class of every AEP provider error."""


class AEPApiError(AEPError):
    """
    A non-2xx answer from AEP, with AEP's parsed error body.

    :param status: HTTP status code.
    :param body: the decoded JSON error body (or the response text).
    :param method: HTTP method of the call.
    :param url: URL of the call.
    :param request_id: the ``x-request-id`` sent with the call.
    :param retry_after: seconds the server asked to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        method: str,
        url: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        self.request_id = request_id
        self.retry_after = retry_after
        self.error_code, self.message = parse_error_body(body)
        code = f" [{self.error_code}]" if self.error_code else ""
        super().__init__(f"{method} {url} failed with HTTP {status}{code}: {self.message} (x-request-id {request_id})")


class AEPAuthError(AEPApiError):
    """IMS refused to issue a token (bad client id/secret, scopes, or IMS unavailable)."""


class AEPNotReadyError(AEPApiError):
    """The ad-hoc dataset export answered "not ready for dataset export" (the flow is too young)."""


class AEPTerminalStateError(AEPError):
    """
    An AEP job ended in a failed terminal state (FAILED, KILLED, TIMEOUT, failed, aborted, ...).

    :param kind: what the job is: ``query``, ``batch``, ``flow run`` or ``segment job``.
    :param resource_id: the job's AEP id.
    :param state: the terminal state AEP reported.
    :param errors: AEP's error list for the job.
    """

    def __init__(self, kind: str, resource_id: str, state: str, errors: list | None = None) -> None:
        self.kind = kind
        self.resource_id = resource_id
        self.state = state
        self.errors = list(errors or [])
        super().__init__(f"AEP {kind} {resource_id} ended in state {state}: {self.errors}")
