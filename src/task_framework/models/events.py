"""The event catalogue (API.md §12.2): the event types webhooks and streams name."""

from __future__ import annotations

__all__ = ["EVENT_TYPES"]

EVENT_TYPES = (
    "thread.created",
    "thread.started",
    "thread.succeeded",
    "thread.failed",
    "thread.timeout",
    "thread.stopped",
    "thread.problem",
    "artifact.created",
    "schedule.run.started",
    "schedule.run.succeeded",
    "schedule.run.failed",
    "schedule.run.skipped",
)
