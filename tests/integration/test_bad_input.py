"""Bad input always gets a 4xx in the error envelope (API.md §1.3), never a 500, and a
rejected ``POST /threads`` leaves no trace (§3.1)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import Server, ServerFactory
from http_contract import admin_total, assert_problem

GOOD_INPUT = {"kind": "json", "value": {"name": "Ada"}}
BODY: dict[str, Any] = {"mode": "sync", "inputs": [GOOD_INPUT]}
JSON = {"Content-Type": "application/json"}


async def _stored(server: Server) -> tuple[int, int, int]:
    """(threads, artifacts, events) stored, to prove rejected requests persist nothing."""
    from sqlalchemy import func, select

    from task_framework.store.tables import events

    count = await server.services.db.tx(
        lambda conn: conn.execute(select(func.count()).select_from(events)).scalar_one()
    )
    return (
        await admin_total(server, "/threads"),
        await admin_total(server, "/artifacts", include_archived="true"),
        int(count),
    )


def _cursor(raw: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


# (body, status, code, detail or detail prefix ending in "…")
CREATE_CASES: list[tuple[Any, int, str, str | None]] = [
    ({"inputs": [GOOD_INPUT]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "mode": 5}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "mode": "later"}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": GOOD_INPUT}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": "x"}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": []}, 422, "VALIDATION_FAILED", "inputs must be a non-empty array"),
    ({**BODY, "inputs": [5]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "timeout_seconds": 0}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "timeout_seconds": "soon"}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "params": [1]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "metadata": "m"}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "idempotency_key": ""}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "idempotency_key": "k" * 256}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "webhook": {"callback_url": "ftp://x"}}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "webhooks": [{"events": []}]}, 422, "VALIDATION_FAILED", None),
    ([BODY], 422, "VALIDATION_FAILED", None),
    ("a string", 422, "VALIDATION_FAILED", None),
    (
        {**BODY, "inputs": [{"kind": "text"}]},
        422,
        "VALIDATION_FAILED",
        "Artifact of kind 'text' requires 'text' or 'file_ref'",
    ),
    ({**BODY, "inputs": [{"kind": "json"}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{"kind": "file"}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{"kind": "bundle", "value": []}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "id": "-bad"}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "id": "has space"}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "id": "a" * 129}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "ref": "  "}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "ref": "r" * 256}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "labels": [1]}]}, 422, "VALIDATION_FAILED", None),
    ({**BODY, "inputs": [{**GOOD_INPUT, "kind": 7}]}, 422, "VALIDATION_FAILED", None),
    (
        {**BODY, "inputs": [{**GOOD_INPUT, "ref": "r"}, {**GOOD_INPUT, "ref": "r"}]},
        400,
        "ARTIFACT_REF_CONFLICT",
        "Duplicate ref 'r' within thread inputs",
    ),
    (
        {**BODY, "inputs": [{**GOOD_INPUT, "id": "same"}, {**GOOD_INPUT, "id": "same"}]},
        400,
        "VALIDATION_FAILED",
        None,
    ),
    (
        {**BODY, "inputs": [{"kind": "weird", "value": 1}]},
        400,
        "VALIDATION_FAILED",
        "Invalid input artifact: Invalid artifact type: weird",
    ),
    (
        {**BODY, "inputs": [{"kind": "file", "file_ref": "file_0123456789abcdef"}]},
        400,
        "VALIDATION_FAILED",
        "Invalid input artifact: file 'file_0123456789abcdef' not found",
    ),
    (
        {**BODY, "inputs": [{**GOOD_INPUT, "file_ref": "file_0123456789abcdef"}]},
        400,
        "VALIDATION_FAILED",
        "Invalid input artifact: file 'file_0123456789abcdef' not found",
    ),
    (
        {**BODY, "inputs": [{"kind": "json", "value": {"name": 5}}]},
        400,
        "VALIDATION_FAILED",
        "Input artifact validation failed: artifact with kind 'json' does not match any "
        "allowed schema. Errors: schema 'json': …",
    ),
    (
        {**BODY, "inputs": [{"kind": "json", "value": ["not", "an", "object"]}]},
        400,
        "VALIDATION_FAILED",
        "Input artifact validation failed: …",
    ),
    (
        {**BODY, "inputs": [GOOD_INPUT, {"kind": "text", "text": "hi"}]},
        400,
        "VALIDATION_FAILED",
        "Input artifact validation failed: artifact with kind 'text' does not match any "
        "allowed schema…",
    ),
]


def _check(response: httpx.Response, status: int, code: str, expected: str | None) -> None:
    if expected is not None and expected.endswith("…"):
        assert_problem(response, status, code, detail_prefix=expected[:-1])
    else:
        assert_problem(response, status, code, detail=expected)


async def test_rejected_thread_requests_persist_nothing(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    client, user = server.client, server.user()
    ok = await client.post("/threads", json=BODY, headers=user)
    assert ok.status_code == 201, ok.text
    before = await _stored(server)

    for body, status, code, expected in CREATE_CASES:
        response = await client.post("/threads", json=body, headers=user)
        _check(response, status, code, expected)

    raw_cases: list[tuple[bytes, dict[str, str]]] = [
        (b'{"mode": "sync", "inputs": [', JSON),
        (b"\xff\xfe not utf-8", JSON),
        (b"", JSON),
        (b"mode=sync", {"Content-Type": "application/x-www-form-urlencoded"}),
    ]
    for content, headers in raw_cases:
        response = await client.post("/threads", content=content, headers={**user, **headers})
        assert_problem(response, 422, "VALIDATION_FAILED")

    header_cases: list[tuple[dict[str, str], dict[str, str], int, str, str | None]] = [
        ({}, {}, 401, "AUTH_REQUIRED", "Missing API key"),
        ({"X-API-Key": "tfk_nope"}, {}, 401, "AUTH_INVALID", "Invalid API key"),
        ({"X-API-Key": server.user_key}, {}, 400, "METADATA_REQUIRED", None),
        ({"X-API-Key": server.user_key, "X-App-Id": "a"}, {}, 400, "METADATA_REQUIRED", None),
        ({"X-API-Key": server.user_key, "X-User-Id": "u"}, {}, 400, "METADATA_REQUIRED", None),
        (user, {"task_id": "nope"}, 404, "TASK_NOT_FOUND", "Task 'nope' not found"),
        (
            user,
            {"task_id": "hello", "version": "9.9"},
            404,
            "TASK_NOT_FOUND",
            "Task 'hello' version '9.9' not found",
        ),
        (user, {"version": "9.9"}, 404, "TASK_NOT_FOUND", None),
        ({**user, "Idempotency-Key": "k" * 256}, {}, 422, "VALIDATION_FAILED", None),
    ]
    for headers, params, status, code, expected in header_cases:
        response = await client.post("/threads", json=BODY, params=params, headers=headers)
        _check(response, status, code, expected)

    assert await _stored(server) == before


async def test_oversized_json_body_is_refused(make_server: ServerFactory) -> None:
    server = await make_server(max_json_body_bytes=1024)
    big = {**BODY, "params": {"pad": "x" * 2048}}
    before = await admin_total(server, "/threads")
    response = await server.client.post("/threads", json=big, headers=server.user())
    assert_problem(response, 413, "FILE_SIZE_EXCEEDED")

    async def chunks() -> AsyncIterator[bytes]:
        data = json.dumps(big).encode()
        for start in range(0, len(data), 256):
            yield data[start : start + 256]

    # Without Content-Length the limit is enforced while the body streams in.
    response = await server.client.post(
        "/threads", content=chunks(), headers={**server.user(), **JSON}
    )
    assert_problem(response, 413, "FILE_SIZE_EXCEEDED")
    response = await server.client.put(
        "/admin/settings",
        json={"max_concurrent_threads": 1, "pad": "x" * 2048},
        headers=server.admin,
    )
    assert_problem(response, 413, "FILE_SIZE_EXCEEDED")
    assert await admin_total(server, "/threads") == before
    # A body under the limit still works.
    small = await server.client.post("/threads", json=BODY, headers=server.user())
    assert small.status_code == 201, small.text


async def test_bad_queries_and_cursors(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    client, user = server.client, server.user()
    thread_ids = []
    for _ in range(2):
        created = await client.post("/threads", json=BODY, headers=user)
        thread_ids.append(created.json()["id"])
    artifact_cursor = (await client.get("/artifacts", params={"limit": 1}, headers=user)).json()[
        "pagination"
    ]["cursor"]
    thread_cursor = (await client.get("/threads", params={"limit": 1}, headers=user)).json()[
        "pagination"
    ]["cursor"]
    assert artifact_cursor
    assert thread_cursor
    tid = thread_ids[0]

    cases: list[tuple[str, dict[str, Any], int]] = [
        ("/threads", {"state": "sleeping"}, 422),
        ("/threads", {"created_after": "yesterday"}, 422),
        ("/threads", {"created_before": "2026-13-45T99:00:00Z"}, 422),
        ("/threads", {"started_after": "soon"}, 422),
        ("/threads", {"finished_before": "x"}, 422),
        (
            "/threads",
            {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
            400,
        ),
        (
            "/threads",
            {"created_after": "2026-01-01T01:00:00+02:00", "created_before": "2025-12-31T22:30:00"},
            400,
        ),
        ("/threads", {"limit": 0}, 422),
        ("/threads", {"limit": 1001}, 422),
        ("/threads", {"limit": "ten"}, 422),
        ("/threads", {"offset": -1}, 422),
        ("/threads", {"cursor": "garbage!!"}, 400),
        ("/threads", {"cursor": "bm90IGpzb24"}, 400),
        ("/threads", {"cursor": artifact_cursor}, 400),
        ("/threads", {"cursor": _cursor(["threads", 5, None])}, 400),
        ("/threads", {"cursor": _cursor(["threads", "2026-01-01", "x"])}, 400),
        ("/threads", {"cursor": _cursor(["threads", {"ts": "2026-01-01T00:00:00"}, 7])}, 400),
        ("/threads", {"cursor": _cursor(["threads", {"ts": 5}, "x"])}, 400),
        ("/threads", {"cursor": _cursor(["threads", [1], "x"])}, 400),
        ("/threads", {"cursor": _cursor({"a": 1})}, 400),
        ("/threads", {"cursor": _cursor(["threads"])}, 400),
        ("/artifacts", {"cursor": thread_cursor}, 400),
        ("/artifacts", {"direction": "sideways"}, 422),
        ("/artifacts", {"include_archived": "maybe"}, 422),
        ("/artifacts", {"limit": 0}, 422),
        (f"/threads/{tid}/artifacts", {"cursor": artifact_cursor}, 400),
        (f"/threads/{tid}/artifacts", {"direction": "sideways"}, 422),
        (f"/threads/{tid}/logs", {"stream": "stdin"}, 422),
        (f"/threads/{tid}/logs", {"limit": 1001}, 422),
        (f"/threads/{tid}/logs", {"cursor": thread_cursor}, 400),
        (f"/threads/{tid}/logs", {"cursor": _cursor([f"logs:{tid}", "one", 1])}, 400),
        (f"/threads/{thread_ids[1]}/logs", {"cursor": _cursor([f"logs:{tid}", 1, 1])}, 400),
        ("/admin/api-keys", {"role": "root"}, 422),
        ("/admin/api-keys", {"cursor": thread_cursor}, 400),
    ]
    for path, params, status in cases:
        headers = server.admin if path.startswith("/admin") else user
        response = await client.get(path, params=params, headers=headers)
        problem = assert_problem(response, status, "VALIDATION_FAILED")
        if status == 422:
            assert problem["errors"][0]["loc"][0] == "query", problem
        else:
            assert problem["instance"] == path


async def test_routes_auth_and_admin_bodies(make_server: ServerFactory) -> None:
    server = await make_server()
    client, user = server.client, server.user()
    done = await client.post("/threads", json=BODY, headers=user)
    tid = done.json()["id"]

    assert_problem(await client.get("/nowhere", headers=user), 404, "NOT_FOUND")
    assert_problem(await client.get("/threads/x/nothing", headers=user), 404, "NOT_FOUND")
    assert_problem(await client.put("/threads", json=BODY, headers=user), 405, "METHOD_NOT_ALLOWED")
    assert_problem(await client.patch(f"/threads/{tid}", headers=user), 405, "METHOD_NOT_ALLOWED")
    assert_problem(
        await client.get("/threads/thread_nope", headers=user),
        404,
        "THREAD_NOT_FOUND",
        detail="Thread thread_nope not found",
    )
    assert_problem(
        await client.post(f"/threads/{tid}:retry", json={"mode": "later"}, headers=user),
        422,
        "VALIDATION_FAILED",
    )
    assert_problem(
        await client.post(f"/threads/{tid}:retry", content=b"{", headers={**user, **JSON}),
        422,
        "VALIDATION_FAILED",
    )

    for method, path in (
        ("GET", "/admin/settings"),
        ("PUT", "/admin/settings"),
        ("GET", "/admin/settings/threads"),
        ("GET", "/admin/api-keys"),
        ("POST", "/admin/api-keys"),
        ("DELETE", "/admin/api-keys/apikey_x"),
    ):
        body = {"name": "k"} if method in ("POST", "PUT") else None
        # A valid regular key lacks the rights (403); an unknown key stays 401.
        response = await client.request(method, path, json=body, headers=user)
        assert_problem(response, 403, "AUTH_FORBIDDEN", detail="This route needs an admin API key")
        response = await client.request(
            method, path, json=body, headers={"X-Admin-API-Key": server.user_key}
        )
        assert_problem(response, 403, "AUTH_FORBIDDEN", detail="This route needs an admin API key")
        response = await client.request(
            method, path, json=body, headers={"X-Admin-API-Key": "tfk_unknown"}
        )
        assert_problem(response, 401, "AUTH_INVALID", detail="Invalid admin API key")
        response = await client.request(method, path, json=body)
        assert_problem(response, 401, "AUTH_REQUIRED", detail="Missing admin API key")

    admin_cases: list[tuple[str, str, Any]] = [
        ("PUT", "/admin/settings", {"max_concurrent_threads": -1}),
        ("PUT", "/admin/settings", {"max_concurrent_threads": "many"}),
        ("PUT", "/admin/settings/threads", [1]),
        ("POST", "/admin/api-keys", {}),
        ("POST", "/admin/api-keys", {"name": ""}),
        ("POST", "/admin/api-keys", {"name": "n" * 101}),
        ("POST", "/admin/api-keys", {"name": "k", "role": "root"}),
        ("POST", "/admin/api-keys", {"name": "k", "expires_at": "never"}),
        ("POST", "/admin/api-keys", {"name": "k", "role": "admin", "app_id": "a"}),
        ("POST", "/admin/api-keys", {"name": "k", "role": "admin", "user_id": "u"}),
    ]
    for method, path, body in admin_cases:
        response = await client.request(method, path, json=body, headers=server.admin)
        assert_problem(response, 422, "VALIDATION_FAILED")


async def test_no_task_deployed(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    response = await server.client.post("/threads", json=BODY, headers=server.user())
    # Not a 503: nothing is wrong with the server, it has no task yet (issue 17).
    assert_problem(response, 404, "TASK_NOT_FOUND", detail_prefix="No task is deployed")
    assert_problem(
        await server.client.post(
            "/threads", params={"task_id": "hello"}, json=BODY, headers=server.user()
        ),
        404,
        "TASK_NOT_FOUND",
    )
    assert await admin_total(server, "/threads") == 0


@pytest.mark.parametrize("request_id", ["abc-123", None])
async def test_request_id_is_echoed_on_errors(
    make_server: ServerFactory, request_id: str | None
) -> None:
    server = await make_server()
    headers = {"X-Request-ID": request_id} if request_id else {}
    response = await server.client.get("/threads", headers=headers)
    assert_problem(response, 401, "AUTH_REQUIRED")
    if request_id:
        assert response.headers["x-request-id"] == request_id
