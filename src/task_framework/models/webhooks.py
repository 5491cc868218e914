"""Request and response models of the webhook routes (API.md §5.5).

Responses are built as plain dicts; the response models document them in OpenAPI.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task_framework.models.events import EVENT_TYPES
from task_framework.models.threads import PaginationModel

MAX_WEBHOOK_TIMEOUT_SECONDS = 60
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 10
SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_BYTES = 32


def generate_secret() -> str:
    """A signing secret (API.md §12.3): ``whsec_`` + standard base64 of 32 random bytes
    (44 characters)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


WebhookSource = Literal["manual", "thread", "schedule"]
DeliveryStatus = Literal["pending", "success", "failed"]
Detail = Literal["none", "inline_small", "inline_all"]


def check_event_names(names: list[str]) -> list[str]:
    """Non-empty, and every name in the catalogue (API.md §12.2)."""
    if not names:
        raise ValueError("event lists must not be empty")
    unknown = [n for n in names if n not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"Unknown event type(s): {', '.join(unknown)}")
    return list(dict.fromkeys(names))


class EventFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include: list[str] | None = None
    exclude: list[str] | None = None

    @field_validator("include", "exclude")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_event_names(value)

    @model_validator(mode="after")
    def _not_both(self) -> EventFilters:
        if self.include is not None and self.exclude is not None:
            raise ValueError("events: give include or exclude, not both")
        return self


class ArtifactSelector(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ref: str = Field(min_length=1, max_length=255)


class DataFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    detail: Detail = "inline_small"
    artifact_selectors: list[ArtifactSelector] | None = None
    include_download_urls: bool = False
    include_logs: bool = False
    include_metrics: bool = False


class WebhookScope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tenant_id: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    schedule_id: str | None = None
    thread_id: str | None = None

    @model_validator(mode="after")
    def _some_field(self) -> WebhookScope:
        if not any(self.model_dump().values()):
            raise ValueError("scope needs at least one non-empty field")
        return self


class _WebhookFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    events: EventFilters | None = None
    data_filters: DataFilters | None = None
    scope: WebhookScope | None = None
    timeout_seconds: int | None = Field(None, ge=1, le=MAX_WEBHOOK_TIMEOUT_SECONDS)
    enabled: bool | None = None
    api_key: str | None = Field(None, max_length=4096)
    task_id: str | None = Field(None, max_length=255)
    task_version: str | None = Field(None, max_length=255)

    @staticmethod
    def _http_url(value: str) -> str:
        value = value.strip()
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        return value


class WebhookCreateRequest(_WebhookFields):
    url: str = Field(min_length=1, max_length=2048)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return cls._http_url(value)


class WebhookUpdateRequest(_WebhookFields):
    url: str | None = Field(None, min_length=1, max_length=2048)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else cls._http_url(value)


class WebhookModel(BaseModel):
    """A webhook. ``secret`` is only returned by create and regenerate-secret."""

    id: str
    url: str
    secret: str | None
    enabled: bool
    disabled_reason: Literal["gone", "failing", "manual"] | None
    events: EventFilters | None
    data_filters: DataFilters | None
    scope: WebhookScope | None
    timeout_seconds: int
    api_key: None
    has_api_key: bool
    task_id: str | None
    task_version: str | None
    source: WebhookSource
    app_id: str | None
    user_id: str | None
    created_by: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class WebhookListModel(BaseModel):
    items: list[WebhookModel]
    pagination: PaginationModel


class WebhookDeliveryModel(BaseModel):
    """One delivery attempt (``pending`` until sent)."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    event_payload: dict[str, Any]
    thread_id: str | None
    run_id: str | None
    attempt: int
    timestamp: str
    status: DeliveryStatus
    status_code: int | None
    response_time_ms: int | None
    error: str | None
    response_body: str | None
    delivery_url: str


class WebhookDeliveryListModel(BaseModel):
    items: list[WebhookDeliveryModel]
    pagination: PaginationModel
