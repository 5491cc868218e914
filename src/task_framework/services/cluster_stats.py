"""Cluster-wide gauges (threads by state, queue depth and age, files, schedules,
pending deliveries), read from the database every :data:`REFRESH_SECONDS`."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from task_framework.errors import TaskFrameworkError
from task_framework.models._time import utcnow
from task_framework.observability.metrics import Metrics
from task_framework.store.database import Database
from task_framework.store.tables import files, metadata, threads

log = logging.getLogger("task_framework.metrics")

REFRESH_SECONDS = 15.0


def _count(conn: Connection, table_name: str, **equals: Any) -> int:
    table = metadata.tables.get(table_name)
    if table is None:
        return 0
    query = select(func.count()).select_from(table)
    for column, value in equals.items():
        query = query.where(table.c[column] == value)
    return int(conn.execute(query).scalar_one())


def snapshot(conn: Connection) -> dict[str, Any]:
    states: dict[str, int] = {
        str(state): int(count)
        for state, count in conn.execute(
            select(threads.c.state, func.count()).group_by(threads.c.state)
        )
    }
    oldest: datetime | None = conn.execute(
        select(func.min(threads.c.created_at)).where(threads.c.state == "queued")
    ).scalar()
    file_count, file_bytes = conn.execute(
        select(func.count(), func.coalesce(func.sum(files.c.size), 0)).where(
            files.c.complete.is_(True)
        )
    ).one()
    return {
        "states": states,
        "queue_depth": int(states.get("queued", 0)),
        "oldest_age_s": (utcnow() - oldest).total_seconds() if oldest is not None else 0.0,
        "files": int(file_count),
        "file_bytes": int(file_bytes),
        "schedules_active": _count(conn, "schedules", state="active"),
        "deliveries_pending": _count(conn, "webhook_deliveries", status="pending"),
    }


async def refresh(db: Database, metrics: Metrics) -> None:
    values = await db.tx(snapshot)
    metrics.set_cluster_gauges(**values)


async def refresh_forever(db: Database, metrics: Metrics) -> None:
    while True:
        try:
            await refresh(db, metrics)
        except TaskFrameworkError as exc:
            log.warning("cluster gauges not refreshed: %s", exc)
        await asyncio.sleep(REFRESH_SECONDS)
