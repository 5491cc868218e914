"""Live thread streams: the outbox events and log records of one thread (API.md §3.8, §3.9).

Both sources live in the database (``events`` and ``thread_logs``), so a stream served by
one replica sees what every other replica and worker writes. A stream is one ordered
sequence of items keyed by ``(time, rank, seq)`` (log records rank before events at the
same instant). The key is computed from stored data only, so any item's id names a
position in the sequence and a reconnect resumes right after it, whichever source it
came from.

Writers store rows a little after the time they carry (log records are batched by the
worker host), so live items are released only once they are ``SETTLE_SECONDS`` old; by
then every earlier item has been stored and the order is final.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from task_framework.errors import ValidationFailed
from task_framework.models.threads import TERMINAL_STATES
from task_framework.services.auth import Principal
from task_framework.services.records import log_dict
from task_framework.services.threads import visible_thread_row
from task_framework.services.webhook_payloads import render_payload
from task_framework.store.database import Database
from task_framework.store.tables import events, thread_logs, threads

SETTLE_SECONDS = 1.0
"""Age at which a live item is released: later writes cannot sort before it any more."""
POLL_SECONDS = 0.15
"""How often a live stream reads the database for new items."""
LOG_BATCH_ROWS = 1000
"""Log rows read per poll; a full batch is followed by another read at once."""
LOG_ID_PREFIX = "log_"
_MAX_SEQ_DIGITS = 18  # fits a signed 64-bit column
STREAM_PAYLOAD_FILTERS = {"detail": "inline_small"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOG_RANK, _EVENT_RANK = 0, 1

Key = tuple[datetime, int, int]


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One message of a stream: SSE ``id``, ``event`` and the JSON ``data``."""

    key: Key
    id: str
    event: str
    data: dict[str, Any]


def log_item_id(seq: int) -> str:
    """The stream id of a log record; never equal to an ``event_…`` id."""
    return f"{LOG_ID_PREFIX}{seq}"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _event_item(row: Any) -> StreamItem:
    return StreamItem(
        key=(_aware(row.created_at), _EVENT_RANK, row.seq),
        id=row.id,
        event=row.event_type,
        data=render_payload(row, STREAM_PAYLOAD_FILTERS),
    )


def _log_item(row: Any) -> StreamItem:
    return StreamItem(
        key=(_aware(row.timestamp), _LOG_RANK, row.seq),
        id=log_item_id(row.seq),
        event="log",
        data={"thread_id": row.thread_id, **log_dict(row._mapping)},
    )


@dataclass
class _Cursor:
    """What one open stream has read and released so far."""

    thread_id: str
    with_events: bool
    log_stream: str | None
    after: Key | None
    log_seq: int = 0
    pending: dict[str, StreamItem] = field(default_factory=dict)
    seen_events: set[str] = field(default_factory=set)
    finished_at: datetime | None = None
    gone: bool = False


