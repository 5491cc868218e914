"""Keyset pagination of ``GET /threads`` and ``GET /threads/{id}/artifacts`` (API.md §1.4,
§3.2, §3.7): no duplicates, no gaps, consistent ``has_more``/``cursor``/``total``, filters."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import HELLO_TASK, Server, ServerFactory
from http_contract import wait_thread, write_dev_task

BATCH = 25
FAILING = 3
PAGE = 7
INPUTS = [{"kind": "json", "value": {"name": "Ada"}}]

FAILING_TASK = """
def run(context):
    raise RuntimeError("no")
"""


async def _create(server: Server, name: str, task_id: str = "hello") -> dict[str, Any]:
    response = await server.client.post(
        "/threads",
        params={"task_id": task_id},
        json={"mode": "async", "name": name, "inputs": INPUTS},
        headers=server.user(),
    )
    assert response.status_code == 202, response.text
    thread: dict[str, Any] = response.json()
    return thread


async def _walk(
    server: Server, params: dict[str, Any], *, by: str = "cursor", path: str = "/threads"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every item of a list, page by page; also returns each page's pagination block."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    query: dict[str, Any] = {**params, "limit": PAGE}
    while True:
        response = await server.client.get(path, params=query, headers=server.user())
        assert response.status_code == 200, response.text
        body = response.json()
        pagination = body["pagination"]
        pages.append(pagination)
        assert len(body["items"]) <= PAGE
        # cursor is non-null iff has_more, in every mode (API.md §1.4).
        assert (pagination["cursor"] is not None) == pagination["has_more"]
        if pagination["has_more"]:
            assert len(body["items"]) == PAGE
        items += body["items"]
        if not pagination["has_more"]:
            return items, pages
        if by == "cursor":
            query = {**params, "limit": PAGE, "cursor": pagination["cursor"]}
        else:
            query = {**params, "limit": PAGE, "offset": len(items)}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _assert_desc(items: list[dict[str, Any]]) -> None:
    keys = [(_ts(t["created_at"]), t["id"]) for t in items]
    assert keys == sorted(keys, reverse=True)


async def _populate(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> tuple[Server, list[dict[str, Any]]]:
    failing = write_dev_task(tmp_path / "tasks", "failing", FAILING_TASK)
    server = await make_server(database_url=database_url, dev_tasks=[HELLO_TASK, failing])
    created = [await _create(server, f"batch-{i:02d}") for i in range(BATCH)]
    created += [await _create(server, f"fail-{i}", "failing") for i in range(FAILING)]
    created += [await _create(server, "a_b"), await _create(server, "axb")]
    # Another tenant's threads never show up in the counts below.
    other = await server.client.post(
        "/threads",
        params={"task_id": "hello"},
        json={"mode": "sync", "inputs": INPUTS},
        headers=server.user("app2", "u2"),
    )
    assert other.status_code == 201, other.text
    for thread in created:
        await wait_thread(server, thread["id"])
    return server, created


async def test_walks_filters_and_concurrent_inserts(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    server, created = await _populate(make_server, database_url, tmp_path)
    all_ids = {t["id"] for t in created}

    for by in ("cursor", "offset"):
        items, pages = await _walk(server, {}, by=by)
        ids = [t["id"] for t in items]
        assert len(ids) == len(set(ids)), "no duplicates"
        assert set(ids) == all_ids, "no gaps"
        assert {p["total"] for p in pages} == {len(created)}
        assert len(pages) == -(-len(created) // PAGE)
        _assert_desc(items)

    filters: list[tuple[dict[str, Any], set[str]]] = [
        ({"state": "failed"}, {t["id"] for t in created if t["name"].startswith("fail-")}),
        ({"state": "stopped"}, set()),
        ({"name": "batch-07"}, {t["id"] for t in created if t["name"] == "batch-07"}),
        ({"name": "batch-0*"}, {t["id"] for t in created if t["name"].startswith("batch-0")}),
        ({"name": "batch*"}, {t["id"] for t in created if t["name"].startswith("batch")}),
        # "_" and "%" are literal characters in a prefix, not wildcards.
        ({"name": "a_*"}, {t["id"] for t in created if t["name"] == "a_b"}),
        ({"name": "a%*"}, set()),
        ({"name": "batch"}, set()),
        ({"task_id": "failing"}, {t["id"] for t in created if t["name"].startswith("fail-")}),
        ({"task_id": "failing", "task_version": "1.0.0", "state": "succeeded"}, set()),
    ]
    for params, expected in filters:
        items, pages = await _walk(server, params)
        assert {t["id"] for t in items} == expected, params
        assert len(items) == len(expected)
        assert {p["total"] for p in pages} == {len(expected)}
        _assert_desc(items)

    # Date bounds are inclusive: created_after >= and created_before <=.
    ordered = sorted(created, key=lambda t: (_ts(t["created_at"]), t["id"]))
    low, high = _ts(ordered[5]["created_at"]), _ts(ordered[20]["created_at"])
    bounds: list[tuple[datetime | None, datetime | None]] = [
        (low, None),
        (None, high),
        (low, high),
        (high, high),
    ]
    for after, before in bounds:
        params = {}
        if after is not None:
            params["created_after"] = after.isoformat()
        if before is not None:
            params["created_before"] = before.isoformat()
        items, pages = await _walk(server, params)
        expected = {
            t["id"]
            for t in created
            if (after is None or _ts(t["created_at"]) >= after)
            and (before is None or _ts(t["created_at"]) <= before)
        }
        assert {t["id"] for t in items} == expected, params
        assert {p["total"] for p in pages} == {len(expected)}
    for params, expected_ids in (
        ({"started_after": "2000-01-01T00:00:00Z"}, all_ids),
        ({"started_after": "2999-01-01T00:00:00Z"}, set()),
        ({"finished_before": "2999-01-01T00:00:00Z"}, all_ids),
        ({"finished_before": "2000-01-01T00:00:00Z"}, set()),
    ):
        items, _ = await _walk(server, params)
        assert {t["id"] for t in items} == expected_ids, params
    # An offset-less bound is read as UTC.
    naive = low.replace(tzinfo=None).isoformat()
    items, _ = await _walk(server, {"created_after": naive})
    assert {t["id"] for t in items} == {t["id"] for t in created if _ts(t["created_at"]) >= low}

    # Threads created between page fetches are newer than the walk's position: the walk
    # still serves exactly the original items, once each.
    first = (
        await server.client.get("/threads", params={"limit": PAGE}, headers=server.user())
    ).json()
    seen = [t["id"] for t in first["items"]]
    cursor = first["pagination"]["cursor"]
    while cursor:
        await _create(server, "late")
        page = (
            await server.client.get(
                "/threads", params={"limit": PAGE, "cursor": cursor}, headers=server.user()
            )
        ).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["pagination"]["cursor"]
    assert len(seen) == len(set(seen))
    assert set(seen) == all_ids

    # With both, the cursor wins over the offset.
    cursor = first["pagination"]["cursor"]
    by_cursor = await server.client.get(
        "/threads", params={"limit": PAGE, "cursor": cursor}, headers=server.user()
    )
    both = await server.client.get(
        "/threads", params={"limit": PAGE, "cursor": cursor, "offset": 3}, headers=server.user()
    )
    assert both.json()["items"] == by_cursor.json()["items"]

    # Offset past the end: an empty page, nothing more.
    beyond = (
        await server.client.get("/threads", params={"offset": 500}, headers=server.user())
    ).json()
    assert beyond["items"] == []
    assert beyond["pagination"]["has_more"] is False
    assert beyond["pagination"]["cursor"] is None


async def test_thread_artifacts_ascending(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    inputs = [{"kind": "json", "ref": f"in-{i}", "value": {"name": f"N{i}"}} for i in range(9)]
    response = await server.client.post(
        "/threads", json={"mode": "sync", "inputs": inputs}, headers=server.user()
    )
    assert response.status_code == 201, response.text
    thread = response.json()
    path = f"/threads/{thread['id']}/artifacts"

    for by in ("cursor", "offset"):
        items, pages = await _walk(server, {}, by=by, path=path)
        ids = [a["id"] for a in items]
        assert len(ids) == len(set(ids)) == 11
        assert set(ids) == {a["id"] for a in thread["artifacts"]}
        keys = [(_ts(a["created_at"]), a["id"]) for a in items]
        assert keys == sorted(keys)
        assert {p["total"] for p in pages} == {11}
        # Outputs published together share created_at; ties break on id.
        outputs = {a["ref"] for a in items if a["direction"] == "output"}
        assert outputs == {"greeting", "greeting.txt"}

    for params, refs in (
        ({"direction": "input"}, {f"in-{i}" for i in range(9)}),
        ({"direction": "output"}, {"greeting", "greeting.txt"}),
        ({"ref": "greeting*"}, {"greeting", "greeting.txt"}),
        ({"ref": "in-3"}, {"in-3"}),
        ({"kind": "text"}, {"greeting.txt"}),
    ):
        items, pages = await _walk(server, params, path=path)
        assert {a["ref"] for a in items} == refs, params
        assert {p["total"] for p in pages} == {len(refs)}
