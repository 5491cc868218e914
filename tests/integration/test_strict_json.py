"""Strict JSON at the edge (issue 15, item 2): NaN, Infinity, lone surrogates and NUL
characters are refused with 422 on every JSON body, on both databases; what a task
publishes is held to the same rule; and nothing stored earlier can make a read fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from conftest import Server, ServerFactory
from http_contract import admin_total, assert_problem, write_dev_task
from task_framework.store.tables import artifacts, threads

JSON = {"Content-Type": "application/json"}
GOOD = '{"mode": "sync", "inputs": [{"kind": "json", "value": {"x": 1}}]}'
# Raw bodies: Python's json.dumps would write NaN too, but not what a hostile client sends.
NOT_STRICT = {
    "NaN": ("NaN", "NaN is not allowed"),
    "Infinity": ("Infinity", "Infinity is not allowed"),
    "-Infinity": ("-Infinity", "-Infinity is not allowed"),
    "lone surrogate": ('"\\ud800"', "lone surrogate in a"),
    "NUL": ('"a\\u0000b"', "NUL character in a"),
}


def _thread_bodies(bad: str) -> list[str]:
    bodies = [
        GOOD.replace('{"x": 1}', '{"x": ' + bad + "}"),
        GOOD.replace('"mode"', '"params": {"p": [' + bad + '], "q": 1}, "mode"'),
        GOOD.replace('"mode"', '"metadata": {"m": ' + bad + '}, "mode"'),
    ]
    if bad.startswith('"'):  # a string: also as a thread name and as a key
        bodies.append(GOOD.replace('"mode"', '"name": ' + bad + ', "mode"'))
        bodies.append(GOOD.replace('{"x": 1}', "{" + bad + ": 1}"))
    return bodies


async def _stored(server: Server) -> tuple[int, int]:
    return (
        await admin_total(server, "/threads"),
        await admin_total(server, "/artifacts", include_archived="true"),
    )


@pytest.mark.parametrize("case", sorted(NOT_STRICT))
async def test_request_bodies_must_be_strict_json(
    make_server: ServerFactory, database_url: str, case: str
) -> None:
    server = await make_server(database_url=database_url)
    client = server.client
    bad, reason = NOT_STRICT[case]
    user, admin = {**server.user(), **JSON}, {**server.admin, **JSON}
    requests: list[tuple[str, str, dict[str, str], str]] = [
        ("POST", "/threads", user, body) for body in _thread_bodies(bad)
    ]
    requests += [
        (
            "POST",
            "/schedules",
            user,
            '{"cron": "0 3 * * *", "timezone": "UTC", "params": ' + "{" + f'"p": {bad}' + "}}",
        ),
        (
            "POST",
            "/webhooks",
            user,
            '{"url": "https://example.com/h", "data_filters": {"f": ' + bad + "}}",
        ),
        ("PUT", "/admin/settings", admin, '{"max_concurrent_threads": ' + bad + "}"),
        ("POST", "/admin/api-keys", admin, '{"name": ' + bad + "}"),
        ("PUT", "/admin/credentials/token", admin, '{"value": "v", "tags": [' + bad + "]}"),
        ("PUT", "/admin/tasks/hello/1.0.0/config", admin, '{"values": {"k": ' + bad + "}}"),
    ]
    for method, path, headers, body in requests:
        response = await client.request(method, path, content=body.encode(), headers=headers)
        problem = assert_problem(response, 422, "VALIDATION_FAILED")
        assert reason in problem["detail"], (path, body, problem)
    assert await _stored(server) == (0, 0)
    assert (await client.get("/schedules", headers=server.user())).json()["pagination"][
        "total"
    ] == 0
    assert (await client.get("/webhooks", headers=server.user())).json()["pagination"]["total"] == 0
    credentials = await client.get("/admin/credentials", headers=server.admin)
    assert credentials.json()["credentials"] == []


async def test_stored_non_strict_values_do_not_break_reads(make_server: ServerFactory) -> None:
    """SQLite kept such values before the edge refused them; every read still answers."""
    server = await make_server()
    client = server.client
    made = await client.post("/threads", content=GOOD.encode(), headers={**server.user(), **JSON})
    assert made.status_code == 201, made.text
    thread = made.json()
    poison: dict[str, Any] = {"nan": float("nan"), "inf": float("-inf"), "s": "a\ud800b"}

    def _poison(conn: Any) -> None:
        conn.execute(update(artifacts).values(value=poison, labels={"l": float("inf")}))
        conn.execute(update(threads).values(metadata={**thread["metadata"], "m": float("nan")}))

    await server.services.db.tx(_poison)
    tid = thread["id"]
    aid = thread["artifacts"][0]["id"]
    for headers in (server.user(), server.admin):
        for path in ("/threads", "/artifacts", f"/threads/{tid}", f"/threads/{tid}/artifacts"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
        artifact = (await client.get(f"/artifacts/{aid}", headers=headers)).json()
        assert artifact["value"] == {"nan": None, "inf": None, "s": "a\ufffdb"}
        assert (await client.get(f"/threads/{tid}", headers=headers)).json()["metadata"][
            "m"
        ] is None


async def test_task_outputs_must_be_strict_json(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    task = write_dev_task(
        tmp_path,
        "nul_out",
        """
        from task_framework.models.artifact import Artifact

        async def run(context):
            await context.publish_output_artifacts(
                [Artifact(kind="json", ref="out", value={"x": "a\\x00b"})]
            )
        """,
    )
    server = await make_server(database_url=database_url, dev_tasks=[task])
    response = await server.client.post(
        "/threads", content=GOOD.encode(), headers={**server.user(), **JSON}
    )
    assert response.status_code == 201, response.text
    thread = response.json()
    assert thread["state"] == "failed", thread
    message = thread["error"]["message"]
    assert "NUL character in a string is not allowed in an output artifact" in message, thread
    assert thread["outputs"] == []
    assert (await server.client.get("/artifacts", headers=server.admin)).status_code == 200
