"""
Typed exceptions raised by the AEP hooks, triggers and operators.

Each says whether a retry can help. The ones no retry can fix (bad credentials, a refused or
invalid request, a missing or malformed connection, bad input, a job AEP failed for its content)
are also :class:`~airflow.sdk.exceptions.AirflowFailException`: wherever they are raised (an
operator, a sensor, a ``@task`` calling a hook) the task fails at once, with the problem and the
fix in the message. The others (throttling, server faults, races, a transient job failure) fail
only the call or the try, and the retries deal with them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException


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

    :meth:`for_status` picks the subclass that says what the status means for a retry.

    :param status: HTTP status code.
    :param body: the decoded JSON error body (or the response text).
    :param method: HTTP method of the call.
    :param url: URL of the call.
    :param request_id: the ``x-request-id`` sent with the call.
    :param retry_after: seconds the server asked to wait (``Retry-After``), if any.
    :param conn_id: the Airflow connection the call was made with (for the fix in the message).
    :param sandbox: the sandbox the call was made in (for the fix in the message).
    """

    #: what to do about it, appended to the message (formatted with ``conn_id`` and ``sandbox``)
    fix: ClassVar[str] = ""

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        method: str,
        url: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        conn_id: str | None = None,
        sandbox: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        self.request_id = request_id
        self.retry_after = retry_after
        self.conn_id = conn_id
        self.sandbox = sandbox
        self.error_code, self.message = parse_error_body(body)
        super().__init__(self._describe())

    def _describe(self) -> str:
        code = f" [{self.error_code}]" if self.error_code else ""
        text = f"{self.method} {self.url} failed with HTTP {self.status}{code}: {self.message} (x-request-id {self.request_id})"
        fix = self.fix_for_status().format(conn_id=self.conn_id or "aep_default", sandbox=self.sandbox or "?")
        return f"{text}. {fix}" if fix else text

    def fix_for_status(self) -> str:
        """What to do about this error (the class's ``fix``; a class may tell statuses apart)."""
        return self.fix

    def retyped(self, cls: type[AEPApiError], **kwargs: Any) -> AEPApiError:
        """
        This answer as another error class (one that knows more of what it means).

        :param cls: the class.
        :param kwargs: further arguments of ``cls``.
        """
        return cls(
            self.status,
            self.body,
            method=self.method,
            url=self.url,
            request_id=self.request_id,
            retry_after=self.retry_after,
            conn_id=self.conn_id,
            sandbox=self.sandbox,
            **kwargs,
        )

    @staticmethod
    def for_status(status: int, body: Any, *, token_call: bool = False, **kwargs: Any) -> AEPApiError:
        """
        The typed error for an answer's status (:func:`api_error_class`).

        :param status: HTTP status code.
        :param body: the decoded error body.
        :param token_call: the answer is IMS's to a token request.
        :param kwargs: as :class:`AEPApiError`'s.
        """
        return api_error_class(status, token_call=token_call)(status, body, **kwargs)


def api_error_class(status: int, *, token_call: bool = False) -> type[AEPApiError]:
    """
    What an answer's status means for a retry, as the error class that stands for it.

    429 :class:`AEPThrottledError`, 5xx :class:`AEPServerError`, 409 and 412 :class:`AEPConflictError`
    (races), 401 and 403 :class:`AEPAuthError`, 404 :class:`AEPNotFoundError`, any other 4xx
    :class:`AEPRequestError`. On the IMS token call every 4xx but 429 is an :class:`AEPAuthError`
    (IMS answers bad credentials with 400 or 401).

    :param status: HTTP status code.
    :param token_call: the answer is IMS's to a token request.
    """
    if status == 429:
        return AEPThrottledError
    if status >= 500:
        return AEPServerError
    if (token_call and status >= 400) or status in (401, 403):
        return AEPAuthError
    if status in (409, 412):
        return AEPConflictError
    if status == 404:
        return AEPNotFoundError
    if 400 <= status < 500:
        return AEPRequestError
    return AEPApiError


