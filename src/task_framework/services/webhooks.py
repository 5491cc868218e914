"""Webhook use cases: CRUD, secrets, delivery history, redelivery (API.md §7, §12.1).

Webhooks are owned like every other resource (§1.6). Ad-hoc (``source="thread"``) and
schedule webhooks are ordinary rows created inside their parent's transaction by
:func:`insert_source_webhooks`; deleting the parent deletes them. Secrets and API keys
are stored sealed (:class:`~task_framework.services.crypto.SecretBox`); a secret is shown
in clear only in the answer that created it.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from task_framework.errors import NotFound, ValidationFailed
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.webhooks import (
    DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
    WebhookCreateRequest,
    WebhookUpdateRequest,
    check_event_names,
)
from task_framework.services.auth import Principal
from task_framework.services.crypto import SecretBox
from task_framework.services.urlguard import UrlGuard
from task_framework.store.database import Database
from task_framework.store.paging import PageRequest, paginate
from task_framework.store.tables import events, settings_kv, webhook_deliveries, webhooks

WEBHOOKS_WRITTEN = "tf_webhooks_written"
"""Set in ``conn.info`` by a transaction that created or changed webhooks (delivery reads
it at commit, so a new webhook ends its "none enabled" shortcut at once)."""


def webhooks_changed(conn: Connection) -> None:
    conn.info[WEBHOOKS_WRITTEN] = True


SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_BYTES = 32
FAN_OUT_CURSOR_KEY = "webhooks_event_seq"


def generate_secret() -> str:
    """``whsec_`` + standard base64 of 32 random bytes (44 characters)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


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


# -- ad-hoc and schedule webhooks (called inside the parent's transaction) -------------------


def check_adhoc_events(hooks: list[dict[str, Any]]) -> None:
    """Ad-hoc event lists must name catalogue events (400 otherwise)."""
    for hook in hooks:
        try:
            check_event_names(list(hook.get("events") or []))
        except ValueError as exc:
            raise ValidationFailed(f"Invalid webhook events: {exc}") from exc


def insert_source_webhooks(
    conn: Connection,
    hooks: list[dict[str, Any]],
    *,
    seal: Callable[[str], str],
    source: str,
    owner: tuple[str | None, str | None],
    now: datetime,
    thread_id: str | None = None,
    schedule_id: str | None = None,
) -> None:
    """Insert AdHocWebhook dicts (``callback_url``, ``events``, ``api_key``) as webhook rows
    scoped to their thread or schedule. URLs must have been checked already and each
    ``api_key`` sealed (see :func:`seal_api_keys`); ``seal`` seals the new secrets."""
    if not hooks:
        return
    scope = {"thread_id": thread_id} if thread_id else {"schedule_id": schedule_id}
    webhooks_changed(conn)
    conn.execute(
        insert(webhooks),
        [
            {
                "id": new_id("webhook"),
                "url": hook["callback_url"],
                "secret": seal(generate_secret()),
                "enabled": True,
                "disabled_reason": None,
                "events": {"include": list(hook.get("events") or [])},
                "data_filters": None,
                "scope": scope,
                "timeout_seconds": DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
                "api_key": hook.get("api_key") or None,
                "task_id": None,
                "task_version": None,
                "source": source,
                "thread_id": thread_id,
                "schedule_id": schedule_id,
                "app_id": owner[0],
                "user_id": owner[1],
                "created_by": owner[1] or owner[0],
                "metadata": {},
                "created_at": now,
                "updated_at": now,
                "first_failure_at": None,
            }
            for hook in hooks
        ],
    )


def seal_api_keys(hooks: list[dict[str, Any]], seal: Callable[[str], str]) -> None:
    """Seal each AdHocWebhook dict's ``api_key`` in place (an empty one becomes None)."""
    for hook in hooks:
        hook["api_key"] = seal(hook["api_key"]) if hook.get("api_key") else None


def delete_webhooks_where(conn: Connection, condition: Any) -> None:
    """Delete matching webhooks with their pending attempts and delivery history."""
    ids = select(webhooks.c.id).where(condition).scalar_subquery()
    conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id.in_(ids)))
    conn.execute(delete(webhooks).where(condition))


def on_thread_deleted(conn: Connection, thread_id: str) -> None:
    """Inside a thread deletion, after its events are gone: drop its ad-hoc webhooks.

    SQLite hands out ``max(seq) + 1`` for new events, so deleting the newest events lets
    their numbers come back; the fan-out cursor is lowered to stay below them.
    """
    delete_webhooks_where(
        conn, and_(webhooks.c.source == "thread", webhooks.c.thread_id == thread_id)
    )
    if conn.dialect.name != "sqlite":
        return
    top = conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one()
    cursor = read_fan_out_cursor(conn)
    if cursor is not None and cursor > top:
        write_fan_out_cursor(conn, int(top), utcnow())


