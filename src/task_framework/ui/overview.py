"""The overview page's figures, limited to what the caller may see.

Regular keys get counts of their own threads only; admins get the whole cluster.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from task_framework.models._time import utcnow
from task_framework.services.auth import Principal
from task_framework.services.threads import ThreadFilters
from task_framework.store.paging import PageRequest
from task_framework.store.stats import StatsStore, ThreadOwner
from task_framework.ui.common import short_ts

if TYPE_CHECKING:
    from task_framework.app import Services

HISTORY_HOURS = 24
MAX_HISTORY_ROWS = 50_000
"""Threads read for the chart; older ones in the window are left out past this."""
RECENT_FAILURES = 10
STATES = ("queued", "running", "succeeded", "failed", "stopped", "timeout", "expired")
CHART_HEIGHT = 160
"""Height of the tallest bar in SVG units (attributes, so the CSP needs no inline style)."""
CHART_LEFT = 56
"""Room for the y-axis title and values."""
CHART_TOP = 8
CHART_BOTTOM = 52
"""Room for the hour labels and the x-axis title."""
BAR_STEP = 28


async def _figures(stats: StatsStore, principal: Principal) -> dict[str, Any]:
    # Regular keys see their own threads only.
    owner = None if principal.is_admin else ThreadOwner(principal.app_id, principal.user_id)
    now = utcnow()
    # Whole hours, the last one still running: the axis reads 13:00, 14:00, ...
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HISTORY_HOURS - 1)
    figures = await stats.overview(owner, since=since, max_created=MAX_HISTORY_ROWS)
    by_state = Counter(figures.states)
    oldest = figures.oldest_queued_at
    buckets: list[Counter[str]] = [Counter() for _ in range(HISTORY_HOURS)]
    for created_at, state in figures.created:
        index = min(int((created_at - since).total_seconds() // 3600), HISTORY_HOURS - 1)
        buckets[index][state] += 1
    return {
        "by_state": {state: by_state.get(state, 0) for state in STATES},
        "oldest_age_s": (now - oldest).total_seconds() if oldest is not None else None,
        "buckets": buckets,
        "since": since,
    }


def _ticks(tallest: int) -> list[int]:
    """Y-axis values: 0, the top and (when it is a whole number) the middle."""
    if tallest <= 1:
        return [0, 1]
    middle = [tallest // 2] if tallest % 2 == 0 or tallest > 10 else []
    return sorted({0, *middle, tallest})


def _chart(buckets: list[Counter[str]], since: datetime) -> dict[str, Any]:
    """Stacked bars: one per hour, one segment per state, in SVG user units.

    Every part carries its own ``<title>``, so the browser shows a tooltip without
    script; positions are attributes, so the CSP needs no inline style.
    """
    tallest = max((sum(b.values()) for b in buckets), default=0) or 1
    bars = []
    for index, bucket in enumerate(buckets):
        start = since + timedelta(hours=index)
        label = f"{start:%H:%M}–{start + timedelta(hours=1):%H:%M} UTC"
        y = CHART_TOP + CHART_HEIGHT
        segments = []
        total = sum(bucket.values())
        for state in STATES:
            count = bucket.get(state, 0)
            if not count:
                continue
            height = max(1, round(count * CHART_HEIGHT / tallest))
            y -= height
            segments.append(
                {
                    "state": state,
                    "count": count,
                    "y": y,
                    "height": height,
                    "title": f"{label}: {count} {state} of {total}",
                }
            )
        parts = ", ".join(f"{s['count']} {s['state']}" for s in segments)
        bars.append(
            {
                "x": CHART_LEFT + index * BAR_STEP,
                "segments": segments,
                "total": total,
                "title": f"{label}: {total} thread(s)" + (f" ({parts})" if parts else ""),
                "label": f"{start:%H:%M}" if index % 6 == 0 else None,
            }
        )
    ticks = [
        {"value": v, "y": CHART_TOP + CHART_HEIGHT - round(v * CHART_HEIGHT / tallest)}
        for v in _ticks(tallest)
    ]
    return {
        "bars": bars,
        "ticks": ticks,
        "width": CHART_LEFT + len(buckets) * BAR_STEP + 8,
        "height": CHART_TOP + CHART_HEIGHT + CHART_BOTTOM,
        "left": CHART_LEFT,
        "top": CHART_TOP,
        "plot_height": CHART_HEIGHT,
        "bar_width": BAR_STEP - 4,
        "step": BAR_STEP,
        "totals": {state: sum(b.get(state, 0) for b in buckets) for state in STATES},
    }


async def collect(svc: Services, principal: Principal) -> dict[str, Any]:
    figures = await _figures(svc.stats, principal)
    failures = await svc.threads.list_threads(
        principal, ThreadFilters(state="failed"), PageRequest(limit=RECENT_FAILURES)
    )
    busy, idle = svc.runner.counts()
    running, free = svc.executor.counts()
    return {
        "by_state": figures["by_state"],
        "queue_depth": figures["by_state"]["queued"],
        "oldest_age_s": figures["oldest_age_s"],
        "chart": _chart(figures["buckets"], figures["since"]),
        "chart_since": short_ts(figures["since"]),
        "states": STATES,
        "failures": failures["items"],
        "workers": {"busy": busy, "idle": idle, "running": running, "free": free},
        "max_concurrent": await svc.settings_service.max_concurrent_threads(),
        "tasks_loaded": len(svc.registry),
    }
