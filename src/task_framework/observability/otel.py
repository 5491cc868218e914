"""The OpenTelemetry side of :mod:`task_framework.observability.tracing` (``otel`` extra).

Imported only when tracing is enabled. The tracer provider belongs to the app (it is not
installed as the global provider), so several apps in one process keep their own; the
exporter, resource and sampler read the standard ``OTEL_*`` variables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind as OtelKind
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from task_framework._version import __version__
from task_framework.observability.tracing import (
    SERVICE_NAME,
    Attributes,
    Span,
    SpanKind,
    Tracing,
    TracingUnavailable,
)

INSTRUMENTATION_NAME = "task_framework"
_KINDS = {
    "internal": OtelKind.INTERNAL,
    "server": OtelKind.SERVER,
    "client": OtelKind.CLIENT,
    "producer": OtelKind.PRODUCER,
    "consumer": OtelKind.CONSUMER,
}
_PROPAGATOR = TraceContextTextMapPropagator()
_HTTP_PROTOCOLS = ("http/protobuf", "")


def traceparent_of(span_context: trace.SpanContext) -> str | None:
    """``00-<trace id>-<span id>-<flags>``, or None for an invalid context."""
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def context_from(traceparent: str | None) -> Context | None:
    """A context whose current span is the remote one named by ``traceparent``; None to
    continue the current context."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, hex, for log records."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


class _OtelSpan(Span):
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def traceparent(self) -> str | None:
        return traceparent_of(self._span.get_span_context())

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def set_error(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    name = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER={name} is not supported: use otlp, console or none"
        )
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or ""
    ).strip()
    if protocol not in _HTTP_PROTOCOLS:
        raise TracingUnavailable(
            f"OTLP protocol {protocol!r} is not supported: task-framework exports "
            "OTLP over HTTP (http/protobuf)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # the SDK without the exporter
        raise TracingUnavailable(
            "the OTLP/HTTP exporter is not installed: pip install 'task-framework-py[otel]'"
        ) from exc
    return OTLPSpanExporter()


class OtelTracing(Tracing):
    """Spans through an SDK tracer provider of this app."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> OtelTracing:
        """A provider with a batch processor and the exporter the ``OTEL_*`` variables
        choose; ``service.name`` defaults to ``task-framework``."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
            # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named the service.
            resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
        return cls(provider)

    @property
    def provider(self) -> TracerProvider:
        return self._provider

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
        attributes: Attributes | None = None,
    ) -> AbstractContextManager[Span]:
        return self._span(name, parent, kind, attributes)

    @contextmanager
    def _span(
        self, name: str, parent: str | None, kind: SpanKind, attributes: Attributes | None
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name,
            context=context_from(parent),
            kind=_KINDS[kind],
            attributes=attributes,
        ) as span:
            yield _OtelSpan(span)

    def record(
        self,
        name: str,
        *,
        parent: str | None,
        start: datetime,
        end: datetime,
        attributes: Attributes | None = None,
    ) -> str | None:
        span = self._tracer.start_span(
            name,
            context=context_from(parent),
            attributes=attributes,
            start_time=_nanos(start),
        )
        span.end(end_time=max(_nanos(end), _nanos(start)))
        return traceparent_of(span.get_span_context())

    def current_traceparent(self) -> str | None:
        return traceparent_of(trace.get_current_span().get_span_context())

    def framework_config(self) -> TelemetryConfig:
        return {
            "tracer_provider": self._provider,
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
            "exclude": _untraced,
        }

    def shutdown(self) -> None:
        self._provider.shutdown()


_UNTRACED_PATHS = frozenset({"/health", "/metrics"})


def _untraced(scope: Mapping[str, Any]) -> bool:
    """Probes, scrapes and the web UI's pages get no request span."""
    path = str(scope.get("path", ""))
    return path in _UNTRACED_PATHS or path == "/ui" or path.startswith("/ui/")


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


__all__ = ["OtelTracing", "context_from", "current_ids", "traceparent_of"]
