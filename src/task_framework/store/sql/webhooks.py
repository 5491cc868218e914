"""Webhooks, the delivery log and the delivery outbox over SQLAlchemy Core (``webhooks``,
``webhook_deliveries``, the fan-out cursor in ``settings``).

The dialect differences of the outbox are here: on PostgreSQL the cursor row is locked
for the fan-out, due attempts are claimed with ``SKIP LOCKED``, and event numbers (handed
out before commit) are waited for across a gap; SQLite serialises writers instead, and
hands out ``max(seq) + 1``, so the cursor is lowered when the newest events are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.store.base import Tx
from task_framework.store.database import Database
from task_framework.store.errors import RecordNotFound
from task_framework.store.notify import EVENTS_WRITTEN
from task_framework.store.pages import Page, PageRequest
from task_framework.store.paging import paginate
from task_framework.store.sql._dialect import conn_of, translated
from task_framework.store.tables import events, settings_kv, threads, webhook_deliveries, webhooks
from task_framework.store.webhooks import (
    ClaimedDelivery,
    DeliveryFilter,
    DeliveryOutcome,
    DeliveryRecord,
    EventRecord,
    FailurePlan,
    Plan,
    Visible,
    WebhookChange,
    WebhookFilter,
    WebhookRecord,
    source_webhook_records,
    webhook_values,
)

__all__ = [
    "SqlWebhookStore",
    "delete_webhooks_where",
    "insert_source_webhooks",
    "on_thread_deleted",
]

FAN_OUT_CURSOR_KEY = "webhooks_event_seq"
GAP_MAX_WAIT_SECONDS = 60.0  # a PostgreSQL seq gap is given up after this at the latest
WEBHOOKS_WRITTEN = "tf_webhooks_written"
"""Set in ``conn.info`` by a transaction that created or changed webhooks (the dispatcher
reads it at commit, so a new webhook ends its "none enabled" shortcut at once)."""


def _webhooks_changed(conn: Connection) -> None:
    conn.info[WEBHOOKS_WRITTEN] = True


# -- rows and records -------------------------------------------------------------------------


def _webhook(row: Row[Any]) -> WebhookRecord:
    return WebhookRecord(
        id=row.id,
        url=row.url,
        secret=row.secret,
        enabled=bool(row.enabled),
        disabled_reason=row.disabled_reason,
        events=row.events,
        data_filters=row.data_filters,
        scope=row.scope,
        timeout_seconds=row.timeout_seconds,
        api_key=row.api_key,
        task_id=row.task_id,
        task_version=row.task_version,
        source=row.source,
        thread_id=row.thread_id,
        schedule_id=row.schedule_id,
        app_id=row.app_id,
        user_id=row.user_id,
        created_by=row.created_by,
        metadata=row.metadata or {},
        created_at=row.created_at,
        updated_at=row.updated_at,
        first_failure_at=row.first_failure_at,
    )


def _delivery(row: Row[Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        webhook_id=row.webhook_id,
        event_id=row.event_id,
        event_type=row.event_type,
        event_payload=row.event_payload,
        thread_id=row.thread_id,
        run_id=row.run_id,
        attempt=row.attempt,
        timestamp=row.timestamp,
        status=row.status,
        status_code=row.status_code,
        response_time_ms=row.response_time_ms,
        error=row.error,
        response_body=row.response_body,
        delivery_url=row.delivery_url,
        manual=bool(row.manual),
    )


def _event(row: Row[Any]) -> EventRecord:
    return EventRecord(
        seq=row.seq,
        id=row.id,
        event_type=row.event_type,
        thread_id=row.thread_id,
        schedule_id=row.schedule_id,
        run_id=row.run_id,
        app_id=row.app_id,
        user_id=row.user_id,
        data=row.data,
        created_at=row.created_at,
    )


def _not_found(webhook_id: str) -> RecordNotFound:
    return RecordNotFound(f"Webhook {webhook_id} not found", missing=(webhook_id,))


def _visible(conn: Connection, webhook_id: str, visible: Visible) -> WebhookRecord:
    row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
    if row is None:
        raise _not_found(webhook_id)
    record = _webhook(row)
    if not visible(record):
        raise _not_found(webhook_id)
    return record


def _delivery_in(conn: Connection, webhook_id: str, delivery_id: str) -> DeliveryRecord:
    d = webhook_deliveries.c
    row = conn.execute(
        select(webhook_deliveries).where(d.id == delivery_id, d.webhook_id == webhook_id)
    ).first()
    if row is None:
        raise RecordNotFound(f"Delivery {delivery_id} not found", missing=(delivery_id,))
    return _delivery(row)


# -- inside other aggregates' transactions (threads, schedules) --------------------------------


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
    """:func:`~task_framework.store.webhooks.source_webhook_records`, inserted on ``conn``.
    For the services not yet behind the store port (threads)."""
    records = source_webhook_records(
        hooks,
        seal=seal,
        source=source,
        owner=owner,
        now=now,
        thread_id=thread_id,
        schedule_id=schedule_id,
    )
    _insert_webhooks(conn, records)


def _insert_webhooks(conn: Connection, records: Sequence[WebhookRecord]) -> None:
    if records:
        _webhooks_changed(conn)
        conn.execute(insert(webhooks), [dict(webhook_values(r)) for r in records])


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
    cursor = _read_cursor(conn)
    if cursor is not None and cursor > top:
        _write_cursor(conn, int(top), utcnow())


def _read_cursor(conn: Connection, *, for_update: bool = False) -> int | None:
    """The last event number the fan-out has handled (None before its first start);
    ``for_update`` locks it until the transaction ends (PostgreSQL)."""
    query = select(settings_kv.c.value).where(settings_kv.c.key == FAN_OUT_CURSOR_KEY)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else int(value.get("seq", 0))


def _locked_cursor(conn: Connection) -> int:
    cursor = _read_cursor(conn, for_update=True)
    assert cursor is not None, "the fan-out cursor is created when the dispatcher starts"
    return cursor


def _write_cursor(conn: Connection, seq: int, now: datetime) -> None:
    conn.execute(
        update(settings_kv)
        .where(settings_kv.c.key == FAN_OUT_CURSOR_KEY)
        .values(value={"seq": seq}, updated_at=now)
    )


def _cancel_pending(conn: Connection, webhook_id: str) -> None:
    conn.execute(
        delete(webhook_deliveries).where(
            webhook_deliveries.c.webhook_id == webhook_id,
            webhook_deliveries.c.status == "pending",
        )
    )


def _enabled_webhook_exists(conn: Connection) -> bool:
    return (
        conn.execute(select(webhooks.c.id).where(webhooks.c.enabled.is_(True)).limit(1)).first()
        is not None
    )


@dataclass(slots=True)
class _Gap:
    upto: int  # highest missing seq
    xmax: int  # transactions below this id must end before the gap is final
    since: float


# -- the store --------------------------------------------------------------------------------


class SqlWebhookStore:
    """:class:`~task_framework.store.webhooks.WebhookStore` on a :class:`Database`.

    One instance per dispatcher: it remembers a PostgreSQL event-number gap between
    fan-out batches."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._gap: _Gap | None = None

    # -- webhooks ---------------------------------------------------------------------------

    async def add(self, record: WebhookRecord) -> WebhookRecord:
        def _add(conn: Connection) -> WebhookRecord:
            _insert_webhooks(conn, [record])
            return _visible(conn, record.id, lambda _: True)

        with translated(f"Webhook {record.id!r}"):
            return await self._db.tx(_add)

    def add_source_webhooks_in(self, tx: Tx, records: Sequence[WebhookRecord]) -> None:
        _insert_webhooks(conn_of(tx), records)

    async def get(self, webhook_id: str, *, visible: Visible) -> WebhookRecord:
        return await self._db.tx(_visible, webhook_id, visible)

    async def list_webhooks(self, where: WebhookFilter, page: PageRequest) -> Page:
        w = webhooks.c
        conditions: list[Any] = []
        if where.match_app:
            conditions.append(w.app_id == where.app_id)
        if where.match_user:
            conditions.append(w.user_id == where.user_id)
        if where.enabled is not None:
            conditions.append(w.enabled.is_(where.enabled))
        for attr in ("task_id", "task_version", "source"):
            value = getattr(where, attr)
            if value is not None:
                conditions.append(w[attr] == value)
        query = select(webhooks).where(*conditions)

        def _list(conn: Connection) -> Page:
            result = paginate(
                conn, query, route="webhooks", sort=w.created_at, ident=w.id, page=page
            )
            return result.map(_webhook)

        return await self._db.tx(_list)

    async def update(
        self, webhook_id: str, change: WebhookChange, *, visible: Visible
    ) -> WebhookRecord:
        values: dict[str, Any] = {"updated_at": change.updated_at}
        for name in ("url", "secret", "events", "data_filters", "scope", "timeout_seconds",
                     "task_id", "task_version", "api_key"):  # fmt: skip
            if getattr(change, name) is not None:
                values[name] = getattr(change, name)
        if change.clear_api_key:
            values["api_key"] = None
        if change.enabled is True:
            values.update(enabled=True, disabled_reason=None, first_failure_at=None)
        elif change.enabled is False:
            values.update(enabled=False, disabled_reason=change.disabled_reason)

        def _update(conn: Connection) -> WebhookRecord:
            _visible(conn, webhook_id, visible)
            conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))
            _webhooks_changed(conn)
            if change.enabled is False:
                _cancel_pending(conn, webhook_id)
            return _visible(conn, webhook_id, lambda _: True)

        return await self._db.tx(_update)

    async def delete(self, webhook_id: str, *, visible: Visible) -> None:
        def _delete(conn: Connection) -> None:
            _visible(conn, webhook_id, visible)
            delete_webhooks_where(conn, webhooks.c.id == webhook_id)

        await self._db.tx(_delete)

    def delete_source_webhooks_in(self, tx: Tx, source: str, parent_id: str) -> None:
        parent = webhooks.c.thread_id if source == "thread" else webhooks.c.schedule_id
        delete_webhooks_where(conn_of(tx), and_(webhooks.c.source == source, parent == parent_id))

    def thread_deleted_in(self, tx: Tx, thread_id: str) -> None:
        on_thread_deleted(conn_of(tx), thread_id)

    # -- the delivery log -------------------------------------------------------------------

    async def list_deliveries(
        self, webhook_id: str, where: DeliveryFilter, page: PageRequest, *, visible: Visible
    ) -> Page:
        d = webhook_deliveries.c
        conditions = [d.webhook_id == webhook_id]
        for attr in ("status", "thread_id", "event_type"):
            value = getattr(where, attr)
            if value is not None:
                conditions.append(d[attr] == value)
        query = select(webhook_deliveries).where(*conditions)

        def _list(conn: Connection) -> Page:
            _visible(conn, webhook_id, visible)
            result = paginate(
                conn, query, route=f"deliveries:{webhook_id}", sort=d.timestamp, ident=d.id,
                page=page,
            )  # fmt: skip
            return result.map(_delivery)

        return await self._db.tx(_list)

    async def get_delivery(
        self, webhook_id: str, delivery_id: str, *, visible: Visible
    ) -> DeliveryRecord:
        def _get(conn: Connection) -> DeliveryRecord:
            _visible(conn, webhook_id, visible)
            return _delivery_in(conn, webhook_id, delivery_id)

        return await self._db.tx(_get)

    async def redeliver(
        self,
        webhook_id: str,
        delivery_id: str,
        *,
        visible: Visible,
        admit: Callable[[WebhookRecord], None],
        new_id: str,
        at: datetime,
    ) -> DeliveryRecord:
        d = webhook_deliveries.c

        def _redeliver(conn: Connection) -> DeliveryRecord:
            hook = _visible(conn, webhook_id, visible)
            source = _delivery_in(conn, webhook_id, delivery_id)
            admit(hook)
            last = conn.execute(
                select(func.max(d.attempt)).where(
                    d.webhook_id == webhook_id, d.event_id == source.event_id
                )
            ).scalar_one()
            conn.execute(
                insert(webhook_deliveries).values(
                    id=new_id,
                    webhook_id=webhook_id,
                    event_id=source.event_id,
                    event_type=source.event_type,
                    event_payload=source.event_payload,
                    thread_id=source.thread_id,
                    run_id=source.run_id,
                    attempt=int(last or 0) + 1,
                    timestamp=at,
                    status="pending",
                    delivery_url=hook.url,
                    manual=True,
                    next_attempt_at=at,
                )
            )
            return _delivery_in(conn, webhook_id, new_id)

        with translated(f"Attempt of delivery {delivery_id}"):
            return await self._db.tx(_redeliver)

    # -- the outbox: fan-out ----------------------------------------------------------------

    async def start_fan_out(self, at: datetime) -> None:
        def _init(conn: Connection) -> None:
            if _read_cursor(conn) is not None:
                return
            top = conn.execute(select(events.c.seq).order_by(events.c.seq.desc()).limit(1))
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(settings_kv).values(
                            key=FAN_OUT_CURSOR_KEY,
                            value={"seq": int(top.scalar() or 0)},
                            updated_at=at,
                        )
                    )
            except IntegrityError:
                pass  # another replica created it first

        await self._db.tx(_init)

    async def any_enabled(self) -> bool:
        return await self._db.tx(_enabled_webhook_exists)

    async def advance_idle(self, upto: int | None, at: datetime) -> int | None:
        def _advance(conn: Connection) -> int | None:
            cursor = _locked_cursor(conn)
            if _enabled_webhook_exists(conn):
                return None
            if upto is not None and upto > cursor:
                _write_cursor(conn, upto, at)
            newest: int | None = conn.execute(select(func.max(events.c.seq))).scalar()
            return newest

        return await self._db.tx(_advance)

    async def fan_out(self, plan: Plan, *, limit: int, at: datetime) -> tuple[int, bool]:
        return await self._db.tx(self._fan_out, plan, limit, at)

    def _fan_out(self, conn: Connection, plan: Plan, limit: int, at: datetime) -> tuple[int, bool]:
        postgres = conn.dialect.name == "postgresql"
        final_upto = -1
        if postgres and self._gap is not None:
            xmin = int(
                conn.execute(
                    text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                ).scalar_one()
            )
            if xmin >= self._gap.xmax or time.monotonic() - self._gap.since > GAP_MAX_WAIT_SECONDS:
                final_upto, self._gap = self._gap.upto, None
        cursor = _locked_cursor(conn)
        # Sequence numbers first: the snapshots are read only when a webhook may want them.
        rows = conn.execute(
            select(events.c.seq, events.c.thread_id)
            .where(events.c.seq > cursor)
            .order_by(events.c.seq)
            .limit(limit)
        ).all()
        accepted = []
        expected = cursor + 1
        for row in rows:
            if postgres and row.seq != expected and row.seq - 1 > final_upto:
                if self._gap is None:
                    xmax = conn.execute(
                        text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
                    )
                    self._gap = _Gap(row.seq - 1, int(xmax.scalar_one()), time.monotonic())
                break
            accepted.append(row)
            expected = row.seq + 1
        if not accepted:
            return 0, False
        thread_ids = {r.thread_id for r in accepted if r.thread_id}
        hooks = conn.execute(
            select(webhooks).where(
                webhooks.c.enabled.is_(True),
                or_(webhooks.c.thread_id.is_(None), webhooks.c.thread_id.in_(thread_ids)),
            )
        ).all()
        attempts = []
        if hooks:
            full = conn.execute(
                select(events)
                .where(events.c.seq.in_([r.seq for r in accepted]))
                .order_by(events.c.seq)
            )
            attempts = [
                {
                    "id": new.id,
                    "webhook_id": new.webhook.id,
                    "event_id": new.event.id,
                    "event_type": new.event.event_type,
                    "event_payload": new.payload,
                    "thread_id": new.event.thread_id,
                    "run_id": new.event.run_id,
                    "attempt": 1,
                    "timestamp": at,
                    "status": "pending",
                    "delivery_url": new.webhook.url,
                    "manual": False,
                    "next_attempt_at": at,
                }
                for new in plan([_event(r) for r in full], [_webhook(h) for h in hooks])
            ]
        if attempts:
            conn.execute(insert(webhook_deliveries), attempts)
        _write_cursor(conn, accepted[-1].seq, at)
        return len(attempts), len(accepted) == len(rows) == limit

    # -- the outbox: sending ----------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        scan: int,
        exclude_urls: Sequence[str],
        take: Callable[[str], bool],
        lease: Callable[[float], timedelta],
        traceparent: bool,
        at: datetime,
    ) -> list[ClaimedDelivery]:
        def _claim(conn: Connection) -> list[ClaimedDelivery]:
            return self._claim(conn, owner, scan, exclude_urls, take, lease, traceparent, at)

        return await self._db.tx(_claim)

    def _claim(
        self,
        conn: Connection,
        owner: str,
        scan: int,
        exclude_urls: Sequence[str],
        take: Callable[[str], bool],
        lease: Callable[[float], timedelta],
        with_traceparent: bool,
        now: datetime,
    ) -> list[ClaimedDelivery]:
        d = webhook_deliveries.c
        query = (
            select(d.id, d.delivery_url, webhooks.c.timeout_seconds)
            .join(webhooks, webhooks.c.id == d.webhook_id)
            .where(
                d.status == "pending",
                d.next_attempt_at <= now,
                or_(d.lease_expires_at.is_(None), d.lease_expires_at < now),
                webhooks.c.enabled.is_(True),
            )
            .order_by(d.next_attempt_at)
            .limit(scan)
        )
        if exclude_urls:
            query = query.where(d.delivery_url.not_in(list(exclude_urls)))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=webhook_deliveries)
        picked: dict[int, list[str]] = {}
        for row in conn.execute(query):
            if take(row.delivery_url):
                picked.setdefault(row.timeout_seconds, []).append(row.id)
        for timeout, ids in picked.items():
            conn.execute(
                update(webhook_deliveries)
                .where(d.id.in_(ids))
                .values(lease_owner=owner, lease_expires_at=now + lease(float(timeout)))
            )
        ids = [i for group in picked.values() for i in group]
        if not ids:
            return []
        hook = webhooks.c
        columns: list[Any] = [
            webhook_deliveries, hook.url, hook.secret, hook.api_key, hook.timeout_seconds,
            hook.data_filters,
        ]  # fmt: skip
        joined = webhook_deliveries.join(webhooks, webhooks.c.id == d.webhook_id)
        if with_traceparent:
            columns.append(threads.c.traceparent)
            joined = joined.outerjoin(threads, threads.c.id == d.thread_id)
        rows = conn.execute(select(*columns).select_from(joined).where(d.id.in_(ids)))
        return [
            ClaimedDelivery(
                id=r.id,
                webhook_id=r.webhook_id,
                event_id=r.event_id,
                event_type=r.event_type,
                attempt=r.attempt,
                manual=bool(r.manual),
                payload=r.event_payload,
                thread_id=r.thread_id,
                run_id=r.run_id,
                url=r.url,
                secret=r.secret,
                api_key=r.api_key,
                timeout=float(r.timeout_seconds),
                data_filters=r.data_filters,
                traceparent=getattr(r, "traceparent", None),
            )
            for r in rows
        ]

    async def record(
        self,
        owner: str,
        outcomes: Sequence[DeliveryOutcome],
        *,
        after_failure: Callable[[WebhookRecord, DeliveryOutcome], FailurePlan],
        at: datetime,
    ) -> int:
        def _record(conn: Connection) -> int:
            return self._record(conn, owner, outcomes, after_failure, at)

        return await self._db.tx(_record)

    def _record(
        self,
        conn: Connection,
        owner: str,
        batch: Sequence[DeliveryOutcome],
        after_failure: Callable[[WebhookRecord, DeliveryOutcome], FailurePlan],
        now: datetime,
    ) -> int:
        d = webhook_deliveries.c
        fenced = (
            update(webhook_deliveries)
            .where(d.id == bindparam("b_id"), d.lease_owner == owner, d.status == "pending")
            .values(
                status=bindparam("b_status"),
                status_code=bindparam("b_code"),
                response_time_ms=bindparam("b_ms"),
                error=bindparam("b_error"),
                response_body=bindparam("b_body"),
                timestamp=bindparam("b_started"),
                delivery_url=bindparam("b_url"),
                event_payload=bindparam("b_payload", type_=webhook_deliveries.c.event_payload.type),
                next_attempt_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )

        def params(outcome: DeliveryOutcome) -> dict[str, Any]:
            return {
                "b_id": outcome.delivery.id,
                "b_status": "success" if outcome.ok else "failed",
                "b_code": outcome.status_code,
                "b_ms": outcome.duration_ms,
                "b_error": outcome.error,
                "b_body": outcome.body,
                "b_started": outcome.started,
                "b_url": outcome.delivery.url,
                "b_payload": outcome.payload,
            }

        # Successes need no follow-up beyond clearing the failure window: one statement.
        successes = [o for o in batch if o.ok]
        if successes:
            conn.execute(fenced, [params(o) for o in successes])
            conn.execute(
                update(webhooks)
                .where(
                    webhooks.c.id.in_({o.delivery.webhook_id for o in successes}),
                    webhooks.c.first_failure_at.is_not(None),
                )
                .values(first_failure_at=None)
            )
        retries = 0
        for outcome in batch:
            if outcome.ok:
                continue
            if conn.execute(fenced, params(outcome)).rowcount == 0:
                continue  # lease lost or webhook deleted meanwhile
            row = conn.execute(
                select(webhooks).where(webhooks.c.id == outcome.delivery.webhook_id)
            ).first()
            if row is not None:
                retries += self._after_failure(conn, _webhook(row), outcome, after_failure, now)
        return retries

    @staticmethod
    def _after_failure(
        conn: Connection,
        hook: WebhookRecord,
        outcome: DeliveryOutcome,
        decide: Callable[[WebhookRecord, DeliveryOutcome], FailurePlan],
        now: datetime,
    ) -> int:
        plan = decide(hook, outcome)
        hooks = update(webhooks).where(webhooks.c.id == hook.id)
        if plan.disable is not None:
            conn.execute(hooks.values(enabled=False, disabled_reason=plan.disable, updated_at=now))
            _webhooks_changed(conn)
            _cancel_pending(conn, hook.id)
            return 0
        if hook.first_failure_at is None and plan.first_failure_at is not None:
            conn.execute(hooks.values(first_failure_at=plan.first_failure_at))
        if plan.retry_at is None:
            return 0
        job = outcome.delivery
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(webhook_deliveries).values(
                        id=new_id("delivery"),
                        webhook_id=hook.id,
                        event_id=job.event_id,
                        event_type=job.event_type,
                        event_payload=job.payload,
                        thread_id=job.thread_id,
                        run_id=job.run_id,
                        attempt=job.attempt + 1,
                        timestamp=plan.retry_at,
                        status="pending",
                        delivery_url=hook.url,
                        manual=False,
                        next_attempt_at=plan.retry_at,
                    )
                )
        except IntegrityError:
            return 0  # that attempt (a redelivery's number) already exists
        return 1

    def watch_commits(
        self, *, webhooks_written: Callable[[], None], events_written: Callable[[], None]
    ) -> Callable[[], None]:
        def _on_commit(conn: Any) -> None:
            if conn.info.pop(WEBHOOKS_WRITTEN, False):
                webhooks_written()
            if conn.info.pop(EVENTS_WRITTEN, False):
                events_written()

        engine = self._db.engine
        event.listen(engine, "commit", _on_commit)

        def _stop() -> None:
            event.remove(engine, "commit", _on_commit)

        return _stop
