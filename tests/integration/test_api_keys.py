"""Managed API keys, settings and the public routes (API.md §11, §13, §9, §2)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Server, ServerFactory
from http_contract import assert_problem

BODY = {"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "Ada"}}]}
KEY_RE = re.compile(r"^tfk_[A-Za-z0-9_-]{43}$")
TS_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TS_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
REVOCATION_SECONDS = 1.0
API_KEY_FIELDS = {
    "id",
    "name",
    "role",
    "app_id",
    "user_id",
    "prefix",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
}


async def _create_key(server: Server, **body: Any) -> dict[str, Any]:
    response = await server.client.post("/admin/api-keys", json=body, headers=server.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _as(key: str, app_id: str = "app1", user_id: str = "user1") -> dict[str, str]:
    return {"X-API-Key": key, "X-App-Id": app_id, "X-User-Id": user_id}


async def test_managed_key_lifecycle(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    # A second replica on the same database: revocation must reach it too.
    replica = await make_server(database_url=database_url)
    client = server.client
    created = await _create_key(server, name="ci")
    assert set(created) == API_KEY_FIELDS | {"key"}
    key = created["key"]
    assert KEY_RE.match(key)
    assert created["id"].startswith("apikey_")
    assert created["prefix"] == key[:12]
    assert (created["role"], created["app_id"], created["user_id"]) == ("user", None, None)
    assert TS_US.match(created["created_at"])
    assert created["revoked_at"] is None
    assert created["expires_at"] is None

    listed = (await client.get("/admin/api-keys", headers=server.admin)).json()
    [item] = [i for i in listed["items"] if i["id"] == created["id"]]
    assert set(item) == API_KEY_FIELDS
    assert key not in str(listed)
    assert listed["pagination"]["total"] == len(listed["items"])

    assert (await client.get("/threads", headers=_as(key))).status_code == 200
    assert (await replica.client.get("/threads", headers=_as(key))).status_code == 200
    used = (await client.get("/admin/api-keys", headers=server.admin)).json()["items"]
    assert next(i for i in used if i["id"] == created["id"])["last_used_at"] is not None

    assert (
        await client.delete(f"/admin/api-keys/{created['id']}", headers=server.admin)
    ).status_code == 204
    deadline = time.monotonic() + REVOCATION_SECONDS + 0.5
    for target in (server, replica):
        while True:
            response = await target.client.get("/threads", headers=_as(key))
            if response.status_code == 401 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert_problem(response, 401, "AUTH_INVALID", detail="Invalid API key")

    active = (await client.get("/admin/api-keys", headers=server.admin)).json()["items"]
    assert created["id"] not in {i["id"] for i in active}
    everything = (
        await client.get(
            "/admin/api-keys", params={"include_revoked": "true"}, headers=server.admin
        )
    ).json()["items"]
    revoked = next(i for i in everything if i["id"] == created["id"])
    assert revoked["revoked_at"] is not None

    assert_problem(
        await client.delete("/admin/api-keys/apikey_unknown", headers=server.admin),
        404,
        "API_KEY_NOT_FOUND",
    )


async def test_expiry_roles_and_filters(make_server: ServerFactory) -> None:
    server = await make_server()
    client = server.client
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    # A key that would be born expired is refused; one that expires later stops working.
    assert_problem(
        await client.post(
            "/admin/api-keys", json={"name": "old", "expires_at": past}, headers=server.admin
        ),
        400,
        "VALIDATION_FAILED",
        detail="expires_at must be in the future",
    )
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expired = await _create_key(server, name="old", expires_at=soon)
    await asyncio.sleep(1.1)
    assert_problem(await client.get("/threads", headers=_as(expired["key"])), 401, "AUTH_INVALID")
    valid = await _create_key(server, name="new", expires_at=future)
    assert (await client.get("/threads", headers=_as(valid["key"]))).status_code == 200
    assert valid["expires_at"].endswith("Z")

    assert_problem(
        await client.post(
            "/admin/api-keys",
            json={"name": "x", "role": "admin", "app_id": "a"},
            headers=server.admin,
        ),
        422,
        "VALIDATION_FAILED",
    )
    admin = await _create_key(server, name="ops", role="admin")
    bound = await _create_key(server, name="bound", app_id="appZ", user_id="userZ")
    assert (bound["app_id"], bound["user_id"]) == ("appZ", "userZ")

    # A managed admin key works on A routes (either header) and on K routes without identity.
    for headers in ({"X-Admin-API-Key": admin["key"]}, {"X-API-Key": admin["key"]}):
        assert (await client.get("/admin/settings", headers=headers)).status_code == 200
    assert (await client.get("/threads", headers={"X-API-Key": admin["key"]})).status_code == 200
    # X-Admin-API-Key is checked first.
    assert_problem(
        await client.get(
            "/admin/settings", headers={"X-Admin-API-Key": "tfk_bad", "X-API-Key": server.admin_key}
        ),
        401,
        "AUTH_INVALID",
        detail="Invalid admin API key",
    )
    assert (
        await client.get("/admin/settings", headers={"X-Admin-API-Key": server.admin_key})
    ).status_code == 200
    # A managed regular key is refused on A routes: valid, but without the rights.
    assert_problem(
        await client.get("/admin/api-keys", headers={"X-API-Key": bound["key"]}),
        403,
        "AUTH_FORBIDDEN",
        detail="This route needs an admin API key",
    )

    async def names(**params: str) -> set[str]:
        response = await client.get("/admin/api-keys", params=params, headers=server.admin)
        assert response.status_code == 200, response.text
        return {i["name"] for i in response.json()["items"]}

    assert await names(role="admin") == {"ops"}
    assert await names(app_id="appZ") == {"bound"}
    assert await names(user_id="userZ") == {"bound"}
    assert await names(role="user") == {"old", "new", "bound"}
    page = (await client.get("/admin/api-keys", params={"limit": 2}, headers=server.admin)).json()
    assert page["pagination"]["has_more"] is True
    assert page["pagination"]["total"] == 4
    rest = (
        await client.get(
            "/admin/api-keys",
            params={"limit": 2, "cursor": page["pagination"]["cursor"]},
            headers=server.admin,
        )
    ).json()
    assert {i["id"] for i in page["items"]} | {i["id"] for i in rest["items"]} == {
        k["id"] for k in (expired, valid, admin, bound)
    }

    # Settings: updated_by names the managed key, or "admin" for a configured key.
    response = await client.put(
        "/admin/settings", json={"max_concurrent_threads": 4}, headers={"X-API-Key": admin["key"]}
    )
    assert response.json()["updated_by"] == "ops"


async def test_settings_and_alias(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url, max_concurrent_threads=7)
    client = server.client
    fields = {
        "max_concurrent_threads",
        "updated_at",
        "updated_by",
        "current_running_threads",
        "current_queued_threads",
    }
    initial = (await client.get("/admin/settings", headers=server.admin)).json()
    assert set(initial) == fields
    assert initial["max_concurrent_threads"] == 7
    assert initial["updated_by"] is None
    assert TS_US.match(initial["updated_at"])
    assert (initial["current_running_threads"], initial["current_queued_threads"]) == (0, 0)
    assert (await client.get("/admin/settings/threads", headers=server.admin)).json() == initial

    response = await client.put(
        "/admin/settings", json={"max_concurrent_threads": 3}, headers=server.admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["max_concurrent_threads"] == 3
    assert response.json()["updated_by"] == "admin"
    alias = (await client.get("/admin/settings/threads", headers=server.admin)).json()
    assert alias["max_concurrent_threads"] == 3
    response = await client.put(
        "/admin/settings/threads", json={"max_concurrent_threads": 0}, headers=server.admin
    )
    assert response.json()["max_concurrent_threads"] == 0
    unchanged = await client.put("/admin/settings", json={}, headers=server.admin)
    assert unchanged.status_code == 200
    assert unchanged.json()["max_concurrent_threads"] == 0
    # Another replica on the same database sees the stored value.
    other = await make_server(database_url=database_url, max_concurrent_threads=7)
    shown = (await other.client.get("/admin/settings", headers=other.admin)).json()
    assert shown["max_concurrent_threads"] == 0


async def test_public_routes(make_server: ServerFactory) -> None:
    server = await make_server()
    client = server.client
    health = await client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert {"status", "timestamp", "version", "database", "file_storage", "scheduler"} <= set(body)
    assert body["status"] == "ok"
    assert body["database"] == "available"
    assert body["file_storage"] in ("available", "timeout", "unavailable", "not_configured")
    assert body["scheduler"] in ("running", "stopped")
    assert TS_MS.match(body["timestamp"])
    assert "warning" not in body or body["warning"] is None
    empty = await make_server(dev_tasks=[])
    assert (await empty.client.get("/health")).json()["warning"] == "No tasks registered"

    thread = (await client.post("/threads", json=BODY, headers=server.user())).json()
    assert (await client.get(f"/threads/{thread['id']}", headers=server.user())).status_code == 200
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    pattern = re.compile(
        r'^task_framework_api_requests_total\{[^}]*endpoint="/threads/\{thread_id\}"[^}]*'
        r'method="GET"[^}]*status="200"[^}]*\} 1\.0$|'
        r'^task_framework_api_requests_total\{[^}]*method="GET"[^}]*'
        r'endpoint="/threads/\{thread_id\}"[^}]*\} 1\.0$',
        re.MULTILINE,
    )
    assert pattern.search(metrics.text), metrics.text[:2000]
    assert "X-API-Key" not in metrics.text
    assert server.user_key not in metrics.text

    meta = await client.get("/task/metadata")
    assert meta.status_code == 200
    assert meta.headers["cache-control"] == "public, max-age=300"
    info = meta.json()
    assert set(info) == {
        "name",
        "version",
        "description",
        "timestamp",
        "framework_version",
        "sdk_version",
        "api_version",
        "input_schemas",
        "output_schemas",
    }
    assert (info["name"], info["version"]) == ("hello", "1.0.0")
    assert TS_MS.match(info["timestamp"])
    [schema] = info["input_schemas"]
    assert schema["kind"] == "json"
    assert [f["name"] for f in schema["fields"]] == ["name"]
    assert_problem(
        await client.get("/task/metadata", params={"task_id": "nope"}), 404, "TASK_NOT_FOUND"
    )

    spec = (await client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "Task Framework API"
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["license"]["name"] == "MIT"
    expected = {
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/task/metadata"),
        ("post", "/threads"),
        ("get", "/threads"),
        ("get", "/threads/{thread_id}"),
        ("delete", "/threads/{thread_id}"),
        ("post", "/threads/{thread_id}:stop"),
        ("post", "/threads/{thread_id}:retry"),
        ("get", "/threads/{thread_id}/artifacts"),
        ("get", "/threads/{thread_id}/logs"),
        ("get", "/artifacts"),
        ("get", "/artifacts/{artifact_id}"),
        ("delete", "/artifacts/{artifact_id}"),
        ("post", "/artifacts/{artifact_id}:archive"),
        ("get", "/admin/settings"),
        ("put", "/admin/settings"),
        ("get", "/admin/settings/threads"),
        ("put", "/admin/settings/threads"),
        ("post", "/admin/api-keys"),
        ("get", "/admin/api-keys"),
        ("delete", "/admin/api-keys/{key_id}"),
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= documented, sorted(expected - documented)
    for page in ("/docs", "/redoc"):
        assert (await client.get(page)).status_code == 200
