"""Which thread a retry came from, and which retries a thread has.

API.md §3.5 gives a retry no reference to its original and no name. A retry started
from the UI keeps the original's name and records the original's id as
``metadata.retry_of``; the thread page reads it both ways.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from task_framework.errors import TaskFrameworkError
from task_framework.services.auth import Principal
from task_framework.services.threads import owner_condition
from task_framework.store.tables import threads

if TYPE_CHECKING:
    from task_framework.app import Services

RETRY_OF_KEY = "retry_of"
RETRIES_SHOWN = 20


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _retries_of(conn: Connection, principal: Principal, thread: dict[str, Any]) -> list[Any]:
    owner = owner_condition(threads, principal)
    metadata = thread["metadata"] or {}
    query = (
        select(threads.c.id, threads.c.name, threads.c.state, threads.c.created_at)
        .where(
            # Retries copy the task and owner and come later: the indexes narrow the scan.
            threads.c.task_id == metadata.get("task_id"),
            threads.c.created_at >= _parse(thread["created_at"]),
            threads.c.metadata[RETRY_OF_KEY].as_string() == thread["id"],
        )
        .order_by(threads.c.created_at, threads.c.id)
        .limit(RETRIES_SHOWN)
    )
    if owner is not None:
        query = query.where(owner)
    return list(conn.execute(query))


async def lineage(svc: Services, principal: Principal, thread: dict[str, Any]) -> dict[str, Any]:
    """``retry_of`` (the original, when still visible) and ``retries`` (newest last)."""
    original: dict[str, Any] | None = None
    original_id = (thread["metadata"] or {}).get(RETRY_OF_KEY)
    if isinstance(original_id, str) and original_id:
        try:
            found = await svc.threads.get(principal, original_id)
            original = {"id": found["id"], "name": found["name"], "state": found["state"]}
        except TaskFrameworkError:
            original = {"id": original_id, "name": None, "state": None}  # deleted since
    rows = await svc.db.tx(_retries_of, principal, thread)
    retries = [{"id": r.id, "name": r.name, "state": r.state} for r in rows]
    return {"retry_of": original, "retries": retries}


__all__ = ["RETRY_OF_KEY", "lineage"]
