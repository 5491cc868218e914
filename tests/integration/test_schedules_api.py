"""Schedules over HTTP on both databases: CRUD, validation, ownership, runs, policies.

Firing tests use the test-only seconds granularity (``scheduler_test_seconds``: the first
cron field counts seconds) so they wait seconds, not minutes; ``:trigger`` covers the
rest without waiting for the clock.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from conftest import Server, ServerFactory
from http_contract import assert_problem
from procs import PROCESS_ID, process_alive
from task_framework.store.tables import schedules

TEMPLATE = [{"kind": "json", "value": {"name": "Ada"}}]
POLL_SECONDS = 0.1


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "inputs_template": TEMPLATE,
        **overrides,
    }


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


async def create(server: Server, **overrides: Any) -> dict[str, Any]:
    response = await server.client.post("/schedules", json=body(**overrides), headers=server.user())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def runs_of(server: Server, schedule_id: str) -> list[dict[str, Any]]:
    response = await server.client.get(
        f"/schedules/{schedule_id}/runs", params={"limit": 1000}, headers=server.user()
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def thread(server: Server, thread_id: str) -> dict[str, Any]:
    response = await server.client.get(f"/threads/{thread_id}", headers=server.user())
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def write_task(root: Path, name: str, source: str) -> Path:
    """A dev task whose entry point ``main(context)`` is ``source``."""
    folder = root / name
    folder.mkdir()
    (folder / "task.py").write_text(textwrap.dedent(source))
    (folder / "task_metadata.json").write_text(
        f'{{"name": "{name}", "version": "1.0.0", "entry_point": "task:main"}}'
    )
    return folder


# -- CRUD and validation -------------------------------------------------------------------


async def test_create_get_list_patch_delete(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    created = await create(server, params={"p": 1}, metadata={"team": "x"})
    assert set(created) == {
        "id", "cron", "timezone", "state", "task_id", "task_version", "inputs_template",
        "params", "metadata", "webhooks", "concurrency_policy", "max_attempts",
        "misfire_policy", "next_run_at", "last_run_at", "app_id", "user_id", "created_at",
        "updated_at",
    }  # fmt: skip
    assert created["id"].startswith("schedule_")
    assert len(created["id"]) == 41
    assert (created["state"], created["task_id"], created["task_version"]) == (
        "active",
        "hello",
        "1.0.0",
    )
    assert (created["concurrency_policy"], created["max_attempts"]) == ("allow", 1)
    assert created["misfire_policy"] == "skip"
    assert (created["app_id"], created["user_id"], created["last_run_at"]) == (
        "app1",
        "user1",
        None,
    )
    # 03:00 in Berlin is 01:00 or 02:00 UTC depending on the season.
    assert created["next_run_at"].endswith(("T01:00:00.000000Z", "T02:00:00.000000Z"))
    sid = created["id"]
    got = await server.client.get(f"/schedules/{sid}", headers=server.user())
    assert got.json() == created
    listed = await server.client.get("/schedules", headers=server.user())
    assert [s["id"] for s in listed.json()["items"]] == [sid]
    assert listed.json()["pagination"] == {"cursor": None, "has_more": False, "total": 1}
    by_state = await server.client.get("/schedules?state=paused", headers=server.user())
    assert by_state.json()["items"] == []

    patched = await server.client.patch(
        f"/schedules/{sid}",
        json={"cron": "30 12 * * *", "timezone": "UTC", "max_attempts": 3},
        headers=server.user(),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["next_run_at"].endswith("T12:30:00.000000Z")
    assert patched.json()["max_attempts"] == 3
    assert patched.json()["params"] == {"p": 1}
    assert patched.json()["updated_at"] > created["updated_at"]

    deleted = await server.client.delete(f"/schedules/{sid}", headers=server.user())
    assert deleted.status_code == 204
    gone = await server.client.get(f"/schedules/{sid}", headers=server.user())
    assert gone.status_code == 404
    assert gone.json()["detail"]["code"] == "SCHEDULE_NOT_FOUND"
    assert gone.json()["detail"]["title"] == "Schedule Not Found"


async def test_validation_errors(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    cases = [
        (body(cron="* * * *"), "SCHEDULE_INVALID_CRON", "expected 5 fields"),
        (body(cron="61 * * * *"), "SCHEDULE_INVALID_CRON", "minute value 61 out of range"),
        (body(cron="0 0 * * 8"), "SCHEDULE_INVALID_CRON", "day-of-week value 8"),
        (body(cron="0 0 31 2 *"), "SCHEDULE_INVALID_CRON", "never name an existing day"),
        (body(cron="*/0 * * * *"), "SCHEDULE_INVALID_CRON", "step"),
        (body(cron="0 5-1 * * *"), "SCHEDULE_INVALID_CRON", "reversed"),
        (body(timezone="Mars/Olympus"), "SCHEDULE_INVALID_TIMEZONE", "Mars/Olympus"),
        (body(timezone="../etc/passwd"), "SCHEDULE_INVALID_TIMEZONE", "Invalid timezone"),
        (body(inputs_template=[]), "SCHEDULE_VALIDATION_ERROR", "non-empty"),
        (
            body(inputs_template=[{"kind": "file", "file_ref": "file_doesnotexist000"}]),
            "SCHEDULE_VALIDATION_ERROR",
            "not found",
        ),
        (
            body(inputs_template=[{"kind": "json", "value": 1, "ref": "a"}] * 2),
            "SCHEDULE_VALIDATION_ERROR",
            "Duplicate ref",
        ),
    ]
    for payload, code, text in cases:
        response = await server.client.post("/schedules", json=payload, headers=server.user())
        assert response.status_code == 400, (payload, response.text)
        detail = response.json()["detail"]
        assert detail["code"] == code, (payload, detail)
        assert text in detail["detail"], (payload, detail)
    assert (
        (await server.client.post("/schedules", json=body(cron="* * * *"), headers=server.user()))
        .json()["detail"]["detail"]
        .startswith("Invalid cron expression: * * * *")
    )
    for payload in (
        {"timezone": "UTC", "inputs_template": TEMPLATE},
        body(max_attempts=0),
        body(concurrency_policy="sometimes"),
        body(misfire_policy="never"),
        body(cron=5),
    ):
        response = await server.client.post("/schedules", json=payload, headers=server.user())
        assert_problem(response, 422, "VALIDATION_FAILED")
    unknown = await server.client.post(
        "/schedules", json=body(task_id="nope"), headers=server.user()
    )
    assert unknown.status_code == 404
    assert unknown.json()["detail"]["code"] == "TASK_NOT_FOUND"
    bad_patch = await server.client.patch(
        f"/schedules/{(await create(server))['id']}",
        json={"cron": "0 0 30 2 *"},
        headers=server.user(),
    )
    assert bad_patch.json()["detail"]["code"] == "SCHEDULE_INVALID_CRON"
    total = (await server.client.get("/schedules", headers=server.user())).json()
    assert total["pagination"]["total"] == 1  # rejected requests stored nothing


async def test_owner_scoping(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    sid = (await create(server))["id"]
    other = server.user("app2", "user2")
    for method, path in (
        ("GET", f"/schedules/{sid}"),
        ("PATCH", f"/schedules/{sid}"),
        ("DELETE", f"/schedules/{sid}"),
        ("POST", f"/schedules/{sid}:trigger"),
        ("POST", f"/schedules/{sid}:pause"),
        ("POST", f"/schedules/{sid}:resume"),
        ("POST", f"/schedules/{sid}:cancel"),
        ("GET", f"/schedules/{sid}/runs"),
        ("GET", f"/schedules/{sid}/runs/{sid}_run_2026-01-01T00:00:00.000000Z"),
    ):
        response = await server.client.request(
            method, path, headers=other, json={} if method == "PATCH" else None
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"]["code"] == "SCHEDULE_NOT_FOUND"
    assert (await server.client.get("/schedules", headers=other)).json()["items"] == []
    admin_view = await server.client.get("/schedules", headers=server.admin)
    assert [s["id"] for s in admin_view.json()["items"]] == [sid]
    missing_run = await server.client.get(
        f"/schedules/{sid}/runs/{sid}_run_2026-01-01T00:00:00.000000Z", headers=server.user()
    )
    assert missing_run.json()["detail"]["code"] == "RUN_NOT_FOUND"


# -- runs ------------------------------------------------------------------------------------


async def test_trigger_creates_run_and_thread(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(database_url=database_url)
    created = await create(server, params={"p": 2}, metadata={"team": "x"}, timezone="Asia/Tokyo")
    sid = created["id"]
    response = await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["run_id"] == f"{sid}_run_{run['scheduled_for_utc'][:19]}.000000Z"
    assert run["scheduled_for_utc"].endswith(".000000Z")
    assert run["scheduled_for_local"].endswith("+09:00")
    assert (run["state"], run["attempt"], run["max_attempts"]) == ("running", 1, 1)
    assert run["labels"] == {"trigger": "manual"}
    assert run["metrics"] is None
    assert len(run["threads"]) == 1
    done = await wait_for(
        lambda: _run_in_state(server, sid, run["run_id"], "succeeded"), what="run succeeded"
    )
    assert done["finished_at"] is not None
    scheduled = await thread(server, run["threads"][0])
    assert scheduled["name"] == f"schedule_execution_{sid}"
    assert (scheduled["schedule_id"], scheduled["run_id"], scheduled["attempt"]) == (
        sid,
        run["run_id"],
        1,
    )
    assert scheduled["params"] == {"p": 2}
    assert scheduled["metadata"] == {
        "team": "x",
        "task_id": "hello",
        "task_version": "1.0.0",
        "schedule_id": sid,
        "run_id": run["run_id"],
        "user_id": "user1",
        "app_id": "app1",
    }
    assert [i["value"] for i in scheduled["inputs"]] == [{"name": "Ada"}]
    assert scheduled["outputs"][0]["value"] == {"greeting": "Hello, Ada!"}
    by_schedule = await server.client.get(
        "/threads", params={"schedule_id": sid}, headers=server.user()
    )
    assert [t["id"] for t in by_schedule.json()["items"]] == run["threads"]
    again = await server.client.get(f"/schedules/{sid}", headers=server.user())
    assert again.json()["last_run_at"] == run["scheduled_for_utc"]
    events = await _event_types(server, sid)
    assert events[:2] == ["schedule.run.started", "schedule.run.succeeded"]


async def _run_in_state(
    server: Server, schedule_id: str, run_id: str, *states: str
) -> dict[str, Any] | None:
    response = await server.client.get(
        f"/schedules/{schedule_id}/runs/{run_id}", headers=server.user()
    )
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run if run["state"] in states else None


async def _event_types(server: Server, schedule_id: str) -> list[str]:
    from sqlalchemy import select

    from task_framework.store.tables import events

    def _read(conn: Any) -> list[str]:
        rows = conn.execute(
            select(events.c.event_type, events.c.data)
            .where(events.c.schedule_id == schedule_id, events.c.thread_id.is_(None))
            .order_by(events.c.seq)
        )
        return [r.event_type for r in rows]

    result: list[str] = await server.services.db.tx(_read)
    return result


async def test_every_second_fires_with_inputs_then_patch_pause_resume(
    make_server: ServerFactory, database_url: str
) -> None:
    """`* * * * *` (seconds granularity) fires each tick, each thread with its inputs."""
    server = await make_server(database_url=database_url, scheduler_test_seconds=True)
    sid = (await create(server, cron="* * * * *", timezone="UTC"))["id"]

    async def enough() -> list[dict[str, Any]] | None:
        runs = [r for r in await runs_of(server, sid) if r["state"] == "succeeded"]
        return runs if len(runs) >= 3 else None

    runs = await wait_for(enough, what="three successful fires")
    times = sorted(r["scheduled_for_utc"] for r in runs)
    assert len(set(times)) == len(times)
    for run in runs:
        assert run["labels"] == {}
        fired = await thread(server, run["threads"][0])
        assert [i["value"] for i in fired["inputs"]] == [{"name": "Ada"}]
        assert fired["outputs"][0]["value"] == {"greeting": "Hello, Ada!"}

    # PATCH to a fire far away: the old every-second cron never fires again.
    patched = await server.client.patch(
        f"/schedules/{sid}", json={"cron": "0 0 1 1 *"}, headers=server.user()
    )
    assert patched.json()["next_run_at"].endswith("-01-01T00:00:00.000000Z")
    await asyncio.sleep(0.5)  # a fire already underway may still land
    settled = len(await runs_of(server, sid))
    await asyncio.sleep(2.5)
    assert len(await runs_of(server, sid)) == settled

    # Back to every second, then pause: no fires while paused, none caught up on resume.
    await server.client.patch(
        f"/schedules/{sid}", json={"cron": "* * * * *"}, headers=server.user()
    )
    paused = await server.client.post(f"/schedules/{sid}:pause", headers=server.user())
    assert paused.json()["state"] == "paused"
    assert paused.json()["next_run_at"] is None
    await asyncio.sleep(0.5)
    before = {r["run_id"] for r in await runs_of(server, sid)}
    await asyncio.sleep(2.5)
    assert {r["run_id"] for r in await runs_of(server, sid)} == before
    resumed = await server.client.post(f"/schedules/{sid}:resume", headers=server.user())
    assert resumed.json()["state"] == "active"
    resumed_at = resumed.json()["next_run_at"]
    assert resumed_at is not None

    async def fired_after_resume() -> bool:
        new = [r for r in await runs_of(server, sid) if r["run_id"] not in before]
        return bool(new) and all(r["scheduled_for_utc"] >= resumed_at for r in new)

    await wait_for(fired_after_resume, what="a fire after resume")
    canceled = await server.client.post(f"/schedules/{sid}:cancel", headers=server.user())
    assert canceled.json()["state"] == "canceled"
    assert canceled.json()["next_run_at"] is None
    refused = await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())
    assert refused.status_code == 400
    assert refused.json()["detail"]["code"] == "SCHEDULE_VALIDATION_ERROR"


async def test_retries_re_execute_failed_runs(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    failing = write_task(
        tmp_path,
        "flaky",
        """
        def main(context):
            raise RuntimeError("boom")
        """,
    )
    server = await make_server(database_url=database_url, dev_tasks=[failing])
    sid = (await create(server, max_attempts=3))["id"]
    run = (await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())).json()
    done = await wait_for(
        lambda: _run_in_state(server, sid, run["run_id"], "failed"),
        timeout=40,
        what="run failed after its retries",
    )
    assert (done["attempt"], len(done["threads"])) == (3, 3)
    attempts = [await thread(server, tid) for tid in done["threads"]]
    assert [t["attempt"] for t in attempts] == [1, 2, 3]
    assert {t["state"] for t in attempts} == {"failed"}
    assert len({t["inputs"][0]["id"] for t in attempts}) == 3  # fresh copies each time
    # Back-off: about 2 s then 4 s (+-20 %) between the attempts.
    starts = [datetime.fromisoformat(t["created_at"]) for t in attempts]
    ends = [datetime.fromisoformat(t["finished_at"]) for t in attempts]
    assert (starts[1] - ends[0]).total_seconds() >= 1.6
    assert (starts[2] - ends[1]).total_seconds() >= 3.2
    assert (await _event_types(server, sid)) == ["schedule.run.started", "schedule.run.failed"]


async def test_forbid_and_replace(
    make_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    sleepy = write_task(
        tmp_path,
        "sleepy",
        """
        import os
        import time

        from task_framework.models.artifact import Artifact

        def main(context):
            pid = {"pid": process_id()}
            context.publish_output_artifacts_sync([Artifact(kind="json", ref="pid", value=pid)])
            time.sleep(60)
        """
        + textwrap.indent(PROCESS_ID, " " * 8),
    )
    server = await make_server(database_url=database_url, dev_tasks=[sleepy])
    sid = (await create(server, concurrency_policy="forbid"))["id"]
    first = (await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())).json()
    pid = await wait_for(lambda: _published_pid(server, first["threads"][0]), what="first pid")
    await asyncio.sleep(1.0)  # the next trigger needs another second (run ids are per second)
    second = await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())
    assert second.status_code == 201, second.text
    skipped = second.json()
    assert skipped["state"] == "skipped"
    assert skipped["threads"] == []
    assert skipped["finished_at"] == skipped["created_at"]
    assert "schedule.run.skipped" in await _event_types(server, sid)

    await server.client.patch(
        f"/schedules/{sid}", json={"concurrency_policy": "replace"}, headers=server.user()
    )
    await asyncio.sleep(1.0)
    third = (await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())).json()
    assert third["state"] == "running"
    replaced = await _run_in_state(server, sid, first["run_id"], "stopped")
    assert replaced is not None
    assert replaced["finished_at"] is not None
    old_thread = await thread(server, first["threads"][0])
    assert old_thread["state"] == "stopped"
    await wait_for(lambda: _process_gone(pid), what="old process terminated")
    # Stopping the new thread through the API settles its run as stopped.
    stop = await server.client.post(f"/threads/{third['threads'][0]}:stop", headers=server.user())
    assert stop.status_code == 202
    await wait_for(
        lambda: _run_in_state(server, sid, third["run_id"], "stopped"), what="run stopped"
    )


async def _published_pid(server: Server, thread_id: str) -> str | None:
    outputs = (await thread(server, thread_id))["outputs"]
    return str(outputs[0]["value"]["pid"]) if outputs else None


async def _process_gone(process: str) -> bool:
    return not process_alive(process)


async def test_trigger_conflict_in_same_second(make_server: ServerFactory) -> None:
    server = await make_server()
    sid = (await create(server))["id"]
    for _ in range(5):
        first = await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())
        second = await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())
        if (
            first.json()["scheduled_for_utc"][:19]
            == second.json().get("scheduled_for_utc", first.json()["scheduled_for_utc"])[:19]
        ):
            break
        await asyncio.sleep(0.05)
    assert second.status_code == 409, second.text
    assert second.json()["detail"]["code"] == "RUN_ALREADY_EXISTS"


async def test_runs_listing_filters(make_server: ServerFactory) -> None:
    server = await make_server()
    sid = (await create(server))["id"]
    run = (await server.client.post(f"/schedules/{sid}:trigger", headers=server.user())).json()
    client: httpx.AsyncClient = server.client
    for params, expected in (
        ({"state": "skipped"}, []),
        ({"scheduled_after": "2999-01-01T00:00:00Z"}, []),
        ({"scheduled_before": "2999-01-01T00:00:00Z"}, [run["run_id"]]),
        ({"task_id": "ignored", "version": "x"}, [run["run_id"]]),
    ):
        response = await client.get(f"/schedules/{sid}/runs", params=params, headers=server.user())
        assert response.status_code == 200, response.text
        assert [r["run_id"] for r in response.json()["items"]] == expected
    for params in ({"state": "bogus"}, {"scheduled_after": "yesterday"}):
        response = await client.get(f"/schedules/{sid}/runs", params=params, headers=server.user())
        assert response.status_code == 422


@pytest.mark.parametrize("policy", ["skip", "catch_up_last"])
async def test_misfires_after_downtime(
    make_server: ServerFactory, database_url: str, policy: str
) -> None:
    """Fires nobody processed within the grace follow the misfire policy."""
    server = await make_server(
        database_url=database_url,
        scheduler_test_seconds=True,
        scheduler_misfire_grace_seconds=2,
    )
    created = await create(
        server, cron="* * * * *", timezone="UTC", misfire_policy=policy, state="paused"
    )
    assert created["next_run_at"] is None
    sid = created["id"]
    # As if every replica had been down for 12 s: the watermark is 12 fires behind.
    down_since = (datetime.now(UTC) - timedelta(seconds=12)).replace(microsecond=0)

    def _rewind(conn: Any) -> None:
        conn.execute(
            update(schedules)
            .where(schedules.c.id == sid)
            .values(state="active", next_run_at=down_since)
        )

    await server.services.db.tx(_rewind)

    async def recovered() -> list[dict[str, Any]] | None:
        runs = await runs_of(server, sid)
        return runs if any(r["labels"] == {} for r in runs) else None

    runs = await wait_for(recovered, what="recovery and a regular fire")
    await server.client.post(f"/schedules/{sid}:pause", headers=server.user())
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_label.setdefault(run["labels"].get("trigger", ""), []).append(run)
    if policy == "skip":
        skipped = by_label["misfire"]
        assert len(skipped) >= 9
        assert {r["state"] for r in skipped} == {"skipped"}
        assert all(r["threads"] == [] for r in skipped)
        assert "catch_up" not in by_label
    else:
        assert "misfire" not in by_label
        (caught_up,) = by_label["catch_up"]
        assert caught_up["threads"]
        assert caught_up["scheduled_for_utc"] < by_label[""][0]["scheduled_for_utc"]
    times = sorted(r["scheduled_for_utc"] for r in runs)
    assert times[0] >= down_since.strftime("%Y-%m-%dT%H:%M:%S")
    assert len(times) == len(set(times))


async def test_schedule_webhooks_are_checked_and_materialised(make_server: ServerFactory) -> None:
    strict = await make_server()
    refused = await strict.client.post(
        "/schedules",
        json=body(webhooks=[{"callback_url": "http://127.0.0.1:9/hook"}]),
        headers=strict.user(),
    )
    assert refused.status_code == 400
    assert refused.json()["detail"]["code"] == "WEBHOOK_INVALID_URL"

    server = await make_server(webhook_allow_private_networks=True)
    hook = {"callback_url": "http://127.0.0.1:9/hook", "api_key": "secret-key"}
    created = await create(server, webhooks=[hook])
    assert created["webhooks"] == [
        {
            "callback_url": "http://127.0.0.1:9/hook",
            "events": ["thread.succeeded", "thread.failed"],
            "api_key": None,
        }
    ]
    listed = (await server.client.get("/webhooks", headers=server.user())).json()["items"]
    assert [(w["source"], w["scope"]["schedule_id"]) for w in listed] == [
        ("schedule", created["id"])
    ]
    await server.client.patch(
        f"/schedules/{created['id']}",
        json={"webhooks": [{"callback_url": "http://127.0.0.1:10/other"}]},
        headers=server.user(),
    )
    listed = (await server.client.get("/webhooks", headers=server.user())).json()["items"]
    assert [w["url"] for w in listed] == ["http://127.0.0.1:10/other"]
    await server.client.delete(f"/schedules/{created['id']}", headers=server.user())
    assert (await server.client.get("/webhooks", headers=server.user())).json()["items"] == []
