"""Webhook delivery to a real receiver on loopback (private addresses allowed here)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from standardwebhooks import Webhook

from conftest import Server, ServerFactory
from task_framework.services.events import insert_events, thread_event
from webhook_receiver import Receiver

BODY = {"inputs": [{"kind": "json", "value": {"name": "Ada"}, "ref": "in"}]}
ALLOW = {"webhook_allow_private_networks": True}


def verify_task_signature(secret: str, header: str, body: bytes, *, tolerance: int = 300) -> None:
    """The receiver-side check documented in docs/how-to/webhooks.md."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    assert abs(time.time() - timestamp) <= tolerance
    key = secret.removeprefix("whsec_").encode()
    expected = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
async def receiver() -> Any:
    rx = await Receiver().start()
    yield rx
    await rx.stop()


async def _webhook(server: Server, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await server.client.post("/webhooks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()
    return hook


async def _deliveries(server: Server, hook_id: str, **query: str) -> list[dict[str, Any]]:
    response = await server.client.get(
        f"/webhooks/{hook_id}/deliveries", params={"limit": "1000", **query}, headers=server.admin
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_signed_delivery_verifies_with_both_schemes(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    server = await make_server(database_url=database_url, **ALLOW)
    hook = await _webhook(
        server,
        server.user(),
        url=receiver.url,
        events={"include": ["thread.succeeded"]},
        api_key="receiver-key",
    )
    thread = (
        await server.client.post("/threads", json={"mode": "sync", **BODY}, headers=server.user())
    ).json()
    (request,) = await receiver.wait_for(1)
    headers, body = request.headers, request.body
    # Standard Webhooks library, against the raw bytes as received.
    payload = Webhook(hook["secret"]).verify(body, headers)
    verify_task_signature(hook["secret"], headers["x-task-signature"], body)
    assert headers["x-task-event-type"] == "thread.succeeded"
    assert headers["x-task-webhook-id"] == hook["id"]
    assert headers["x-api-key"] == "receiver-key"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("task-framework/")
    assert headers["webhook-id"] == payload["event_id"]
    assert payload["event_type"] == "thread.succeeded"
    assert payload["thread_id"] == thread["id"]
    assert payload["thread"]["state"] == "succeeded"
    assert payload["metadata"]["user_id"] == "user1"
    assert {a["ref"] for a in payload["artifacts"]} == {"in", "greeting", "greeting.txt"}
    assert body == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert b'": null' not in body  # keys with no value are omitted
    # A tampered body fails both checks.
    with pytest.raises(AssertionError):
        verify_task_signature(hook["secret"], headers["x-task-signature"], body + b" ")
    with pytest.raises(Exception, match="signature"):
        Webhook(hook["secret"]).verify(body + b" ", headers)
    delivery = (await _until(lambda: _deliveries(server, hook["id"], status="success")))[0]
    assert delivery["status_code"] == 200
    assert delivery["attempt"] == 1
    assert delivery["event_id"] == payload["event_id"]
    assert delivery["event_payload"] == payload
    assert delivery["delivery_url"] == receiver.url


async def test_500_is_retried_until_200(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503, 200]
    server = await make_server(
        database_url=database_url, webhook_retry_schedule=[0.2, 0.2, 0.2], **ALLOW
    )
    hook = await _webhook(
        server, server.user(), url=receiver.url, events={"include": ["thread.created"]}
    )
    await server.client.post("/threads", json={"mode": "async", **BODY}, headers=server.user())
    requests = await receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # same event each time
    assert len({r.headers["x-task-delivery-id"] for r in requests}) == 3

    async def settled() -> list[dict[str, Any]]:
        items = await _deliveries(server, hook["id"])
        return items if any(d["status"] == "success" for d in items) else []

    items = sorted(await _until(settled), key=lambda d: d["attempt"])
    assert [(d["attempt"], d["status"], d["status_code"]) for d in items] == [
        (1, "failed", 500),
        (2, "failed", 503),
        (3, "success", 200),
    ]
    assert items[0]["error"] == "HTTP 500"
    current = (await server.client.get(f"/webhooks/{hook['id']}", headers=server.user())).json()
    assert current["enabled"] is True
    assert current["secret"] is None


async def test_410_disables_and_redeliver(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    receiver.statuses = [410, 200]
    server = await make_server(database_url=database_url, webhook_retry_schedule=[0.1], **ALLOW)
    hook = await _webhook(
        server, server.user(), url=receiver.url, events={"include": ["thread.created"]}
    )
    await server.client.post("/threads", json={"mode": "async", **BODY}, headers=server.user())
    await receiver.wait_for(1)

    async def disabled() -> dict[str, Any] | None:
        got = (await server.client.get(f"/webhooks/{hook['id']}", headers=server.user())).json()
        return got if not got["enabled"] else None

    assert (await _until(disabled))["disabled_reason"] == "gone"
    (failed,) = await _deliveries(server, hook["id"])
    assert (failed["status"], failed["status_code"]) == ("failed", 410)
    path = f"/webhooks/{hook['id']}/deliveries/{failed['id']}:redeliver"
    refused = await server.client.post(path, headers=server.user())
    assert refused.status_code == 400
    assert refused.json()["detail"]["code"] == "VALIDATION_FAILED"
    enabled = await server.client.patch(
        f"/webhooks/{hook['id']}", json={"enabled": True}, headers=server.user()
    )
    assert enabled.json()["disabled_reason"] is None
    queued = await server.client.post(path, headers=server.user())
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "pending"
    assert queued.json()["attempt"] == 2
    requests = await receiver.wait_for(2)
    assert requests[1].headers["webhook-id"] == requests[0].headers["webhook-id"]
    assert requests[1].body == requests[0].body  # the stored payload, re-signed
    Webhook(hook["secret"]).verify(requests[1].body, requests[1].headers)
    one = await server.client.get(
        f"/webhooks/{hook['id']}/deliveries/{queued.json()['id']}", headers=server.user()
    )
    assert one.status_code == 200

    async def delivered() -> bool:
        got = await server.client.get(
            f"/webhooks/{hook['id']}/deliveries/{queued.json()['id']}", headers=server.user()
        )
        return bool(got.json()["status"] == "success")

    await _until(delivered)


async def test_events_stay_within_their_tenant(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    server = await make_server(database_url=database_url, **ALLOW)
    other = await Receiver().start()
    everything = await Receiver().start()
    try:
        mine = await _webhook(server, server.user("app1", "alice"), url=receiver.url)
        theirs = await _webhook(server, server.user("app1", "bob"), url=other.url)
        await _webhook(server, server.admin, url=everything.url)
        for who in ("alice", "bob"):
            response = await server.client.post(
                "/threads", json={"mode": "sync", **BODY}, headers=server.user("app1", who)
            )
            assert response.status_code == 201
        # created, artifact.created, started, 2 x artifact.created, succeeded per thread
        await everything.wait_for(12)
        await receiver.wait_for(6)
        await other.wait_for(6)
        await asyncio.sleep(0.3)
        for rx, user in ((receiver, "alice"), (other, "bob")):
            users = {json.loads(r.body)["metadata"]["user_id"] for r in rx.requests}
            assert users == {user}
        assert len(everything.requests) == 12
        # Deliveries of a foreign webhook answer 404, like an unknown one.
        foreign = await server.client.get(
            f"/webhooks/{theirs['id']}/deliveries", headers=server.user("app1", "alice")
        )
        assert foreign.status_code == 404
        assert foreign.json()["detail"]["code"] == "WEBHOOK_NOT_FOUND"
        assert (
            await server.client.get(
                f"/webhooks/{mine['id']}/deliveries", headers=server.user("app1", "alice")
            )
        ).json()["pagination"]["total"] == 6
    finally:
        await other.stop()
        await everything.stop()


async def test_adhoc_webhook_receives_only_its_thread(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    server = await make_server(database_url=database_url, **ALLOW)
    adhoc = {"callback_url": receiver.url, "events": ["thread.created", "thread.succeeded"]}
    first = await server.client.post(
        "/threads", json={"mode": "sync", **BODY, "webhooks": [adhoc]}, headers=server.user()
    )
    await server.client.post("/threads", json={"mode": "sync", **BODY}, headers=server.user())
    requests = await receiver.wait_for(2)
    await asyncio.sleep(0.3)
    assert [r.headers["x-task-event-type"] for r in requests] == [
        "thread.created",
        "thread.succeeded",
    ]
    assert {json.loads(r.body)["thread_id"] for r in requests} == {first.json()["id"]}
    listed = (await server.client.get("/webhooks?source=thread", headers=server.user())).json()
    assert listed["pagination"]["total"] == 1
    assert listed["items"][0]["scope"] == {"thread_id": first.json()["id"]}
    deleted = await server.client.delete(f"/threads/{first.json()['id']}", headers=server.user())
    assert deleted.status_code == 204
    listed = (await server.client.get("/webhooks?source=thread", headers=server.user())).json()
    assert listed["pagination"]["total"] == 0


async def test_blocked_address_at_delivery_time(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    """The allow-list admits the URL; at delivery the address is checked again."""
    server = await make_server(database_url=database_url, **ALLOW)
    hook = await _webhook(
        server, server.admin, url=receiver.url, events={"include": ["thread.created"]}
    )
    server.services.webhooks.guard.allow_private = False  # as if DNS now pointed inward
    await server.client.post("/threads", json={"mode": "async", **BODY}, headers=server.user())
    failed = (await _until(lambda: _deliveries(server, hook["id"], status="failed")))[0]
    assert failed["error"] == "blocked address"
    assert failed["status_code"] is None
    assert receiver.requests == []


@pytest.mark.postgres
async def test_event_committed_late_is_not_skipped(
    make_server: ServerFactory, postgres_url: str, receiver: Receiver
) -> None:
    """PostgreSQL numbers events before commit: a lower number can appear after a higher
    one. The fan-out waits for the open transaction instead of skipping its event."""
    server = await make_server(database_url=postgres_url, **ALLOW)
    await _webhook(server, server.admin, url=receiver.url, events={"include": ["thread.created"]})
    late = thread_event(
        "thread.created",
        {"id": "thread_" + "a" * 32, "state": "queued", "created_at": "2026-01-01T00:00:00Z"},
        owner=(None, None),
    )
    engine = server.services.db.engine
    conn = engine.connect()
    transaction = conn.begin()
    try:
        insert_events(conn, [late])  # takes a sequence number, not committed yet
        created = await server.client.post(
            "/threads", json={"mode": "async", **BODY}, headers=server.user()
        )
        await asyncio.sleep(1.0)
        assert [json.loads(r.body)["thread_id"] for r in receiver.requests] == []
        transaction.commit()
    finally:
        conn.close()
    requests = await receiver.wait_for(2)
    assert {json.loads(r.body)["thread_id"] for r in requests} == {
        late["thread_id"],
        created.json()["id"],
    }
