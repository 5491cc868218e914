"""The cluster gauges over the SQLite stats store."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, insert

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.services.cluster_stats import snapshot
from task_framework.store.database import Database
from task_framework.store.sql import SqlStatsStore
from task_framework.store.tables import threads


async def test_an_empty_cluster(sqlite_db: Database) -> None:
    assert await snapshot(SqlStatsStore(sqlite_db)) == {
        "states": {},
        "queue_depth": 0,
        "oldest_age_s": 0.0,
        "files": 0,
        "file_bytes": 0,
        "schedules_active": 0,
        "deliveries_pending": 0,
    }


async def test_queue_depth_and_age(sqlite_db: Database) -> None:
    created = utcnow() - timedelta(minutes=10)

    def _add(conn: Connection) -> None:
        for state in ("queued", "queued", "running"):
            conn.execute(
                insert(threads).values(
                    id=new_id("thread"),
                    state=state,
                    metadata={},
                    params={},
                    problems=[],
                    created_at=created,
                )
            )

    await sqlite_db.tx(_add)
    values = await snapshot(SqlStatsStore(sqlite_db))
    assert values["states"] == {"queued": 2, "running": 1}
    assert values["queue_depth"] == 2
    assert 600 <= values["oldest_age_s"] < 700