def read_fan_out_cursor(conn: Connection, *, for_update: bool = False) -> int | None:
    """The last event sequence number the webhook fan-out has handled (None before its
    first start); ``for_update`` locks it until the transaction ends (PostgreSQL)."""
    query = select(settings_kv.c.value).where(settings_kv.c.key == FAN_OUT_CURSOR_KEY)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else int(value.get("seq", 0))


def write_fan_out_cursor(conn: Connection, seq: int, now: datetime) -> None:
    conn.execute(
        update(settings_kv)
        .where(settings_kv.c.key == FAN_OUT_CURSOR_KEY)
        .values(value={"seq": seq}, updated_at=now)
    )


def cancel_pending(conn: Connection, webhook_id: str) -> None:
    conn.execute(
        delete(webhook_deliveries).where(
            webhook_deliveries.c.webhook_id == webhook_id,
            webhook_deliveries.c.status == "pending",
        )
    )


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


def _visible(conn: Connection, principal: Principal, webhook_id: str) -> Any:
    row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
    if row is None or not principal.owns(row.app_id, row.user_id):
        raise _not_found(webhook_id)
    return row


class WebhookService:
    """``/webhooks`` use cases. ``wake`` nudges the dispatcher after a redelivery."""

    def __init__(
        self, db: Database, guard: UrlGuard, *, secret_box: SecretBox, wake: Callable[[], None]
    ) -> None:
        self._db = db
        self.guard = guard
        self._secrets = secret_box
        self._wake = wake

    async def create(self, principal: Principal, body: WebhookCreateRequest) -> dict[str, Any]:
        url = await self.guard.check(body.url)
        now = utcnow()
        webhook_id = new_id("webhook")
        secret = generate_secret()
        row = {
            "id": webhook_id,
            "url": url,
            "secret": self._secrets.seal(secret),
            "enabled": True if body.enabled is None else body.enabled,
            "disabled_reason": None if body.enabled is not False else "manual",
            "events": body.events.model_dump(exclude_none=True) if body.events else None,
            "data_filters": body.data_filters.model_dump() if body.data_filters else None,
            "scope": _scope_dict(body.scope),
            "timeout_seconds": body.timeout_seconds or DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
            "api_key": self._secrets.seal(body.api_key) if body.api_key else None,
            "task_id": body.task_id,
            "task_version": body.task_version,
            "source": "manual",
            "thread_id": None,
            "schedule_id": None,
            "app_id": principal.app_id,
            "user_id": principal.user_id,
            "created_by": principal.user_id or principal.app_id,
            "metadata": {},
            "created_at": now,
            "updated_at": now,
            "first_failure_at": None,
        }

        def _create(conn: Connection) -> dict[str, Any]:
            conn.execute(insert(webhooks).values(**row))
            webhooks_changed(conn)
            return webhook_dict(_visible(conn, principal, webhook_id), secret=secret)

        result: dict[str, Any] = await self._db.tx(_create)
        return result

    async def list_webhooks(
        self, principal: Principal, filters: WebhookFilters, page: PageRequest
    ) -> dict[str, Any]:
        conditions = []
        if not principal.is_admin or principal.app_id is not None:
            conditions.append(webhooks.c.app_id == principal.app_id)
        if not principal.is_admin or principal.user_id is not None:
            conditions.append(webhooks.c.user_id == principal.user_id)
        if filters.is_enabled is not None:
            conditions.append(webhooks.c.enabled.is_(filters.is_enabled))
        for attr in ("task_id", "task_version", "source"):
            value = getattr(filters, attr)
            if value is not None:
                conditions.append(webhooks.c[attr] == value)
        query = select(webhooks).where(*conditions)

        def _list(conn: Connection) -> dict[str, Any]:
            result = paginate(
                conn, query, route="webhooks", sort=webhooks.c.created_at,
                ident=webhooks.c.id, page=page,
            )  # fmt: skip
            return result.envelope([webhook_dict(r) for r in result.rows])

        envelope: dict[str, Any] = await self._db.tx(_list)
        return envelope

    async def get(self, principal: Principal, webhook_id: str) -> dict[str, Any]:
        def _get(conn: Connection) -> dict[str, Any]:
            return webhook_dict(_visible(conn, principal, webhook_id))

        result: dict[str, Any] = await self._db.tx(_get)
        return result

    async def update(
        self, principal: Principal, webhook_id: str, body: WebhookUpdateRequest
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if body.url is not None:
            changes["url"] = await self.guard.check(body.url)
        if body.events is not None:
            changes["events"] = body.events.model_dump(exclude_none=True)
        if body.data_filters is not None:
            changes["data_filters"] = body.data_filters.model_dump()
        if body.scope is not None:
            changes["scope"] = _scope_dict(body.scope)
        for attr in ("timeout_seconds", "task_id", "task_version"):
            if getattr(body, attr) is not None:
                changes[attr] = getattr(body, attr)
        if body.api_key is not None:
            changes["api_key"] = self._secrets.seal(body.api_key) if body.api_key else None
        if body.enabled is True:
            changes.update(enabled=True, disabled_reason=None, first_failure_at=None)
        elif body.enabled is False:
            changes.update(enabled=False, disabled_reason="manual")
        changes["updated_at"] = utcnow()

        def _update(conn: Connection) -> dict[str, Any]:
            _visible(conn, principal, webhook_id)
            conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**changes))
            webhooks_changed(conn)
            if body.enabled is False:
                cancel_pending(conn, webhook_id)
            return webhook_dict(_visible(conn, principal, webhook_id))

        result: dict[str, Any] = await self._db.tx(_update)
        return result

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        def _delete(conn: Connection) -> None:
            _visible(conn, principal, webhook_id)
            delete_webhooks_where(conn, webhooks.c.id == webhook_id)

        await self._db.tx(_delete)

    async def regenerate_secret(self, principal: Principal, webhook_id: str) -> dict[str, Any]:
        secret = generate_secret()
        sealed = self._secrets.seal(secret)

        def _regenerate(conn: Connection) -> dict[str, Any]:
            _visible(conn, principal, webhook_id)
            conn.execute(
                update(webhooks)
                .where(webhooks.c.id == webhook_id)
                .values(secret=sealed, updated_at=utcnow())
            )
            webhooks_changed(conn)
            return webhook_dict(_visible(conn, principal, webhook_id), secret=secret)

        result: dict[str, Any] = await self._db.tx(_regenerate)
        return result

    async def list_deliveries(
        self,
        principal: Principal,
        webhook_id: str,
        filters: DeliveryFilters,
        page: PageRequest,
    ) -> dict[str, Any]:
        d = webhook_deliveries.c
        conditions = [d.webhook_id == webhook_id]
        for attr in ("status", "thread_id", "event_type"):
            value = getattr(filters, attr)
            if value is not None:
                conditions.append(d[attr] == value)
        query = select(webhook_deliveries).where(*conditions)

        def _list(conn: Connection) -> dict[str, Any]:
            _visible(conn, principal, webhook_id)
            result = paginate(
                conn, query, route=f"deliveries:{webhook_id}", sort=d.timestamp, ident=d.id,
                page=page,
            )  # fmt: skip
            return result.envelope([delivery_dict(r) for r in result.rows])

        envelope: dict[str, Any] = await self._db.tx(_list)
        return envelope

    @staticmethod
    def _delivery(conn: Connection, webhook_id: str, delivery_id: str) -> Any:
        row = conn.execute(
            select(webhook_deliveries).where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.webhook_id == webhook_id,
            )
        ).first()
        if row is None:
            raise NotFound(f"Delivery {delivery_id} not found", code="DELIVERY_NOT_FOUND")
        return row

    async def get_delivery(
        self, principal: Principal, webhook_id: str, delivery_id: str
    ) -> dict[str, Any]:
        def _get(conn: Connection) -> dict[str, Any]:
            _visible(conn, principal, webhook_id)
            return delivery_dict(self._delivery(conn, webhook_id, delivery_id))

        result: dict[str, Any] = await self._db.tx(_get)
        return result

    async def redeliver(
        self, principal: Principal, webhook_id: str, delivery_id: str
    ) -> dict[str, Any]:
        """Queue a manual attempt of a delivery's event, not retried automatically."""

        def _redeliver(conn: Connection) -> dict[str, Any]:
            hook = _visible(conn, principal, webhook_id)
            source = self._delivery(conn, webhook_id, delivery_id)
            if not hook.enabled:
                raise ValidationFailed(f"Webhook {webhook_id} is disabled")
            last = conn.execute(
                select(func.max(webhook_deliveries.c.attempt)).where(
                    webhook_deliveries.c.webhook_id == webhook_id,
                    webhook_deliveries.c.event_id == source.event_id,
                )
            ).scalar_one()
            now = utcnow()
            row = {
                "id": new_id("delivery"),
                "webhook_id": webhook_id,
                "event_id": source.event_id,
                "event_type": source.event_type,
                "event_payload": source.event_payload,
                "thread_id": source.thread_id,
                "run_id": source.run_id,
                "attempt": int(last or 0) + 1,
                "timestamp": now,
                "status": "pending",
                "delivery_url": hook.url,
                "manual": True,
                "next_attempt_at": now,
            }
            conn.execute(insert(webhook_deliveries).values(**row))
            return delivery_dict(self._delivery(conn, webhook_id, row["id"]))

        try:
            result: dict[str, Any] = await self._db.tx(_redeliver)
        except IntegrityError:
            # A concurrent redelivery took the same attempt number; the next one is free.
            result = await self._db.tx(_redeliver)
        self._wake()
        return result


__all__ = [
    "DeliveryFilters",
    "WebhookFilters",
    "WebhookService",
    "check_adhoc_events",
    "generate_secret",
    "insert_source_webhooks",
    "on_thread_deleted",
    "seal_api_keys",
]
