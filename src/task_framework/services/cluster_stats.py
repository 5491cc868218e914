"""Cluster-wide gauges (threads by state, queue depth and age, files, schedules,
pending deliveries), read from the database every :data:`REFRESH_SECONDS`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from task_framework.errors import TaskFrameworkError
from task_framework.models._time import utcnow
from task_framework.observability.metrics import Metrics
from task_framework.store.stats import StatsStore

log = logging.getLogger("task_framework.metrics")

REFRESH_SECONDS = 15.0


async def snapshot(stats: StatsStore) -> dict[str, Any]:
    """The gauges' values, from one read of the store."""
    figures = await stats.cluster()
    oldest = figures.oldest_queued_at
    return {
        "states": figures.states,
        "queue_depth": int(figures.states.get("queued", 0)),
        "oldest_age_s": (utcnow() - oldest).total_seconds() if oldest is not None else 0.0,
        "files": figures.files,
        "file_bytes": figures.file_bytes,
        "schedules_active": figures.schedules_active,
        "deliveries_pending": figures.deliveries_pending,
    }


async def refresh(stats: StatsStore, metrics: Metrics) -> None:
    metrics.set_cluster_gauges(**await snapshot(stats))


async def refresh_forever(stats: StatsStore, metrics: Metrics) -> None:
    while True:
        try:
            await refresh(stats, metrics)
        except TaskFrameworkError as exc:
            log.warning("cluster gauges not refreshed: %s", exc)
        await asyncio.sleep(REFRESH_SECONDS)
