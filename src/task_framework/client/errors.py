"""Errors raised by the client. Every API error carries the server's ``code``."""

from __future__ import annotations

from typing import Any

import httpx


class ClientError(Exception):
    """Base of every client error."""


class ApiError(ClientError):
    """The server answered with an error envelope (API.md §1.3).

    ``status`` is the HTTP status, ``code`` the API error code (``THREAD_NOT_FOUND``, …),
    ``detail`` the human-readable message and ``body`` the decoded response, if any.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body
        self.request_id = request_id

    @property
    def is_auth_error(self) -> bool:
        return self.status in (401, 403) and self.code.startswith("AUTH_")


class ServerUnreachable(ClientError):
    """The request never got an HTTP answer (connection refused, DNS, timeout, …)."""


class WaitTimeout(ClientError):
    """``wait`` gave up before the thread reached a final state."""

    def __init__(self, thread_id: str, seconds: float) -> None:
        super().__init__(f"thread {thread_id} not finished after {seconds:g} s")
        self.thread_id = thread_id


def _validation_message(item: Any) -> str:
    """``body.inputs.0.kind: Field required`` from one ``{loc, msg, type}`` entry."""
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc") or ())
    message = str(item.get("msg") or item.get("type") or "invalid")
    return f"{where}: {message}" if where else message


def error_from_response(response: httpx.Response) -> ApiError:
    """Build the ApiError of an error response (the envelope, or whatever came back)."""
    request_id = response.headers.get("x-request-id")
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    envelope = body.get("detail") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        return ApiError(
            response.status_code,
            str(envelope.get("code") or "ERROR"),
            str(envelope.get("detail") or envelope.get("title") or ""),
            body=body,
            request_id=request_id,
        )
    if isinstance(envelope, list) and envelope:  # 422: FastAPI's standard validation shape
        return ApiError(
            response.status_code,
            "VALIDATION_FAILED",
            "; ".join(_validation_message(item) for item in envelope[:5]),
            body=body,
            request_id=request_id,
        )
    text = response.text[:500] if body is None else str(body)[:500]
    return ApiError(
        response.status_code,
        "HTTP_ERROR",
        text or response.reason_phrase,
        body=body,
        request_id=request_id,
    )


__all__ = ["ApiError", "ClientError", "ServerUnreachable", "WaitTimeout", "error_from_response"]
