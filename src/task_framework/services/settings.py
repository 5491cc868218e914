"""Cluster-wide settings stored in the database (API.md §11.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from task_framework.models._time import format_ts, utcnow
from task_framework.store.database import Database
from task_framework.store.prepared import Prepared
from task_framework.store.tables import settings_kv, threads

MAX_CONCURRENT_KEY = "max_concurrent_threads"
CLUSTER_STARTED_KEY = "cluster_started_at"
_STORED_LIMIT = Prepared(select(settings_kv.c.value).where(settings_kv.c.key == MAX_CONCURRENT_KEY))


class SettingsService:
    def __init__(self, db: Database, *, default_max_concurrent: int) -> None:
        self._db = db
        self._default = default_max_concurrent

    def record_first_start(self, conn: Connection) -> None:
        found = conn.execute(
            select(settings_kv.c.key).where(settings_kv.c.key == CLUSTER_STARTED_KEY)
        ).first()
        if found is None:
            now = utcnow()
            conn.execute(
                insert(settings_kv).values(
                    key=CLUSTER_STARTED_KEY, value=format_ts(now), updated_at=now
                )
            )

    def limit_in(self, conn: Connection) -> int:
        """The cluster limit as stored now, read in ``conn``'s transaction (0: none)."""
        row = _STORED_LIMIT.first(conn)
        return self._default if row is None or row[0] is None else int(row[0])

    async def max_concurrent_threads(self) -> int:
        """The cluster limit as stored now (claims read it in their own transaction)."""
        return await self._db.tx(self.limit_in)

    def _read(self, conn: Connection) -> dict[str, Any]:
        rows = {
            r.key: r
            for r in conn.execute(
                select(settings_kv).where(
                    settings_kv.c.key.in_([MAX_CONCURRENT_KEY, CLUSTER_STARTED_KEY])
                )
            )
        }
        counts: dict[str, int] = dict(
            conn.execute(
                select(threads.c.state, func.count())
                .where(threads.c.state.in_(["running", "queued"]))
                .group_by(threads.c.state)
            ).all()
        )
        stored = rows.get(MAX_CONCURRENT_KEY)
        started = rows.get(CLUSTER_STARTED_KEY)
        updated_at: datetime | None = (
            stored.updated_at if stored else (started.updated_at if started else None)
        )
        return {
            "max_concurrent_threads": int(stored.value) if stored else self._default,
            "updated_at": format_ts(updated_at or utcnow()),
            "updated_by": stored.updated_by if stored else None,
            "current_running_threads": int(counts.get("running", 0)),
            "current_queued_threads": int(counts.get("queued", 0)),
        }

    async def get(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._db.tx(self._read)
        return result

    async def update(
        self, *, max_concurrent_threads: int | None, updated_by: str
    ) -> dict[str, Any]:
        now = utcnow()

        def _update(conn: Connection) -> dict[str, Any]:
            if max_concurrent_threads is not None:
                values = {
                    "value": max_concurrent_threads,
                    "updated_at": now,
                    "updated_by": updated_by,
                }
                changed = conn.execute(
                    update(settings_kv)
                    .where(settings_kv.c.key == MAX_CONCURRENT_KEY)
                    .values(**values)
                ).rowcount
                if not changed:
                    conn.execute(insert(settings_kv).values(key=MAX_CONCURRENT_KEY, **values))
            return self._read(conn)

        result: dict[str, Any] = await self._db.tx(_update)
        return result
