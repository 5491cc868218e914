"""The life of schedule runs: fires, misfires, concurrency policies, settlement, retries.

API.md §6.2-§6.4. Every method of :class:`RunEngine` runs inside the caller's database
transaction and collects in :class:`Effects` what must happen once it has committed
(metrics, terminating stopped processes, waking the executor).

A schedule's ``next_run_at`` is the watermark of its next unprocessed nominal fire. A
replica that wakes for a schedule locks its row and processes every fire between the
watermark and now, then advances the watermark: other replicas waking for the same
fire find nothing left to do, and the unique ``(schedule_id, scheduled_for_utc)``
constraint backs this up. Fires older than the misfire grace follow the misfire policy.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert, or_, select, update

from task_framework.errors import TaskFrameworkError
from task_framework.ids import new_id
from task_framework.models._time import format_ts
from task_framework.models.threads import TERMINAL_STATES
from task_framework.observability.tracing import NO_TRACING, Tracing
from task_framework.services.auth import Principal
from task_framework.services.cron import CronSpec, load_zone, parse_cron
from task_framework.services.events import insert_events, thread_event
from task_framework.services.tasks import TaskRegistry
from task_framework.services.threads import _NewThread, insert_thread, load_thread
from task_framework.store.tables import schedule_runs, schedules, threads

log = logging.getLogger("task_framework.schedules")

RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 300.0
RETRY_JITTER = 0.2
MAX_MISSED_RECORDED = 100
"""Skipped runs recorded per schedule per recovery; older misses are only logged."""
BATCH_SIZE = 200
"""Runs settled or retried per transaction."""
THREAD_OUTCOME_TO_RUN = {"succeeded": "succeeded", "stopped": "stopped", "timeout": "timeout"}
RUN_EVENT = {
    "running": "schedule.run.started",
    "succeeded": "schedule.run.succeeded",
    "failed": "schedule.run.failed",
    "stopped": "schedule.run.failed",
    "timeout": "schedule.run.failed",
    "skipped": "schedule.run.skipped",
}


@dataclass(slots=True)
class Effects:
    """What to do after the transaction committed."""

    transitions: list[tuple[str, str]] = field(default_factory=list)
    stopped_threads: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    threads_created: int = 0
    fire_lags: list[float] = field(default_factory=list)
    """Seconds from a run's nominal time to its first thread (one per started run)."""


def run_id_for(schedule_id: str, scheduled_for: datetime) -> str:
    """``{schedule_id}_run_{YYYY-MM-DDTHH:MM:SS}.000000Z`` (API.md §1.1)."""
    return f"{schedule_id}_run_{scheduled_for:%Y-%m-%dT%H:%M:%S}.000000Z"


def retry_delay_seconds(attempt: int) -> float:
    """Back-off before attempt ``attempt + 1``: 2 s x 2^(attempt-1), capped, +-20 %."""
    base = min(RETRY_BASE_SECONDS * 2.0 ** (attempt - 1), RETRY_CAP_SECONDS)
    factor: float = random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)  # noqa: S311 - jitter
    return base * factor


def run_dict(m: Any) -> dict[str, Any]:
    """A run row (or a dict of its values) as the API shows it."""
    zone = _zone_or_utc(m["timezone"])
    scheduled: datetime = m["scheduled_for_utc"]
    return {
        "schedule_id": m["schedule_id"],
        "run_id": m["run_id"],
        "scheduled_for_utc": format_ts(scheduled),
        "scheduled_for_local": scheduled.astimezone(zone).isoformat(timespec="microseconds"),
        "state": m["state"],
        "attempt": m["attempt"],
        "max_attempts": m["max_attempts"],
        "threads": list(m["threads"] or []),
        "metrics": None,
        "labels": m["labels"] or {},
        "created_at": format_ts(m["created_at"]),
        "started_at": format_ts(m["started_at"]),
        "finished_at": format_ts(m["finished_at"]),
    }


def _zone_or_utc(name: str) -> ZoneInfo:
    try:
        return load_zone(name)
    except ValueError:
        return ZoneInfo("UTC")


def run_event(event_type: str, run: dict[str, Any], sched: Any, at: datetime) -> dict[str, Any]:
    """An ``events`` row about a run (API.md §12.2, §12.4)."""
    metadata = {
        **(sched.metadata or {}),
        "schedule_id": run["schedule_id"],
        "run_id": run["run_id"],
        "task_id": sched.task_id,
        "task_version": sched.task_version,
        "user_id": sched.user_id,
        "app_id": sched.app_id,
    }
    payload_run = {
        key: run[key]
        for key in (
            "schedule_id",
            "run_id",
            "state",
            "attempt",
            "max_attempts",
            "scheduled_for_utc",
            "threads",
            "started_at",
            "finished_at",
        )
        if run[key] is not None
    }
    return {
        "id": new_id("event"),
        "event_type": event_type,
        "thread_id": None,
        "schedule_id": run["schedule_id"],
        "run_id": run["run_id"],
        "app_id": sched.app_id,
        "user_id": sched.user_id,
        "data": {"timestamp": format_ts(at), "metadata": metadata, "run": payload_run},
        "created_at": at,
    }


