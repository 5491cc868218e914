"""Thread lifecycle over HTTP (API.md §3, §5.1, §15.2, §15.3): idempotency, timeout, stop,
retry, delete, archive, logs, crashes, the concurrency limit and the event outbox."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conftest import HELLO_TASK, Server, ServerFactory
from http_contract import TERMINAL, admin_total, assert_problem, wait_thread, write_dev_task
from task_framework.store.tables import events

pytestmark = pytest.mark.slow

INPUTS = [{"kind": "json", "value": {"name": "Ada"}}]
SLEEPER = """
import asyncio
from task_framework.models.artifact import Artifact


async def run(context):
    await context.publish_output_artifacts([Artifact(kind="text", ref="started", text="up")])
    await asyncio.sleep(float(context.params.get("seconds", 3600)))
"""
BOOM = """
def run(context):
    raise RuntimeError("kaboom")
"""
CRASH = """
import os


def run(context):
    os._exit(3)
"""
QUIET_SECONDS = 1.5
"""Longer than the executor's idle poll (1 s): time in which a claimable thread starts."""


async def _server(make_server: ServerFactory, database_url: str, tmp_path: Path) -> Server:
    root = tmp_path / "tasks"
    tasks = [
        HELLO_TASK,
        write_dev_task(root, "sleeper", SLEEPER),
        write_dev_task(root, "boom", BOOM),
        write_dev_task(root, "crash", CRASH),
    ]
    return await make_server(database_url=database_url, dev_tasks=tasks)


