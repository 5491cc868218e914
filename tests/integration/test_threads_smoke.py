"""The core round trip on both databases: sync and async threads through HTTP."""

from __future__ import annotations

import asyncio

from conftest import ServerFactory

BODY = {"inputs": [{"kind": "json", "value": {"name": "Ada"}}]}


async def test_sync_thread_returns_outputs(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    response = await server.client.post(
        "/threads", json={"mode": "sync", **BODY}, headers=server.user()
    )
    assert response.status_code == 201, response.text
    thread = response.json()
    assert thread["state"] == "succeeded"
    assert [o["value"] or o["text"] for o in thread["outputs"]] == [
        {"greeting": "Hello, Ada!"},
        "Hello, Ada!",
    ]
    assert thread["metadata"] == {
        "user_id": "user1",
        "app_id": "app1",
        "task_id": "hello",
        "task_version": "1.0.0",
    }
    assert thread["artifacts"] == thread["inputs"] + thread["outputs"]


async def test_async_thread_is_queued_then_succeeds(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    response = await server.client.post(
        "/threads", json={"mode": "async", **BODY}, headers=server.user()
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["state"] == "queued"
    assert set(queued) == set(
        (await server.client.get(f"/threads/{queued['id']}", headers=server.user())).json()
    )
    for _ in range(200):
        current = (
            await server.client.get(f"/threads/{queued['id']}", headers=server.user())
        ).json()
        if current["state"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert current["state"] == "succeeded"
    assert current["outputs"][0]["value"] == {"greeting": "Hello, Ada!"}
