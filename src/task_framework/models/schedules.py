"""Request and response models of the schedule routes (API.md §5.4, §6).

Responses are built as plain dicts; these models validate requests and document the
responses in OpenAPI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from task_framework.limits import MAX_ATTEMPTS
from task_framework.models.artifact import Artifact
from task_framework.models.threads import AdHocWebhook, PaginationModel

ScheduleState = Literal["active", "paused", "canceled"]
ConcurrencyPolicy = Literal["allow", "forbid", "replace"]
MisfirePolicy = Literal["skip", "catch_up_last"]
RunState = Literal["pending", "running", "succeeded", "failed", "stopped", "timeout", "skipped"]
RUN_TERMINAL_STATES = frozenset({"succeeded", "failed", "stopped", "timeout", "skipped"})


class _ScheduleFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("params", "metadata", mode="before", check_fields=False)
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class ScheduleCreateRequest(_ScheduleFields):
    cron: str = Field(description="Five cron fields, in `timezone`")
    timezone: str = Field(description="IANA time zone, e.g. Europe/Berlin")
    state: ScheduleState = "active"
    task_id: str | None = None
    task_version: str | None = None
    inputs_template: list[Artifact] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhooks: list[AdHocWebhook] | None = None
    concurrency_policy: ConcurrencyPolicy = "allow"
    max_attempts: int = Field(1, ge=1, le=MAX_ATTEMPTS)
    misfire_policy: MisfirePolicy = "skip"


class ScheduleUpdateRequest(_ScheduleFields):
    """Every field optional; non-null fields replace the stored values."""

    cron: str | None = None
    timezone: str | None = None
    state: ScheduleState | None = None
    task_id: str | None = None
    task_version: str | None = None
    inputs_template: list[Artifact] | None = None
    params: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    webhooks: list[AdHocWebhook] | None = None
    concurrency_policy: ConcurrencyPolicy | None = None
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS)
    misfire_policy: MisfirePolicy | None = None


class ScheduleModel(BaseModel):
    """A cron schedule that creates runs, each running the task as a thread."""

    id: str
    cron: str
    timezone: str
    state: ScheduleState
    task_id: str | None
    task_version: str | None
    inputs_template: list[Artifact]
    params: dict[str, Any]
    metadata: dict[str, Any]
    webhooks: list[AdHocWebhook] | None
    concurrency_policy: ConcurrencyPolicy
    max_attempts: int
    misfire_policy: MisfirePolicy
    next_run_at: str | None
    last_run_at: str | None
    app_id: str | None
    user_id: str | None
    created_at: str
    updated_at: str


class RunModel(BaseModel):
    """One fire of a schedule (or a manual trigger) and its attempts."""

    schedule_id: str
    run_id: str
    scheduled_for_utc: str
    scheduled_for_local: str
    state: RunState
    attempt: int
    max_attempts: int
    threads: list[str]
    metrics: dict[str, Any] | None
    labels: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None


class ScheduleListModel(BaseModel):
    items: list[ScheduleModel]
    pagination: PaginationModel


class RunListModel(BaseModel):
    items: list[RunModel]
    pagination: PaginationModel