class ThreadStreams:
    """Opens and follows thread streams (events with logs, or logs only)."""

    def __init__(
        self,
        db: Database,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._db = db
        self._settle = timedelta(seconds=settle_seconds)
        self._poll_seconds = poll_seconds

    async def open(
        self,
        principal: Principal,
        thread_id: str,
        *,
        after: str | None,
        with_events: bool = True,
        log_stream: str | None = None,
    ) -> AsyncIterator[StreamItem | None]:
        """Check access and the resume point, then return the item iterator.

        The iterator yields ``None`` whenever a poll found nothing to release, so the
        caller can send keep-alives; it ends once the thread is final and drained.
        """

        def _open(conn: Connection) -> _Cursor:
            visible_thread_row(conn, principal, thread_id)
            start = _resume_key(conn, thread_id, after, with_events=with_events)
            return _Cursor(thread_id, with_events, log_stream, start)

        cursor: _Cursor = await self._db.tx(_open)
        return self._follow(cursor)

    async def _follow(self, cursor: _Cursor) -> AsyncIterator[StreamItem | None]:
        first = True
        while True:
            full = await self._db.tx(self._read, cursor, first)
            first = False
            now = datetime.now(UTC)
            draining = cursor.gone or (
                cursor.finished_at is not None and now >= cursor.finished_at + self._settle
            )
            released = self._release(cursor, now, everything=draining and not full)
            for item in released:
                yield item
            if draining and not full and not cursor.pending:
                return
            if not full:
                if not released:
                    yield None
                await asyncio.sleep(self._poll_seconds)

    def _release(self, cursor: _Cursor, now: datetime, *, everything: bool) -> list[StreamItem]:
        ready = sorted(cursor.pending.values(), key=lambda item: item.key)
        if not everything:
            ready = [item for item in ready if item.key[0] <= now - self._settle]
        for item in ready:
            del cursor.pending[item.id]
            cursor.after = item.key if cursor.after is None else max(cursor.after, item.key)
        return ready

    @staticmethod
    def _read(conn: Connection, cursor: _Cursor, first: bool) -> bool:
        """Read new rows into ``cursor.pending``; True when a log batch came back full."""
        thread = conn.execute(
            select(threads.c.state, threads.c.finished_at).where(threads.c.id == cursor.thread_id)
        ).first()
        if thread is None:
            cursor.gone = True
        elif thread.state in TERMINAL_STATES and cursor.finished_at is None:
            cursor.finished_at = _aware(thread.finished_at or datetime.now(UTC))
        floor = cursor.after[0] if cursor.after is not None else _EPOCH
        if cursor.with_events:
            query = (
                select(events)
                .where(events.c.thread_id == cursor.thread_id, events.c.created_at >= floor)
                .order_by(events.c.seq)
            )
            for row in conn.execute(query):
                if row.id in cursor.seen_events:
                    continue
                item = _event_item(row)
                cursor.seen_events.add(row.id)
                # After the first read, an event older than the position arrived late:
                # sending it out of order beats losing it.
                if not first or cursor.after is None or item.key > cursor.after:
                    cursor.pending[item.id] = item
        logs = select(thread_logs).where(thread_logs.c.thread_id == cursor.thread_id)
        if first:
            logs = logs.where(thread_logs.c.timestamp >= floor)
        else:
            logs = logs.where(thread_logs.c.seq > cursor.log_seq)
        if cursor.log_stream is not None:
            logs = logs.where(thread_logs.c.stream == cursor.log_stream)
        rows = list(conn.execute(logs.order_by(thread_logs.c.seq).limit(LOG_BATCH_ROWS)))
        for row in rows:
            cursor.log_seq = max(cursor.log_seq, row.seq)
            item = _log_item(row)
            if not first or cursor.after is None or item.key > cursor.after:
                cursor.pending[item.id] = item
        return len(rows) == LOG_BATCH_ROWS


def _resume_key(
    conn: Connection, thread_id: str, after: str | None, *, with_events: bool
) -> Key | None:
    """The key of the item named by ``Last-Event-ID`` / ``?after=``; None for the start."""
    if not after:
        return None
    if after.startswith(LOG_ID_PREFIX):
        seq_text = after[len(LOG_ID_PREFIX) :]
        row = None
        # ASCII digits only (int() refuses "²"), and small enough for a 64-bit column.
        if seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= _MAX_SEQ_DIGITS:
            row = conn.execute(
                select(thread_logs.c.timestamp, thread_logs.c.seq).where(
                    thread_logs.c.thread_id == thread_id, thread_logs.c.seq == int(seq_text)
                )
            ).first()
        if row is not None:
            return (_aware(row.timestamp), _LOG_RANK, row.seq)
    elif with_events:
        found = conn.execute(
            select(events.c.created_at, events.c.seq).where(
                events.c.id == after, events.c.thread_id == thread_id
            )
        ).first()
        if found is not None:
            return (_aware(found.created_at), _EVENT_RANK, found.seq)
    raise ValidationFailed(f"Unknown Last-Event-ID '{after}' for thread {thread_id}")


async def close_quietly(iterator: AsyncIterator[Any]) -> None:
    """Close a stream iterator the client walked away from."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


__all__ = ["LOG_ID_PREFIX", "StreamItem", "ThreadStreams", "close_quietly", "log_item_id"]
