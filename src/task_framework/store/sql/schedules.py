"""Schedules and their runs over SQLAlchemy Core (``schedules``, ``schedule_runs``; the
replace policy's stop of a run's threads in ``threads``)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import Connection, Row, delete, insert, or_, select, update

from task_framework.models.threads import TERMINAL_STATES
from task_framework.store.base import Tx
from task_framework.store.database import Database
from task_framework.store.pages import Page, PageRequest
from task_framework.store.paging import paginate
from task_framework.store.schedules import (
    RunChange,
    RunFilter,
    RunRecord,
    ScheduleFilter,
    ScheduleRecord,
    ScheduleTiming,
)
from task_framework.store.sql._dialect import conn_of, translated
from task_framework.store.tables import (
    schedule_runs,
    schedules,
    threads,
)

__all__ = ["SqlScheduleStore"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_LIVE_THREAD_STATES = ("queued", "running")


def _schedule(row: Row[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        id=row.id,
        cron=row.cron,
        timezone=row.timezone,
        state=row.state,
        task_id=row.task_id,
        task_version=row.task_version,
        inputs_template=row.inputs_template or [],
        params=row.params or {},
        metadata=row.metadata or {},
        webhooks=row.webhooks,
        concurrency_policy=row.concurrency_policy,
        max_attempts=row.max_attempts,
        misfire_policy=row.misfire_policy,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        app_id=row.app_id,
        user_id=row.user_id,
        created_by_admin=bool(row.created_by_admin),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        schedule_id=row.schedule_id,
        scheduled_for_utc=row.scheduled_for_utc,
        timezone=row.timezone,
        state=row.state,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        threads=tuple(row.threads or ()),
        current_thread_id=row.current_thread_id,
        next_retry_at=row.next_retry_at,
        labels=row.labels or {},
        app_id=row.app_id,
        user_id=row.user_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class SqlScheduleStore:
    """:class:`~task_framework.store.schedules.ScheduleStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def tx(self, fn: Callable[[Tx, *Ts], T], /, *args: *Ts) -> T:
        return await self._db.tx(fn, *args)

    # -- schedules ----------------------------------------------------------------------

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._db.tx(lambda conn: self.get_in(conn, schedule_id, lock=False))

    async def list_schedules(self, filters: ScheduleFilter, page: PageRequest) -> Page:
        conditions: list[Any] = []
        if filters.scope_app:
            conditions.append(schedules.c.app_id == filters.app_id)
        if filters.scope_user:
            conditions.append(schedules.c.user_id == filters.user_id)
        for column, value in (
            (schedules.c.state, filters.state),
            (schedules.c.task_id, filters.task_id),
            (schedules.c.task_version, filters.task_version),
        ):
            if value is not None:
                conditions.append(column == value)
        query = select(schedules).where(*conditions)

        def _list(conn: Connection) -> Page:
            return paginate(
                conn,
                query,
                route="schedules",
                sort=schedules.c.created_at,
                ident=schedules.c.id,
                page=page,
            )

        return (await self._db.tx(_list)).map(_schedule)

    async def active_timings(self) -> list[ScheduleTiming]:
        def _read(conn: Connection) -> list[ScheduleTiming]:
            rows = conn.execute(
                select(
                    schedules.c.id, schedules.c.cron, schedules.c.timezone, schedules.c.next_run_at
                ).where(schedules.c.state == "active")
            )
            return [ScheduleTiming(r.id, r.cron, r.timezone, r.next_run_at) for r in rows]

        return await self._db.tx(_read)

    def get_in(self, tx: Tx, schedule_id: str, *, lock: bool) -> ScheduleRecord | None:
        query = select(schedules).where(schedules.c.id == schedule_id)
        row = conn_of(tx).execute(query.with_for_update() if lock else query).first()
        return None if row is None else _schedule(row)

    def schedules_in(self, tx: Tx, ids: Collection[str]) -> dict[str, ScheduleRecord]:
        if not ids:
            return {}
        rows = conn_of(tx).execute(select(schedules).where(schedules.c.id.in_(list(ids))))
        return {row.id: _schedule(row) for row in rows}

    def add_in(self, tx: Tx, record: ScheduleRecord) -> None:
        with translated(f"Schedule {record.id}"):
            conn_of(tx).execute(insert(schedules).values(**asdict(record)))

    def save_in(self, tx: Tx, record: ScheduleRecord) -> None:
        values = asdict(record)
        del values["id"]
        conn_of(tx).execute(update(schedules).where(schedules.c.id == record.id).values(values))

    def set_next_run_in(self, tx: Tx, schedule_id: str, at: datetime | None) -> None:
        conn_of(tx).execute(
            update(schedules).where(schedules.c.id == schedule_id).values(next_run_at=at)
        )

    def touch_last_run_in(self, tx: Tx, schedule_id: str, at: datetime) -> None:
        conn_of(tx).execute(
            update(schedules)
            .where(
                schedules.c.id == schedule_id,
                or_(schedules.c.last_run_at.is_(None), schedules.c.last_run_at < at),
            )
            .values(last_run_at=at)
        )

    def delete_in(self, tx: Tx, schedule_id: str) -> None:
        conn = conn_of(tx)
        conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id))
        conn.execute(delete(schedules).where(schedules.c.id == schedule_id))

    # -- runs -----------------------------------------------------------------------------

    def run_in(self, tx: Tx, schedule_id: str, run_id: str) -> RunRecord | None:
        row = (
            conn_of(tx)
            .execute(
                select(schedule_runs).where(
                    schedule_runs.c.schedule_id == schedule_id, schedule_runs.c.run_id == run_id
                )
            )
            .first()
        )
        return None if row is None else _run(row)

    def runs_in(self, tx: Tx, schedule_id: str, filters: RunFilter, page: PageRequest) -> Page:
        conditions = [schedule_runs.c.schedule_id == schedule_id]
        if filters.state is not None:
            conditions.append(schedule_runs.c.state == filters.state)
        if filters.scheduled_after is not None:
            conditions.append(schedule_runs.c.scheduled_for_utc >= filters.scheduled_after)
        if filters.scheduled_before is not None:
            conditions.append(schedule_runs.c.scheduled_for_utc <= filters.scheduled_before)
        result = paginate(
            conn_of(tx),
            select(schedule_runs).where(*conditions),
            route=f"runs:{schedule_id}",
            sort=schedule_runs.c.scheduled_for_utc,
            ident=schedule_runs.c.run_id,
            page=page,
        )
        return result.map(_run)

    def run_exists_in(self, tx: Tx, run_id: str) -> bool:
        found = (
            conn_of(tx)
            .execute(select(schedule_runs.c.run_id).where(schedule_runs.c.run_id == run_id))
            .first()
        )
        return found is not None

    def add_run_in(self, tx: Tx, run: RunRecord) -> None:
        values = asdict(run)
        values["threads"] = list(run.threads)
        with translated(f"Run {run.run_id}"):
            conn_of(tx).execute(insert(schedule_runs).values(**values))

    def update_run_in(self, tx: Tx, run_id: str, change: RunChange) -> None:
        values: dict[str, Any] = {
            name: value
            for name, value in (
                ("state", change.state),
                ("attempt", change.attempt),
                ("current_thread_id", change.current_thread_id),
                ("started_at", change.started_at),
                ("finished_at", change.finished_at),
            )
            if value is not None
        }
        if change.threads is not None:
            values["threads"] = list(change.threads)
        if change.next_retry_at is not None or change.clear_retry:
            values["next_retry_at"] = change.next_retry_at
        if not values:
            return
        conn_of(tx).execute(
            update(schedule_runs).where(schedule_runs.c.run_id == run_id).values(values)
        )

    def running_runs_in(self, tx: Tx, schedule_id: str, *, excluding: str) -> list[RunRecord]:
        rows = conn_of(tx).execute(
            select(schedule_runs).where(
                schedule_runs.c.schedule_id == schedule_id,
                schedule_runs.c.state == "running",
                schedule_runs.c.run_id != excluding,
            )
        )
        return [_run(row) for row in rows]

    def ended_runs_in(self, tx: Tx, *, limit: int) -> list[tuple[RunRecord, str | None]]:
        query = (
            select(schedule_runs, threads.c.state.label("thread_state"))
            .select_from(
                schedule_runs.outerjoin(threads, threads.c.id == schedule_runs.c.current_thread_id)
            )
            .where(
                schedule_runs.c.state == "running",
                schedule_runs.c.next_retry_at.is_(None),
                or_(threads.c.id.is_(None), threads.c.state.in_(sorted(TERMINAL_STATES))),
            )
            .limit(limit)
            .with_for_update(skip_locked=True, of=schedule_runs)
        )
        return [(_run(row), row.thread_state) for row in conn_of(tx).execute(query)]

    def due_retries_in(self, tx: Tx, now: datetime, *, limit: int) -> list[RunRecord]:
        rows = conn_of(tx).execute(
            select(schedule_runs)
            .where(schedule_runs.c.state == "running", schedule_runs.c.next_retry_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_run(row) for row in rows]

    def stop_threads_in(
        self, tx: Tx, thread_ids: Collection[str], now: datetime
    ) -> list[tuple[str, str]]:
        if not thread_ids:
            return []
        conn = conn_of(tx)
        live = list(
            conn.execute(
                select(threads.c.id, threads.c.state).where(
                    threads.c.id.in_(list(thread_ids)),
                    threads.c.state.in_(_LIVE_THREAD_STATES),
                )
            )
        )
        for row in live:
            conn.execute(
                update(threads)
                .where(threads.c.id == row.id, threads.c.state.in_(_LIVE_THREAD_STATES))
                .values(state="stopped", finished_at=now, stop_requested=True)
            )
        return [(row.id, row.state) for row in live]
