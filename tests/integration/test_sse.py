"""``GET /threads/{id}/events`` and ``/logs?follow=true`` over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerFactory
from loopback import serve_loopback

pytestmark = pytest.mark.slow

STEPS = 4
TERMINAL_EVENTS = {"thread.succeeded", "thread.failed", "thread.timeout", "thread.stopped"}


def chatty_task(root: Path) -> Path:
    """A task that prints, logs and publishes an output at each step, over ~1.5 s."""
    folder = root / "chatty"
    folder.mkdir()
    (folder / "task_metadata.json").write_text(
        json.dumps({"name": "chatty", "version": "1.0.0", "entry_point": "task:run"})
    )
    (folder / "task.py").write_text(
        "import time\n"
        "from task_framework.models.artifact import Artifact\n\n"
        "def run(context):\n"
        f"    for i in range({STEPS}):\n"
        "        print(f'printed {i}')\n"
        "        context.logger.warning('logged %d', i)\n"
        "        out = Artifact(kind='json', ref=f'out{i}', value={'i': i})\n"
        "        context.publish_output_artifacts_sync([out])\n"
        "        time.sleep(0.4)\n"
    )
    return folder


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE body into {id, event, data} dicts (comments are skipped)."""
    message: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in message:
                yield message
            message = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(": ")
            message[name] = json.loads(value) if name == "data" else value


async def read_all(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [m async for m in sse_messages(response)]


async def test_reconnect_with_last_event_id_has_no_duplicates_and_no_gaps(
    make_server: ServerFactory, tmp_path: Path, database_url: str
) -> None:
    server = await make_server(dev_tasks=[chatty_task(tmp_path)], database_url=database_url)
    user = server.user()
    created = await server.client.post(
        "/threads", headers=user, json={"mode": "async", "inputs": [{"kind": "json", "value": {}}]}
    )
    assert created.status_code == 202
    thread_id = created.json()["id"]
    url = f"/threads/{thread_id}/events"

    async with (
        serve_loopback(server.app) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        first: list[dict[str, Any]] = []
        async with client.stream("GET", url, headers=user) as response:
            assert response.status_code == 200
            async for message in sse_messages(response):
                first.append(message)
                outputs = [
                    m
                    for m in first
                    if m["event"] == "artifact.created" and m["data"]["artifact"].get("ref")
                ]
                # Leave mid-run: after two outputs and at least one log line.
                if len(outputs) >= 2 and any(m["event"] == "log" for m in first):
                    break
        assert first[-1]["event"] not in TERMINAL_EVENTS

        rest = await read_all(client, url, {**user, "Last-Event-ID": first[-1]["id"]})
        full = await read_all(client, url, user)
        by_query = await read_all(client, f"{url}?after={first[3]['id']}", user)

    ids = [m["id"] for m in first + rest]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert ids == [m["id"] for m in full], "the resumed stream has a gap or is out of order"
    assert [m["id"] for m in by_query] == [m["id"] for m in full[4:]]
    assert full[-1]["event"] == "thread.succeeded"
    kinds = [m["event"] for m in full]
    assert kinds[:1] == ["thread.created"]
    assert "thread.started" in kinds
    refs = [m["data"]["artifact"].get("ref") for m in full if m["event"] == "artifact.created"]
    assert [r for r in refs if r] == [f"out{i}" for i in range(STEPS)]
    logs = [m["data"] for m in full if m["event"] == "log"]
    messages = [entry["message"] for entry in logs]
    for i in range(STEPS):
        assert f"printed {i}" in messages
        assert any(f"logged {i}" in text for text in messages)
    assert {entry["stream"] for entry in logs} >= {"stdout", "log"}
    assert all(m["id"].startswith("log_") for m in full if m["event"] == "log")
    event = next(m for m in full if m["event"] == "artifact.created")
    assert event["id"] == event["data"]["event_id"]
    assert event["data"]["thread_id"] == thread_id

    # Every log line and every stored log record agree.
    stored = (await server.client.get(f"/threads/{thread_id}/logs", headers=user)).json()
    assert [r["seq"] for r in stored["items"]] == [entry["seq"] for entry in logs]


async def test_follow_logs_and_errors(make_server: ServerFactory) -> None:
    server = await make_server()
    user = server.user()
    done = await server.client.post(
        "/threads",
        headers=user,
        json={"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "SSE"}}]},
    )
    assert done.status_code == 201
    thread_id = done.json()["id"]

    # A finished thread: the whole stream is replayed and the response ends.
    events = await server.client.get(f"/threads/{thread_id}/events", headers=user)
    assert events.status_code == 200
    assert events.text.rstrip().splitlines()[-1].startswith("data: ")
    assert "event: thread.succeeded" in events.text

    followed = await server.client.get(
        f"/threads/{thread_id}/logs", params={"follow": "true"}, headers=user
    )
    assert followed.status_code == 200
    assert "event: log" in followed.text
    assert "greeting SSE" in followed.text
    assert "event: thread." not in followed.text

    paged = await server.client.get(f"/threads/{thread_id}/logs", headers=user)
    assert paged.status_code == 200
    assert paged.json()["pagination"]["total"] >= 1

    foreign = await server.client.get(
        f"/threads/{thread_id}/events", headers=server.user("app1", "someone-else")
    )
    assert foreign.status_code == 404
    assert foreign.json()["detail"]["code"] == "THREAD_NOT_FOUND"
    unknown = await server.client.get(
        f"/threads/{thread_id}/events", headers={**user, "Last-Event-ID": "event_nope"}
    )
    assert unknown.status_code == 400
    assert unknown.json()["detail"]["code"] == "VALIDATION_FAILED"
    no_key = await server.client.get(f"/threads/{thread_id}/events")
    assert no_key.status_code == 401
