"""The scheduler of one replica (API.md §6, ARCHITECTURE.md §6).

APScheduler 3 (``AsyncIOScheduler``) holds one job per active schedule and wakes it at
each fire time. Fire times come from our own cron module through :class:`CronTimes`
(APScheduler's ``CronTrigger`` numbers weekdays from Monday, fires nonexistent local
times and fires repeated local times twice, all contrary to API.md §6.1). A wake-up only
says "this schedule may be due": :meth:`RunEngine.process_due` decides from the database
watermark which fires to run, so replicas agree and every fire yields one run.

Three loops keep the jobs true to the database:

* resync (every :data:`RESYNC_SECONDS`, and at once after a local change): add, replace
  or drop jobs so they match the active schedules, then process schedules whose
  watermark is overdue (a replica was down or started late: misfires and late fires);
* reconcile (every :data:`RECONCILE_SECONDS`, and at once when a local thread with a
  ``run_id`` settles): settle runs whose thread ended, however it ended (any replica,
  ``:stop``, ``WORKER_LOST``), and start retries whose back-off elapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]

from task_framework.errors import TaskFrameworkError
from task_framework.models._time import utcnow
from task_framework.services.cron import CronError, CronSpec
from task_framework.services.schedule_runs import Effects, RunEngine
from task_framework.store.errors import UniqueViolation
from task_framework.store.schedules import ScheduleStore, ScheduleTiming

log = logging.getLogger("task_framework.scheduler")

RESYNC_SECONDS = 2.0
RECONCILE_SECONDS = 1.0
LATE_PICKUP_SECONDS = 3.0
"""A watermark this far behind now means no job processed the fire: recover it."""
MAX_JOB_INSTANCES = 4


class CronTimes(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger whose fire times come from :mod:`services.cron`."""

    __slots__ = ("spec", "zone")

    def __init__(self, spec: CronSpec, zone: ZoneInfo) -> None:
        self.spec = spec
        self.zone = zone

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        after = now if previous_fire_time is None else max(previous_fire_time, now)
        return self.spec.next_after(after, self.zone)

    def __str__(self) -> str:
        return f"cron[{self.spec.expression!r}, {self.zone.key}]"


class Scheduler:
    """Keeps one APScheduler job per active schedule and reconciles runs."""

    def __init__(
        self,
        *,
        store: ScheduleStore,
        engine: RunEngine,
        apply: Callable[[Effects], Awaitable[None]],
    ) -> None:
        self._store = store
        self._engine = engine
        self._apply = apply
        self._aps: AsyncIOScheduler | None = None
        self._jobs: dict[str, tuple[str, str]] = {}
        self._resync_now = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return self._aps is not None and bool(self._aps.running) and bool(self._loops)

    async def start(self) -> None:
        # APScheduler narrates every job run at INFO; only problems are worth a line.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": None,
                "max_instances": MAX_JOB_INSTANCES,
            },
        )
        self._aps.start()
        self._loops = [
            asyncio.create_task(self._resync_loop(), name="scheduler-resync"),
            asyncio.create_task(self._reconcile_loop(), name="scheduler-reconcile"),
        ]

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=False)
        self._aps = None
        self._jobs.clear()

    def changed(self) -> None:
        """A schedule changed on this replica: resync now."""
        self._resync_now.set()

    def thread_settled(self, thread: dict[str, Any]) -> None:
        """Executor hook: a thread ended; if it belongs to a run, settle it soon."""
        if thread.get("run_id"):
            self._reconcile_now.set()

    # -- loops ----------------------------------------------------------------------------

    async def _resync_loop(self) -> None:
        while True:
            self._resync_now.clear()
            try:
                await self.resync()
            except TaskFrameworkError as exc:
                log.warning("scheduler.resync_failed", extra={"error": exc.message})
            except Exception:
                log.exception("scheduler.resync_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), RESYNC_SECONDS)

    async def _reconcile_loop(self) -> None:
        while True:
            self._reconcile_now.clear()
            try:
                await self.reconcile()
            except TaskFrameworkError as exc:
                log.warning("scheduler.reconcile_failed", extra={"error": exc.message})
            except Exception:
                log.exception("scheduler.reconcile_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_now.wait(), RECONCILE_SECONDS)

    async def resync(self) -> None:
        """Match the jobs to the active schedules; recover overdue ones."""
        now = utcnow()
        wanted, overdue = self._snapshot(await self._store.active_timings(), now)
        aps = self._aps
        if aps is None:
            return
        for schedule_id in set(self._jobs) - set(wanted):
            del self._jobs[schedule_id]
            with contextlib.suppress(JobLookupError):
                aps.remove_job(schedule_id)
        for schedule_id, timing in wanted.items():
            if self._jobs.get(schedule_id) == timing:
                continue
            try:
                spec, zone = self._engine.compile(*timing)
            except (CronError, ValueError) as exc:
                log.warning("scheduler.bad_schedule", extra={"schedule_id": schedule_id})
                log.debug("bad schedule: %s", exc)
                continue
            aps.add_job(
                self.wake,
                trigger=CronTimes(spec, zone),
                args=[schedule_id],
                id=schedule_id,
                name=schedule_id,
                replace_existing=True,
            )
            self._jobs[schedule_id] = timing
        for schedule_id in overdue:
            await self.wake(schedule_id)

    @staticmethod
    def _snapshot(
        rows: list[ScheduleTiming], now: datetime
    ) -> tuple[dict[str, tuple[str, str]], list[str]]:
        late = now - timedelta(seconds=LATE_PICKUP_SECONDS)
        wanted: dict[str, tuple[str, str]] = {}
        overdue: list[str] = []
        for row in rows:
            wanted[row.id] = (row.cron, row.timezone)
            if row.next_run_at is not None and row.next_run_at <= late:
                overdue.append(row.id)
        return wanted, overdue

    async def wake(self, schedule_id: str) -> None:
        """Process whatever fires of one schedule are due (job callback)."""
        try:
            effects = await self._store.tx(self._engine.process_due, schedule_id, utcnow())
        except UniqueViolation:
            # Backstop of the unique fire key: another replica recorded this fire.
            log.debug("fire already recorded elsewhere", extra={"schedule_id": schedule_id})
            return
        except TaskFrameworkError as exc:
            log.warning(
                "scheduler.fire_failed", extra={"schedule_id": schedule_id, "error": exc.message}
            )
            return
        await self._apply(effects)

    async def reconcile(self) -> None:
        now = utcnow()
        await self._apply(await self._store.tx(self._engine.settle, now))
        await self._apply(await self._store.tx(self._engine.retry_due, now))
