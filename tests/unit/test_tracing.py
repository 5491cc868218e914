"""The tracing facade: a free no-op when off; parent links, log ids and the task-author
context when on (an SDK provider with an in-memory exporter)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from task_framework.context import TaskContext
from task_framework.models._time import utcnow
from task_framework.observability import tracing as tracing_module
from task_framework.observability.logging import configure_logging, get_logger, reset_logging
from task_framework.observability.otel import OtelTracing, current_ids, traceparent_of
from task_framework.observability.tracing import NO_TRACING
from task_framework.testing import run_task

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exported: InMemorySpanExporter) -> Iterator[OtelTracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield OtelTracing(provider)
    provider.shutdown()


def test_off_is_a_shared_no_op() -> None:
    with NO_TRACING.span("thread.run", parent=PARENT) as span:
        assert span.traceparent is None
        span.set_attribute("k", 1)
        span.set_error("failed")
    assert NO_TRACING.span("a") is NO_TRACING.span("b")  # nothing allocated per call
    now = utcnow()
    assert NO_TRACING.record("thread.queued", parent=PARENT, start=now, end=now) is None
    assert NO_TRACING.current_traceparent() is None
    assert NO_TRACING.framework_config()["tracing"] is False
    assert NO_TRACING.enabled is False


def test_spans_continue_a_stored_traceparent(
    tracing: OtelTracing, exported: InMemorySpanExporter
) -> None:
    with tracing.span("thread.run", parent=PARENT, kind="consumer") as run:
        assert run.traceparent is not None
        assert run.traceparent.split("-")[1] == TRACE_ID
        assert tracing.current_traceparent() == run.traceparent
        with tracing.span("thread.settle"):
            pass
    started = utcnow() - timedelta(seconds=2)
    queued = tracing.record(
        "thread.queued", parent=PARENT, start=started, end=started + timedelta(seconds=1)
    )
    assert queued is not None
    assert queued.split("-")[1] == TRACE_ID
    spans = {span.name: span for span in exported.get_finished_spans()}
    assert {span.context.trace_id for span in spans.values()} == {int(TRACE_ID, 16)}
    assert spans["thread.run"].parent is not None
    assert spans["thread.run"].parent.span_id == 0x00F067AA0BA902B7
    assert spans["thread.run"].kind == trace.SpanKind.CONSUMER
    settle_parent = spans["thread.settle"].parent
    assert settle_parent is not None
    assert settle_parent.span_id == spans["thread.run"].context.span_id
    record = spans["thread.queued"]
    assert record.start_time is not None
    assert record.end_time is not None
    assert record.end_time - record.start_time == pytest.approx(1e9, rel=1e-3)


def test_errors_mark_the_span(tracing: OtelTracing, exported: InMemorySpanExporter) -> None:
    with tracing.span("thread.run") as span:
        span.set_error("failed")
    (finished,) = exported.get_finished_spans()
    assert finished.status.status_code == trace.StatusCode.ERROR
    assert finished.parent is None  # no current span, no stored one: a root


def test_log_records_carry_the_current_span(tracing: OtelTracing) -> None:
    tracing_module.install_log_ids(current_ids)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, log_format="json")
    try:
        log = get_logger("task_framework.test")
        log.info("outside.span")
        with tracing.span("thread.run", parent=PARENT) as span:
            log.info("inside.span")
            assert span.traceparent is not None
            span_id = span.traceparent.split("-")[2]
    finally:
        reset_logging()
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert (inside["trace_id"], inside["span_id"]) == (TRACE_ID, span_id)
    assert list(inside)[:6] == ["timestamp", "level", "logger", "event", "trace_id", "span_id"]


class _Backend:
    def is_cancelled(self) -> bool:
        return False


def test_task_context_gives_an_otel_context(tracing: OtelTracing) -> None:
    with tracing.span("worker.run", parent=PARENT) as worker:
        traceparent = worker.traceparent
    context = TaskContext(_Backend(), thread_id="thread_1", traceparent=traceparent)  # type: ignore[arg-type]
    assert context.traceparent == traceparent
    parent = trace.get_current_span(context.otel_context()).get_span_context()
    assert traceparent_of(parent) == traceparent
    assert TaskContext(_Backend(), thread_id="t").otel_context() is None  # type: ignore[arg-type]


def test_run_task_sets_the_traceparent() -> None:
    seen: list[str | None] = []

    def task(context: TaskContext) -> None:
        seen.append(context.traceparent)

    result = run_task(task, traceparent=PARENT)
    assert result.error is None
    assert seen == [PARENT]
