"""WebhookService and the dispatcher's failure policy over the SQLite webhook store:
sealing, ownership, the update rules, redelivery and what follows a failed attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Connection

from task_framework.errors import NotFound, ValidationFailed
from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.models.webhooks import WebhookCreateRequest, WebhookUpdateRequest
from task_framework.observability.metrics import Metrics
from task_framework.services.auth import Principal
from task_framework.services.crypto import Encryptor, SecretBox
from task_framework.services.delivery import Dispatcher
from task_framework.services.events import insert_events, thread_event
from task_framework.services.urlguard import UrlGuard
from task_framework.services.webhooks import DeliveryFilters, WebhookFilters, WebhookService
from task_framework.store.database import Database
from task_framework.store.pages import PageRequest
from task_framework.store.sql import SqlWebhookStore
from task_framework.store.webhooks import (
    ClaimedDelivery,
    DeliveryOutcome,
    EventRecord,
    FailurePlan,
    NewDelivery,
    WebhookRecord,
)

URL = "http://127.0.0.1:9/hook"
ALICE = Principal(is_admin=False, app_id="app1", user_id="alice")
BOB = Principal(is_admin=False, app_id="app1", user_id="bob")
ADMIN = Principal(is_admin=True)


@pytest.fixture
def store(sqlite_db: Database) -> SqlWebhookStore:
    return SqlWebhookStore(sqlite_db)


@pytest.fixture
def box() -> SecretBox:
    sealed = SecretBox()
    sealed.open(Encryptor([Fernet.generate_key()]))
    return sealed


@pytest.fixture
def wakes() -> list[None]:
    return []


@pytest.fixture
def service(store: SqlWebhookStore, box: SecretBox, wakes: list[None]) -> WebhookService:
    guard = UrlGuard(allow_private=True)
    return WebhookService(store, guard, secret_box=box, wake=lambda: wakes.append(None))


async def _create(
    service: WebhookService, principal: Principal = ALICE, **body: object
) -> dict[str, Any]:
    request = WebhookCreateRequest.model_validate({"url": URL, **body})
    return await service.create(principal, request)


async def test_the_secret_is_shown_once_and_stored_sealed(
    service: WebhookService, store: SqlWebhookStore, box: SecretBox
) -> None:
    created = await _create(service, api_key="receiver-key")
    assert created["secret"].startswith("whsec_")
    assert (created["has_api_key"], created["api_key"], created["source"]) == (
        True, None, "manual",
    )  # fmt: skip
    stored = await store.get(created["id"], visible=lambda _: True)
    assert box.unseal(stored.secret) == created["secret"]
    assert box.unseal(stored.api_key or "") == "receiver-key"
    assert (await service.get(ALICE, created["id"]))["secret"] is None
    regenerated = await service.regenerate_secret(ALICE, created["id"])
    assert regenerated["secret"] not in (None, created["secret"])


async def test_webhooks_of_others_are_not_found(service: WebhookService) -> None:
    created = await _create(service)
    for call in (
        service.get(BOB, created["id"]),
        service.delete(BOB, created["id"]),
        service.regenerate_secret(BOB, created["id"]),
        service.update(BOB, created["id"], WebhookUpdateRequest(timeout_seconds=3)),
        service.list_deliveries(BOB, created["id"], DeliveryFilters(), PageRequest()),
    ):
        with pytest.raises(NotFound) as missing:
            await call
        assert missing.value.code == "WEBHOOK_NOT_FOUND"
    assert (await service.list_webhooks(BOB, WebhookFilters(), PageRequest()))["items"] == []
    listed = await service.list_webhooks(ADMIN, WebhookFilters(), PageRequest())
    assert [h["id"] for h in listed["items"]] == [created["id"]]
    assert (await service.get(ADMIN, created["id"]))["id"] == created["id"]


async def test_update_rules(service: WebhookService, store: SqlWebhookStore) -> None:
    created = await _create(service, api_key="k", enabled=False)
    assert (created["enabled"], created["disabled_reason"]) == (False, "manual")
    cleared = await service.update(ALICE, created["id"], WebhookUpdateRequest(api_key=""))
    assert cleared["has_api_key"] is False
    on = await service.update(ALICE, created["id"], WebhookUpdateRequest(enabled=True))
    assert (on["enabled"], on["disabled_reason"]) == (True, None)
    off = await service.update(ALICE, created["id"], WebhookUpdateRequest(enabled=False))
    assert (off["enabled"], off["disabled_reason"]) == (False, "manual")
    await service.delete(ALICE, created["id"])
    with pytest.raises(NotFound):
        await service.get(ALICE, created["id"])


async def test_redelivery(
    service: WebhookService, store: SqlWebhookStore, sqlite_db: Database, wakes: list[None]
) -> None:
    created = await _create(service)
    hook_id = created["id"]
    await store.start_fan_out(utcnow())
    thread = {"id": "thread_1", "state": "queued", "created_at": "2026-01-01T00:00:00Z"}

    def _write(conn: Connection) -> None:
        insert_events(conn, [thread_event("thread.created", thread)])

    await sqlite_db.tx(_write)

    def plan(events: Sequence[EventRecord], hooks: Sequence[WebhookRecord]) -> list[NewDelivery]:
        return [NewDelivery(new_id("delivery"), h, e, {"id": e.id}) for e in events for h in hooks]

    assert (await store.fan_out(plan, limit=10, at=utcnow()))[0] == 1
    log = await service.list_deliveries(ALICE, hook_id, DeliveryFilters(), PageRequest())
    first = log["items"][0]
    again = await service.redeliver(ALICE, hook_id, first["id"])
    assert (again["attempt"], again["status"], again["event_id"]) == (
        2, "pending", first["event_id"],
    )  # fmt: skip
    assert len(wakes) == 1
    assert (await service.get_delivery(ALICE, hook_id, again["id"]))["id"] == again["id"]
    with pytest.raises(NotFound) as missing:
        await service.redeliver(ALICE, hook_id, "delivery_nope")
    assert missing.value.code == "DELIVERY_NOT_FOUND"
    with pytest.raises(NotFound) as hidden:
        await service.get_delivery(BOB, hook_id, first["id"])
    assert hidden.value.code == "WEBHOOK_NOT_FOUND"
    # Sent (disabling cancels what is still pending), then the webhook is disabled.
    jobs = await store.claim(
        "me", scan=10, exclude_urls=[], take=lambda _u: True,
        lease=lambda _t: timedelta(minutes=1), traceparent=False, at=utcnow(),
    )  # fmt: skip
    sent = [DeliveryOutcome(job, {}, utcnow(), 200, 1, None, None) for job in jobs]
    await store.record("me", sent, after_failure=lambda _h, _o: FailurePlan(), at=utcnow())
    await service.update(ALICE, hook_id, WebhookUpdateRequest(enabled=False))
    with pytest.raises(ValidationFailed):
        await service.redeliver(ALICE, hook_id, first["id"])
    assert len(wakes) == 1


# -- the dispatcher's failure policy ------------------------------------------------------


def _dispatcher(store: SqlWebhookStore, box: SecretBox) -> Dispatcher:
    return Dispatcher(
        store, UrlGuard(allow_private=True), Metrics(), retry_schedule=[10, 60],
        disable_after_seconds=3600, max_concurrency=4, user_agent="test", secret_box=box,
    )  # fmt: skip


def _failure(
    attempt: int = 1, *, manual: bool = False, status: int | None = 500
) -> DeliveryOutcome:
    job = ClaimedDelivery(
        id="delivery_1", webhook_id="webhook_1", event_id="event_1", event_type="thread.created",
        attempt=attempt, manual=manual, payload={}, thread_id=None, run_id=None, url=URL,
        secret="s", api_key=None, timeout=10.0, data_filters=None,
    )  # fmt: skip
    return DeliveryOutcome(job, {}, utcnow(), status, 5, "HTTP 500", None)


def _hook(**fields: object) -> WebhookRecord:
    now = utcnow()
    values: dict[str, object] = {
        "id": "webhook_1", "url": URL, "secret": "s", "enabled": True, "disabled_reason": None,
        "events": None, "data_filters": None, "scope": None, "timeout_seconds": 10,
        "api_key": None, "task_id": None, "task_version": None, "source": "manual",
        "thread_id": None, "schedule_id": None, "app_id": None, "user_id": None,
        "created_by": None, "metadata": {}, "created_at": now, "updated_at": now, **fields,
    }  # fmt: skip
    return WebhookRecord(**values)  # type: ignore[arg-type]


async def test_failures_follow_the_retry_schedule_then_give_up(
    store: SqlWebhookStore, box: SecretBox
) -> None:
    dispatcher = _dispatcher(store, box)
    before = utcnow()
    plan = dispatcher._after_failure(_hook(), _failure(1))
    assert plan.disable is None
    assert plan.first_failure_at is not None
    assert plan.retry_at is not None
    assert before + timedelta(seconds=9) <= plan.retry_at <= utcnow() + timedelta(seconds=11)
    opened = utcnow() - timedelta(seconds=5)
    second = dispatcher._after_failure(_hook(first_failure_at=opened), _failure(2))
    assert second.first_failure_at is None  # the window is open already
    assert second.retry_at is not None
    assert dispatcher._after_failure(_hook(), _failure(3)).retry_at is None  # schedule done
    assert dispatcher._after_failure(_hook(), _failure(1, manual=True)).retry_at is None
    assert dispatcher._after_failure(_hook(enabled=False), _failure(1)).retry_at is None


async def test_gone_or_failing_too_long_disables(store: SqlWebhookStore, box: SecretBox) -> None:
    dispatcher = _dispatcher(store, box)
    assert dispatcher._after_failure(_hook(), _failure(status=410)).disable == "gone"
    long_ago = utcnow() - timedelta(hours=2)
    failing = dispatcher._after_failure(_hook(first_failure_at=long_ago), _failure(2))
    assert failing.disable == "failing"
