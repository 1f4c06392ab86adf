"""Errors the emulator answers with, each carrying AEP's status and body for its service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


class AEPError(Exception):
    """An HTTP error response: status, JSON body and optional headers.

    :param status: HTTP status code.
    :param body: the JSON body AEP returns for this error.
    :param headers: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def gateway_error(status: int, error_code: str, message: str) -> AEPError:
    """Adobe I/O gateway error: ``{error_code, message}``."""
    return AEPError(status, {"error_code": error_code, "message": message})


def xdm_error(status: int, code: str, title: str, detail: str) -> AEPError:
    """Schema Registry error, e.g. ``XDM-1012-404``."""
    return AEPError(
        status,
        {
            "type": f"http://ns.adobe.com/aep/errors/{code}",
            "title": title,
            "status": status,
            "report": {
                "registryRequestId": str(uuid.uuid4()),
                "timestamp": datetime.now(UTC).strftime("%m-%d-%Y %H:%M:%S"),
                "detailed-message": detail,
                "sub-errors": [],
            },
            "detail": detail,
        },
    )


def problem_error(status: int, title: str, detail: str, type_: str = "/placeholder/type/uri") -> AEPError:
    """RFC 7807 problem body used by Catalog, Batch Ingestion and the gateway's content-type check."""
    return AEPError(status, {"type": type_, "status": status, "title": title, "detail": detail})


def query_error(status: int, message: str, code: str | None = None) -> AEPError:
    """Query Service REST error: ``{message, statusCode}`` (plus ``errorCode`` when known)."""
    body: dict[str, Any] = {"message": message, "statusCode": status}
    if code:
        body["errorCode"] = code
    return AEPError(status, body)


def ups_error(status: int, code: str, message: str, request_id: str | None = None) -> AEPError:
    """Segmentation / Audiences error, e.g. ``UPAPI-113430-404``."""
    return AEPError(
        status,
        {
            "requestId": request_id or str(uuid.uuid4()),
            "errors": {str(status): [{"code": code, "message": message}]},
            "type": f"https://ns.adobe.com/aep/errors/{code}",
            "title": message,
            "status": status,
        },
    )


def flow_error(status: int, message: str, code: str = "CONNECTOR-1001-400") -> AEPError:
    """Flow Service error body."""
    return AEPError(
        status,
        {
            "type": "https://ns.adobe.com/adobecloud/problem/flowservice",
            "title": message,
            "status": status,
            "code": code,
            "message": message,
            "detail": message,
        },
    )
