"""The one place where errors become HTTP responses: the ``{"detail": {...}}`` envelope."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from task_framework.api.examples import ERROR_ENVELOPE
from task_framework.api.json_edge import JSONResponse
from task_framework.errors import TaskFrameworkError

log = logging.getLogger("task_framework.api")

# Routes whose errors also carry the legacy top-level "error" string (API.md §10.2).
_LEGACY_ERROR_PREFIXES = ("/admin/credentials",)


class ProblemDetail(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    code: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ERROR_ENVELOPE]})

    detail: ProblemDetail


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _legacy(path: str) -> bool:
    return path.startswith(_LEGACY_ERROR_PREFIXES) or (
        path.startswith("/admin/tasks/") and path.endswith("/config")
    )


def error_response(
    request: Request,
    *,
    status: int,
    code: str,
    detail: str,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://httpstatus.es/{status}",
        "title": title or _title(status),
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    content: dict[str, Any] = {"detail": body}
    if _legacy(request.url.path):
        content["error"] = detail
    return JSONResponse(content, status_code=status, headers=headers)


async def _framework_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskFrameworkError)
    title = exc.extra.get("title") or exc.title
    retry_after = exc.extra.get("retry_after")
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return error_response(
        request,
        status=exc.status,
        code=exc.code,
        detail=exc.message,
        title=title,
        headers=headers,
    )


def _clean(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _message(err: Any) -> str:
    message = str(err.get("msg"))
    reason = (err.get("ctx") or {}).get("error")
    if err.get("type") == "json_invalid" and isinstance(reason, str):
        return f"{message}: {reason}"  # say which strict-JSON rule (or syntax) failed
    return message


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 in FastAPI's standard ``{"detail": [{loc, msg, type}, ...]}`` shape
    (``HTTPValidationError``), as 0.0.20b0 answers and generated clients expect; every other
    error uses the envelope. The rejected input is not echoed back."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [_clean(part) for part in err.get("loc", ())],
            "msg": _message(err),
            "type": str(err.get("type")),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "FILE_SIZE_EXCEEDED"}
    code = codes.get(
        exc.status_code, "VALIDATION_FAILED" if exc.status_code < 500 else "INTERNAL_ERROR"
    )
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    return error_response(
        request,
        status=exc.status_code,
        code=code,
        detail=detail,
        headers=getattr(exc, "headers", None),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TaskFrameworkError, _framework_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": _title(status)}
    for status in (400, 401, 403, 404, 413, 429, 503)
}
"""The envelope's statuses; 422 keeps FastAPI's own ``HTTPValidationError`` schema."""
