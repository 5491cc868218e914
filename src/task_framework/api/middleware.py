"""Request context: ``X-Request-ID``, request-scoped log context and request metrics.

:class:`RequestContextMiddleware` is a pure ASGI middleware: it never buffers a body, so
streaming responses (file downloads, SSE) stream through it unchanged.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import fastapi.routing
import structlog
from starlette.routing import BaseRoute, Host, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from task_framework.observability.logging import get_logger
from task_framework.observability.metrics import Metrics

__all__ = ["REQUEST_ID_HEADER", "UNMATCHED_ENDPOINT", "RequestContextMiddleware"]

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ENDPOINT = "<unmatched>"

_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
# Echo only ids that are safe to put back in a header and a log line.
_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_UNTIMED_PATHS = frozenset({"/metrics", "/health"})
_UNTIMED_PREFIX = "/ui"
# Any other method becomes "OTHER" so that clients cannot grow the label set.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class RequestContextMiddleware:
    """Echo or generate ``X-Request-ID``, bind it for logging, count and time the request.

    Every HTTP request adds exactly one ``api_requests_total`` count, labelled with the
    matched route template (``/threads/{thread_id}``) or ``<unmatched>``. An exception that
    escapes the app is logged as ``api.request.failed``, counted as status 500 and, if no
    response has started yet, answered here with a 500 ``INTERNAL_ERROR`` envelope so that
    even that response carries the request id; it is not re-raised in that case.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._log = get_logger("task_framework.api")
        self._templates: _RouteTemplates | None = None
        self._templates_router: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        header_value = request_id.encode("latin-1")
        state = scope.setdefault("state", {})
        if isinstance(state, dict):
            state["request_id"] = request_id
        route_path = _route_path(scope)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        status: int | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != _HEADER_KEY
                ]
                headers.append((_HEADER_KEY, header_value))
                message = {**message, "headers": headers}
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        failed = False
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            failed = True
            self._log.error(
                "api.request.failed",
                method=scope["method"],
                path=route_path,
                endpoint=self._endpoint(scope, route_path),
                exc_info=True,
            )
            if status is not None:
                raise  # Too late for an error response; let the server abort it.
            await _send_internal_error(send_with_request_id, route_path)
        finally:
            duration_s = time.perf_counter() - started
            structlog.contextvars.reset_contextvars(**tokens)
            self.metrics.record_request(
                method,
                self._endpoint(scope, route_path),
                500 if failed or status is None else status,
                duration_s,
                timed=_is_timed(route_path),
            )

    def _endpoint(self, scope: Scope, route_path: str) -> str:
        """The matched route's full template, or ``<unmatched>``."""
        route = scope.get("route")
        if route is None:
            return UNMATCHED_ENDPOINT
        router = scope.get("router")  # the outermost router; Starlette sets it first
        routes = getattr(router, "routes", None)
        if isinstance(routes, Sequence):
            if self._templates is None or self._templates_router is not router:
                self._templates, self._templates_router = _RouteTemplates(routes), router
            template = self._templates.lookup(route, route_path)
            if template is None and self._templates.size != len(routes):
                # Routes were added after the first request.
                self._templates = _RouteTemplates(routes)
                template = self._templates.lookup(route, route_path)
            if template is not None:
                return template
        fallback = getattr(route, "path_format", None)
        return fallback if isinstance(fallback, str) else UNMATCHED_ENDPOINT


class _RouteTemplates:
    """Full path templates of an app's routes, keyed by the identity of the route object.

    The route Starlette/FastAPI leave in ``scope["route"]`` may carry a path relative to
    its router or mount (recent FastAPI keeps included routers nested), so its own
    ``path_format`` is not enough. One route object included under several prefixes is
    disambiguated by matching the request path against each full template.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.size = len(routes)
        self._by_id: dict[int, list[tuple[object, str, re.Pattern[str]]]] = {}
        for route, template, regex in _flatten(routes, ""):
            self._by_id.setdefault(id(route), []).append((route, template, regex))

    def lookup(self, route: object, route_path: str) -> str | None:
        entries = [entry for entry in self._by_id.get(id(route), ()) if entry[0] is route]
        if len(entries) <= 1:
            return entries[0][1] if entries else None
        for _, template, regex in entries:
            if regex.match(route_path):
                return template
        return entries[0][1]


def _flatten(routes: Sequence[Any], prefix: str) -> Iterator[tuple[object, str, re.Pattern[str]]]:
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    contexts: Any = iter_route_contexts(routes) if iter_route_contexts is not None else routes
    for context in contexts:
        route = getattr(context, "original_route", context)
        if isinstance(route, Host):
            yield from _flatten(route.routes, prefix)
            continue
        path = getattr(context, "path", None)
        path_format = getattr(context, "path_format", None)
        if not isinstance(path, str) or not isinstance(path_format, str):
            continue
        if isinstance(route, Mount):
            yield route, prefix + path_format, _compile(prefix + path + "/{path:path}")
            yield from _flatten(route.routes, prefix + path)
        else:
            yield route, prefix + path_format, _compile(prefix + path)


def _compile(path: str) -> re.Pattern[str]:
    try:
        return compile_path(path)[0]
    except (ValueError, AssertionError):
        return re.compile(re.escape(path) + "$")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            candidate: str = value.decode("latin-1").strip()
            return candidate if _VALID_REQUEST_ID.fullmatch(candidate) else None
    return None


def _route_path(scope: Scope) -> str:
    """The request path without the app's ``root_path`` (as Starlette's router sees it)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) :][:1] in ("/", ""):
        return path[len(root_path) :] or "/"
    return path


def _is_timed(route_path: str) -> bool:
    if route_path in _UNTIMED_PATHS:
        return False
    return not (route_path == _UNTIMED_PREFIX or route_path.startswith(_UNTIMED_PREFIX + "/"))


async def _send_internal_error(send: Send, route_path: str) -> None:
    body = json.dumps(
        {
            "detail": {
                "type": "https://httpstatus.es/500",
                "title": "Internal Server Error",
                "status": 500,
                "detail": "Internal server error",
                "code": "INTERNAL_ERROR",
                "instance": route_path,
            }
        },
        separators=(",", ":"),
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
