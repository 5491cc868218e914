"""JSON at the edge: strict request bodies in, always-encodable responses out.

:class:`StrictJSONRoute` makes FastAPI parse JSON bodies with
:func:`~task_framework.utils.strict_json.loads_strict`, so ``NaN``, ``Infinity``, lone
surrogates, NUL characters and too deep nesting get 422 ``VALIDATION_FAILED`` before any
route runs. :class:`JSONResponse` answers even a record stored before that rule
(a ``NaN`` kept by SQLite) instead of failing with 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse as _JSONResponse
from fastapi.routing import APIRoute

from task_framework.utils.strict_json import NotStrictJSON, loads_strict, repaired

__all__ = ["JSONResponse", "StrictJSONRequest", "StrictJSONRoute", "strict_body"]


def strict_body(body: bytes) -> Any:
    """``body`` parsed strictly; a violation is a ``json.JSONDecodeError`` (422)."""
    try:
        return loads_strict(body)
    except NotStrictJSON as exc:
        text = body.decode("utf-8", "replace")
        raise json.JSONDecodeError(str(exc), text, 0) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_body(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An API route whose JSON body is parsed strictly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


class JSONResponse(_JSONResponse):
    """Starlette's strict JSON response, repairing content that strict JSON cannot carry."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError):
            return super().render(repaired(content))
