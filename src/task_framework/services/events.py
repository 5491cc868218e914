"""The event outbox: events are rows written in the transaction that causes them.

Each row keeps a snapshot of what the event is about (the thread as it was, the
artifacts, the problem), so a payload built later shows the state at event time.
Payload rendering for webhooks and SSE lives with those consumers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.events import EVENT_TYPES
from task_framework.store import notify
from task_framework.store.notify import EVENTS_WRITTEN
from task_framework.store.prepared import Prepared
from task_framework.store.tables import events

_INSERT = Prepared.insert(
    events,
    (
        *("id", "event_type", "thread_id", "schedule_id", "run_id", "app_id", "user_id"),
        *("data", "created_at"),
    ),
)

__all__ = [
    "EVENTS_WRITTEN",
    "EVENT_TYPES",
    "THREAD_TERMINAL_EVENTS",
    "insert_events",
    "thread_event",
    "thread_snapshot",
]

THREAD_TERMINAL_EVENTS = {
    "succeeded": "thread.succeeded",
    "failed": "thread.failed",
    "timeout": "thread.timeout",
    "stopped": "thread.stopped",
}


def thread_snapshot(thread: dict[str, Any]) -> dict[str, Any]:
    """The ``thread`` object of a payload (API.md §12.4), keys with no value omitted."""
    error = thread.get("error")
    snapshot = {
        "id": thread["id"],
        "state": thread["state"],
        "created_at": thread["created_at"],
        "started_at": thread.get("started_at"),
        "finished_at": thread.get("finished_at"),
        "error": ({k: error[k] for k in ("code", "message", "exception_type")} if error else None),
        "metadata": thread.get("metadata") or None,
        "params": thread.get("params") or None,
        "schedule_id": thread.get("schedule_id"),
        "run_id": thread.get("run_id"),
        "attempt": thread.get("attempt"),
    }
    return {k: v for k, v in snapshot.items() if v is not None}


def thread_event(
    event_type: str,
    thread: dict[str, Any],
    *,
    at: datetime | None = None,
    artifact: dict[str, Any] | None = None,
    artifacts: Iterable[dict[str, Any]] | None = None,
    problem: dict[str, Any] | None = None,
    owner: tuple[str | None, str | None] | None = None,
) -> dict[str, Any]:
    """An ``events`` row about a thread (``thread`` is its API dict)."""
    at = at or utcnow()
    data: dict[str, Any] = {
        "timestamp": format_ts(at),
        "metadata": thread.get("metadata") or {},
        "thread": thread_snapshot(thread),
    }
    if artifact is not None:
        data["artifact"] = artifact
    if artifacts is not None:
        data["artifacts"] = list(artifacts)
    if problem is not None:
        data["problem"] = problem
    metadata = thread.get("metadata") or {}
    app_id, user_id = (
        owner if owner is not None else (metadata.get("app_id"), metadata.get("user_id"))
    )
    return {
        "id": new_id("event"),
        "event_type": event_type,
        "thread_id": thread["id"],
        "schedule_id": thread.get("schedule_id"),
        "run_id": thread.get("run_id"),
        "app_id": app_id,
        "user_id": user_id,
        "data": data,
        "created_at": at,
    }


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write event rows (from :func:`thread_event` or with the same keys)."""
    if rows:
        _INSERT.executemany(conn, rows)
        conn.info[EVENTS_WRITTEN] = True
        notify.notify(conn, notify.EVENTS)