@lru_cache(maxsize=4096)
def _compiled(cron: str, timezone: str, seconds_field: bool) -> tuple[CronSpec, ZoneInfo]:
    return parse_cron(cron, seconds_field=seconds_field), load_zone(timezone)


class RunEngine:
    """Fires, settles and retries runs; every method takes an open transaction."""

    def __init__(
        self, registry: TaskRegistry, *, misfire_grace_seconds: float, seconds_field: bool
    ) -> None:
        self._registry = registry
        self.grace = timedelta(seconds=misfire_grace_seconds)
        self.seconds_field = seconds_field
        self.tracing: Tracing = NO_TRACING  # set by the app

    def compile(self, cron: str, timezone: str) -> tuple[CronSpec, ZoneInfo]:
        """Parsed cron and zone (raises CronError / ValueError)."""
        return _compiled(cron, timezone, self.seconds_field)

    def next_fire(self, cron: str, timezone: str, after: datetime) -> datetime | None:
        spec, zone = self.compile(cron, timezone)
        return spec.next_after(after, zone)

    # -- fires ------------------------------------------------------------------------------

    def process_due(self, conn: Connection, schedule_id: str, now: datetime) -> Effects:
        """Process every fire of one schedule from its watermark up to ``now``."""
        effects = Effects()
        sched = _lock_schedule(conn, schedule_id)
        if sched is None or sched.state != "active" or sched.next_run_at is None:
            return effects
        if sched.next_run_at > now:
            return effects
        try:
            spec, zone = self.compile(sched.cron, sched.timezone)
        except ValueError:  # CronError included; refused at create/patch, so not expected
            log.warning("schedule.invalid_timing", extra={"schedule_id": schedule_id})
            return effects
        cutoff = now - self.grace
        missed: list[datetime] = []
        due: list[datetime] = []
        overflow = False
        for fire in spec.fires(sched.next_run_at, now, zone):
            if fire >= cutoff:
                due.append(fire)
            elif len(missed) < MAX_MISSED_RECORDED:
                missed.append(fire)
            else:
                overflow = True
                break
        if overflow:
            latest = spec.latest_at_or_before(
                cutoff - timedelta(microseconds=1), zone, not_before=missed[-1]
            )
            if latest is not None and latest != missed[-1]:
                missed.append(latest)
            due = list(spec.fires(cutoff, now, zone))
            log.warning(
                "schedule.misfires_truncated",
                extra={"schedule_id": schedule_id, "recorded": MAX_MISSED_RECORDED},
            )
        if missed and sched.misfire_policy == "catch_up_last":
            self.fire(conn, sched, missed[-1], now, {"trigger": "catch_up"}, effects)
        elif missed:
            for fire in missed[:MAX_MISSED_RECORDED]:
                self._record_skipped(conn, sched, fire, now, effects)
        for fire in due:
            self.fire(conn, sched, fire, now, {}, effects)
        conn.execute(
            update(schedules)
            .where(schedules.c.id == schedule_id)
            .values(next_run_at=spec.next_after(now, zone))
        )
        return effects

    def fire(
        self,
        conn: Connection,
        sched: Any,
        scheduled_for: datetime,
        now: datetime,
        labels: dict[str, Any],
        effects: Effects,
    ) -> dict[str, Any] | None:
        """Create the run of one fire; None when it exists already. ``sched`` is locked."""
        run_id = run_id_for(sched.id, scheduled_for)
        if _run_exists(conn, run_id):
            return None
        run = self._insert_run(conn, sched, run_id, scheduled_for, now, labels)
        others = list(
            conn.execute(
                select(schedule_runs).where(
                    schedule_runs.c.schedule_id == sched.id,
                    schedule_runs.c.state == "running",
                    schedule_runs.c.run_id != run_id,
                )
            )
        )
        if others and sched.concurrency_policy == "forbid":
            return self._transition(conn, sched, run, now, effects, state="skipped")
        if others and sched.concurrency_policy == "replace":
            for other in others:
                self._stop_run(conn, sched, other, now, effects)
        thread_id = self._start_attempt(conn, sched, run_id, attempt=1, effects=effects)
        if thread_id is None:
            run = self._transition(conn, sched, run, now, effects, state="failed")
        else:
            run = self._transition(
                conn,
                sched,
                run,
                now,
                effects,
                state="running",
                started_at=now,
                threads=[thread_id],
                current_thread_id=thread_id,
            )
        self._touch_last_run(conn, sched, scheduled_for)
        return run

    def _record_skipped(
        self, conn: Connection, sched: Any, scheduled_for: datetime, now: datetime, eff: Effects
    ) -> None:
        run_id = run_id_for(sched.id, scheduled_for)
        if _run_exists(conn, run_id):
            return
        run = self._insert_run(conn, sched, run_id, scheduled_for, now, {"trigger": "misfire"})
        self._transition(conn, sched, run, now, eff, state="skipped")
        self._touch_last_run(conn, sched, scheduled_for)

    def _insert_run(
        self,
        conn: Connection,
        sched: Any,
        run_id: str,
        scheduled_for: datetime,
        now: datetime,
        labels: dict[str, Any],
    ) -> dict[str, Any]:
        row = {
            "run_id": run_id,
            "schedule_id": sched.id,
            "scheduled_for_utc": scheduled_for,
            "timezone": sched.timezone,
            "state": "pending",
            "attempt": 1,
            "max_attempts": sched.max_attempts,
            "threads": [],
            "current_thread_id": None,
            "next_retry_at": None,
            "labels": labels,
            "app_id": sched.app_id,
            "user_id": sched.user_id,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
        }
        conn.execute(insert(schedule_runs).values(**row))
        return row

    def _touch_last_run(self, conn: Connection, sched: Any, scheduled_for: datetime) -> None:
        conn.execute(
            update(schedules)
            .where(
                schedules.c.id == sched.id,
                or_(schedules.c.last_run_at.is_(None), schedules.c.last_run_at < scheduled_for),
            )
            .values(last_run_at=scheduled_for)
        )

    def _transition(
        self,
        conn: Connection,
        sched: Any,
        run: dict[str, Any],
        now: datetime,
        effects: Effects,
        *,
        state: str,
        **changes: Any,
    ) -> dict[str, Any]:
        """Move a run to ``state`` (terminal ones get ``finished_at``) with its event."""
        values: dict[str, Any] = {"state": state, **changes}
        if state in ("succeeded", "failed", "stopped", "timeout"):
            values.update(finished_at=now, next_retry_at=None)
        elif state == "skipped":
            values.update(finished_at=run["created_at"])
        conn.execute(
            update(schedule_runs).where(schedule_runs.c.run_id == run["run_id"]).values(**values)
        )
        updated = {**run, **values}
        insert_events(conn, [run_event(RUN_EVENT[state], run_dict(updated), sched, now)])
        effects.transitions.append((sched.id, state))
        if state == "running" and run["state"] == "pending":
            effects.fire_lags.append((now - run["scheduled_for_utc"]).total_seconds())
        return updated

    def _start_attempt(
        self, conn: Connection, sched: Any, run_id: str, *, attempt: int, effects: Effects
    ) -> str | None:
        """Create the thread of one attempt; None (logged) when it cannot be created."""
        task = self._registry.get(sched.task_id, sched.task_version)
        if task is None:
            log.warning(
                "schedule.run.task_unavailable",
                extra={"schedule_id": sched.id, "run_id": run_id, "task_id": sched.task_id},
            )
            return None
        owner = (sched.app_id, sched.user_id)
        metadata = {
            **(sched.metadata or {}),
            "task_id": sched.task_id,
            "task_version": sched.task_version,
            "schedule_id": sched.id,
            "run_id": run_id,
            "user_id": sched.user_id,
            "app_id": sched.app_id,
        }
        plan = _NewThread(
            principal=Principal(bool(sched.created_by_admin), sched.app_id, sched.user_id),
            task=task,
            inputs=[_template_copy(item) for item in sched.inputs_template],
            name=f"schedule_execution_{sched.id}",
            params=dict(sched.params or {}),
            metadata=metadata,
            owner=owner,
            timeout_seconds=None,
            webhooks=None,
            schedule_id=sched.id,
            run_id=run_id,
            attempt=attempt,
            copy_inputs=True,
            created_by_admin=bool(sched.created_by_admin),
        )
        attributes = {"task_framework.schedule_id": sched.id} if self.tracing.enabled else None
        try:
            # Validation happens before any write, so a failure leaves nothing behind.
            with self.tracing.span("thread.create", attributes=attributes) as span:
                plan.traceparent = span.traceparent
                thread, _ = insert_thread(conn, plan)
        except TaskFrameworkError as exc:
            log.warning(
                "schedule.run.thread_rejected",
                extra={"schedule_id": sched.id, "run_id": run_id, "error": exc.message},
            )
            return None
        effects.threads_created += 1
        thread_id: str = thread["id"]
        return thread_id

    def _stop_run(
        self, conn: Connection, sched: Any, other: Any, now: datetime, effects: Effects
    ) -> None:
        """Replace policy: stop a running run's live threads as ``:stop`` does."""
        live = list(
            conn.execute(
                select(threads.c.id, threads.c.state).where(
                    threads.c.id.in_(list(other.threads or [])),
                    threads.c.state.in_(("queued", "running")),
                )
            )
        )
        for row in live:
            conn.execute(
                update(threads)
                .where(threads.c.id == row.id, threads.c.state.in_(("queued", "running")))
                .values(state="stopped", finished_at=now, stop_requested=True)
            )
            thread = load_thread(conn, row.id, show_stack=True)
            insert_events(
                conn,
                [thread_event("thread.stopped", thread, at=now, artifacts=thread["artifacts"])],
            )
            effects.stopped_threads.append((thread, row.state == "running"))
        self._transition(conn, sched, dict(other._mapping), now, effects, state="stopped")

    # -- settlement and retries ---------------------------------------------------------------

    def settle(self, conn: Connection, now: datetime) -> Effects:
        """Runs whose current thread ended: settle them, or schedule their next attempt."""
        effects = Effects()
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
            .limit(BATCH_SIZE)
            .with_for_update(skip_locked=True, of=schedule_runs)
        )
        rows = list(conn.execute(query))
        owners = _schedules_by_id(conn, {r.schedule_id for r in rows})
        for row in rows:
            sched = owners.get(row.schedule_id)
            run = {k: v for k, v in row._mapping.items() if k != "thread_state"}
            outcome = THREAD_OUTCOME_TO_RUN.get(row.thread_state or "", "failed")
            if sched is None:
                conn.execute(
                    update(schedule_runs)
                    .where(schedule_runs.c.run_id == row.run_id)
                    .values(state=outcome, finished_at=now)
                )
            elif outcome == "failed" and row.attempt < row.max_attempts:
                delay = timedelta(seconds=retry_delay_seconds(row.attempt))
                conn.execute(
                    update(schedule_runs)
                    .where(schedule_runs.c.run_id == row.run_id)
                    .values(next_retry_at=now + delay)
                )
            else:
                self._transition(conn, sched, run, now, effects, state=outcome)
        return effects

    def retry_due(self, conn: Connection, now: datetime) -> Effects:
        """Start the next attempt of runs whose back-off has elapsed."""
        effects = Effects()
        rows = list(
            conn.execute(
                select(schedule_runs)
                .where(schedule_runs.c.state == "running", schedule_runs.c.next_retry_at <= now)
                .limit(BATCH_SIZE)
                .with_for_update(skip_locked=True)
            )
        )
        owners = _schedules_by_id(conn, {r.schedule_id for r in rows})
        for row in rows:
            sched = owners.get(row.schedule_id)
            run = dict(row._mapping)
            attempt = row.attempt + 1
            thread_id = (
                None
                if sched is None
                else self._start_attempt(conn, sched, row.run_id, attempt=attempt, effects=effects)
            )
            if thread_id is None:
                if sched is not None:
                    self._transition(conn, sched, run, now, effects, state="failed")
                continue
            conn.execute(
                update(schedule_runs)
                .where(schedule_runs.c.run_id == row.run_id)
                .values(
                    attempt=attempt,
                    threads=[*(row.threads or []), thread_id],
                    current_thread_id=thread_id,
                    next_retry_at=None,
                )
            )
        return effects


def _template_copy(item: dict[str, Any]) -> dict[str, Any]:
    """A stored template artifact as a new input (fresh id, thread and timestamps)."""
    skip = ("id", "thread_id", "created_at", "direction", "archived", "archived_at")
    return {k: v for k, v in item.items() if k not in skip}


def _lock_schedule(conn: Connection, schedule_id: str) -> Any:
    return conn.execute(
        select(schedules).where(schedules.c.id == schedule_id).with_for_update()
    ).first()


def _run_exists(conn: Connection, run_id: str) -> bool:
    found = conn.execute(
        select(schedule_runs.c.run_id).where(schedule_runs.c.run_id == run_id)
    ).first()
    return found is not None


def _schedules_by_id(conn: Connection, ids: set[str]) -> dict[str, Any]:
    if not ids:
        return {}
    return {r.id: r for r in conn.execute(select(schedules).where(schedules.c.id.in_(ids)))}
