"""Caller identity at the edge (API.md §1.5): identity headers decide over the query
string, and identities are bounded in length and charset, the same on both databases."""

from __future__ import annotations

from typing import Any

from conftest import Server, ServerFactory
from http_contract import assert_problem

BODY = {"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "Ada"}}]}


async def _run(server: Server, headers: dict[str, Any]) -> dict[str, Any]:
    response = await server.client.post("/threads", json=BODY, headers=headers)
    assert response.status_code == 201, response.text
    thread: dict[str, Any] = response.json()
    return thread


async def test_query_identity_cannot_override_headers(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    client = server.client
    victim = await _run(server, server.user("appA", "userA"))
    tid = victim["id"]
    aid = victim["artifacts"][0]["id"]
    as_b = server.user("appB", "userB")
    escape = {"app_id": "appA", "user_id": "userA"}

    # Headers say tenant B: a query naming tenant A is refused, never obeyed.
    for method, path in (
        ("GET", "/threads"),
        ("GET", "/artifacts"),
        ("GET", f"/threads/{tid}"),
        ("GET", f"/threads/{tid}/artifacts"),
        ("GET", f"/threads/{tid}/logs"),
        ("GET", f"/artifacts/{aid}"),
        ("DELETE", f"/artifacts/{aid}"),
        ("DELETE", f"/threads/{tid}"),
    ):
        response = await client.request(method, path, params=escape, headers=as_b)
        assert_problem(
            response,
            400,
            "VALIDATION_FAILED",
            detail="Query parameter app_id differs from the X-App-Id header",
        )
    # One identity header is enough for the headers to decide: the query may not add the
    # other half of someone else's identity.
    only_user = {"X-API-Key": server.user_key, "X-User-Id": "userA"}
    response = await client.get(f"/threads/{tid}", params={"app_id": "appA"}, headers=only_user)
    assert_problem(response, 400, "VALIDATION_FAILED")
    assert (await client.get(f"/threads/{tid}", headers=server.admin)).status_code == 200

    # A query that agrees with the headers is fine; no headers at all: the query decides.
    agree = await client.get(f"/threads/{tid}", params=escape, headers=server.user("appA", "userA"))
    assert agree.status_code == 200, agree.text
    compat = await client.get(
        f"/threads/{tid}", params=escape, headers={"X-API-Key": server.user_key}
    )
    assert compat.status_code == 200, compat.text
    listed = await client.get("/threads", params=escape, headers={"X-API-Key": server.user_key})
    assert [t["id"] for t in listed.json()["items"]] == [tid]


async def test_identity_bounds_and_charset(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    client = server.client
    key = {"X-API-Key": server.user_key}
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({**key, "X-App-Id": "a", "X-User-Id": "u" * 300}, {}, "user_id must be at most 255"),
        ({**key}, {"app_id": "a" * 256, "user_id": "u"}, "app_id must be at most 255"),
        ({**key}, {"app_id": "a", "user_id": "u\x01"}, "user_id must not contain control"),
        ({**key, "X-App-Id": "a\x7f", "X-User-Id": "u"}, {}, "app_id must not contain control"),
        ({**key, "X-App-Id": b"\xff\xfe", "X-User-Id": "u"}, {}, "x-app-id must be UTF-8"),
    ]
    for headers, params, detail in cases:
        for method, path in (("GET", "/threads"), ("POST", "/threads")):
            body = BODY if method == "POST" else None
            response = await client.request(method, path, json=body, params=params, headers=headers)
            problem = assert_problem(response, 400, "VALIDATION_FAILED")
            assert str(problem["detail"]).startswith(detail), problem
    assert (await client.get("/threads", headers=server.admin)).json()["pagination"]["total"] == 0

    # 255 characters fit; raw UTF-8 in a header is the same identity as in the query.
    longest = "u" * 255
    made = await _run(server, {**key, "X-App-Id": "a", "X-User-Id": longest})
    assert made["metadata"]["user_id"] == longest
    mine = await _run(server, {**key, "X-App-Id": "café".encode(), "X-User-Id": "josé".encode()})
    assert (mine["metadata"]["app_id"], mine["metadata"]["user_id"]) == ("café", "josé")
    by_query = await client.get(
        "/threads", params={"app_id": "café", "user_id": "josé"}, headers=key
    )
    assert [t["id"] for t in by_query.json()["items"]] == [mine["id"]]


async def test_bound_key_identity_stays_bound(make_server: ServerFactory) -> None:
    server = await make_server()
    created = await server.client.post(
        "/admin/api-keys",
        json={"name": "bound", "app_id": "appB", "user_id": "userB"},
        headers=server.admin,
    )
    bound = {"X-API-Key": created.json()["key"]}
    # Without identity headers the query is the identity, and a bound key refuses others.
    response = await server.client.get("/threads", params={"app_id": "appA"}, headers=bound)
    assert_problem(response, 403, "AUTH_FORBIDDEN")
    for field in ("app_id", "user_id"):
        response = await server.client.post(
            "/admin/api-keys",
            json={"name": "bad", field: "x\ty"},
            headers=server.admin,
        )
        assert_problem(response, 400, "VALIDATION_FAILED")
