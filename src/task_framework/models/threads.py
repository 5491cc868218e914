"""Request and response models of the thread routes (API.md §5.1, §5.3).

Responses are built as plain dicts for speed; these models document them in OpenAPI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from task_framework.limits import MAX_THREAD_NAME_CHARS, MAX_TIMEOUT_SECONDS
from task_framework.models.artifact import Artifact

ThreadState = Literal["queued", "running", "succeeded", "failed", "stopped", "timeout", "expired"]
THREAD_STATES: tuple[str, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "stopped",
    "timeout",
    "expired",
)
TERMINAL_STATES = frozenset({"succeeded", "failed", "stopped", "timeout", "expired"})
RETRYABLE_STATES = frozenset({"failed", "stopped", "timeout", "expired"})
DEFAULT_ADHOC_EVENTS = ("thread.succeeded", "thread.failed")


class AdHocWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    callback_url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_ADHOC_EVENTS))
    api_key: str | None = None

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return value


class ThreadCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mode: Literal["sync", "async"]
    name: str | None = Field(None, max_length=MAX_THREAD_NAME_CHARS)
    inputs: list[Artifact]
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhooks: list[AdHocWebhook] | None = None
    webhook: AdHocWebhook | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    timeout_seconds: int | None = Field(None, ge=1, le=MAX_TIMEOUT_SECONDS)

    @field_validator("inputs")
    @classmethod
    def _non_empty(cls, value: list[Artifact]) -> list[Artifact]:
        if not value:
            raise ValueError("inputs must be a non-empty array")
        return value

    @field_validator("params", "metadata", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    def all_webhooks(self) -> list[AdHocWebhook]:
        hooks = list(self.webhooks or [])
        if self.webhook is not None and self.webhook not in hooks:
            hooks.append(self.webhook)
        return hooks


class ThreadRetryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    preserve_run_id: bool = False
    mode: Literal["sync", "async"] = "sync"


class ThreadErrorModel(BaseModel):
    code: str
    message: str
    exception_type: str
    stack_trace: str | None = None
    details: dict[str, Any] | None = None


class ProblemModel(BaseModel):
    message: str
    exception_type: str | None = None
    details: dict[str, Any] | None = None
    created_at: str


class ThreadModel(BaseModel):
    """A thread: one execution of a task version."""

    id: str
    name: str | None
    state: ThreadState
    metadata: dict[str, Any]
    params: dict[str, Any]
    error: ThreadErrorModel | None
    problems: list[ProblemModel]
    inputs: list[Artifact]
    outputs: list[Artifact]
    artifacts: list[Artifact]
    created_at: str
    started_at: str | None
    finished_at: str | None
    schedule_id: str | None
    run_id: str | None
    attempt: int | None


class PaginationModel(BaseModel):
    cursor: str | None
    has_more: bool
    total: int


class ThreadListModel(BaseModel):
    items: list[ThreadModel]
    pagination: PaginationModel


class ArtifactListModel(BaseModel):
    items: list[Artifact]
    pagination: PaginationModel


class LogRecordModel(BaseModel):
    seq: int
    timestamp: str
    stream: Literal["stdout", "stderr", "log"]
    level: str | None
    logger: str | None
    message: str


class LogListModel(BaseModel):
    items: list[LogRecordModel]
    pagination: PaginationModel
