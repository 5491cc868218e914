"""Contract of :class:`task_framework.store.schedules.ScheduleStore`, over SQLite and
PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.store.base import Tx
from task_framework.store.database import Database
from task_framework.store.errors import UniqueViolation
from task_framework.store.pages import PageRequest
from task_framework.store.schedules import (
    RunChange,
    RunFilter,
    RunRecord,
    ScheduleFilter,
    ScheduleRecord,
    ScheduleStore,
    ScheduleTiming,
)
from task_framework.store.sql import SqlScheduleStore
from task_framework.store.tables import threads

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_db: Database) -> ScheduleStore:
    return SqlScheduleStore(store_db)


def schedule(**changes: Any) -> ScheduleRecord:
    record = ScheduleRecord(
        id=new_id("schedule"),
        cron="*/5 * * * *",
        timezone="Europe/Berlin",
        state="active",
        task_id="echo",
        task_version="1.0.0",
        inputs_template=[{"kind": "json", "value": {"n": 1}}],
        params={"p": 1},
        metadata={"m": "x"},
        webhooks=None,
        concurrency_policy="allow",
        max_attempts=3,
        misfire_policy="skip",
        next_run_at=T0,
        last_run_at=None,
        app_id="app1",
        user_id="user1",
        created_by_admin=False,
        created_at=T0,
        updated_at=T0,
    )
    return replace(record, **changes)


def run(sched: ScheduleRecord, at: datetime, **changes: Any) -> RunRecord:
    record = RunRecord(
        run_id=f"{sched.id}_run_{at:%Y-%m-%dT%H:%M:%S}.000000Z",
        schedule_id=sched.id,
        scheduled_for_utc=at,
        timezone=sched.timezone,
        state="pending",
        attempt=1,
        max_attempts=sched.max_attempts,
        threads=(),
        current_thread_id=None,
        next_retry_at=None,
        labels={"trigger": "manual"},
        app_id=sched.app_id,
        user_id=sched.user_id,
        created_at=at,
        started_at=None,
        finished_at=None,
    )
    return replace(record, **changes)


async def add(store: ScheduleStore, *records: ScheduleRecord | RunRecord) -> None:
    def _add(tx: Tx) -> None:
        for record in records:
            if isinstance(record, ScheduleRecord):
                store.add_in(tx, record)
            else:
                store.add_run_in(tx, record)

    await store.tx(_add)


async def add_thread(db: Database, state: str) -> str:
    thread_id = new_id("thread")

    def _add(conn: Connection) -> None:
        conn.execute(
            insert(threads).values(
                id=thread_id, state=state, metadata={}, params={}, problems=[], created_at=utcnow()
            )
        )

    await db.tx(_add)
    return thread_id


# -- schedules ------------------------------------------------------------------------------


async def test_a_schedule_reads_back_as_added(store: ScheduleStore) -> None:
    assert await store.get("schedule_absent") is None
    record = schedule(webhooks=[{"callback_url": "https://x.test/h", "api_key": None}])
    await add(store, record)
    assert await store.get(record.id) == record
    assert await store.tx(lambda tx: store.get_in(tx, record.id, lock=True)) == record
    with pytest.raises(UniqueViolation):
        await add(store, replace(record, cron="0 * * * *"))
    assert await store.get(record.id) == record


async def test_the_work_of_a_failed_transaction_is_not_kept(store: ScheduleStore) -> None:
    record = schedule()

    def _fail(tx: Tx) -> None:
        store.add_in(tx, record)
        raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError):
        await store.tx(_fail)
    assert await store.get(record.id) is None


async def test_save_in_writes_every_field(store: ScheduleStore) -> None:
    record = schedule()
    await add(store, record)
    changed = replace(
        record,
        cron="0 0 * * *",
        state="paused",
        params={},
        metadata={"new": True},
        next_run_at=None,
        max_attempts=1,
        updated_at=T0 + timedelta(hours=1),
    )
    await store.tx(store.save_in, changed)
    assert await store.get(record.id) == changed


async def test_the_watermark_and_the_last_run(store: ScheduleStore) -> None:
    record = schedule()
    await add(store, record)
    later = T0 + timedelta(minutes=10)
    await store.tx(store.set_next_run_in, record.id, later)
    await store.tx(store.touch_last_run_in, record.id, T0 + timedelta(minutes=5))
    await store.tx(store.touch_last_run_in, record.id, T0)  # earlier: kept
    stored = await store.get(record.id)
    assert stored is not None
    assert (stored.next_run_at, stored.last_run_at) == (later, T0 + timedelta(minutes=5))
    await store.tx(store.set_next_run_in, record.id, None)
    stored = await store.get(record.id)
    assert stored is not None
    assert stored.next_run_at is None


async def test_list_schedules_filters_scopes_and_pages(store: ScheduleStore) -> None:
    mine = [schedule(created_at=T0 + timedelta(seconds=i)) for i in range(3)]
    paused = schedule(state="paused", task_id="other", created_at=T0 + timedelta(seconds=5))
    theirs = schedule(app_id="app2", user_id=None, created_at=T0 + timedelta(seconds=6))
    await add(store, *mine, paused, theirs)

    everything = await store.list_schedules(ScheduleFilter(), PageRequest())  # newest first
    assert [r.id for r in everything.rows] == [r.id for r in [theirs, paused, *mine[::-1]]]
    assert everything.total == 5

    scoped = ScheduleFilter(scope_app=True, app_id="app1", scope_user=True, user_id="user1")
    first = await store.list_schedules(scoped, PageRequest(limit=2))
    assert ([r.id for r in first.rows], first.total, first.has_more) == (
        [paused.id, mine[2].id],
        4,
        True,
    )
    rest = await store.list_schedules(scoped, PageRequest(limit=2, cursor=first.cursor))
    assert [r.id for r in rest.rows] == [mine[1].id, mine[0].id]
    assert not rest.has_more

    unowned_user = ScheduleFilter(scope_app=True, app_id="app2", scope_user=True, user_id=None)
    assert [r.id for r in (await store.list_schedules(unowned_user, PageRequest())).rows] == [
        theirs.id
    ]
    by_state = await store.list_schedules(ScheduleFilter(state="paused"), PageRequest())
    assert [r.id for r in by_state.rows] == [paused.id]
    by_task = ScheduleFilter(task_id="echo", task_version="1.0.0", scope_app=True, app_id="app2")
    assert [r.id for r in (await store.list_schedules(by_task, PageRequest())).rows] == [theirs.id]


async def test_active_timings_and_schedules_in(store: ScheduleStore) -> None:
    active = schedule()
    paused = schedule(state="paused", next_run_at=None)
    await add(store, active, paused)
    assert await store.active_timings() == [
        ScheduleTiming(active.id, active.cron, active.timezone, active.next_run_at)
    ]
    found = await store.tx(store.schedules_in, {active.id, paused.id, "schedule_gone"})
    assert found == {active.id: active, paused.id: paused}
    assert await store.tx(store.schedules_in, set()) == {}


async def test_delete_in_removes_the_schedule_and_its_runs(store: ScheduleStore) -> None:
    gone, kept = schedule(), schedule()
    await add(store, gone, kept, run(gone, T0), run(kept, T0))
    await store.tx(store.delete_in, gone.id)
    await store.tx(store.delete_in, "schedule_absent")
    assert await store.get(gone.id) is None
    assert not await store.tx(store.run_exists_in, run(gone, T0).run_id)
    assert await store.get(kept.id) == kept
    assert await store.tx(store.run_exists_in, run(kept, T0).run_id)


# -- runs -------------------------------------------------------------------------------------


async def test_a_run_reads_back_and_one_fire_makes_one_run(store: ScheduleStore) -> None:
    sched = schedule()
    first = run(sched, T0, threads=("thread_a",), current_thread_id="thread_a")
    await add(store, sched, first)
    assert await store.tx(store.run_in, sched.id, first.run_id) == first
    assert await store.tx(store.run_in, "schedule_other", first.run_id) is None
    assert await store.tx(store.run_exists_in, first.run_id)
    assert not await store.tx(store.run_exists_in, "run_absent")
    with pytest.raises(UniqueViolation):
        await add(store, replace(first, labels={}))
    with pytest.raises(UniqueViolation):  # the same fire under another id
        await add(store, replace(first, run_id=first.run_id + "x"))


async def test_update_run_in_changes_only_what_it_names(store: ScheduleStore) -> None:
    sched = schedule()
    record = run(sched, T0)
    await add(store, sched, record)

    async def stored() -> RunRecord | None:
        return await store.tx(store.run_in, sched.id, record.run_id)

    retry_at = T0 + timedelta(seconds=4)
    await store.tx(store.update_run_in, record.run_id, RunChange(next_retry_at=retry_at))
    assert await stored() == replace(record, next_retry_at=retry_at)
    change = RunChange(
        state="running",
        attempt=2,
        threads=("thread_a", "thread_b"),
        current_thread_id="thread_b",
        started_at=T0,
        clear_retry=True,
    )
    await store.tx(store.update_run_in, record.run_id, change)
    expected = replace(
        record,
        state="running",
        attempt=2,
        threads=("thread_a", "thread_b"),
        current_thread_id="thread_b",
        started_at=T0,
    )
    assert await stored() == expected
    await store.tx(store.update_run_in, record.run_id, RunChange())
    await store.tx(store.update_run_in, record.run_id, RunChange(finished_at=T0, state="failed"))
    assert await stored() == replace(expected, finished_at=T0, state="failed")


async def test_runs_in_filters_and_pages(store: ScheduleStore) -> None:
    sched, other = schedule(), schedule()
    runs = [run(sched, T0 + timedelta(minutes=5 * i)) for i in range(4)]
    runs[1] = replace(runs[1], state="skipped")
    await add(store, sched, other, *runs, run(other, T0))

    def page(filters: RunFilter, request: PageRequest) -> Any:
        return store.tx(store.runs_in, sched.id, filters, request)

    first = await page(RunFilter(), PageRequest(limit=3))  # latest fire first
    assert ([r.run_id for r in first.rows], first.total, first.has_more) == (
        [r.run_id for r in runs[:0:-1]],
        4,
        True,
    )
    rest = await page(RunFilter(), PageRequest(limit=3, cursor=first.cursor))
    assert [r.run_id for r in rest.rows] == [runs[0].run_id]
    skipped = await page(RunFilter(state="skipped"), PageRequest())
    assert [r.run_id for r in skipped.rows] == [runs[1].run_id]
    window = RunFilter(
        scheduled_after=runs[1].scheduled_for_utc, scheduled_before=runs[2].scheduled_for_utc
    )
    assert [r.run_id for r in (await page(window, PageRequest())).rows] == [
        runs[2].run_id,
        runs[1].run_id,
    ]


async def test_running_runs_in_excludes_the_one_named(store: ScheduleStore) -> None:
    sched = schedule()
    a = run(sched, T0, state="running")
    b = run(sched, T0 + timedelta(minutes=5), state="running")
    done = run(sched, T0 + timedelta(minutes=10), state="succeeded")
    await add(store, sched, a, b, done)
    others = await store.tx(lambda tx: store.running_runs_in(tx, sched.id, excluding=b.run_id))
    assert others == [a]


async def test_ended_runs_in_finds_runs_whose_thread_ended_or_is_gone(
    store_db: Database, store: ScheduleStore
) -> None:
    sched = schedule()
    ended = await add_thread(store_db, "succeeded")
    live = await add_thread(store_db, "running")
    finished = run(sched, T0, state="running", threads=(ended,), current_thread_id=ended)
    orphan = run(sched, T0 + timedelta(minutes=5), state="running", current_thread_id="thread_x")
    busy = run(sched, T0 + timedelta(minutes=10), state="running", current_thread_id=live)
    waiting = run(
        sched,
        T0 + timedelta(minutes=15),
        state="running",
        current_thread_id=ended,
        next_retry_at=T0,
    )
    await add(store, sched, finished, orphan, busy, waiting)
    found = await store.tx(lambda tx: store.ended_runs_in(tx, limit=10))
    assert sorted(found, key=lambda pair: pair[0].run_id) == sorted(
        [(finished, "succeeded"), (orphan, None)], key=lambda pair: pair[0].run_id
    )
    assert len(await store.tx(lambda tx: store.ended_runs_in(tx, limit=1))) == 1


async def test_due_retries_in(store: ScheduleStore) -> None:
    sched = schedule()
    due = run(sched, T0, state="running", next_retry_at=T0)
    later = run(sched, T0 + timedelta(minutes=5), state="running", next_retry_at=T0 + timedelta(1))
    settled = run(sched, T0 + timedelta(minutes=10), state="failed", next_retry_at=T0)
    await add(store, sched, due, later, settled)
    now = T0 + timedelta(seconds=1)
    assert await store.tx(lambda tx: store.due_retries_in(tx, now, limit=10)) == [due]


async def test_stop_threads_in_stops_only_live_threads(
    store_db: Database, store: ScheduleStore
) -> None:
    queued = await add_thread(store_db, "queued")
    running = await add_thread(store_db, "running")
    done = await add_thread(store_db, "failed")
    stopped = await store.tx(store.stop_threads_in, (queued, running, done, "thread_x"), T0)
    assert sorted(stopped) == sorted([(queued, "queued"), (running, "running")])

    def _states(conn: Connection) -> dict[str, tuple[str, bool, datetime | None]]:
        rows = conn.execute(
            select(threads.c.id, threads.c.state, threads.c.stop_requested, threads.c.finished_at)
        )
        return {r.id: (r.state, r.stop_requested, r.finished_at) for r in rows}

    states = await store_db.tx(_states)
    assert states[queued] == states[running] == ("stopped", True, T0)
    assert states[done][0] == "failed"
    assert await store.tx(store.stop_threads_in, (), T0) == []
