"""Tenant isolation over HTTP (API.md §1.5, §1.6): foreign ids look unknown, lists are
scoped to the caller, bound managed keys cannot borrow another identity, admins see all."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Server, ServerFactory
from http_contract import assert_problem

OWNER = ("appA", "userA")
# Another user of the same app, the same user name in another app, and a stranger.
FOREIGN = [("appA", "userB"), ("appB", "userA"), ("appB", "userB")]
BODY = {"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "Ada"}}]}


async def _run(server: Server, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    response = await server.client.post("/threads", json={**BODY, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    thread: dict[str, Any] = response.json()
    assert thread["state"] == "succeeded"
    return thread


async def _not_found_everywhere(
    server: Server, headers: dict[str, str], thread: dict[str, Any]
) -> None:
    tid = thread["id"]
    client = server.client
    detail = f"Thread {tid} not found"
    for response in (
        await client.get(f"/threads/{tid}", headers=headers),
        await client.post(f"/threads/{tid}:stop", headers=headers),
        await client.post(f"/threads/{tid}:retry", json={}, headers=headers),
        await client.delete(f"/threads/{tid}", headers=headers),
        await client.get(f"/threads/{tid}/artifacts", headers=headers),
        await client.get(f"/threads/{tid}/logs", headers=headers),
    ):
        assert_problem(response, 404, "THREAD_NOT_FOUND", detail=detail)
    for artifact in thread["artifacts"]:
        aid = artifact["id"]
        for response, instance in (
            (await client.get(f"/artifacts/{aid}", headers=headers), f"/artifacts/{aid}"),
            (await client.delete(f"/artifacts/{aid}", headers=headers), f"/artifacts/{aid}"),
            (
                await client.post(f"/artifacts/{aid}:archive", headers=headers),
                f"/artifacts/{aid}:archive",
            ),
        ):
            problem = assert_problem(
                response,
                404,
                "ARTIFACT_NOT_FOUND",
                detail=f"Artifact with ID '{aid}' does not exist or is not accessible",
            )
            assert problem["title"] == "Artifact Not Found"
            assert problem["instance"] == instance


async def test_foreign_ids_answer_like_unknown_ids(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    owner = server.user(*OWNER)
    thread = await _run(server, owner)
    before = (await server.client.get(f"/threads/{thread['id']}", headers=server.admin)).json()

    for app_id, user_id in FOREIGN:
        foreign = server.user(app_id, user_id)
        await _not_found_everywhere(server, foreign, thread)
        for path in ("/threads", "/artifacts"):
            listed = (await server.client.get(path, headers=foreign)).json()
            assert listed == {
                "items": [],
                "pagination": {"cursor": None, "has_more": False, "total": 0},
            }
        # Plain list filters naming the owner do not widen a regular caller's view.
        listed = (
            await server.client.get(
                "/artifacts", params={"thread_id": thread["id"]}, headers=foreign
            )
        ).json()
        assert listed["pagination"]["total"] == 0

    # An unknown id gets exactly the same answer as a foreign one (no existence oracle).
    unknown = await server.client.get("/threads/thread_" + "0" * 32, headers=owner)
    assert_problem(unknown, 404, "THREAD_NOT_FOUND", detail=f"Thread thread_{'0' * 32} not found")

    # Nothing the foreign callers tried changed the owner's thread or artifacts.
    after = (await server.client.get(f"/threads/{thread['id']}", headers=server.admin)).json()
    assert after == before
    own = (await server.client.get("/artifacts", headers=owner)).json()
    assert own["pagination"]["total"] == 3
    assert {a["archived"] for a in own["items"]} == {False}


async def test_foreign_input_reference_is_rejected(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    owner, stranger = server.user(*OWNER), server.user("appB", "userB")
    thread = await _run(server, owner)
    input_id = thread["inputs"][0]["id"]
    reference = {"id": input_id, "kind": "json", "value": {"name": "Eve"}}

    response = await server.client.post(
        "/threads", json={**BODY, "inputs": [reference]}, headers=stranger
    )
    assert_problem(
        response,
        400,
        "VALIDATION_FAILED",
        detail=f"Invalid artifact reference: Artifact {input_id} not accessible",
    )
    assert (await server.client.get("/threads", headers=server.admin)).json()["pagination"][
        "total"
    ] == 1

    # The owner may reference it: the stored artifact is reused, not the body's content.
    reused = await _run(server, owner, inputs=[reference])
    assert reused["inputs"][0]["id"] == input_id
    assert reused["inputs"][0]["value"] == {"name": "Ada"}
    assert reused["outputs"][0]["value"] == {"greeting": "Hello, Ada!"}
    # An admin may reference anybody's artifact.
    by_admin = await server.client.post(
        "/threads", json={**BODY, "inputs": [reference]}, headers=server.admin
    )
    assert by_admin.status_code == 201, by_admin.text
    assert by_admin.json()["inputs"][0]["id"] == input_id


async def _managed_key(server: Server, **binding: str) -> str:
    response = await server.client.post(
        "/admin/api-keys", json={"name": "bound", **binding}, headers=server.admin
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_bound_keys_cannot_borrow_identities(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    victim = await _run(server, server.user(*OWNER))
    key_b = await _managed_key(server, app_id="appB", user_id="userB")
    bound_b = {"X-API-Key": key_b}
    mine = await _run(server, bound_b)
    assert (mine["metadata"]["app_id"], mine["metadata"]["user_id"]) == ("appB", "userB")

    # Claiming the victim's identity, by header or by query, is forbidden.
    attempts: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"X-App-Id": "appA"}, {}),
        ({"X-User-Id": "userA"}, {}),
        ({"X-App-Id": "appA", "X-User-Id": "userA"}, {}),
        ({}, {"app_id": "appA"}),
        ({}, {"user_id": "userA", "app_id": "appB"}),
    ]
    for extra_headers, params in attempts:
        headers = {**bound_b, **extra_headers}
        for response in (
            await server.client.get("/threads", params=params, headers=headers),
            await server.client.get("/artifacts", params=params, headers=headers),
            await server.client.get(f"/threads/{victim['id']}", params=params, headers=headers),
            await server.client.post("/threads", params=params, json=BODY, headers=headers),
        ):
            assert_problem(response, 403, "AUTH_FORBIDDEN")

    # Restating its own identity is fine; lists only ever contain the key's own resources.
    for headers in (bound_b, {**bound_b, "X-App-Id": "appB", "X-User-Id": "userB"}):
        threads = (await server.client.get("/threads", headers=headers)).json()
        assert [t["id"] for t in threads["items"]] == [mine["id"]]
        assert threads["pagination"]["total"] == 1
        artifacts = (await server.client.get("/artifacts", headers=headers)).json()
        assert {a["id"] for a in artifacts["items"]} == {a["id"] for a in mine["artifacts"]}
    await _not_found_everywhere(server, bound_b, victim)

    # A key bound to an app only: the user comes from the request, the app cannot change.
    app_key = await _managed_key(server, app_id="appB")
    headers = {"X-API-Key": app_key, "X-User-Id": "userB"}
    assert [
        t["id"] for t in (await server.client.get("/threads", headers=headers)).json()["items"]
    ] == [mine["id"]]
    response = await server.client.get(
        "/threads", headers={**headers, "X-App-Id": "appA", "X-User-Id": "userA"}
    )
    assert_problem(response, 403, "AUTH_FORBIDDEN")
    response = await server.client.get("/threads", headers={"X-API-Key": app_key})
    assert_problem(response, 400, "METADATA_REQUIRED")


@pytest.mark.parametrize("path", ["/threads", "/artifacts"])
async def test_admin_sees_everything_and_filters(
    make_server: ServerFactory, database_url: str, path: str
) -> None:
    server = await make_server(database_url=database_url)
    mine = {ident: await _run(server, server.user(*ident)) for ident in [OWNER, *FOREIGN]}
    listed = (await server.client.get(path, headers=server.admin)).json()
    assert listed["pagination"]["total"] == len(mine) * (1 if path == "/threads" else 3)

    def ids(thread: dict[str, Any]) -> set[str]:
        return {thread["id"]} if path == "/threads" else {a["id"] for a in thread["artifacts"]}

    for app_id, user_id in mine:
        expected = set().union(*(ids(t) for (a, _u), t in mine.items() if a == app_id))
        got = (
            await server.client.get(path, params={"app_id": app_id}, headers=server.admin)
        ).json()
        assert {item["id"] for item in got["items"]} == expected
        both = {"app_id": app_id, "user_id": user_id}
        got = (await server.client.get(path, params=both, headers=server.admin)).json()
        assert {item["id"] for item in got["items"]} == ids(mine[(app_id, user_id)])
        assert got["pagination"]["total"] == len(ids(mine[(app_id, user_id)]))
    # Admins act on any thread too.
    victim = mine[OWNER]["id"]
    assert (await server.client.get(f"/threads/{victim}", headers=server.admin)).status_code == 200
