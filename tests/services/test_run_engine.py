"""RunEngine and Scheduler over the SQLite schedule store: fires keyed by nominal time,
misfire and concurrency policies, settlement and retries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select, update

from task_framework.ids import new_id
from task_framework.services.schedule_runs import Effects, RunEngine, run_id_for
from task_framework.services.scheduler import LATE_PICKUP_SECONDS, Scheduler
from task_framework.services.tasks import TaskDefinition, TaskRegistry
from task_framework.store.database import Database
from task_framework.store.pages import PageRequest
from task_framework.store.schedules import (
    RunFilter,
    RunRecord,
    ScheduleRecord,
    ScheduleStore,
    ScheduleTiming,
)
from task_framework.store.sql import SqlScheduleStore
from task_framework.store.tables import threads

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
"""A fire of ``*/5 * * * *``."""


@pytest.fixture
def store(sqlite_db: Database) -> ScheduleStore:
    return SqlScheduleStore(sqlite_db)


@pytest.fixture
def engine(store: ScheduleStore) -> RunEngine:
    registry = TaskRegistry()
    registry.add(TaskDefinition(task_id="echo", version="1.0.0", entry_point="m:f", name="echo"))
    return RunEngine(registry, store, misfire_grace_seconds=60, seconds_field=False)


async def add_schedule(store: ScheduleStore, **changes: Any) -> ScheduleRecord:
    record = ScheduleRecord(
        id=new_id("schedule"),
        cron="*/5 * * * *",
        timezone="UTC",
        state="active",
        task_id="echo",
        task_version="1.0.0",
        inputs_template=[{"kind": "json", "value": {"n": 1}}],
        params={},
        metadata={},
        webhooks=None,
        concurrency_policy="allow",
        max_attempts=1,
        misfire_policy="skip",
        next_run_at=T0,
        last_run_at=None,
        app_id="app1",
        user_id="user1",
        created_by_admin=False,
        created_at=T0 - timedelta(days=1),
        updated_at=T0 - timedelta(days=1),
    )
    record = replace(record, **changes)
    await store.tx(store.add_in, record)
    return record


async def runs(store: ScheduleStore, schedule_id: str) -> list[RunRecord]:
    page = await store.tx(store.runs_in, schedule_id, RunFilter(), PageRequest())
    return sorted(page.rows, key=lambda r: r.scheduled_for_utc)


async def thread_states(db: Database) -> dict[str, str]:
    def _read(conn: Connection) -> dict[str, str]:
        return {r.id: r.state for r in conn.execute(select(threads.c.id, threads.c.state))}

    return await db.tx(_read)


async def end_thread(db: Database, thread_id: str, state: str) -> None:
    def _end(conn: Connection) -> None:
        conn.execute(update(threads).where(threads.c.id == thread_id).values(state=state))

    await db.tx(_end)


async def test_due_fires_start_threads_and_old_ones_are_skipped(
    sqlite_db: Database, store: ScheduleStore, engine: RunEngine
) -> None:
    sched = await add_schedule(store)
    now = T0 + timedelta(minutes=10, seconds=30)  # fires 12:00, 12:05 missed; 12:10 due
    effects: Effects = await store.tx(engine.process_due, sched.id, now)
    recorded = await runs(store, sched.id)
    assert [(r.scheduled_for_utc, r.state) for r in recorded] == [
        (T0, "skipped"),
        (T0 + timedelta(minutes=5), "skipped"),
        (T0 + timedelta(minutes=10), "running"),
    ]
    assert [r.labels for r in recorded] == [{"trigger": "misfire"}] * 2 + [{}]
    started = recorded[-1]
    assert started.run_id == run_id_for(sched.id, T0 + timedelta(minutes=10))
    assert started.threads == (started.current_thread_id,)
    assert (await thread_states(sqlite_db))[started.threads[0]] == "queued"
    assert effects.threads_created == 1
    assert effects.transitions == [(sched.id, "skipped")] * 2 + [(sched.id, "running")]
    stored = await store.get(sched.id)
    assert stored is not None
    assert stored.next_run_at == T0 + timedelta(minutes=15)
    assert stored.last_run_at == T0 + timedelta(minutes=10)

    again = await store.tx(engine.process_due, sched.id, now)  # another replica, same fire
    assert again.transitions == []
    assert len(await runs(store, sched.id)) == 3


async def test_catch_up_last_runs_only_the_latest_missed_fire(
    store: ScheduleStore, engine: RunEngine
) -> None:
    sched = await add_schedule(store, misfire_policy="catch_up_last")
    await store.tx(engine.process_due, sched.id, T0 + timedelta(minutes=12))
    recorded = await runs(store, sched.id)
    assert [(r.scheduled_for_utc, r.state, r.labels) for r in recorded] == [
        (T0 + timedelta(minutes=10), "running", {"trigger": "catch_up"})
    ]


async def test_forbid_skips_a_fire_while_a_run_is_running(
    store: ScheduleStore, engine: RunEngine
) -> None:
    sched = await add_schedule(store, concurrency_policy="forbid")
    await store.tx(engine.process_due, sched.id, T0)
    await store.tx(engine.process_due, sched.id, T0 + timedelta(minutes=5))
    assert [r.state for r in await runs(store, sched.id)] == ["running", "skipped"]


async def test_replace_stops_the_running_run_and_its_thread(
    sqlite_db: Database, store: ScheduleStore, engine: RunEngine
) -> None:
    sched = await add_schedule(store, concurrency_policy="replace")
    await store.tx(engine.process_due, sched.id, T0)
    effects = await store.tx(engine.process_due, sched.id, T0 + timedelta(minutes=5))
    first, second = await runs(store, sched.id)
    assert (first.state, second.state) == ("stopped", "running")
    assert first.finished_at == T0 + timedelta(minutes=5)
    states = await thread_states(sqlite_db)
    assert states[first.threads[0]] == "stopped"
    assert states[second.threads[0]] == "queued"
    assert [(t["id"], was_running) for t, was_running in effects.stopped_threads] == [
        (first.threads[0], False)
    ]


async def test_runs_settle_with_their_thread_and_failures_retry(
    sqlite_db: Database, store: ScheduleStore, engine: RunEngine
) -> None:
    sched = await add_schedule(store, max_attempts=2)
    await store.tx(engine.process_due, sched.id, T0)
    [run] = await runs(store, sched.id)
    assert (await store.tx(engine.settle, T0)).transitions == []  # thread still queued

    await end_thread(sqlite_db, run.threads[0], "failed")
    await store.tx(engine.settle, T0)
    [waiting] = await runs(store, sched.id)
    assert waiting.state == "running"
    assert waiting.next_retry_at is not None
    assert waiting.next_retry_at > T0

    effects = await store.tx(engine.retry_due, waiting.next_retry_at)
    assert effects.threads_created == 1
    [retried] = await runs(store, sched.id)
    assert retried.attempt == 2
    assert len(retried.threads) == 2
    assert retried.current_thread_id == retried.threads[1]
    assert retried.next_retry_at is None

    await end_thread(sqlite_db, retried.threads[1], "succeeded")
    settled = await store.tx(engine.settle, T0 + timedelta(minutes=1))
    assert settled.transitions == [(sched.id, "succeeded")]
    [done] = await runs(store, sched.id)
    assert (done.state, done.finished_at) == ("succeeded", T0 + timedelta(minutes=1))


async def test_a_run_without_its_task_fails_at_once(store: ScheduleStore) -> None:
    engine = RunEngine(TaskRegistry(), store, misfire_grace_seconds=60, seconds_field=False)
    sched = await add_schedule(store)
    effects = await store.tx(engine.process_due, sched.id, T0)
    assert [r.state for r in await runs(store, sched.id)] == ["failed"]
    assert effects.threads_created == 0


def test_the_scheduler_recovers_schedules_whose_watermark_is_late() -> None:
    now = T0 + timedelta(minutes=1)
    late = now - timedelta(seconds=LATE_PICKUP_SECONDS + 1)
    wanted, overdue = Scheduler._snapshot(
        [
            ScheduleTiming("schedule_a", "*/5 * * * *", "UTC", late),
            ScheduleTiming("schedule_b", "0 * * * *", "UTC", now),
            ScheduleTiming("schedule_c", "0 * * * *", "UTC", None),
        ],
        now,
    )
    assert wanted == {
        "schedule_a": ("*/5 * * * *", "UTC"),
        "schedule_b": ("0 * * * *", "UTC"),
        "schedule_c": ("0 * * * *", "UTC"),
    }
    assert overdue == ["schedule_a"]
