"""Aggregate reads across the records, for gauges and the UI overview: counts, never rows
of one aggregate (those are the other stores')."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["ClusterFigures", "OverviewFigures", "StatsStore", "ThreadOwner"]


@dataclass(frozen=True, slots=True)
class ThreadOwner:
    """The threads of one caller: those with this ``app_id`` and ``user_id`` (None
    matches only None)."""

    app_id: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class ClusterFigures:
    """The cluster-wide gauges, read in one transaction."""

    states: dict[str, int] = field(default_factory=dict)
    """Threads by state (states without threads are absent)."""
    oldest_queued_at: datetime | None = None
    files: int = 0
    """Complete files, and their total size."""
    file_bytes: int = 0
    schedules_active: int = 0
    deliveries_pending: int = 0


@dataclass(frozen=True, slots=True)
class OverviewFigures:
    """The overview page's counts, for one owner or the whole cluster."""

    states: dict[str, int] = field(default_factory=dict)
    """Threads by state (states without threads are absent)."""
    oldest_queued_at: datetime | None = None
    created: list[tuple[datetime, str]] = field(default_factory=list)
    """``(created_at, state)`` of the threads created since the window's start."""


class StatsStore(Protocol):
    async def cluster(self) -> ClusterFigures:
        """Threads by state, the oldest queued one, complete files, active schedules and
        pending webhook deliveries."""
        ...

    async def overview(
        self, owner: ThreadOwner | None, *, since: datetime, max_created: int
    ) -> OverviewFigures:
        """Threads of ``owner`` (all when None) by state, the oldest queued one, and at
        most ``max_created`` of those created at or after ``since``, in one transaction."""
        ...