class AEPThrottledError(AEPApiError):
    """
    AEP answered 429: too many calls. Retried (after ``Retry-After``) by the hooks' retry policy.

    :param attempts: set on the error that ends the retries: how many times AEP throttled the call.
    """

    def __init__(self, *args: Any, attempts: int | None = None, **kwargs: Any) -> None:
        self.attempts = attempts
        super().__init__(*args, **kwargs)

    def _describe(self) -> str:
        if self.attempts is None:
            return super()._describe()
        wait = f"; it last asked to wait {self.retry_after:g} s" if self.retry_after is not None else ""
        return (
            f"AEP throttled {self.method} {self.url} {self.attempts} times, giving up: {self.message}"
            f" (x-request-id {self.request_id}){wait}. Fewer concurrent AEP tasks (the pool) or a later"
            " retry of the task get through"
        )

    def giving_up(self, attempts: int) -> AEPApiError:
        """The error that ends the retries of a call AEP throttled ``attempts`` times."""
        return self.retyped(AEPThrottledError, attempts=attempts)


class AEPServerError(AEPApiError):
    """AEP answered 5xx: a fault on its side. Idempotent calls are retried; a create never is."""


class AEPConflictError(AEPApiError):
    """
    AEP answered 409 or 412: another call changed the resource first (a race). Not retried by the
    hooks; a retry of the task reads the resource again and finds it as the winner left it.
    """

    fix = "Another call changed it at the same time; a retry of the task reads it again"


class AEPRequestError(AEPApiError, AirflowFailException):
    """AEP refused the request as invalid (a 4xx other than 401, 403, 404, 409, 412, 429): no retry can fix it."""

    fix = "AEP refused the request itself, so a retry would be refused the same way: fix what AEP's message names"


class AEPNotFoundError(AEPRequestError):
    """AEP answered 404: the resource does not exist (in this sandbox)."""

    fix = "It does not exist in sandbox {sandbox!r}: check the id (an upstream task's output) and the sandbox of connection {conn_id!r}"


class AEPAuthError(AEPRequestError):
    """IMS refused to issue a token, or AEP refused the token (401) or the call (403)."""

    def fix_for_status(self) -> str:
        if self.status == 403:
            return (
                "The credentials are valid but may not make this call in sandbox {sandbox!r}: add the API and a product"
                " profile covering the sandbox to the Developer Console project, or fix the connection's sandbox extra"
            )
        return (
            "The credentials were refused: check login (client id), password (client secret) and the org_id and"
            " scopes extras of connection {conn_id!r} against the Developer Console project"
        )


class AEPNotReadyError(AEPApiError):
    """The ad-hoc dataset export answered "not ready for dataset export" (the flow is too young)."""


class AEPConnectionError(AEPError, AirflowFailException):
    """The Airflow connection is missing or malformed; the message names what to set."""


class AEPInputError(AEPError, AirflowFailException):
    """An operator's input is invalid or missing; the message names the input and the fix."""


class AEPMissingObjectError(AEPInputError):
    """An S3 object (or every object under a prefix) an operator reads does not exist."""


class AEPNoRowsError(AEPInputError):
    """A step succeeded but has no rows to pass on: its inputs were empty, or matched nothing."""


class AEPTerminalStateError(AEPError):
    """
    An AEP job ended in a failed terminal state (FAILED, KILLED, TIMEOUT, failed, aborted, ...).

    :param kind: what the job is: ``query``, ``batch``, ``flow run`` or ``segment job``.
    :param resource_id: the job's AEP id.
    :param state: the terminal state AEP reported.
    :param errors: AEP's error list for the job.
    """

    #: what it means for the task, appended to the message
    outlook: ClassVar[str] = ""

    def __init__(self, kind: str, resource_id: str, state: str, errors: list | None = None) -> None:
        self.kind = kind
        self.resource_id = resource_id
        self.state = state
        self.errors = list(errors or [])
        text = f"AEP {kind} {resource_id} ended in state {state}: {self.errors}"
        super().__init__(f"{text}. {self.outlook}" if self.outlook else text)


class AEPJobFailedError(AEPTerminalStateError, AirflowFailException):
    """AEP failed the job for what it was asked to do (its SQL, data, definition): a retry would fail alike."""

    outlook = "Not retried: the same job would fail the same way; fix what AEP's errors name"


class AEPTransientJobError(AEPTerminalStateError):
    """AEP failed the job with system errors only: the try fails, and the task's retry starts the job anew."""

    outlook = "A system error of AEP's: the task's retry starts it anew"