async def _post(
    server: Server,
    task_id: str,
    *,
    mode: str = "sync",
    status: int | None = None,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    response = await server.client.post(
        "/threads",
        params={"task_id": task_id},
        json={"mode": mode, "inputs": INPUTS, **body},
        headers=headers or server.user(),
    )
    expected = status or (201 if mode == "sync" else 202)
    assert response.status_code == expected, response.text
    thread: dict[str, Any] = response.json()
    return thread


async def _event_types(server: Server, thread_id: str) -> list[str]:
    rows = await server.services.db.tx(
        lambda conn: conn.execute(
            select(events.c.event_type)
            .where(events.c.thread_id == thread_id)
            .order_by(events.c.seq)
        ).all()
    )
    return [row.event_type for row in rows]


async def _wait_published(server: Server, thread_id: str) -> None:
    """Wait until the sleeper runs and has published its "started" output."""
    while not (await wait_thread(server, thread_id, frozenset({"running"})))["outputs"]:
        await asyncio.sleep(0.05)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_idempotency(make_server: ServerFactory, database_url: str, tmp_path: Path) -> None:
    server = await _server(make_server, database_url, tmp_path)
    client, user = server.client, server.user()
    keyed = {**user, "Idempotency-Key": "k1"}
    first = await _post(server, "hello", headers=keyed)
    replay = await _post(server, "hello", headers=keyed, status=200)
    assert replay["id"] == first["id"]
    assert replay["state"] == "succeeded"
    # Whatever the mode or body, the key answers with the original thread.
    replay = await _post(server, "hello", mode="async", headers=keyed, status=200, name="other")
    assert replay["id"] == first["id"]
    assert replay["name"] is None
    assert await admin_total(server, "/threads") == 1

    # The body field wins over the header.
    both = await _post(
        server, "hello", headers={**user, "Idempotency-Key": "k-header"}, idempotency_key="k-body"
    )
    again = await _post(server, "hello", headers={**user, "Idempotency-Key": "k-body"}, status=200)
    assert again["id"] == both["id"]
    fresh = await _post(server, "hello", headers={**user, "Idempotency-Key": "k-header"})
    assert fresh["id"] not in (first["id"], both["id"])
    # Keys are scoped to the caller's identity.
    other = await _post(
        server, "hello", headers={**server.user("app1", "user2"), "Idempotency-Key": "k1"}
    )
    assert other["id"] != first["id"]
    assert await admin_total(server, "/threads") == 4

    # Concurrent duplicates: exactly one thread; every answer names it.
    racing = {**user, "Idempotency-Key": "k-race"}
    responses = await asyncio.gather(
        *(
            client.post(
                "/threads",
                params={"task_id": "hello"},
                json={"mode": "async", "inputs": INPUTS},
                headers=racing,
            )
            for _ in range(6)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [202], [
        r.text for r in responses
    ]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await admin_total(server, "/threads") == 5
    await wait_thread(server, responses[0].json()["id"])


async def test_timeout(make_server: ServerFactory, database_url: str, tmp_path: Path) -> None:
    server = await _server(make_server, database_url, tmp_path)
    thread = await _post(server, "sleeper", timeout_seconds=1)
    assert thread["state"] == "timeout"
    assert thread["error"] == {
        "code": "TASK_TIMEOUT",
        "message": "Task execution timed out",
        "exception_type": "TimeoutError",
        "stack_trace": None,
        "details": None,
    }
    assert (_ts(thread["finished_at"]) - _ts(thread["started_at"])).total_seconds() >= 1
    # Worker start-up counts towards the timeout, so "started" may not have been published.
    assert [o["ref"] for o in thread["outputs"]] in ([], ["started"])
    assert (await _event_types(server, thread["id"]))[-1] == "thread.timeout"
    # The settled state stays once the process is gone, and the server still works.
    await asyncio.sleep(QUIET_SECONDS)
    assert (await wait_thread(server, thread["id"]))["state"] == "timeout"
    assert (await _post(server, "hello"))["state"] == "succeeded"


async def test_stop_queued_and_running(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    server = await _server(make_server, database_url, tmp_path)
    client, user = server.client, server.user()
    settings = await client.put(
        "/admin/settings", json={"max_concurrent_threads": 1}, headers=server.admin
    )
    assert settings.status_code == 200, settings.text
    busy = await _post(server, "sleeper", mode="async")
    await _wait_published(server, busy["id"])
    waiting = await _post(server, "hello", mode="async", name="waits")
    await asyncio.sleep(QUIET_SECONDS)
    assert (await wait_thread(server, waiting["id"], frozenset({"queued"})))["state"] == "queued"
    counts = (await client.get("/admin/settings", headers=server.admin)).json()
    assert (counts["current_running_threads"], counts["current_queued_threads"]) == (1, 1)

    stopped = await client.post(f"/threads/{waiting['id']}:stop", headers=user)
    assert stopped.status_code == 202, stopped.text
    body = stopped.json()
    assert body["state"] == "stopped"
    assert body["finished_at"]
    assert body["started_at"] is None
    assert body["error"] is None

    response = await client.post(f"/threads/{busy['id']}:stop", headers=user)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "stopped"
    # Past the stop grace the process is gone; nothing overwrote "stopped", the queued
    # thread never ran although the slot is free, and published outputs are kept.
    await asyncio.sleep(QUIET_SECONDS)
    after = await wait_thread(server, busy["id"])
    assert after["state"] == "stopped"
    assert after["error"] is None
    assert [o["ref"] for o in after["outputs"]] == ["started"]
    never = await wait_thread(server, waiting["id"])
    assert never["state"] == "stopped"
    assert never["started_at"] is None
    assert never["outputs"] == []
    assert await _event_types(server, waiting["id"]) == [
        "thread.created",
        "artifact.created",
        "thread.stopped",
    ]
    assert (await _event_types(server, busy["id"]))[-1] == "thread.stopped"
    assert (await _event_types(server, busy["id"])).count("thread.stopped") == 1

    for tid, state in ((waiting["id"], "stopped"), (busy["id"], "stopped")):
        assert_problem(
            await client.post(f"/threads/{tid}:stop", headers=user),
            400,
            "THREAD_INVALID_STATE",
            detail=f"Thread {tid} is in state {state}, cannot stop",
        )

    # Retrying the stopped thread runs it as a new thread with fresh input copies.
    retried = await client.post(f"/threads/{waiting['id']}:retry", headers=user)
    assert retried.status_code == 201, retried.text
    new = retried.json()
    assert new["id"] != waiting["id"]
    assert new["state"] == "succeeded"
    assert new["attempt"] == 1
    assert new["name"] is None
    assert [o["value"] or o["text"] for o in new["outputs"]] == [
        {"greeting": "Hello, Ada!"},
        "Hello, Ada!",
    ]
    assert (await wait_thread(server, waiting["id"])) == never


async def test_stop_answers_a_waiting_sync_request(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    server = await _server(make_server, database_url, tmp_path)
    pending = asyncio.create_task(
        server.client.post(
            "/threads",
            params={"task_id": "sleeper"},
            json={"mode": "sync", "inputs": INPUTS},
            headers=server.user(),
        )
    )
    running: list[dict[str, Any]] = []
    while not running:
        await asyncio.sleep(0.05)
        listed = await server.client.get(
            "/threads", params={"state": "running"}, headers=server.user()
        )
        running = listed.json()["items"]
    stop = await server.client.post(f"/threads/{running[0]['id']}:stop", headers=server.user())
    assert stop.status_code == 202, stop.text
    response = await asyncio.wait_for(pending, 30)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "stopped"


async def test_failed_thread_and_retry(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    server = await _server(make_server, database_url, tmp_path)
    client, user = server.client, server.user()
    failed = await _post(server, "boom", name="first", params={"p": 1}, metadata={"custom": "x"})
    assert failed["state"] == "failed"
    error = failed["error"]
    assert (error["code"], error["message"], error["exception_type"]) == (
        "TASK_EXCEPTION",
        "kaboom",
        "RuntimeError",
    )
    assert error["stack_trace"] is None
    for response in (
        await client.get(f"/threads/{failed['id']}", headers=user),
        await client.get("/threads", headers=user),
    ):
        body = response.json()
        thread = body["items"][0] if "items" in body else body
        assert thread["error"]["stack_trace"] is None
    as_admin = (await client.get(f"/threads/{failed['id']}", headers=server.admin)).json()
    assert "kaboom" in as_admin["error"]["stack_trace"]
    listed = (await client.get("/threads", headers=server.admin)).json()["items"][0]
    assert "kaboom" in listed["error"]["stack_trace"]
    original = (await client.get(f"/threads/{failed['id']}", headers=user)).json()

    response = await client.post(f"/threads/{failed['id']}:retry", json={}, headers=user)
    assert response.status_code == 201, response.text
    retry = response.json()
    assert retry["id"] != failed["id"]
    assert retry["state"] == "failed"
    assert retry["error"]["code"] == "TASK_EXCEPTION"
    assert retry["error"]["stack_trace"] is None
    assert retry["attempt"] == 1
    assert retry["name"] is None
    assert retry["params"] == {"p": 1}
    assert retry["metadata"] == failed["metadata"]
    assert retry["metadata"]["custom"] == "x"
    [copy], [source] = retry["inputs"], failed["inputs"]
    assert copy["id"] != source["id"]
    assert copy["thread_id"] == retry["id"]
    assert copy["direction"] == "input"
    assert (copy["kind"], copy["value"]) == (source["kind"], source["value"])
    assert retry["outputs"] == []

    # Async retry of the retry; the attempt keeps counting.
    response = await client.post(
        f"/threads/{retry['id']}:retry", json={"mode": "async"}, headers=user
    )
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "queued"
    assert response.json()["attempt"] == 2
    assert (await wait_thread(server, response.json()["id"]))["state"] == "failed"

    # A task hint runs another task; an admin's retry keeps the original owner.
    response = await client.post(
        f"/threads/{failed['id']}:retry", params={"task_id": "hello"}, headers=server.admin
    )
    assert response.status_code == 201, response.text
    hinted = response.json()
    assert hinted["state"] == "succeeded"
    assert hinted["metadata"]["task_id"] == "hello"
    assert (hinted["metadata"]["app_id"], hinted["metadata"]["user_id"]) == ("app1", "user1")
    assert (await client.get(f"/threads/{hinted['id']}", headers=user)).status_code == 200
    assert_problem(
        await client.post(
            f"/threads/{failed['id']}:retry", params={"task_id": "gone"}, headers=user
        ),
        404,
        "TASK_NOT_FOUND",
    )

    # The original is unchanged; a succeeded thread cannot be retried.
    assert (await client.get(f"/threads/{failed['id']}", headers=user)).json() == original
    assert_problem(
        await client.post(f"/threads/{hinted['id']}:retry", headers=user),
        400,
        "THREAD_INVALID_STATE",
        detail=f"Thread {hinted['id']} is in state succeeded, cannot retry",
    )


async def test_delete_and_archive(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    server = await _server(make_server, database_url, tmp_path)
    client, user = server.client, server.user()
    busy = await _post(server, "sleeper", mode="async")
    await wait_thread(server, busy["id"], frozenset({"running"}))
    assert_problem(
        await client.delete(f"/threads/{busy['id']}", headers=user),
        400,
        "THREAD_INVALID_STATE",
        detail=f"Thread {busy['id']} is in state running, cannot delete",
    )
    assert (await client.post(f"/threads/{busy['id']}:stop", headers=user)).status_code == 202

    # Archive: idempotent, hidden from lists unless asked for.
    done = await _post(server, "hello")
    output = done["outputs"][0]
    first = await client.post(f"/artifacts/{output['id']}:archive", headers=user)
    second = await client.post(f"/artifacts/{output['id']}:archive", headers=user)
    assert first.status_code == second.status_code == 200
    assert first.json()["archived"] is True
    assert first.json()["archived_at"]
    assert second.json() == first.json()
    listed = (await client.get("/artifacts", params={"thread_id": done["id"]}, headers=user)).json()
    assert output["id"] not in {a["id"] for a in listed["items"]}
    listed = (
        await client.get(
            "/artifacts", params={"thread_id": done["id"], "include_archived": "true"}, headers=user
        )
    ).json()
    assert output["id"] in {a["id"] for a in listed["items"]}

    # Deleting one artifact.
    text_output = done["outputs"][1]
    assert (await client.delete(f"/artifacts/{text_output['id']}", headers=user)).status_code == 204
    assert_problem(
        await client.get(f"/artifacts/{text_output['id']}", headers=user), 404, "ARTIFACT_NOT_FOUND"
    )
    thread = (await client.get(f"/threads/{done['id']}", headers=user)).json()
    assert [o["id"] for o in thread["outputs"]] == [output["id"]]

    # An input still referenced by another thread outlives its own thread.
    shared = done["inputs"][0]
    user_of = await _post(
        server, "hello", inputs=[{"id": shared["id"], "kind": "json", "value": {}}]
    )
    assert user_of["inputs"][0]["id"] == shared["id"]
    assert (await client.delete(f"/threads/{done['id']}", headers=user)).status_code == 204
    assert_problem(
        await client.get(f"/threads/{done['id']}", headers=user), 404, "THREAD_NOT_FOUND"
    )
    assert_problem(
        await client.get(f"/threads/{done['id']}/artifacts", headers=user), 404, "THREAD_NOT_FOUND"
    )
    assert_problem(
        await client.get(f"/artifacts/{output['id']}", headers=user), 404, "ARTIFACT_NOT_FOUND"
    )
    assert await _event_types(server, done["id"]) == []
    assert (await client.get(f"/artifacts/{shared['id']}", headers=user)).status_code == 200
    kept = (await client.get(f"/threads/{user_of['id']}", headers=user)).json()
    assert kept["inputs"][0]["id"] == shared["id"]
    assert_problem(
        await client.delete(f"/threads/{done['id']}", headers=user), 404, "THREAD_NOT_FOUND"
    )
    # Stopped threads are terminal: deletable.
    await wait_thread(server, busy["id"])
    assert (await client.delete(f"/threads/{busy['id']}", headers=user)).status_code == 204


async def test_logs_and_event_outbox(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    thread = await _post(server, "hello")
    logs = (await server.client.get(f"/threads/{thread['id']}/logs", headers=server.user())).json()
    seqs = [r["seq"] for r in logs["items"]]
    assert seqs == sorted(seqs)
    greeting = [r for r in logs["items"] if r["message"] == "greeting Ada"]
    assert len(greeting) == 1
    assert greeting[0]["stream"] == "log"
    assert greeting[0]["level"] == "INFO"
    only_log = (
        await server.client.get(
            f"/threads/{thread['id']}/logs", params={"stream": "log"}, headers=server.user()
        )
    ).json()
    assert {r["stream"] for r in only_log["items"]} == {"log"}
    assert greeting[0] in only_log["items"]

    assert await _event_types(server, thread["id"]) == [
        "thread.created",
        "artifact.created",
        "thread.started",
        "artifact.created",
        "artifact.created",
        "thread.succeeded",
    ]


async def test_crash_fails_only_that_thread(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await _server(make_server, f"sqlite:///{tmp_path / 'crash.db'}", tmp_path)
    crashed = await _post(server, "crash")
    assert crashed["state"] == "failed"
    error = crashed["error"]
    assert (error["code"], error["message"], error["exception_type"]) == (
        "TASK_CRASHED",
        "Task process exited with code 3",
        "WorkerCrashed",
    )
    assert (await _event_types(server, crashed["id"]))[-1] == "thread.failed"
    assert (await _post(server, "hello"))["state"] == "succeeded"
    assert (await server.client.get("/health")).status_code == 200


async def test_concurrency_limit(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    server = await _server(make_server, database_url, tmp_path)
    response = await server.client.put(
        "/admin/settings/threads", json={"max_concurrent_threads": 2}, headers=server.admin
    )
    assert response.status_code == 200, response.text
    created = [
        await _post(server, "sleeper", mode="async", params={"seconds": 0.5}) for _ in range(5)
    ]
    seen_running = 0
    while True:
        counts = (await server.client.get("/admin/settings", headers=server.admin)).json()
        assert counts["current_running_threads"] <= 2, counts
        seen_running = max(seen_running, counts["current_running_threads"])
        states = [
            (await server.client.get(f"/threads/{t['id']}", headers=server.admin)).json()["state"]
            for t in created
        ]
        if set(states) <= TERMINAL:
            break
        await asyncio.sleep(0.05)
    assert seen_running >= 1
    finished = [await wait_thread(server, t["id"]) for t in created]
    assert {t["state"] for t in finished} == {"succeeded"}
    # From the recorded times: never more than two overlapping, and FIFO start order.
    marks = sorted(
        [(_ts(t["started_at"]), 1) for t in finished]
        + [(_ts(t["finished_at"]), -1) for t in finished],
        key=lambda mark: (mark[0], mark[1]),
    )
    running = peak = 0
    for _, delta in marks:
        running += delta
        peak = max(peak, running)
    assert peak <= 2
    starts = [_ts(t["started_at"]) for t in finished]
    assert starts == sorted(starts)
