"""Traces of threads (OpenTelemetry), off by default.

Services trace through a :class:`Tracing` handed to them by the app factory. With tracing
off that is :data:`NO_TRACING`: every call returns a shared no-op object, so the hot path
pays one method call and nothing else, and the OpenTelemetry SDK is never imported. With
``TASK_FRAMEWORK_OTEL_ENABLED=true`` the factory builds the SDK-backed implementation of
``observability/otel.py`` (the ``otel`` extra) instead.

A thread's trace survives the queue as a W3C ``traceparent`` string stored on its row:
whoever claims it later, in this process or another, continues the same trace.

Span names (one vocabulary, like the metrics): ``thread.create``, ``thread.queued``,
``thread.claim``, ``thread.run``, ``worker.run``, ``thread.outputs.publish``,
``thread.settle``, ``webhook.deliver``; the request span comes from FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

__all__ = [
    "NO_TRACING",
    "TRACEPARENT_HEADER",
    "Span",
    "SpanKind",
    "Tracing",
    "TracingUnavailable",
    "current_log_ids",
]

TRACEPARENT_HEADER = "traceparent"
SERVICE_NAME = "task-framework"
"""``service.name`` of the spans unless ``OTEL_SERVICE_NAME`` names another."""

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
Attributes = Mapping[str, str | int | float | bool]


class TracingUnavailable(RuntimeError):
    """Tracing is enabled but the ``otel`` extra is not installed (or is misconfigured)."""


class Span:
    """A span being recorded; this base class is the no-op one."""

    __slots__ = ()

    @property
    def traceparent(self) -> str | None:
        """This span as a W3C ``traceparent`` (children continue from it), or None."""
        return None

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Add one attribute."""

    def set_error(self, description: str) -> None:
        """Mark the span as failed."""


class _NoopScope(AbstractContextManager[Span]):
    __slots__ = ()

    def __enter__(self) -> Span:
        return _NOOP_SPAN

    def __exit__(self, *_exc: object) -> None:
        return None


_NOOP_SPAN = Span()
_NOOP_SCOPE = _NoopScope()


class Tracing:
    """How services record spans; this base class records nothing (tracing off)."""

    enabled = False

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
        attributes: Attributes | None = None,
    ) -> AbstractContextManager[Span]:
        """A span around a block, current inside it. ``parent`` is a stored
        ``traceparent`` to continue; None continues the current span (if any)."""
        return _NOOP_SCOPE

    def record(
        self,
        name: str,
        *,
        parent: str | None,
        start: datetime,
        end: datetime,
        attributes: Attributes | None = None,
    ) -> str | None:
        """A span for something that already happened (time in the queue); its
        ``traceparent``."""
        return None

    def current_traceparent(self) -> str | None:
        """The current span as a ``traceparent``, or None outside any span."""
        return None

    def framework_config(self) -> TelemetryConfig:
        """``FastAPI(telemetry=...)``: its request spans, through this tracer or not at all."""
        # auto_configure off too: FASTAPI_OTEL_AUTO_CONFIGURE must not turn it on behind
        # TASK_FRAMEWORK_OTEL_ENABLED's back.
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}

    def shutdown(self) -> None:
        """Export what is still buffered and stop."""


NO_TRACING = Tracing()
"""Tracing off: shared, stateless, free."""


def _no_ids() -> tuple[str, str] | None:
    return None


_log_ids: Callable[[], tuple[str, str] | None] = _no_ids


def current_log_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span for log records; None when tracing is off
    or no span is current."""
    return _log_ids()


def install_log_ids(reader: Callable[[], tuple[str, str] | None]) -> None:
    """Let log records read the current span (called once tracing is built)."""
    global _log_ids
    _log_ids = reader
