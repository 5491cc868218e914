"""The overview page's figures, limited to what the caller may see.

Regular keys get counts of their own threads only; admins get the whole cluster.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, select

from task_framework.models._time import utcnow
from task_framework.services.auth import Principal
from task_framework.services.threads import ThreadFilters, owner_condition
from task_framework.store.paging import PageRequest
from task_framework.store.tables import threads

if TYPE_CHECKING:
    from task_framework.app import Services

HISTORY_HOURS = 24
MAX_HISTORY_ROWS = 50_000
"""Threads read for the chart; older ones in the window are left out past this."""
RECENT_FAILURES = 10
STATES = ("queued", "running", "succeeded", "failed", "stopped", "timeout", "expired")
CHART_HEIGHT = 120
"""Pixel height of the tallest bar (SVG attributes, so the CSP needs no inline style)."""


def _figures(conn: Connection, principal: Principal) -> dict[str, Any]:
    owner = owner_condition(threads, principal)
    where = [owner] if owner is not None else []
    by_state = Counter(
        {
            str(state): int(count)
            for state, count in conn.execute(
                select(threads.c.state, func.count()).where(*where).group_by(threads.c.state)
            )
        }
    )
    oldest = conn.execute(
        select(func.min(threads.c.created_at)).where(and_(*where, threads.c.state == "queued"))
    ).scalar()
    now = utcnow()
    since = now - timedelta(hours=HISTORY_HOURS)
    rows = conn.execute(
        select(threads.c.created_at, threads.c.state)
        .where(*where, threads.c.created_at >= since)
        .limit(MAX_HISTORY_ROWS)
    ).all()
    buckets: list[Counter[str]] = [Counter() for _ in range(HISTORY_HOURS)]
    for created_at, state in rows:
        index = min(int((created_at - since).total_seconds() // 3600), HISTORY_HOURS - 1)
        buckets[index][state] += 1
    return {
        "by_state": {state: by_state.get(state, 0) for state in STATES},
        "oldest_age_s": (now - oldest).total_seconds() if oldest is not None else None,
        "buckets": buckets,
        "since": since,
    }


def _chart(buckets: list[Counter[str]]) -> list[dict[str, Any]]:
    """Stacked bars: one per hour, one segment per state, heights in pixels."""
    tallest = max((sum(b.values()) for b in buckets), default=0) or 1
    bars = []
    for index, bucket in enumerate(buckets):
        y = CHART_HEIGHT
        segments = []
        for state in STATES:
            count = bucket.get(state, 0)
            if not count:
                continue
            height = max(1, round(count * CHART_HEIGHT / tallest))
            y -= height
            segments.append({"state": state, "count": count, "y": y, "height": height})
        bars.append({"x": index * 20, "segments": segments, "total": sum(bucket.values())})
    return bars


async def collect(svc: Services, principal: Principal) -> dict[str, Any]:
    figures = await svc.db.tx(_figures, principal)
    failures = await svc.threads.list_threads(
        principal, ThreadFilters(state="failed"), PageRequest(limit=RECENT_FAILURES)
    )
    busy, idle = svc.runner.counts()
    running, free = svc.executor.counts()
    return {
        "by_state": figures["by_state"],
        "queue_depth": figures["by_state"]["queued"],
        "oldest_age_s": figures["oldest_age_s"],
        "chart": _chart(figures["buckets"]),
        "chart_height": CHART_HEIGHT,
        "chart_since": figures["since"].strftime("%Y-%m-%d %H:%M UTC"),
        "states": STATES,
        "failures": failures["items"],
        "workers": {"busy": busy, "idle": idle, "running": running, "free": free},
        "max_concurrent": await svc.settings_service.max_concurrent_threads(),
        "tasks_loaded": len(svc.registry),
    }
