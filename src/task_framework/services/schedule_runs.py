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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from task_framework.errors import TaskFrameworkError
from task_framework.ids import new_id
from task_framework.models._time import format_ts
from task_framework.observability.tracing import NO_TRACING, Tracing
from task_framework.services.auth import Principal
from task_framework.services.cron import CronSpec, load_zone, parse_cron
from task_framework.services.events import insert_events, thread_event
from task_framework.services.tasks import TaskRegistry
from task_framework.services.threads import _NewThread, insert_thread, load_thread
from task_framework.store.base import Tx
from task_framework.store.schedules import RunChange, RunRecord, ScheduleRecord, ScheduleStore

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


def run_dict(run: RunRecord) -> dict[str, Any]:
    """A run as the API shows it."""
    zone = _zone_or_utc(run.timezone)
    scheduled = run.scheduled_for_utc
    return {
        "schedule_id": run.schedule_id,
        "run_id": run.run_id,
        "scheduled_for_utc": format_ts(scheduled),
        "scheduled_for_local": scheduled.astimezone(zone).isoformat(timespec="microseconds"),
        "state": run.state,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "threads": list(run.threads),
        "metrics": None,
        "labels": run.labels,
        "created_at": format_ts(run.created_at),
        "started_at": format_ts(run.started_at),
        "finished_at": format_ts(run.finished_at),
    }


def tx_conn(tx: Tx) -> Any:
    """``tx`` for the threads and events helpers, which still take a Connection until the
    threads store exists (issue 16); passed on unchanged."""
    return tx


def _zone_or_utc(name: str) -> ZoneInfo:
    try:
        return load_zone(name)
    except ValueError:
        return ZoneInfo("UTC")


