"""The schedule store: schedules and their runs (API.md §6).

Most methods are ``*_in``: the run engine processes a fire, a settlement or a retry in
one transaction that also creates threads and writes events, so it composes these with
that work in a transaction it opens through :meth:`ScheduleStore.tx`.

A schedule's ``next_run_at`` is the watermark of its next unprocessed fire; the unique
``(schedule_id, scheduled_for_utc)`` key makes one run per fire across replicas, and a
second insert of the same fire raises :class:`~task_framework.store.errors.UniqueViolation`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, TypeVarTuple

from task_framework.store.base import Tx
from task_framework.store.pages import Page, PageRequest

__all__ = [
    "RunChange",
    "RunFilter",
    "RunRecord",
    "ScheduleFilter",
    "ScheduleRecord",
    "ScheduleStore",
    "ScheduleTiming",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    id: str
    cron: str
    timezone: str
    state: str
    task_id: str
    task_version: str
    inputs_template: list[dict[str, Any]]
    params: dict[str, Any]
    metadata: dict[str, Any]
    webhooks: list[dict[str, Any]] | None
    """As the schedule shows them (``api_key`` blanked); the live ones are webhook rows."""
    concurrency_policy: str
    max_attempts: int
    misfire_policy: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    app_id: str | None
    user_id: str | None
    created_by_admin: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleTiming:
    """What the scheduler needs of an active schedule to keep its job."""

    id: str
    cron: str
    timezone: str
    next_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScheduleFilter:
    """A schedule listing. ``scope_app``/``scope_user``: only schedules whose ``app_id``/
    ``user_id`` equals the one given (``None`` matches only unowned ones)."""

    scope_app: bool = False
    app_id: str | None = None
    scope_user: bool = False
    user_id: str | None = None
    state: str | None = None
    task_id: str | None = None
    task_version: str | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    schedule_id: str
    scheduled_for_utc: datetime
    timezone: str
    state: str
    attempt: int
    max_attempts: int
    threads: tuple[str, ...]
    current_thread_id: str | None
    next_retry_at: datetime | None
    labels: dict[str, Any]
    app_id: str | None
    user_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunFilter:
    state: str | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunChange:
    """A change to a run; ``None`` keeps the stored field. ``next_retry_at`` is written
    when given or when ``clear_retry`` (to ``None``)."""

    state: str | None = None
    attempt: int | None = None
    threads: tuple[str, ...] | None = None
    current_thread_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_retry_at: datetime | None = None
    clear_retry: bool = False


class ScheduleStore(Protocol):
    async def tx(self, fn: Callable[[Tx, *Ts], T], /, *args: *Ts) -> T:
        """Run ``fn(tx, *args)`` in one transaction of the records store."""
        ...

    # -- schedules ----------------------------------------------------------------------

    async def get(self, schedule_id: str) -> ScheduleRecord | None: ...

    async def list_schedules(self, filters: ScheduleFilter, page: PageRequest) -> Page:
        """Schedules by ``(created_at, id)``; the page's rows are ScheduleRecords."""
        ...

    async def active_timings(self) -> list[ScheduleTiming]:
        """Every active schedule's timing."""
        ...

    def get_in(self, tx: Tx, schedule_id: str, *, lock: bool) -> ScheduleRecord | None:
        """The schedule, locked until ``tx`` ends when ``lock`` (``FOR UPDATE``)."""
        ...

    def schedules_in(self, tx: Tx, ids: Collection[str]) -> dict[str, ScheduleRecord]:
        """The existing schedules among ``ids``, by id."""
        ...

    def add_in(self, tx: Tx, record: ScheduleRecord) -> None:
        """:class:`~task_framework.store.errors.UniqueViolation` when the id is taken."""
        ...

    def save_in(self, tx: Tx, record: ScheduleRecord) -> None:
        """Write every field of a schedule the caller holds locked."""
        ...

    def set_next_run_in(self, tx: Tx, schedule_id: str, at: datetime | None) -> None:
        """Move the watermark."""
        ...

    def touch_last_run_in(self, tx: Tx, schedule_id: str, at: datetime) -> None:
        """Set ``last_run_at`` to ``at`` unless it is later already."""
        ...

    def delete_in(self, tx: Tx, schedule_id: str) -> None:
        """Delete the schedule and its runs (a no-op when absent)."""
        ...

    # -- runs -----------------------------------------------------------------------------

    def run_in(self, tx: Tx, schedule_id: str, run_id: str) -> RunRecord | None: ...

    def runs_in(self, tx: Tx, schedule_id: str, filters: RunFilter, page: PageRequest) -> Page:
        """A schedule's runs by ``(scheduled_for_utc, run_id)``; rows are RunRecords."""
        ...

    def run_exists_in(self, tx: Tx, run_id: str) -> bool: ...

    def add_run_in(self, tx: Tx, run: RunRecord) -> None:
        """:class:`~task_framework.store.errors.UniqueViolation` when the run, or another
        run of the same fire, exists (another replica recorded it)."""
        ...

    def update_run_in(self, tx: Tx, run_id: str, change: RunChange) -> None: ...

    def running_runs_in(self, tx: Tx, schedule_id: str, *, excluding: str) -> list[RunRecord]:
        """The schedule's ``running`` runs other than ``excluding``."""
        ...

    def ended_runs_in(self, tx: Tx, *, limit: int) -> list[tuple[RunRecord, str | None]]:
        """Up to ``limit`` running runs with no retry pending whose current thread ended
        or is gone, with that thread's state (None: gone). Locked, skipping runs another
        transaction holds."""
        ...

    def due_retries_in(self, tx: Tx, now: datetime, *, limit: int) -> list[RunRecord]:
        """Up to ``limit`` running runs whose retry is due; locked, skipping held ones."""
        ...

    def stop_threads_in(
        self, tx: Tx, thread_ids: Collection[str], now: datetime
    ) -> list[tuple[str, str]]:
        """Stop the queued or running ones among ``thread_ids`` (the replace policy);
        each stopped thread's id and the state it had."""
        ...
