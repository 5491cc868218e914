"""Schedule use cases: create, read, list, patch, delete, pause/resume/cancel, trigger and
the run listings (API.md §6).

Each use case runs in one transaction. After a change the scheduler of this replica is
nudged at once; other replicas pick changes up at their next resync (a few seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from task_framework.errors import Conflict, NotFound, TaskFrameworkError, ValidationFailed
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.schedules import ScheduleCreateRequest, ScheduleUpdateRequest
from task_framework.observability.metrics import Metrics
from task_framework.services.auth import Principal
from task_framework.services.cron import CronError
from task_framework.services.crypto import SecretBox
from task_framework.services.schedule_runs import (
    Effects,
    RunEngine,
    run_dict,
    run_id_for,
    tx_conn,
)
from task_framework.services.tasks import TaskRegistry
from task_framework.services.threads import _check_duplicate_refs, _resolve_inputs
from task_framework.services.urlguard import UrlGuard
from task_framework.services.webhooks import check_adhoc_events, seal_api_keys
from task_framework.store.base import Tx
from task_framework.store.errors import UniqueViolation
from task_framework.store.pages import Page, PageRequest
from task_framework.store.schedules import (
    RunFilter,
    ScheduleFilter,
    ScheduleRecord,
    ScheduleStore,
)
from task_framework.store.webhooks import WebhookStore, source_webhook_records

if TYPE_CHECKING:
    from task_framework.models.artifact import Artifact
    from task_framework.models.threads import AdHocWebhook
    from task_framework.services.executor import Executor

INVALID = "SCHEDULE_VALIDATION_ERROR"


@dataclass(slots=True)
class RunFilters:
    state: str | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None


def schedule_dict(m: ScheduleRecord) -> dict[str, Any]:
    """A schedule as the API shows it."""
    return {
        "id": m.id,
        "cron": m.cron,
        "timezone": m.timezone,
        "state": m.state,
        "task_id": m.task_id,
        "task_version": m.task_version,
        "inputs_template": m.inputs_template or [],
        "params": m.params or {},
        "metadata": m.metadata or {},
        "webhooks": m.webhooks,
        "concurrency_policy": m.concurrency_policy,
        "max_attempts": m.max_attempts,
        "misfire_policy": m.misfire_policy,
        "next_run_at": format_ts(m.next_run_at),
        "last_run_at": format_ts(m.last_run_at),
        "app_id": m.app_id,
        "user_id": m.user_id,
        "created_at": format_ts(m.created_at),
        "updated_at": format_ts(m.updated_at),
    }


def _shown(hooks: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Webhooks as stored on the schedule: ``api_key`` is write-only."""
    if not hooks:
        return None
    return [{**hook, "api_key": None} for hook in hooks]


def _not_found(schedule_id: str) -> NotFound:
    return NotFound(
        f"Schedule {schedule_id} not found",
        code="SCHEDULE_NOT_FOUND",
        extra={"title": "Schedule Not Found"},
    )


def _owned(principal: Principal, schedule_id: str, row: ScheduleRecord | None) -> ScheduleRecord:
    if row is None or not principal.owns(row.app_id, row.user_id):
        raise _not_found(schedule_id)
    return row


