"""Typed views of the API's resources (API.md §5). Unknown fields are kept, so a newer
server never breaks an older client; every field the contract marks optional is optional."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

TERMINAL_STATES = frozenset({"succeeded", "failed", "stopped", "timeout", "expired"})


class ApiModel(BaseModel):
    """Base of every client model: unknown fields are accepted and kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as RFC 3339 strings)."""
        return self.model_dump(mode="json")


class Pagination(ApiModel):
    cursor: str | None = None
    has_more: bool = False
    total: int = 0


class Page(ApiModel, Generic[T]):
    """One page of a list route; pass ``cursor`` back for the next one."""

    items: list[T]
    pagination: Pagination = Field(default_factory=Pagination)

    @property
    def cursor(self) -> str | None:
        return self.pagination.cursor

    @property
    def has_more(self) -> bool:
        return self.pagination.has_more

    @property
    def total(self) -> int:
        return self.pagination.total


# -- threads and artifacts ---------------------------------------------------------------


class Artifact(ApiModel):
    id: str | None = None
    thread_id: str | None = None
    kind: str
    media_type: str | None = None
    explain: str | None = None
    ref: str | None = None
    size: int | None = None
    sha256: str | None = None
    file_ref: str | None = None
    url: str | None = None
    value: Any = None
    text: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    archived: bool = False
    archived_at: datetime | None = None
    task_id: str | None = None
    task_version: str | None = None
    direction: Literal["input", "output"] | None = None


class ThreadError(ApiModel):
    code: str
    message: str
    exception_type: str
    stack_trace: str | None = None
    details: dict[str, Any] | None = None


class Problem(ApiModel):
    message: str
    exception_type: str | None = None
    details: dict[str, Any] | None = None
    created_at: datetime | None = None


class Thread(ApiModel):
    id: str
    name: str | None = None
    state: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    error: ThreadError | None = None
    problems: list[Problem] = Field(default_factory=list)
    inputs: list[Artifact] = Field(default_factory=list)
    outputs: list[Artifact] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    schedule_id: str | None = None
    run_id: str | None = None
    attempt: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    def output(self, ref: str) -> Artifact | None:
        """The output artifact with this ``ref``, if any."""
        return next((a for a in self.outputs if a.ref == ref), None)


class LogRecord(ApiModel):
    seq: int
    timestamp: datetime
    stream: str
    level: str | None = None
    logger: str | None = None
    message: str


class ServerEvent(ApiModel):
    """One Server-Sent Event of ``/threads/{id}/events`` or ``/logs?follow=true``."""

    id: str | None = None
    event: str = "message"
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_log(self) -> bool:
        return self.event == "log"

    @property
    def is_terminal(self) -> bool:
        return self.event in (
            "thread.succeeded",
            "thread.failed",
            "thread.timeout",
            "thread.stopped",
        )


class DownloadUrl(ApiModel):
    download_url: str
    expires_at: datetime | None = None
    expires_in: int | None = None


# -- files -------------------------------------------------------------------------------


class FileUpload(ApiModel):
    file_ref: str
    size: int
    media_type: str
    sha256: str | None = None
    filename: str | None = None
    created_at: datetime | None = None


class FileInfo(ApiModel):
    file_ref: str
    filename: str | None = None
    media_type: str
    size: int | None = None
    sha256: str | None = None
    created_at: datetime | None = None
    app_id: str | None = None
    user_id: str | None = None


class UploadUrl(ApiModel):
    file_ref: str
    upload_url: str
    expires_at: datetime | None = None
    method: str = "PUT"
    headers: dict[str, str] = Field(default_factory=dict)


# -- tasks -------------------------------------------------------------------------------


class TaskDeployment(ApiModel):
    task_id: str
    version: str
    was_new: bool
    message: str


class TaskSummary(ApiModel):
    task_id: str
    name: str | None = None
    description: str | None = None
    versions: list[str] = Field(default_factory=list)
    latest_version: str | None = None
    total_versions: int = 0
    entry_point: str | None = None
    deployed_at: datetime | None = None
    sdk_version: str | None = None


class TaskList(ApiModel):
    tasks: list[TaskSummary] = Field(default_factory=list)
    total: int = 0
    total_versions: int = 0


class TaskVersionInfo(ApiModel):
    task_id: str
    version: str
    name: str | None = None
    description: str | None = None
    entry_point: str | None = None
    deployed_at: datetime | None = None
    zip_path: str | None = None
    base_path: str | None = None
    zip_hash: str | None = None
    input_schemas: list[dict[str, Any]] = Field(default_factory=list)
    output_schemas: list[dict[str, Any]] = Field(default_factory=list)
    requirements: list[dict[str, Any]] = Field(default_factory=list)
    sdk_version: str | None = None


class TaskUndeploy(ApiModel):
    undeployed: list[str] = Field(default_factory=list)
    message: str = ""


class DeploymentRecord(ApiModel):
    task_id: str
    version: str
    zip_path: str | None = None
    zip_hash: str | None = None
    deployed_at: datetime | None = None
    status: str
    error: str | None = None


class ConfigurationStatus(ApiModel):
    task_id: str
    version: str
    requirements: list[dict[str, Any]] = Field(default_factory=list)
    config_values: dict[str, Any] = Field(default_factory=dict)
    ready: bool = False
    missing_required: list[str] = Field(default_factory=list)


class TaskMetadata(ApiModel):
    name: str
    version: str
    description: str | None = None
    framework_version: str | None = None
    sdk_version: str | None = None
    api_version: str | None = None
    input_schemas: list[dict[str, Any]] = Field(default_factory=list)
    output_schemas: list[dict[str, Any]] = Field(default_factory=list)


# -- schedules ---------------------------------------------------------------------------


class Schedule(ApiModel):
    id: str
    cron: str
    timezone: str
    state: str
    task_id: str | None = None
    task_version: str | None = None
    inputs_template: list[Artifact] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhooks: list[dict[str, Any]] | None = None
    concurrency_policy: str = "allow"
    max_attempts: int = 1
    misfire_policy: str = "skip"
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    app_id: str | None = None
    user_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Run(ApiModel):
    schedule_id: str
    run_id: str
    scheduled_for_utc: datetime
    scheduled_for_local: str | None = None
    state: str
    attempt: int = 1
    max_attempts: int = 1
    threads: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


# -- webhooks ----------------------------------------------------------------------------


class Webhook(ApiModel):
    id: str
    url: str
    secret: str | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    events: dict[str, Any] | None = None
    data_filters: dict[str, Any] | None = None
    scope: dict[str, Any] | None = None
    timeout_seconds: int = 10
    has_api_key: bool = False
    task_id: str | None = None
    task_version: str | None = None
    source: str = "manual"
    app_id: str | None = None
    user_id: str | None = None
    created_by: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class WebhookDelivery(ApiModel):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    event_payload: dict[str, Any] = Field(default_factory=dict)
    thread_id: str | None = None
    run_id: str | None = None
    attempt: int = 1
    timestamp: datetime | None = None
    status: str
    status_code: int | None = None
    response_time_ms: int | None = None
    error: str | None = None
    delivery_url: str | None = None


# -- credentials, keys, settings ---------------------------------------------------------


class CredentialInfo(ApiModel):
    name: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    has_value: bool = False
    value_preview: str = ""


class CredentialUsage(ApiModel):
    credential_name: str
    used_by: list[dict[str, Any]] = Field(default_factory=list)


class ApiKey(ApiModel):
    id: str
    name: str
    role: str
    app_id: str | None = None
    user_id: str | None = None
    prefix: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    key: str | None = None
    """The secret: present only in the create response."""


class ServerSettings(ApiModel):
    max_concurrent_threads: int
    updated_at: datetime | None = None
    updated_by: str | None = None
    current_running_threads: int = 0
    current_queued_threads: int = 0


class Health(ApiModel):
    status: str
    version: str | None = None
    database: str | None = None
    file_storage: str | None = None
    scheduler: str | None = None
    warning: str | None = None


__all__ = [
    "ApiKey",
    "ApiModel",
    "Artifact",
    "ConfigurationStatus",
    "CredentialInfo",
    "CredentialUsage",
    "DeploymentRecord",
    "DownloadUrl",
    "FileInfo",
    "FileUpload",
    "Health",
    "LogRecord",
    "Page",
    "Pagination",
    "Problem",
    "Run",
    "Schedule",
    "ServerEvent",
    "ServerSettings",
    "TaskDeployment",
    "TaskList",
    "TaskMetadata",
    "TaskSummary",
    "TaskUndeploy",
    "TaskVersionInfo",
    "Thread",
    "ThreadError",
    "UploadUrl",
    "Webhook",
    "WebhookDelivery",
]