def run_event(
    event_type: str, run: dict[str, Any], sched: ScheduleRecord, at: datetime
) -> dict[str, Any]:
    """An ``events`` row about a run (API.md §12.2, §12.4)."""
    metadata = {
        **sched.metadata,
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
        self,
        registry: TaskRegistry,
        store: ScheduleStore,
        *,
        misfire_grace_seconds: float,
        seconds_field: bool,
    ) -> None:
        self._registry = registry
        self._store = store
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

    def process_due(self, tx: Tx, schedule_id: str, now: datetime) -> Effects:
        """Process every fire of one schedule from its watermark up to ``now``."""
        effects = Effects()
        sched = self._store.get_in(tx, schedule_id, lock=True)
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
            self.fire(tx, sched, missed[-1], now, {"trigger": "catch_up"}, effects)
        elif missed:
            for fire in missed[:MAX_MISSED_RECORDED]:
                self._record_skipped(tx, sched, fire, now, effects)
        for fire in due:
            self.fire(tx, sched, fire, now, {}, effects)
        self._store.set_next_run_in(tx, schedule_id, spec.next_after(now, zone))
        return effects

    def fire(
        self,
        tx: Tx,
        sched: ScheduleRecord,
        scheduled_for: datetime,
        now: datetime,
        labels: dict[str, Any],
        effects: Effects,
    ) -> RunRecord | None:
        """Create the run of one fire; None when it exists already. ``sched`` is locked."""
        run_id = run_id_for(sched.id, scheduled_for)
        if self._store.run_exists_in(tx, run_id):
            return None
        run = self._insert_run(tx, sched, run_id, scheduled_for, now, labels)
        others = self._store.running_runs_in(tx, sched.id, excluding=run_id)
        if others and sched.concurrency_policy == "forbid":
            return self._transition(tx, sched, run, now, effects, RunChange(state="skipped"))
        if others and sched.concurrency_policy == "replace":
            for other in others:
                self._stop_run(tx, sched, other, now, effects)
        thread_id = self._start_attempt(tx, sched, run_id, attempt=1, effects=effects)
        if thread_id is None:
            run = self._transition(tx, sched, run, now, effects, RunChange(state="failed"))
        else:
            started = RunChange(
                state="running",
                started_at=now,
                threads=(thread_id,),
                current_thread_id=thread_id,
            )
            run = self._transition(tx, sched, run, now, effects, started)
        self._store.touch_last_run_in(tx, sched.id, scheduled_for)
        return run

    def _record_skipped(
        self, tx: Tx, sched: ScheduleRecord, scheduled_for: datetime, now: datetime, eff: Effects
    ) -> None:
        run_id = run_id_for(sched.id, scheduled_for)
        if self._store.run_exists_in(tx, run_id):
            return
        run = self._insert_run(tx, sched, run_id, scheduled_for, now, {"trigger": "misfire"})
        self._transition(tx, sched, run, now, eff, RunChange(state="skipped"))
        self._store.touch_last_run_in(tx, sched.id, scheduled_for)

    def _insert_run(
        self,
        tx: Tx,
        sched: ScheduleRecord,
        run_id: str,
        scheduled_for: datetime,
        now: datetime,
        labels: dict[str, Any],
    ) -> RunRecord:
        run = RunRecord(
            run_id=run_id,
            schedule_id=sched.id,
            scheduled_for_utc=scheduled_for,
            timezone=sched.timezone,
            state="pending",
            attempt=1,
            max_attempts=sched.max_attempts,
            threads=(),
            current_thread_id=None,
            next_retry_at=None,
            labels=labels,
            app_id=sched.app_id,
            user_id=sched.user_id,
            created_at=now,
            started_at=None,
            finished_at=None,
        )
        self._store.add_run_in(tx, run)
        return run

    def _transition(
        self,
        tx: Tx,
        sched: ScheduleRecord,
        run: RunRecord,
        now: datetime,
        effects: Effects,
        change: RunChange,
    ) -> RunRecord:
        """Apply ``change`` to a run, moving it to ``change.state`` (terminal ones get
        ``finished_at``), with its event."""
        state = change.state
        assert state is not None
        if state in ("succeeded", "failed", "stopped", "timeout"):
            change = replace(change, finished_at=now, next_retry_at=None, clear_retry=True)
        elif state == "skipped":
            change = replace(change, finished_at=run.created_at)
        self._store.update_run_in(tx, run.run_id, change)
        updated = _changed(run, change)
        insert_events(tx_conn(tx), [run_event(RUN_EVENT[state], run_dict(updated), sched, now)])
        effects.transitions.append((sched.id, state))
        if state == "running" and run.state == "pending":
            effects.fire_lags.append((now - run.scheduled_for_utc).total_seconds())
        return updated

    def _start_attempt(
        self, tx: Tx, sched: ScheduleRecord, run_id: str, *, attempt: int, effects: Effects
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
            **sched.metadata,
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
            params=dict(sched.params),
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
                thread, _ = insert_thread(tx_conn(tx), plan)
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
        self, tx: Tx, sched: ScheduleRecord, other: RunRecord, now: datetime, effects: Effects
    ) -> None:
        """Replace policy: stop a running run's live threads as ``:stop`` does."""
        conn = tx_conn(tx)
        for thread_id, was in self._store.stop_threads_in(tx, other.threads, now):
            thread = load_thread(conn, thread_id, show_stack=True)
            insert_events(
                conn,
                [thread_event("thread.stopped", thread, at=now, artifacts=thread["artifacts"])],
            )
            effects.stopped_threads.append((thread, was == "running"))
        self._transition(tx, sched, other, now, effects, RunChange(state="stopped"))

    # -- settlement and retries ---------------------------------------------------------------

    def settle(self, tx: Tx, now: datetime) -> Effects:
        """Runs whose current thread ended: settle them, or schedule their next attempt."""
        effects = Effects()
        ended = self._store.ended_runs_in(tx, limit=BATCH_SIZE)
        owners = self._store.schedules_in(tx, {run.schedule_id for run, _ in ended})
        for run, thread_state in ended:
            sched = owners.get(run.schedule_id)
            outcome = THREAD_OUTCOME_TO_RUN.get(thread_state or "", "failed")
            if sched is None:
                self._store.update_run_in(tx, run.run_id, RunChange(state=outcome, finished_at=now))
            elif outcome == "failed" and run.attempt < run.max_attempts:
                delay = timedelta(seconds=retry_delay_seconds(run.attempt))
                self._store.update_run_in(tx, run.run_id, RunChange(next_retry_at=now + delay))
            else:
                self._transition(tx, sched, run, now, effects, RunChange(state=outcome))
        return effects

    def retry_due(self, tx: Tx, now: datetime) -> Effects:
        """Start the next attempt of runs whose back-off has elapsed."""
        effects = Effects()
        runs = self._store.due_retries_in(tx, now, limit=BATCH_SIZE)
        owners = self._store.schedules_in(tx, {run.schedule_id for run in runs})
        for run in runs:
            sched = owners.get(run.schedule_id)
            attempt = run.attempt + 1
            thread_id = (
                None
                if sched is None
                else self._start_attempt(tx, sched, run.run_id, attempt=attempt, effects=effects)
            )
            if thread_id is None:
                if sched is not None:
                    self._transition(tx, sched, run, now, effects, RunChange(state="failed"))
                continue
            self._store.update_run_in(
                tx,
                run.run_id,
                RunChange(
                    attempt=attempt,
                    threads=(*run.threads, thread_id),
                    current_thread_id=thread_id,
                    clear_retry=True,
                ),
            )
        return effects


def _template_copy(item: dict[str, Any]) -> dict[str, Any]:
    """A stored template artifact as a new input (fresh id, thread and timestamps)."""
    skip = ("id", "thread_id", "created_at", "direction", "archived", "archived_at")
    return {k: v for k, v in item.items() if k not in skip}


def _changed(run: RunRecord, change: RunChange) -> RunRecord:
    """``run`` as :meth:`ScheduleStore.update_run_in` leaves it after ``change``."""
    values: dict[str, Any] = {
        name: getattr(change, name)
        for name in ("state", "attempt", "threads", "current_thread_id", "started_at")
        if getattr(change, name) is not None
    }
    if change.finished_at is not None:
        values["finished_at"] = change.finished_at
    if change.next_retry_at is not None or change.clear_retry:
        values["next_retry_at"] = change.next_retry_at
    return replace(run, **values)
