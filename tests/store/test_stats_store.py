"""Contract of :class:`task_framework.store.stats.StatsStore`, over SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, insert

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.store.database import Database
from task_framework.store.sql import SqlStatsStore
from task_framework.store.stats import ClusterFigures, OverviewFigures, StatsStore, ThreadOwner
from task_framework.store.tables import files, schedules, threads, webhook_deliveries

NOW = utcnow().replace(microsecond=0)


@pytest.fixture
def store(store_db: Database) -> StatsStore:
    return SqlStatsStore(store_db)


def _thread(state: str, created_at: datetime, app_id: str | None, user_id: str | None) -> Any:
    return insert(threads).values(
        id=new_id("thread"),
        state=state,
        metadata={},
        params={},
        problems=[],
        app_id=app_id,
        user_id=user_id,
        created_at=created_at,
    )


async def _seed(db: Database) -> None:
    def _add(conn: Connection) -> None:
        for state, age_h, app, user in [
            ("queued", 30, "a", "u"),  # the oldest queued, outside a 24 h window
            ("queued", 2, "b", "v"),
            ("running", 1, "a", "u"),
            ("succeeded", 1, "a", "u"),
            ("failed", 0, None, None),
        ]:
            conn.execute(_thread(state, NOW - timedelta(hours=age_h), app, user))
        for ref, size, complete in [("f1", 10, True), ("f2", 5, True), ("f3", 99, False)]:
            conn.execute(
                insert(files).values(
                    file_ref=ref,
                    media_type="text/plain",
                    size=size,
                    complete=complete,
                    created_at=NOW,
                )
            )
        for state in ("active", "active", "paused"):
            conn.execute(
                insert(schedules).values(
                    id=new_id("schedule"),
                    cron="* * * * *",
                    timezone="UTC",
                    state=state,
                    task_id="t",
                    task_version="1",
                    inputs_template=[],
                    params={},
                    metadata={},
                    concurrency_policy="allow",
                    max_attempts=1,
                    misfire_policy="skip",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        for attempt, status in enumerate(("pending", "success"), start=1):
            conn.execute(
                insert(webhook_deliveries).values(
                    id=new_id("delivery"),
                    webhook_id="wh",
                    event_id="ev",
                    event_type="thread.created",
                    event_payload={},
                    attempt=attempt,
                    timestamp=NOW,
                    status=status,
                    delivery_url="https://example.test/hook",
                )
            )

    await db.tx(_add)


async def test_an_empty_cluster_has_no_figures(store: StatsStore) -> None:
    assert await store.cluster() == ClusterFigures()
    assert await store.overview(None, since=NOW, max_created=10) == OverviewFigures()


async def test_cluster_counts_threads_files_schedules_and_pending_deliveries(
    store_db: Database, store: StatsStore
) -> None:
    await _seed(store_db)
    figures = await store.cluster()
    assert figures.states == {"queued": 2, "running": 1, "succeeded": 1, "failed": 1}
    assert figures.oldest_queued_at == NOW - timedelta(hours=30)
    assert (figures.files, figures.file_bytes) == (2, 15)
    assert (figures.schedules_active, figures.deliveries_pending) == (2, 1)


async def test_overview_of_the_whole_cluster(store_db: Database, store: StatsStore) -> None:
    await _seed(store_db)
    since = NOW - timedelta(hours=24)
    figures = await store.overview(None, since=since, max_created=100)
    assert figures.states == {"queued": 2, "running": 1, "succeeded": 1, "failed": 1}
    assert figures.oldest_queued_at == NOW - timedelta(hours=30)
    assert sorted(figures.created) == sorted(
        [
            (NOW - timedelta(hours=2), "queued"),
            (NOW - timedelta(hours=1), "running"),
            (NOW - timedelta(hours=1), "succeeded"),
            (NOW, "failed"),
        ]
    )


async def test_overview_of_one_owner_and_of_the_ownerless(
    store_db: Database, store: StatsStore
) -> None:
    await _seed(store_db)
    since = NOW - timedelta(hours=24)
    mine = await store.overview(ThreadOwner("a", "u"), since=since, max_created=100)
    assert mine.states == {"queued": 1, "running": 1, "succeeded": 1}
    assert mine.oldest_queued_at == NOW - timedelta(hours=30)
    assert sorted(state for _, state in mine.created) == ["running", "succeeded"]
    nobody = await store.overview(ThreadOwner(None, None), since=since, max_created=100)
    assert nobody.states == {"failed": 1}
    assert nobody.oldest_queued_at is None
    other = await store.overview(ThreadOwner("b", "u"), since=since, max_created=100)
    assert other == OverviewFigures()


async def test_overview_reads_at_most_max_created(store_db: Database, store: StatsStore) -> None:
    await _seed(store_db)
    figures = await store.overview(None, since=NOW - timedelta(hours=24), max_created=2)
    assert len(figures.created) == 2
    assert sum(figures.states.values()) == 5
