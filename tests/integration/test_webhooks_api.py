"""The /webhooks routes over HTTP: CRUD, validation, secrets, ownership, SSRF refusals."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Server, ServerFactory
from http_contract import assert_problem

PUBLIC_URL = "https://93.184.216.34/hook"
BODY = {"inputs": [{"kind": "json", "value": {"name": "Ada"}}]}


async def _create(server: Server, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await server.client.post(
        "/webhooks", json={"url": PUBLIC_URL, **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()
    return hook


async def test_create_get_update_delete(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    hook = await _create(
        server,
        server.user(),
        events={"exclude": ["thread.started"]},
        data_filters={"detail": "none"},
        scope={"app_id": "app1", "tenant_id": ""},
        timeout_seconds=5,
        api_key="k",
        task_id="hello",
    )
    assert hook["id"].startswith("webhook_")
    assert len(hook["id"]) == 40
    assert hook["secret"].startswith("whsec_")
    assert len(hook["secret"]) == 50
    assert hook["api_key"] is None
    assert hook["has_api_key"] is True
    assert hook["source"] == "manual"
    assert (hook["app_id"], hook["user_id"], hook["created_by"]) == ("app1", "user1", "user1")
    assert hook["scope"] == {"app_id": "app1"}
    assert hook["events"] == {"exclude": ["thread.started"]}
    assert hook["enabled"] is True
    assert hook["disabled_reason"] is None
    got = (await server.client.get(f"/webhooks/{hook['id']}", headers=server.user())).json()
    assert got == {**hook, "secret": None}

    patched = await server.client.patch(
        f"/webhooks/{hook['id']}",
        json={"enabled": False, "api_key": "", "timeout_seconds": 60},
        headers=server.user(),
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["enabled"], body["disabled_reason"]) == (False, "manual")
    assert body["has_api_key"] is False
    assert body["timeout_seconds"] == 60
    assert body["secret"] is None
    assert body["events"] == hook["events"]  # omitted fields keep their value

    regenerated = await server.client.post(
        f"/webhooks/{hook['id']}:regenerate-secret", headers=server.user()
    )
    assert regenerated.status_code == 200
    assert regenerated.json()["secret"].startswith("whsec_")
    assert regenerated.json()["secret"] != hook["secret"]

    assert (
        await server.client.delete(f"/webhooks/{hook['id']}", headers=server.user())
    ).status_code == 204
    for path in (f"/webhooks/{hook['id']}", f"/webhooks/{hook['id']}/deliveries"):
        missing = await server.client.get(path, headers=server.user())
        assert missing.status_code == 404
        assert missing.json()["detail"]["code"] == "WEBHOOK_NOT_FOUND"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/"},
        {"url": PUBLIC_URL, "events": {"include": ["thread.nope"]}},
        {"url": PUBLIC_URL, "events": {"include": []}},
        {
            "url": PUBLIC_URL,
            "events": {"include": ["thread.created"], "exclude": ["thread.failed"]},
        },
        {"url": PUBLIC_URL, "scope": {}},
        {"url": PUBLIC_URL, "timeout_seconds": 0},
        {"url": PUBLIC_URL, "timeout_seconds": 61},
        {"url": PUBLIC_URL, "data_filters": {"detail": "everything"}},
        {},
    ],
)
async def test_invalid_bodies_are_422(make_server: ServerFactory, body: dict[str, Any]) -> None:
    server = await make_server()
    response = await server.client.post("/webhooks", json=body, headers=server.user())
    assert_problem(response, 422, "VALIDATION_FAILED")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/",
    ],
)
async def test_internal_urls_are_refused_everywhere(make_server: ServerFactory, url: str) -> None:
    server = await make_server()
    created = await server.client.post("/webhooks", json={"url": url}, headers=server.user())
    assert created.status_code == 400
    assert created.json()["detail"]["code"] == "WEBHOOK_INVALID_URL"
    hook = await _create(server, server.user())
    patched = await server.client.patch(
        f"/webhooks/{hook['id']}", json={"url": url}, headers=server.user()
    )
    assert patched.status_code == 400
    assert patched.json()["detail"]["code"] == "WEBHOOK_INVALID_URL"
    thread = await server.client.post(
        "/threads",
        json={"mode": "async", **BODY, "webhook": {"callback_url": url}},
        headers=server.user(),
    )
    assert thread.status_code == 400
    assert thread.json()["detail"]["code"] == "WEBHOOK_INVALID_URL"
    listed = (await server.client.get("/threads", headers=server.user())).json()
    assert listed["pagination"]["total"] == 0  # nothing persisted


async def test_adhoc_events_are_checked(make_server: ServerFactory) -> None:
    server = await make_server()
    response = await server.client.post(
        "/threads",
        json={"mode": "async", **BODY, "webhooks": [{"callback_url": PUBLIC_URL, "events": ["x"]}]},
        headers=server.user(),
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "VALIDATION_FAILED"


async def test_ownership_and_listing(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    alice = server.user("app1", "alice")
    bob = server.user("app1", "bob")
    for i in range(3):
        await _create(server, alice, task_id="hello" if i else None)
    bobs = await _create(server, bob)
    global_hook = await _create(server, server.admin)
    assert (global_hook["app_id"], global_hook["user_id"]) == (None, None)

    page = (await server.client.get("/webhooks?limit=2", headers=alice)).json()
    assert page["pagination"]["total"] == 3
    assert page["pagination"]["has_more"] is True
    rest = (
        await server.client.get(
            "/webhooks", params={"limit": 2, "cursor": page["pagination"]["cursor"]}, headers=alice
        )
    ).json()
    ids = [h["id"] for h in page["items"] + rest["items"]]
    assert len(set(ids)) == 3
    assert bobs["id"] not in ids
    assert all(h["secret"] is None for h in page["items"])
    filtered = (await server.client.get("/webhooks?task_id=hello", headers=alice)).json()
    assert filtered["pagination"]["total"] == 2
    assert (await server.client.get("/webhooks?is_enabled=false", headers=alice)).json()[
        "pagination"
    ]["total"] == 0
    everything = (await server.client.get("/webhooks", headers=server.admin)).json()
    assert everything["pagination"]["total"] == 5

    for method, path in (
        ("GET", f"/webhooks/{bobs['id']}"),
        ("PATCH", f"/webhooks/{bobs['id']}"),
        ("DELETE", f"/webhooks/{bobs['id']}"),
        ("POST", f"/webhooks/{bobs['id']}:regenerate-secret"),
        ("GET", f"/webhooks/{bobs['id']}/deliveries"),
    ):
        kwargs: dict[str, Any] = {"json": {}} if method == "PATCH" else {}
        response = await server.client.request(method, path, headers=alice, **kwargs)
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"]["code"] == "WEBHOOK_NOT_FOUND"
    admin_view = await server.client.get(f"/webhooks/{bobs['id']}", headers=server.admin)
    assert admin_view.status_code == 200


async def test_deliveries_routes_validate(make_server: ServerFactory) -> None:
    server = await make_server()
    hook = await _create(server, server.user())
    empty = (
        await server.client.get(f"/webhooks/{hook['id']}/deliveries", headers=server.user())
    ).json()
    assert empty == {"items": [], "pagination": {"cursor": None, "has_more": False, "total": 0}}
    bad = await server.client.get(
        f"/webhooks/{hook['id']}/deliveries?status=weird", headers=server.user()
    )
    assert bad.status_code == 422
    for path in (
        f"/webhooks/{hook['id']}/deliveries/delivery_{'0' * 32}",
        f"/webhooks/{hook['id']}/deliveries/delivery_{'0' * 32}:redeliver",
    ):
        method = "POST" if path.endswith(":redeliver") else "GET"
        response = await server.client.request(method, path, headers=server.user())
        assert response.status_code == 404
        assert response.json()["detail"]["code"] == "DELIVERY_NOT_FOUND"
    bad_cursor = await server.client.get(
        f"/webhooks/{hook['id']}/deliveries?cursor=nonsense", headers=server.user()
    )
    assert bad_cursor.status_code == 400
