"""Contract of :class:`task_framework.store.webhooks.WebhookStore`, over SQLite and
PostgreSQL: webhooks, the delivery log, and the outbox (fan-out, claims, outcomes).
Secrets are opaque strings here: sealing them is the services' business."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.services.events import insert_events, thread_event
from task_framework.store.database import Database
from task_framework.store.errors import RecordNotFound, UniqueViolation
from task_framework.store.pages import PageRequest
from task_framework.store.sql import SqlWebhookStore
from task_framework.store.tables import threads, webhooks
from task_framework.store.webhooks import (
    ClaimedDelivery,
    DeliveryFilter,
    DeliveryOutcome,
    EventRecord,
    FailurePlan,
    NewDelivery,
    WebhookChange,
    WebhookFilter,
    WebhookRecord,
    WebhookStore,
)

LEASE = timedelta(seconds=60)


@pytest.fixture
def store(store_db: Database) -> WebhookStore:
    return SqlWebhookStore(store_db)


def anyone(_: WebhookRecord) -> bool:
    return True


def nobody(_: WebhookRecord) -> bool:
    return False


def _hook(**fields: Any) -> WebhookRecord:
    now = fields.pop("created_at", None) or utcnow()
    values: dict[str, Any] = {
        "id": new_id("webhook"),
        "url": "http://receiver.test/hook",
        "secret": "sealed-secret",
        "enabled": True,
        "disabled_reason": None,
        "events": None,
        "data_filters": None,
        "scope": None,
        "timeout_seconds": 10,
        "api_key": None,
        "task_id": None,
        "task_version": None,
        "source": "manual",
        "thread_id": None,
        "schedule_id": None,
        "app_id": "app1",
        "user_id": "user1",
        "created_by": "user1",
        "metadata": {},
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    return WebhookRecord(**values)


async def _events(db: Database, count: int, *, thread_id: str = "thread_1") -> None:
    thread = {"id": thread_id, "state": "queued", "created_at": "2026-01-01T00:00:00Z"}
    rows = [thread_event("thread.created", thread) for _ in range(count)]

    def _write(conn: Connection) -> None:
        insert_events(conn, rows)

    await db.tx(_write)


def _all(events: Sequence[EventRecord], hooks: Sequence[WebhookRecord]) -> list[NewDelivery]:
    return [
        NewDelivery(new_id("delivery"), hook, ev, {"event_id": ev.id})
        for ev in events
        for hook in hooks
    ]


async def _pending(store: WebhookStore, db: Database, hook: WebhookRecord, count: int = 1) -> None:
    """``count`` due first attempts for ``hook`` (fan-out of new events)."""
    await store.start_fan_out(utcnow())
    await _events(db, count)
    queued, _ = await store.fan_out(_all, limit=100, at=utcnow() - timedelta(seconds=1))
    assert queued >= count


async def _claim(
    store: WebhookStore, owner: str = "me", *, traceparent: bool = False, **kw: Any
) -> list[ClaimedDelivery]:
    values: dict[str, Any] = {
        "scan": 10, "exclude_urls": [], "take": lambda _url: True,
        "lease": lambda _timeout: LEASE, "traceparent": traceparent, "at": utcnow(), **kw,
    }  # fmt: skip
    return await store.claim(owner, **values)


def _outcome(job: ClaimedDelivery, status_code: int | None, **fields: Any) -> DeliveryOutcome:
    values: dict[str, Any] = {
        "delivery": job, "payload": job.payload, "started": utcnow(),
        "status_code": status_code, "duration_ms": 5, "error": None, "body": "ok", **fields,
    }  # fmt: skip
    return DeliveryOutcome(**values)


def _never(_hook: WebhookRecord, _outcome: DeliveryOutcome) -> FailurePlan:
    raise AssertionError("not a failure")


# -- webhooks ---------------------------------------------------------------------------------


async def test_add_get_and_visibility(store: WebhookStore) -> None:
    hook = _hook(events={"include": ["thread.created"]}, scope={"thread_id": "t"})
    assert await store.add(hook) == hook
    assert await store.get(hook.id, visible=anyone) == hook
    with pytest.raises(RecordNotFound) as missing:
        await store.get("webhook_nope", visible=anyone)
    assert missing.value.missing == ("webhook_nope",)
    with pytest.raises(RecordNotFound):
        await store.get(hook.id, visible=nobody)


async def test_a_duplicate_id_is_a_unique_violation(store: WebhookStore) -> None:
    hook = await store.add(_hook())
    with pytest.raises(UniqueViolation):
        await store.add(_hook(id=hook.id))


async def test_list_filters_owners_and_pages_newest_first(store: WebhookStore) -> None:
    start = utcnow()
    mine = [await store.add(_hook(created_at=start + timedelta(seconds=i))) for i in range(3)]
    other = await store.add(_hook(app_id="app2", user_id=None, enabled=False, source="thread"))
    page = await store.list_webhooks(
        WebhookFilter(app_id="app1", user_id="user1"), PageRequest(limit=2)
    )
    assert ([r.id for r in page.rows], page.total, page.has_more) == (
        [mine[2].id, mine[1].id], 3, True,
    )  # fmt: skip
    rest = await store.list_webhooks(
        WebhookFilter(app_id="app1", user_id="user1"), PageRequest(limit=2, cursor=page.cursor)
    )
    assert [r.id for r in rest.rows] == [mine[0].id]
    everyone = await store.list_webhooks(
        WebhookFilter(match_app=False, match_user=False), PageRequest()
    )
    assert everyone.total == 4
    ownerless_user = await store.list_webhooks(
        WebhookFilter(app_id="app2", user_id=None), PageRequest()
    )
    assert [r.id for r in ownerless_user.rows] == [other.id]
    for where in (
        WebhookFilter(match_app=False, match_user=False, enabled=False),
        WebhookFilter(match_app=False, match_user=False, source="thread"),
    ):
        assert [r.id for r in (await store.list_webhooks(where, PageRequest())).rows] == [other.id]


async def test_update_changes_only_what_it_names(store: WebhookStore) -> None:
    hook = await store.add(_hook(api_key="sealed-key", task_id="t1"))
    later = hook.updated_at + timedelta(seconds=5)
    changed = await store.update(
        hook.id,
        WebhookChange(updated_at=later, url="http://other.test/", timeout_seconds=3),
        visible=anyone,
    )
    assert (changed.url, changed.timeout_seconds, changed.updated_at) == (
        "http://other.test/", 3, later,
    )  # fmt: skip
    assert (changed.api_key, changed.task_id, changed.secret) == ("sealed-key", "t1", hook.secret)
    cleared = await store.update(
        hook.id, WebhookChange(updated_at=later, clear_api_key=True, secret="new"), visible=anyone
    )
    assert (cleared.api_key, cleared.secret) == (None, "new")


async def test_update_of_a_missing_or_invisible_webhook_writes_nothing(
    store: WebhookStore,
) -> None:
    hook = await store.add(_hook())
    change = WebhookChange(updated_at=utcnow(), url="http://x.test/")
    with pytest.raises(RecordNotFound):
        await store.update("webhook_nope", change, visible=anyone)
    with pytest.raises(RecordNotFound):
        await store.update(hook.id, change, visible=nobody)
    assert (await store.get(hook.id, visible=anyone)).url == hook.url


async def test_disabling_cancels_pending_attempts_and_enabling_clears_the_reason(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook())
    await _pending(store, store_db, hook, 2)
    off = await store.update(
        hook.id,
        WebhookChange(updated_at=utcnow(), enabled=False, disabled_reason="manual"),
        visible=anyone,
    )
    assert (off.enabled, off.disabled_reason) == (False, "manual")
    log = await store.list_deliveries(hook.id, DeliveryFilter(), PageRequest(), visible=anyone)
    assert log.total == 0
    on = await store.update(
        hook.id, WebhookChange(updated_at=utcnow(), enabled=True), visible=anyone
    )
    assert (on.enabled, on.disabled_reason, on.first_failure_at) == (True, None, None)


async def test_delete_takes_the_delivery_log_along(store: WebhookStore, store_db: Database) -> None:
    hook = await store.add(_hook())
    kept = await store.add(_hook())
    await _pending(store, store_db, hook)
    with pytest.raises(RecordNotFound):
        await store.delete(hook.id, visible=nobody)
    await store.delete(hook.id, visible=anyone)
    with pytest.raises(RecordNotFound):
        await store.get(hook.id, visible=anyone)
    with pytest.raises(RecordNotFound):
        await store.delete(hook.id, visible=anyone)
    assert len(await _claim(store)) == 1  # only the other webhook's attempt is left
    assert (await store.get(kept.id, visible=anyone)).id == kept.id


async def test_source_webhooks_live_and_die_with_their_parent(
    store: WebhookStore, store_db: Database
) -> None:
    thread_hook = _hook(source="thread", thread_id="thread_1", scope={"thread_id": "thread_1"})
    schedule_hook = _hook(source="schedule", schedule_id="sch_1")
    await store_db.tx(lambda tx: store.add_source_webhooks_in(tx, [thread_hook, schedule_hook]))
    assert await store.get(thread_hook.id, visible=anyone) == thread_hook
    await store_db.tx(lambda tx: store.delete_source_webhooks_in(tx, "schedule", "sch_1"))
    with pytest.raises(RecordNotFound):
        await store.get(schedule_hook.id, visible=anyone)
    await store_db.tx(lambda tx: store.delete_source_webhooks_in(tx, "schedule", "thread_1"))
    assert await store.get(thread_hook.id, visible=anyone) == thread_hook
    await store_db.tx(lambda tx: store.thread_deleted_in(tx, "thread_1"))
    with pytest.raises(RecordNotFound):
        await store.get(thread_hook.id, visible=anyone)


# -- the delivery log -------------------------------------------------------------------------


async def test_deliveries_are_listed_filtered_and_found_per_webhook(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook())
    other = await store.add(_hook())
    await _pending(store, store_db, hook, 2)
    log = await store.list_deliveries(hook.id, DeliveryFilter(), PageRequest(), visible=anyone)
    assert log.total == 2
    assert {(d.webhook_id, d.status, d.attempt, d.manual) for d in log.rows} == {
        (hook.id, "pending", 1, False)
    }
    failed = DeliveryFilter(status="failed")
    assert (await store.list_deliveries(hook.id, failed, PageRequest(), visible=anyone)).total == 0
    found = await store.get_delivery(hook.id, log.rows[0].id, visible=anyone)
    assert found == log.rows[0]
    with pytest.raises(RecordNotFound) as missing:
        await store.get_delivery(other.id, found.id, visible=anyone)
    assert missing.value.missing == (found.id,)
    with pytest.raises(RecordNotFound) as hidden:
        await store.get_delivery(hook.id, found.id, visible=nobody)
    assert hidden.value.missing == (hook.id,)
    with pytest.raises(RecordNotFound):
        await store.list_deliveries("webhook_nope", DeliveryFilter(), PageRequest(), visible=anyone)


async def test_redeliver_numbers_the_attempt_after_the_last(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook())
    await _pending(store, store_db, hook)
    first = (await _claim(store))[0]
    at = utcnow()
    again = await store.redeliver(
        hook.id, first.id, visible=anyone, admit=lambda _h: None, new_id="delivery_a", at=at
    )
    assert (again.id, again.attempt, again.manual, again.status) == (
        "delivery_a", 2, True, "pending",
    )  # fmt: skip
    assert again.event_id == first.event_id
    assert again.timestamp == at
    with pytest.raises(UniqueViolation):
        await store.redeliver(
            hook.id, first.id, visible=anyone, admit=lambda _h: None, new_id="delivery_a", at=at
        )

    class Refused(Exception):
        pass

    def refuse(_hook: WebhookRecord) -> None:
        raise Refused

    with pytest.raises(Refused):
        await store.redeliver(hook.id, first.id, visible=anyone, admit=refuse, new_id="d_b", at=at)
    with pytest.raises(RecordNotFound) as missing:
        await store.redeliver(
            hook.id, "delivery_nope", visible=anyone, admit=refuse, new_id="d_c", at=at
        )
    assert missing.value.missing == ("delivery_nope",)
    log = await store.list_deliveries(hook.id, DeliveryFilter(), PageRequest(), visible=anyone)
    assert log.total == 2


# -- the outbox -------------------------------------------------------------------------------


async def test_fan_out_starts_after_the_newest_event_and_moves_the_cursor(
    store: WebhookStore, store_db: Database
) -> None:
    await _events(store_db, 2)  # before the start: never fanned out
    await store.start_fan_out(utcnow())
    await store.start_fan_out(utcnow())  # a second start keeps the cursor
    hook = await store.add(_hook())
    await _events(store_db, 3)
    seen: list[list[int]] = []

    def plan(events: Sequence[EventRecord], hooks: Sequence[WebhookRecord]) -> list[NewDelivery]:
        seen.append([e.seq for e in events])
        assert [h.id for h in hooks] == [hook.id]
        return _all(events[:1], hooks)

    assert await store.fan_out(plan, limit=2, at=utcnow()) == (1, True)
    assert await store.fan_out(plan, limit=2, at=utcnow()) == (1, False)
    assert await store.fan_out(plan, limit=2, at=utcnow()) == (0, False)
    assert len(seen) == 2
    assert len(seen[0]) == 2
    assert len(seen[1]) == 1
    assert seen[0][0] == seen[0][1] - 1 == seen[1][0] - 2


async def test_fan_out_asks_no_plan_without_an_enabled_webhook(
    store: WebhookStore, store_db: Database
) -> None:
    await store.start_fan_out(utcnow())
    await store.add(_hook(enabled=False))
    await _events(store_db, 1)
    assert not await store.any_enabled()
    assert await store.fan_out(_never, limit=10, at=utcnow()) == (0, False)  # type: ignore[arg-type]
    await store.add(_hook())
    assert await store.any_enabled()


async def test_idle_advance_moves_the_cursor_only_while_no_webhook_is_enabled(
    store: WebhookStore, store_db: Database
) -> None:
    await store.start_fan_out(utcnow())
    await _events(store_db, 2)
    newest = await store.advance_idle(None, utcnow())
    assert newest is not None
    assert await store.advance_idle(newest, utcnow()) == newest
    await _events(store_db, 1)  # after the mark: still fanned out to a new webhook
    hook = await store.add(_hook())
    assert await store.advance_idle(newest, utcnow()) is None
    assert await store.fan_out(_all, limit=10, at=utcnow()) == (1, False)
    log = await store.list_deliveries(hook.id, DeliveryFilter(), PageRequest(), visible=anyone)
    assert log.total == 1


async def test_claims_lease_due_attempts_to_one_owner(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook(api_key="sealed-key", data_filters={"detail": "none"}))
    await _pending(store, store_db, hook, 3)
    mine = await _claim(store, "me", scan=2)
    assert len(mine) == 2
    job = mine[0]
    assert (job.webhook_id, job.url, job.secret, job.api_key, job.timeout, job.attempt) == (
        hook.id, hook.url, hook.secret, "sealed-key", 10.0, 1,
    )  # fmt: skip
    assert job.data_filters == {"detail": "none"}
    assert job.traceparent is None
    theirs = await _claim(store, "them")
    assert len(theirs) == 1
    assert theirs[0].id not in {j.id for j in mine}
    assert await _claim(store, "them") == []
    # An expired lease is claimed again.
    again = await _claim(store, "them", at=utcnow() + LEASE + timedelta(seconds=1))
    assert {j.id for j in again} == {j.id for j in mine} | {theirs[0].id}


async def test_claims_honour_take_and_excluded_urls_and_skip_disabled_webhooks(
    store: WebhookStore, store_db: Database
) -> None:
    a = await store.add(_hook(url="http://a.test/"))
    b = await store.add(_hook(url="http://b.test/"))
    await _pending(store, store_db, a)
    assert await _claim(store, exclude_urls=[a.url, b.url]) == []
    assert [j.url for j in await _claim(store, take=lambda url: url == b.url)] == [b.url]
    leases: list[float] = []

    def lease(timeout: float) -> timedelta:
        leases.append(timeout)
        return LEASE

    got = await _claim(store, lease=lease)
    assert [j.url for j in got] == [a.url]
    assert leases == [10.0]
    await _pending(store, store_db, a)
    # Disabled behind the store's back (its pending attempts stay): they are not claimed.
    await store_db.tx(lambda conn: conn.execute(webhooks.update().values(enabled=False)))
    assert await _claim(store, "other") == []


async def test_claims_carry_the_threads_trace_when_asked(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook())
    await _pending(store, store_db, hook)
    await _events(store_db, 1, thread_id="thread_gone")  # its thread row is gone
    await store.fan_out(_all, limit=10, at=utcnow() - timedelta(seconds=1))
    traced = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await store_db.tx(
        lambda conn: conn.execute(
            threads.insert().values(
                id="thread_1",
                state="running",
                metadata={},
                params={},
                problems=[],
                created_at=utcnow(),
                traceparent=traced,
            )
        )
    )
    jobs = await _claim(store, traceparent=True)
    assert {j.thread_id: j.traceparent for j in jobs} == {"thread_1": traced, "thread_gone": None}


async def test_a_success_is_recorded_and_closes_the_failure_window(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook())
    await _pending(store, store_db, hook, 2)
    ok, bad = await _claim(store)
    opened = utcnow() - timedelta(seconds=30)

    def plan(_h: WebhookRecord, _o: DeliveryOutcome) -> FailurePlan:
        return FailurePlan(first_failure_at=opened)

    assert await store.record("me", [_outcome(bad, 500, error="HTTP 500")], after_failure=plan,
                              at=utcnow()) == 0  # fmt: skip
    assert (await store.get(hook.id, visible=anyone)).first_failure_at == opened
    sent = {"event_id": ok.event_id, "download_url": "http://files.test/x"}
    assert await store.record("me", [_outcome(ok, 204, payload=sent)], after_failure=_never,
                              at=utcnow()) == 0  # fmt: skip
    assert (await store.get(hook.id, visible=anyone)).first_failure_at is None
    done = await store.get_delivery(hook.id, ok.id, visible=anyone)
    assert (done.status, done.status_code, done.response_body, done.event_payload) == (
        "success", 204, "ok", sent,
    )  # fmt: skip
    failed = await store.get_delivery(hook.id, bad.id, visible=anyone)
    assert (failed.status, failed.error) == ("failed", "HTTP 500")


async def test_a_failure_queues_the_planned_retry_once(
    store: WebhookStore, store_db: Database
) -> None:
    hook = await store.add(_hook())
    await _pending(store, store_db, hook)
    (job,) = await _claim(store)
    due = utcnow() - timedelta(seconds=1)

    def retry(_h: WebhookRecord, _o: DeliveryOutcome) -> FailurePlan:
        return FailurePlan(first_failure_at=due, retry_at=due)

    assert await store.record("me", [_outcome(job, None, error="timeout")], after_failure=retry,
                              at=utcnow()) == 1  # fmt: skip
    # The same outcome again: the attempt is no longer pending, nothing happens.
    assert await store.record("me", [_outcome(job, None)], after_failure=retry, at=utcnow()) == 0
    (second,) = await _claim(store)
    assert (second.attempt, second.event_id, second.payload) == (2, job.event_id, job.payload)
    # An outcome for an attempt leased to someone else is not recorded.
    assert await store.record("you", [_outcome(second, 500)], after_failure=retry,
                              at=utcnow()) == 0  # fmt: skip
    pending = DeliveryFilter(status="pending")
    assert (await store.list_deliveries(hook.id, pending, PageRequest(), visible=anyone)).total == 1
    # A redelivery took attempt 3 meanwhile: the planned retry is dropped.
    await store.redeliver(hook.id, job.id, visible=anyone, admit=lambda _h: None,
                          new_id="delivery_r", at=utcnow() + timedelta(hours=1))  # fmt: skip
    assert await store.record("me", [_outcome(second, 500)], after_failure=retry,
                              at=utcnow()) == 0  # fmt: skip


async def test_a_failure_may_disable_the_webhook(store: WebhookStore, store_db: Database) -> None:
    hook = await store.add(_hook())
    await _pending(store, store_db, hook, 2)
    (first,) = await _claim(store, scan=1)
    at = utcnow()

    def gone(_h: WebhookRecord, _o: DeliveryOutcome) -> FailurePlan:
        return FailurePlan(disable="gone", retry_at=at)

    assert await store.record("me", [_outcome(first, 410)], after_failure=gone, at=at) == 0
    off = await store.get(hook.id, visible=anyone)
    assert (off.enabled, off.disabled_reason, off.updated_at) == (False, "gone", at)
    pending = DeliveryFilter(status="pending")
    assert (await store.list_deliveries(hook.id, pending, PageRequest(), visible=anyone)).total == 0


async def test_commits_that_write_webhooks_or_events_are_reported(
    store: WebhookStore, store_db: Database
) -> None:
    seen: list[str] = []
    stop = store.watch_commits(
        webhooks_written=lambda: seen.append("webhooks"),
        events_written=lambda: seen.append("events"),
    )
    try:
        await store.add(_hook())
        await _events(store_db, 1)
        await store.any_enabled()
    finally:
        stop()
    await store.add(_hook())
    assert seen == ["webhooks", "events"]
