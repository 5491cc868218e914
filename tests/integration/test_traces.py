"""Traces (TASK_FRAMEWORK_OTEL_ENABLED): one trace per thread reaches a real OTLP/HTTP
receiver on loopback, every hop a span, from the request to the webhook delivery."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from conftest import Server, ServerFactory
from otlp_receiver import OtlpReceiver, ReceivedSpan
from task_framework import observability
from task_framework.observability.logging import configure_logging, reset_logging
from task_framework.observability.tracing import NO_TRACING, TracingUnavailable
from task_framework.observability.tracing_setup import build_tracing
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow

SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_CONSUMER = 2, 3, 5
HOPS = {
    "POST /threads",
    "thread.create",
    "thread.queued",
    "thread.claim",
    "thread.run",
    "worker.run",
    "thread.outputs.publish",
    "thread.settle",
    "webhook.deliver",
}
INPUTS = {"inputs": [{"kind": "json", "value": {"name": "Ada"}, "ref": "in"}]}
TASK = """
from task_framework.models.artifact import Artifact


async def run(context):
    await context.publish_output_artifacts(
        [Artifact(kind="json", ref="trace", value={"traceparent": context.traceparent})]
    )
"""


@pytest.fixture
def traced_task(tmp_path: Path) -> Path:
    folder = tmp_path / "traced"
    folder.mkdir()
    (folder / "task.py").write_text(TASK)
    (folder / "task_metadata.json").write_text(
        json.dumps({"name": "traced", "version": "1.0.0", "entry_point": "task:run"})
    )
    return folder


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    yield receiver
    receiver.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, log_format="json")
    yield stream
    reset_logging()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _check_thread_trace(spans: list[ReceivedSpan], thread: dict[str, Any]) -> dict[str, str]:
    """Every hop of one thread, parented as documented; the span ids by name."""
    assert len({span.trace_id for span in spans}) == 1
    names = [span.name for span in spans]
    assert set(names) >= HOPS, names
    request, create = _one(spans, "POST /threads"), _one(spans, "thread.create")
    run, worker = _one(spans, "thread.run"), _one(spans, "worker.run")
    assert request.kind == SPAN_KIND_SERVER
    assert request.attributes["http.route"] == "/threads"
    assert create.parent_span_id == request.span_id
    for hop in ("thread.queued", "thread.claim", "thread.run"):
        span = _one(spans, hop)
        assert span.parent_span_id == create.span_id, hop
        assert span.attributes["task_framework.thread_id"] == thread["id"]
    assert run.kind == SPAN_KIND_CONSUMER
    assert run.attributes["task_framework.thread.state"] == "succeeded"
    assert _one(spans, "thread.queued").end_ns <= _one(spans, "thread.claim").end_ns
    assert worker.parent_span_id == run.span_id
    assert _one(spans, "thread.outputs.publish").parent_span_id == worker.span_id
    assert _one(spans, "thread.settle").parent_span_id == run.span_id
    deliveries = [span for span in spans if span.name == "webhook.deliver"]
    for delivery in deliveries:
        assert delivery.kind == SPAN_KIND_CLIENT
        assert delivery.parent_span_id == create.span_id
        assert delivery.attributes["http.response.status_code"] == 200
    assert {span.resource["service.name"] for span in spans} == {"task-framework"}
    # The task saw the worker round trip as its parent span.
    (output,) = [a for a in thread["outputs"] if a["ref"] == "trace"]
    version, trace_id, span_id, flags = output["value"]["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", run.trace_id, worker.span_id)
    assert int(flags, 16) & 1  # sampled
    return {span.name: span.span_id for span in spans if span.name != "webhook.deliver"}


async def _settle(server: Server, thread_id: str) -> dict[str, Any]:
    for _ in range(400):
        thread: dict[str, Any] = (
            await server.client.get(f"/threads/{thread_id}", headers=server.user())
        ).json()
        if thread["state"] not in ("queued", "running"):
            return thread
        await asyncio.sleep(0.05)
    raise AssertionError("thread did not settle")


async def test_one_trace_per_thread_reaches_an_otlp_receiver(
    make_server: ServerFactory,
    database_url: str,
    traced_task: Path,
    otlp: OtlpReceiver,
    log_lines: io.StringIO,
) -> None:
    hooks = Receiver()
    await hooks.start()
    try:
        server = await make_server(
            dev_tasks=[traced_task],
            database_url=database_url,
            otel_enabled=True,
            webhook_allow_private_networks=True,
        )
        assert server.services.tracing.enabled
        created = await server.client.post(
            "/webhooks",
            json={"url": hooks.url, "events": {"include": ["thread.succeeded"]}},
            headers=server.user(),
        )
        assert created.status_code == 201, created.text
        incoming, incoming_trace, incoming_span = _traceparent()
        sync = await server.client.post(
            "/threads",
            json={"mode": "sync", **INPUTS},
            headers={**server.user(), "traceparent": incoming},
        )
        assert sync.status_code == 201, sync.text
        queued = await server.client.post(
            "/threads", json={"mode": "async", **INPUTS}, headers=server.user()
        )
        assert queued.status_code == 202, queued.text
        async_thread = await _settle(server, queued.json()["id"])
        requests = await hooks.wait_for(2)
    finally:
        await hooks.stop()
    # Spans are batched: make the exporter send what it holds.
    await asyncio.to_thread(server.services.tracing.shutdown)
    spans = await asyncio.to_thread(otlp.wait_for, HOPS)

    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    run_traces = {
        span.attributes["task_framework.thread_id"]: span.trace_id
        for span in spans
        if span.name == "thread.run"
    }
    sync_thread = sync.json()
    assert set(run_traces) == {sync_thread["id"], async_thread["id"]}
    # The incoming traceparent is continued by the sync thread's trace.
    assert run_traces[sync_thread["id"]] == incoming_trace
    assert _one(by_trace[incoming_trace], "POST /threads").parent_span_id == incoming_span
    sync_ids = _check_thread_trace(by_trace[incoming_trace], sync_thread)
    async_trace = run_traces[async_thread["id"]]
    assert async_trace != incoming_trace
    assert _one(by_trace[async_trace], "POST /threads").parent_span_id == ""
    _check_thread_trace(by_trace[async_trace], async_thread)

    # Each webhook request carried the traceparent of its delivery span.
    delivered = {span.span_id: span for span in spans if span.name == "webhook.deliver"}
    for request in requests:
        payload = json.loads(request.body)
        version, trace_id, span_id, flags = request.headers["traceparent"].split("-")
        assert version == "00"
        assert int(flags, 16) & 1
        assert trace_id == run_traces[payload["thread_id"]]
        assert delivered[span_id].trace_id == trace_id

    # Log lines written inside a thread's spans carry its trace and span ids.
    records = [json.loads(line) for line in log_lines.getvalue().splitlines() if line]
    settled = [r for r in records if r["event"] == "thread.settled"]
    assert {(r["thread_id"], r["trace_id"]) for r in settled} == {
        (sync_thread["id"], incoming_trace),
        (async_thread["id"], async_trace),
    }
    sync_settled = next(r for r in settled if r["thread_id"] == sync_thread["id"])
    assert sync_settled["span_id"] == sync_ids["thread.run"]


async def test_tracing_off_stores_no_trace_and_sends_no_traceparent(
    make_server: ServerFactory, traced_task: Path
) -> None:
    hooks = Receiver()
    await hooks.start()
    try:
        server = await make_server(dev_tasks=[traced_task], webhook_allow_private_networks=True)
        assert server.services.tracing is NO_TRACING
        await server.client.post(
            "/webhooks",
            json={"url": hooks.url, "events": {"include": ["thread.succeeded"]}},
            headers=server.user(),
        )
        incoming, _, _ = _traceparent()
        thread = (
            await server.client.post(
                "/threads",
                json={"mode": "sync", **INPUTS},
                headers={**server.user(), "traceparent": incoming},
            )
        ).json()
        (request,) = await hooks.wait_for(1)
    finally:
        await hooks.stop()
    assert "traceparent" not in request.headers
    (output,) = thread["outputs"]
    assert output["value"] == {"traceparent": None}
    assert "traceparent" not in thread


def test_enabled_without_the_extra_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # An import of the SDK that fails, as where the extra is not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    monkeypatch.delitem(sys.modules, "task_framework.observability.otel", raising=False)
    monkeypatch.delattr(observability, "otel", raising=False)
    with pytest.raises(TracingUnavailable, match=r"task-framework-py\[otel\]"):
        build_tracing(True, environ={})


def test_standard_variables_switch_tracing_off() -> None:
    assert build_tracing(False, environ={}) is NO_TRACING
    assert build_tracing(True, environ={"OTEL_SDK_DISABLED": "true"}) is NO_TRACING
    assert build_tracing(True, environ={"OTEL_TRACES_EXPORTER": "none"}) is NO_TRACING
    with pytest.raises(TracingUnavailable, match="grpc"):
        build_tracing(True, environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(TracingUnavailable, match="zipkin"):
        build_tracing(True, environ={"OTEL_TRACES_EXPORTER": "zipkin"})


def test_tracing_off_imports_no_opentelemetry_sdk(tmp_path: Path) -> None:
    """With tracing off the app never loads the SDK or the exporter (a fresh process)."""
    script = (
        "import sys\n"
        "from task_framework.app import create_app\n"
        "from task_framework.settings import Settings\n"
        f"create_app(Settings(data_dir={str(tmp_path)!r}))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith("
        "('opentelemetry.sdk', 'opentelemetry.exporter', 'task_framework.observability.otel')))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_serve_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    """The real CLI, in a process where the SDK cannot be imported."""
    script = (
        "import sys\n"
        "sys.modules['opentelemetry.sdk.trace'] = None\n"
        "from task_framework.cli.main import main\n"
        f"sys.argv = ['task-framework', 'serve', '--port', '0', '--data-dir', {str(tmp_path)!r}]\n"
        "main()\n"
    )
    env = {**os.environ, "TASK_FRAMEWORK_OTEL_ENABLED": "true"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'task-framework-py[otel]'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_thread_claimed_by_another_replica_stays_in_its_trace(
    make_server: ServerFactory, database_url: str, traced_task: Path, otlp: OtlpReceiver
) -> None:
    """The trace context survives the queue: the replica that serves the request runs no
    threads; another one (sharing the database) claims and runs it."""
    key = Fernet.generate_key().decode()
    shared = {"database_url": database_url, "encryption_key": key, "otel_enabled": True}
    api = await make_server(dev_tasks=[traced_task], run_worker=False, **shared)
    worker = await make_server(dev_tasks=[traced_task], **shared)
    incoming, incoming_trace, _ = _traceparent()
    queued = await api.client.post(
        "/threads",
        json={"mode": "async", **INPUTS},
        headers={**api.user(), "traceparent": incoming},
    )
    assert queued.status_code == 202, queued.text
    thread = await _settle(api, queued.json()["id"])
    assert thread["state"] == "succeeded"
    for server in (api, worker):
        await asyncio.to_thread(server.services.tracing.shutdown)
    spans = [
        s
        for s in await asyncio.to_thread(otlp.wait_for, HOPS - {"webhook.deliver"})
        if s.trace_id == incoming_trace
    ]
    create, run = _one(spans, "thread.create"), _one(spans, "thread.run")
    assert run.parent_span_id == create.span_id
    assert run.attributes["task_framework.replica_id"] == worker.services.executor.replica_id
    assert _one(spans, "thread.queued").parent_span_id == create.span_id
    (output,) = [a for a in thread["outputs"] if a["ref"] == "trace"]
    assert output["value"]["traceparent"].split("-")[1] == incoming_trace


EXPORTING_TASK = """
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def run(context):
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=context.params["otlp_endpoint"])
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("exporting-task")
    with tracer.start_as_current_span("task.step", context=context.otel_context()):
        with tracer.start_as_current_span("task.inner"):
            pass
    provider.shutdown()
