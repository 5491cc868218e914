"""Aggregate reads over SQLAlchemy Core: threads, files, schedules, webhook deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, select

from task_framework.store.database import Database
from task_framework.store.sql._dialect import conn_of
from task_framework.store.stats import ClusterFigures, OverviewFigures, ThreadOwner
from task_framework.store.tables import files, metadata, threads

__all__ = ["SqlStatsStore"]


def _count(conn: Connection, table_name: str, **equals: Any) -> int:
    table = metadata.tables.get(table_name)
    if table is None:
        return 0
    query = select(func.count()).select_from(table)
    for column, value in equals.items():
        query = query.where(table.c[column] == value)
    return int(conn.execute(query).scalar_one())


def _states(conn: Connection, where: list[ColumnElement[bool]]) -> dict[str, int]:
    return {
        str(state): int(count)
        for state, count in conn.execute(
            select(threads.c.state, func.count()).where(*where).group_by(threads.c.state)
        )
    }


def _oldest_queued(conn: Connection, where: list[ColumnElement[bool]]) -> datetime | None:
    oldest: datetime | None = conn.execute(
        select(func.min(threads.c.created_at)).where(and_(*where, threads.c.state == "queued"))
    ).scalar()
    return oldest


def _cluster(conn: Connection) -> ClusterFigures:
    file_count, file_bytes = conn.execute(
        select(func.count(), func.coalesce(func.sum(files.c.size), 0)).where(
            files.c.complete.is_(True)
        )
    ).one()
    return ClusterFigures(
        states=_states(conn, []),
        oldest_queued_at=_oldest_queued(conn, []),
        files=int(file_count),
        file_bytes=int(file_bytes),
        schedules_active=_count(conn, "schedules", state="active"),
        deliveries_pending=_count(conn, "webhook_deliveries", status="pending"),
    )


class SqlStatsStore:
    """:class:`~task_framework.store.stats.StatsStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def cluster(self) -> ClusterFigures:
        return await self._db.tx(_cluster)

    async def overview(
        self, owner: ThreadOwner | None, *, since: datetime, max_created: int
    ) -> OverviewFigures:
        where: list[ColumnElement[bool]] = []
        if owner is not None:
            where.append(and_(threads.c.app_id == owner.app_id, threads.c.user_id == owner.user_id))

        def _read(tx: Any) -> OverviewFigures:
            conn = conn_of(tx)
            created = conn.execute(
                select(threads.c.created_at, threads.c.state)
                .where(*where, threads.c.created_at >= since)
                .limit(max_created)
            ).all()
            return OverviewFigures(
                states=_states(conn, where),
                oldest_queued_at=_oldest_queued(conn, where),
                created=[(at, str(state)) for at, state in created],
            )

        return await self._db.tx(_read)
