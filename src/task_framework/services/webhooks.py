"""Webhook use cases: CRUD, secrets, delivery history, redelivery (API.md §7, §12.1).

Webhooks are owned like every other resource (§1.6). Ad-hoc (``source="thread"``) and
schedule webhooks are ordinary rows created inside their parent's transaction
(``WebhookStore.add_source_webhooks_in``; ``store.sql.webhooks.insert_source_webhooks``
for the services not yet behind the store port); deleting the parent deletes them.
Secrets and API keys are stored sealed
(:class:`~task_framework.services.crypto.SecretBox`); a secret is shown in clear only in
the answer that created it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from task_framework.errors import NotFound, ValidationFailed
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.webhooks import (
    DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
    WebhookCreateRequest,
    WebhookUpdateRequest,
    check_event_names,
    generate_secret,
)
from task_framework.services.auth import Principal
from task_framework.services.crypto import SecretBox
from task_framework.services.urlguard import UrlGuard
from task_framework.store.errors import RecordNotFound, UniqueViolation
from task_framework.store.pages import PageRequest
from task_framework.store.webhooks import (
    DeliveryFilter,
    Visible,
    WebhookChange,
    WebhookFilter,
    WebhookRecord,
    WebhookStore,
)


def webhook_dict(row: Any, *, secret: str | None = None) -> dict[str, Any]:
    """A webhook as the API shows it; ``secret`` is the new plaintext, when there is one."""
    return {
        "id": row.id,
        "url": row.url,
        "secret": secret,
        "enabled": bool(row.enabled),
        "disabled_reason": row.disabled_reason,
        "events": row.events,
        "data_filters": row.data_filters,
        "scope": row.scope,
        "timeout_seconds": row.timeout_seconds,
        "api_key": None,
        "has_api_key": bool(row.api_key),
        "task_id": row.task_id,
        "task_version": row.task_version,
        "source": row.source,
        "app_id": row.app_id,
        "user_id": row.user_id,
        "created_by": row.created_by,
        "metadata": row.metadata or {},
        "created_at": format_ts(row.created_at),
        "updated_at": format_ts(row.updated_at),
    }


def delivery_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "event_payload": row.event_payload,
        "thread_id": row.thread_id,
        "run_id": row.run_id,
        "attempt": row.attempt,
        "timestamp": format_ts(row.timestamp),
        "status": row.status,
        "status_code": row.status_code,
        "response_time_ms": row.response_time_ms,
        "error": row.error,
        "response_body": row.response_body,
        "delivery_url": row.delivery_url,
    }


def _scope_dict(scope: Any) -> dict[str, Any] | None:
    if scope is None:
        return None
    return {k: v for k, v in scope.model_dump().items() if v}


# -- ad-hoc and schedule webhooks (checked and sealed before their parent's transaction)


def check_adhoc_events(hooks: list[dict[str, Any]]) -> None:
    """Ad-hoc event lists must name catalogue events (400 otherwise)."""
    for hook in hooks:
        try:
            check_event_names(list(hook.get("events") or []))
        except ValueError as exc:
            raise ValidationFailed(f"Invalid webhook events: {exc}") from exc


def seal_api_keys(hooks: list[dict[str, Any]], seal: Callable[[str], str]) -> None:
    """Seal each AdHocWebhook dict's ``api_key`` in place (an empty one becomes None)."""
    for hook in hooks:
        hook["api_key"] = seal(hook["api_key"]) if hook.get("api_key") else None


# -- the service ----------------------------------------------------------------------------


@dataclass(slots=True)
class WebhookFilters:
    is_enabled: bool | None = None
    task_id: str | None = None
    task_version: str | None = None
    source: str | None = None


@dataclass(slots=True)
class DeliveryFilters:
    status: str | None = None
    thread_id: str | None = None
    event_type: str | None = None


def _not_found(webhook_id: str) -> NotFound:
    return NotFound(f"Webhook {webhook_id} not found", code="WEBHOOK_NOT_FOUND")


def _delivery_not_found(delivery_id: str) -> NotFound:
    return NotFound(f"Delivery {delivery_id} not found", code="DELIVERY_NOT_FOUND")


def _owned_by(principal: Principal) -> Visible:
    def visible(hook: WebhookRecord) -> bool:
        return principal.owns(hook.app_id, hook.user_id)

    return visible