"""


async def test_task_spans_join_the_thread_trace(
    make_server: ServerFactory, tmp_path: Path, otlp: OtlpReceiver
) -> None:
    """A task with OpenTelemetry in its own environment (and the default outbound
    network) exports child spans of its thread's worker span."""
    folder = tmp_path / "exporting"
    folder.mkdir()
    (folder / "task.py").write_text(EXPORTING_TASK)
    (folder / "requirements.txt").write_text(
        "opentelemetry-sdk>=1.27\nopentelemetry-exporter-otlp-proto-http>=1.27\n"
    )
    (folder / "task_metadata.json").write_text(
        json.dumps(
            {
                "name": "exporting",
                "version": "1.0.0",
                "entry_point": "task:run",
                "network": "outbound",
            }
        )
    )
    server = await make_server(dev_tasks=[folder], otel_enabled=True)
    response = await server.client.post(
        "/threads",
        json={"mode": "sync", "params": {"otlp_endpoint": otlp.endpoint}, **INPUTS},
        headers=server.user(),
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "succeeded", response.json()["error"]
    await asyncio.to_thread(server.services.tracing.shutdown)
    spans = await asyncio.to_thread(otlp.wait_for, {"worker.run", "task.step", "task.inner"})
    worker, step, inner = (_one(spans, n) for n in ("worker.run", "task.step", "task.inner"))
    assert step.trace_id == inner.trace_id == worker.trace_id
    assert step.parent_span_id == worker.span_id
    assert inner.parent_span_id == step.span_id


async def test_a_scheduled_thread_is_one_trace(
    make_server: ServerFactory, traced_task: Path, otlp: OtlpReceiver
) -> None:
    server = await make_server(dev_tasks=[traced_task], otel_enabled=True)
    schedule = await server.client.post(
        "/schedules",
        json={"cron": "0 3 * * *", "timezone": "UTC", "inputs_template": INPUTS["inputs"]},
        headers=server.user(),
    )
    assert schedule.status_code == 201, schedule.text
    sid = schedule.json()["id"]
    run = await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())
    assert run.status_code == 201, run.text
    thread = await _settle(server, run.json()["threads"][0])
    assert thread["state"] == "succeeded"
    await asyncio.to_thread(server.services.tracing.shutdown)
    spans = await asyncio.to_thread(otlp.wait_for, {"thread.create", "thread.run"})
    (run_span,) = [s for s in spans if s.name == "thread.run"]
    trace = [s for s in spans if s.trace_id == run_span.trace_id]
    create = _one(trace, "thread.create")
    assert create.attributes["task_framework.schedule_id"] == sid
    assert run_span.parent_span_id == create.span_id
    request = next(s for s in trace if s.span_id == create.parent_span_id)
    assert request.attributes["http.route"] == "/schedules/{schedule_id}:trigger"