class ScheduleService:
    """``/schedules`` use cases."""

    def __init__(
        self,
        store: ScheduleStore,
        registry: TaskRegistry,
        executor: Executor,
        engine: RunEngine,
        metrics: Metrics,
        *,
        webhooks: WebhookStore,
        secret_box: SecretBox,
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._secrets = secret_box
        self._registry = registry
        self._executor = executor
        self.engine = engine
        self._metrics = metrics
        self.on_change: Callable[[], None] = lambda: None
        self.url_guard: UrlGuard | None = None  # set by the app; checks callback URLs

    # -- effects --------------------------------------------------------------------------

    async def apply(self, effects: Effects) -> None:
        """Carry out what a committed transaction asked for."""
        for schedule_id, state in effects.transitions:
            self._metrics.record_schedule_run(schedule_id, state)
        for lag in effects.fire_lags:
            self._metrics.record_schedule_fire_lag(lag)
        for thread, was_running in effects.stopped_threads:
            self._executor.thread_settled(thread["id"], thread)
            if was_running:
                await self._executor.stop_local(thread["id"])
        if effects.threads_created:
            self._executor.wake()

    def _visible(
        self, tx: Tx, principal: Principal, schedule_id: str, *, lock: bool
    ) -> ScheduleRecord:
        return _owned(principal, schedule_id, self._store.get_in(tx, schedule_id, lock=lock))

    # -- validation -------------------------------------------------------------------------

    def _check_timing(self, cron: str, timezone: str) -> None:
        try:
            self.engine.compile(cron, timezone)
        except CronError as exc:
            raise ValidationFailed(
                f"Invalid cron expression: {cron} ({exc})", code="SCHEDULE_INVALID_CRON"
            ) from exc
        except ValueError as exc:
            raise ValidationFailed(
                f"Invalid timezone identifier: {timezone}", code="SCHEDULE_INVALID_TIMEZONE"
            ) from exc

    def _check_template(
        self, tx: Tx, principal: Principal, items: list[dict[str, Any]], task: Any
    ) -> None:
        """The template must make valid thread inputs (artifact, file and schema rules)."""
        if not items:
            raise ValidationFailed("inputs_template must be a non-empty array", code=INVALID)
        try:
            _check_duplicate_refs(items)
            _resolve_inputs(
                tx_conn(tx),
                principal,
                items,
                thread_id="template",
                owner=(principal.app_id, principal.user_id),
                task=task,
                now=utcnow(),
                copy=True,
            )
        except TaskFrameworkError as exc:
            if exc.status != 400:
                raise
            raise ValidationFailed(exc.message, code=INVALID) from exc

    async def _checked_hooks(self, hooks: list[AdHocWebhook] | None) -> list[dict[str, Any]] | None:
        """Schedule webhooks with checked URLs (None when not given)."""
        if hooks is None:
            return None
        checked = [h.model_dump() for h in hooks]
        check_adhoc_events(checked)
        if self.url_guard is not None:
            for hook in checked:
                hook["callback_url"] = await self.url_guard.check(hook["callback_url"])
        seal_api_keys(checked, self._secrets.seal)  # the schedule shows none of them
        return checked

    def _replace_hooks(
        self,
        tx: Tx,
        schedule_id: str,
        hooks: list[dict[str, Any]],
        owner: Any,
        now: datetime,
    ) -> None:
        self._webhooks.delete_source_webhooks_in(tx, "schedule", schedule_id)
        records = source_webhook_records(
            hooks,
            seal=self._secrets.seal,
            source="schedule",
            owner=owner,
            now=now,
            schedule_id=schedule_id,
        )
        self._webhooks.add_source_webhooks_in(tx, records)

    @staticmethod
    def _template(items: list[Artifact]) -> list[dict[str, Any]]:
        return [a.model_dump(mode="json") for a in items]

    # -- use cases ----------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        body: ScheduleCreateRequest,
        *,
        task_id: str | None,
        version: str | None,
    ) -> dict[str, Any]:
        task = self._registry.select(task_id or body.task_id, version or body.task_version)
        self._check_timing(body.cron, body.timezone)
        template = self._template(body.inputs_template)
        hooks = await self._checked_hooks(body.webhooks)
        now = utcnow()
        schedule_id = new_id("schedule")
        owner = (principal.app_id, principal.user_id)
        row = ScheduleRecord(
            id=schedule_id,
            cron=body.cron,
            timezone=body.timezone,
            state=body.state,
            task_id=task.task_id,
            task_version=task.version,
            inputs_template=template,
            params=body.params,
            metadata=body.metadata,
            webhooks=_shown(hooks),
            concurrency_policy=body.concurrency_policy,
            max_attempts=body.max_attempts,
            misfire_policy=body.misfire_policy,
            next_run_at=self._next(body.cron, body.timezone, body.state, now),
            last_run_at=None,
            app_id=principal.app_id,
            user_id=principal.user_id,
            created_by_admin=principal.is_admin,
            created_at=now,
            updated_at=now,
        )

        def _create(tx: Tx) -> dict[str, Any]:
            self._check_template(tx, principal, template, task)
            self._store.add_in(tx, row)
            if hooks:
                self._replace_hooks(tx, schedule_id, hooks, owner, now)
            return schedule_dict(row)

        created = await self._store.tx(_create)
        self.on_change()
        return created

    def _next(self, cron: str, timezone: str, state: str, now: datetime) -> datetime | None:
        return self.engine.next_fire(cron, timezone, now) if state == "active" else None

    async def get(self, principal: Principal, schedule_id: str) -> dict[str, Any]:
        return schedule_dict(_owned(principal, schedule_id, await self._store.get(schedule_id)))

    async def list_schedules(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        state: str | None,
        task_id: str | None,
        task_version: str | None,
    ) -> dict[str, Any]:
        filters = ScheduleFilter(
            scope_app=not principal.is_admin or principal.app_id is not None,
            app_id=principal.app_id,
            scope_user=not principal.is_admin or principal.user_id is not None,
            user_id=principal.user_id,
            state=state,
            task_id=task_id,
            task_version=task_version,
        )
        result = await self._store.list_schedules(filters, page)
        return result.envelope([schedule_dict(r) for r in result.rows])

    async def update(
        self, principal: Principal, schedule_id: str, body: ScheduleUpdateRequest
    ) -> dict[str, Any]:
        hooks = await self._checked_hooks(body.webhooks)

        def _update(tx: Tx) -> dict[str, Any]:
            row = self._visible(tx, principal, schedule_id, lock=True)
            values: dict[str, Any] = {
                name: getattr(body, name)
                for name in (
                    "cron",
                    "timezone",
                    "state",
                    "params",
                    "metadata",
                    "concurrency_policy",
                    "max_attempts",
                    "misfire_policy",
                )
                if getattr(body, name) is not None
            }
            merged = replace(row, **values)
            self._check_timing(merged.cron, merged.timezone)
            now = utcnow()
            if hooks is not None:
                values["webhooks"] = _shown(hooks)
                self._replace_hooks(tx, schedule_id, hooks, (row.app_id, row.user_id), now)
            task = None
            if body.task_id is not None or body.task_version is not None:
                same_task = body.task_id in (None, row.task_id)
                task = self._registry.select(
                    body.task_id or row.task_id,
                    body.task_version or (row.task_version if same_task else None),
                )
                values.update(task_id=task.task_id, task_version=task.version)
            if body.inputs_template is not None:
                values["inputs_template"] = self._template(body.inputs_template)
                task = task or self._registry.select(row.task_id, row.task_version)
            if task is not None:
                template = values.get("inputs_template", row.inputs_template)
                self._check_template(tx, principal, template, task)
            values["updated_at"] = now
            values["next_run_at"] = self._next(merged.cron, merged.timezone, merged.state, now)
            updated = replace(row, **values)
            self._store.save_in(tx, updated)
            return schedule_dict(updated)

        updated = await self._store.tx(_update)
        self.on_change()
        return updated

    async def set_state(
        self, principal: Principal, schedule_id: str, action: str
    ) -> dict[str, Any]:
        """``pause``, ``resume`` or ``cancel``. Resuming never runs fires missed meanwhile."""

        def _set(tx: Tx) -> dict[str, Any]:
            row = self._visible(tx, principal, schedule_id, lock=True)
            if action != "cancel" and row.state == "canceled":
                raise ValidationFailed(
                    f"Schedule {schedule_id} is canceled, cannot {action}", code=INVALID
                )
            now = utcnow()
            state = {"pause": "paused", "resume": "active", "cancel": "canceled"}[action]
            values: dict[str, Any] = {"state": state, "next_run_at": None}
            if row.state == state:
                return schedule_dict(row)
            if state == "active":
                values["next_run_at"] = self.engine.next_fire(row.cron, row.timezone, now)
            values["updated_at"] = now
            changed = replace(row, **values)
            self._store.save_in(tx, changed)
            return schedule_dict(changed)

        result = await self._store.tx(_set)
        self.on_change()
        return result

    async def delete(self, principal: Principal, schedule_id: str) -> None:
        def _delete(tx: Tx) -> None:
            self._visible(tx, principal, schedule_id, lock=True)
            self._store.delete_in(tx, schedule_id)
            self._webhooks.delete_source_webhooks_in(tx, "schedule", schedule_id)

        await self._store.tx(_delete)
        self.on_change()

    async def trigger(self, principal: Principal, schedule_id: str) -> dict[str, Any]:
        """Run now: the fire time is the request time truncated to seconds."""
        now = utcnow()
        fire_at = now.replace(microsecond=0)

        def _trigger(tx: Tx) -> tuple[dict[str, Any], Effects]:
            row = self._visible(tx, principal, schedule_id, lock=True)
            if row.state == "canceled":
                raise ValidationFailed(
                    f"Schedule {schedule_id} is canceled, cannot trigger", code=INVALID
                )
            effects = Effects()
            run = self.engine.fire(tx, row, fire_at, now, {"trigger": "manual"}, effects)
            if run is None:
                raise _run_exists(schedule_id, fire_at)
            return run_dict(run), effects

        try:
            run, effects = await self._store.tx(_trigger)
        except UniqueViolation as exc:  # the same fire, recorded meanwhile by another replica
            raise _run_exists(schedule_id, fire_at) from exc
        await self.apply(effects)
        return run

    async def list_runs(
        self, principal: Principal, schedule_id: str, filters: RunFilters, page: PageRequest
    ) -> dict[str, Any]:
        if (
            filters.scheduled_after
            and filters.scheduled_before
            and filters.scheduled_after > filters.scheduled_before
        ):
            raise ValidationFailed("scheduled_after must not be later than scheduled_before")
        wanted = RunFilter(filters.state, filters.scheduled_after, filters.scheduled_before)

        def _list(tx: Tx) -> Page:
            self._visible(tx, principal, schedule_id, lock=False)
            return self._store.runs_in(tx, schedule_id, wanted, page)

        result = await self._store.tx(_list)
        return result.envelope([run_dict(r) for r in result.rows])

    async def get_run(self, principal: Principal, schedule_id: str, run_id: str) -> dict[str, Any]:
        def _get(tx: Tx) -> dict[str, Any]:
            self._visible(tx, principal, schedule_id, lock=False)
            run = self._store.run_in(tx, schedule_id, run_id)
            if run is None:
                raise NotFound(
                    f"Run {run_id} not found for schedule {schedule_id}", code="RUN_NOT_FOUND"
                )
            return run_dict(run)

        return await self._store.tx(_get)


def _run_exists(schedule_id: str, fire_at: datetime) -> Conflict:
    return Conflict(
        f"Run {run_id_for(schedule_id, fire_at)} already exists", code="RUN_ALREADY_EXISTS"
    )
