"""The real ``task-framework serve`` with tracing on: spans reach an OTLP/HTTP receiver on
loopback, including those still buffered when the server is told to stop."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otlp_receiver import OtlpReceiver
from procs import TERMINAL, USER, Process, write_task

pytestmark = pytest.mark.slow

TASK = (
    "from task_framework.models.artifact import Artifact\n"
    "def run(context):\n"
    "    context.publish_output_artifacts_sync(\n"
    "        [Artifact(kind='json', ref='trace', value={'traceparent': context.traceparent})]\n"
    "    )\n"
)
INPUTS = [{"kind": "json", "value": {"n": 1}}]


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def test_serve_exports_each_thread_as_one_trace(tmp_path: Path, otlp: OtlpReceiver) -> None:
    task = write_task(tmp_path / "tasks", "traced", TASK)
    env = {
        "TASK_FRAMEWORK_OTEL_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint,
        "OTEL_SERVICE_NAME": "tasks-under-test",
        # Nothing is sent before the stop: the exit must flush the batch.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "TASK_FRAMEWORK_LOG_LEVEL": "DEBUG",
        "TASK_FRAMEWORK_LOG_FORMAT": "json",
    }
    server = Process(tmp_path / "data", [task], env=env)
    trace_id = secrets.token_hex(16)
    try:
        with httpx.Client(base_url=server.base, headers=USER, timeout=30) as client:
            sync = client.post(
                "/threads",
                json={"mode": "sync", "inputs": INPUTS},
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            )
            assert sync.status_code == 201, sync.text
            queued = client.post("/threads", json={"mode": "async", "inputs": INPUTS})
            assert queued.status_code == 202
            for _ in range(200):
                if client.get(f"/threads/{queued.json()['id']}").json()["state"] in TERMINAL:
                    break
                time.sleep(0.05)
        assert otlp.spans == []  # still buffered
    finally:
        server.stop()
    names = {"POST /threads", "thread.create", "thread.run", "worker.run", "thread.settle"}
    spans = otlp.wait_for(names, timeout=10)
    runs = {s.attributes["task_framework.thread_id"]: s for s in spans if s.name == "thread.run"}
    assert set(runs) == {sync.json()["id"], queued.json()["id"]}
    assert runs[sync.json()["id"]].trace_id == trace_id
    assert runs[queued.json()["id"]].trace_id != trace_id
    assert {s.resource["service.name"] for s in spans} == {"tasks-under-test"}
    (output,) = sync.json()["outputs"]
    worker = next(s for s in spans if s.name == "worker.run" and s.trace_id == trace_id)
    assert output["value"]["traceparent"].split("-")[1:3] == [trace_id, worker.span_id]
    records = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    settled = {r["thread_id"]: r for r in records if r.get("event") == "thread.settled"}
    assert settled[sync.json()["id"]]["trace_id"] == trace_id
    assert settled[sync.json()["id"]]["span_id"] == runs[sync.json()["id"]].span_id