class WebhookService:
    """``/webhooks`` use cases. ``wake`` nudges the dispatcher after a redelivery."""

    def __init__(
        self,
        store: WebhookStore,
        guard: UrlGuard,
        *,
        secret_box: SecretBox,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self.guard = guard
        self._secrets = secret_box
        self._wake = wake

    async def create(self, principal: Principal, body: WebhookCreateRequest) -> dict[str, Any]:
        url = await self.guard.check(body.url)
        now = utcnow()
        secret = generate_secret()
        record = WebhookRecord(
            id=new_id("webhook"),
            url=url,
            secret=self._secrets.seal(secret),
            enabled=True if body.enabled is None else body.enabled,
            disabled_reason=None if body.enabled is not False else "manual",
            events=body.events.model_dump(exclude_none=True) if body.events else None,
            data_filters=body.data_filters.model_dump() if body.data_filters else None,
            scope=_scope_dict(body.scope),
            timeout_seconds=body.timeout_seconds or DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
            api_key=self._secrets.seal(body.api_key) if body.api_key else None,
            task_id=body.task_id,
            task_version=body.task_version,
            source="manual",
            thread_id=None,
            schedule_id=None,
            app_id=principal.app_id,
            user_id=principal.user_id,
            created_by=principal.user_id or principal.app_id,
            metadata={},
            created_at=now,
            updated_at=now,
        )
        return webhook_dict(await self._store.add(record), secret=secret)

    async def list_webhooks(
        self, principal: Principal, filters: WebhookFilters, page: PageRequest
    ) -> dict[str, Any]:
        where = WebhookFilter(
            app_id=principal.app_id,
            user_id=principal.user_id,
            match_app=not principal.is_admin or principal.app_id is not None,
            match_user=not principal.is_admin or principal.user_id is not None,
            enabled=filters.is_enabled,
            task_id=filters.task_id,
            task_version=filters.task_version,
            source=filters.source,
        )
        result = await self._store.list_webhooks(where, page)
        return result.envelope([webhook_dict(r) for r in result.rows])

    async def get(self, principal: Principal, webhook_id: str) -> dict[str, Any]:
        try:
            return webhook_dict(await self._store.get(webhook_id, visible=_owned_by(principal)))
        except RecordNotFound as exc:
            raise _not_found(webhook_id) from exc

    async def update(
        self, principal: Principal, webhook_id: str, body: WebhookUpdateRequest
    ) -> dict[str, Any]:
        url = None if body.url is None else await self.guard.check(body.url)
        change = WebhookChange(
            updated_at=utcnow(),
            url=url,
            events=None if body.events is None else body.events.model_dump(exclude_none=True),
            data_filters=None if body.data_filters is None else body.data_filters.model_dump(),
            scope=None if body.scope is None else _scope_dict(body.scope),
            timeout_seconds=body.timeout_seconds,
            task_id=body.task_id,
            task_version=body.task_version,
            api_key=self._secrets.seal(body.api_key) if body.api_key else None,
            clear_api_key=body.api_key == "",
            enabled=body.enabled,
            disabled_reason="manual" if body.enabled is False else None,
        )
        try:
            hook = await self._store.update(webhook_id, change, visible=_owned_by(principal))
        except RecordNotFound as exc:
            raise _not_found(webhook_id) from exc
        return webhook_dict(hook)

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        try:
            await self._store.delete(webhook_id, visible=_owned_by(principal))
        except RecordNotFound as exc:
            raise _not_found(webhook_id) from exc

    async def regenerate_secret(self, principal: Principal, webhook_id: str) -> dict[str, Any]:
        secret = generate_secret()
        change = WebhookChange(updated_at=utcnow(), secret=self._secrets.seal(secret))
        try:
            hook = await self._store.update(webhook_id, change, visible=_owned_by(principal))
        except RecordNotFound as exc:
            raise _not_found(webhook_id) from exc
        return webhook_dict(hook, secret=secret)

    async def list_deliveries(
        self,
        principal: Principal,
        webhook_id: str,
        filters: DeliveryFilters,
        page: PageRequest,
    ) -> dict[str, Any]:
        where = DeliveryFilter(
            status=filters.status, thread_id=filters.thread_id, event_type=filters.event_type
        )
        try:
            result = await self._store.list_deliveries(
                webhook_id, where, page, visible=_owned_by(principal)
            )
        except RecordNotFound as exc:
            raise _not_found(webhook_id) from exc
        return result.envelope([delivery_dict(r) for r in result.rows])

    @staticmethod
    def _translated(exc: RecordNotFound, webhook_id: str, delivery_id: str) -> NotFound:
        if webhook_id in exc.missing:
            return _not_found(webhook_id)
        return _delivery_not_found(delivery_id)

    async def get_delivery(
        self, principal: Principal, webhook_id: str, delivery_id: str
    ) -> dict[str, Any]:
        try:
            found = await self._store.get_delivery(
                webhook_id, delivery_id, visible=_owned_by(principal)
            )
        except RecordNotFound as exc:
            raise self._translated(exc, webhook_id, delivery_id) from exc
        return delivery_dict(found)

    async def redeliver(
        self, principal: Principal, webhook_id: str, delivery_id: str
    ) -> dict[str, Any]:
        """Queue a manual attempt of a delivery's event, not retried automatically."""

        def admit(hook: WebhookRecord) -> None:
            if not hook.enabled:
                raise ValidationFailed(f"Webhook {webhook_id} is disabled")

        async def attempt() -> dict[str, Any]:
            queued = await self._store.redeliver(
                webhook_id, delivery_id, visible=_owned_by(principal), admit=admit,
                new_id=new_id("delivery"), at=utcnow(),
            )  # fmt: skip
            return delivery_dict(queued)

        try:
            try:
                result = await attempt()
            except UniqueViolation:
                # A concurrent redelivery took the same attempt number; the next one is free.
                result = await attempt()
        except RecordNotFound as exc:
            raise self._translated(exc, webhook_id, delivery_id) from exc
        self._wake()
        return result


__all__ = [
    "DeliveryFilters",
    "WebhookFilters",
    "WebhookService",
    "check_adhoc_events",
    "delivery_dict",
    "generate_secret",
    "seal_api_keys",
    "webhook_dict",
]
