"""Bounds checked at the API's edge (docs/reference/api.md, "Bounds").

Every bound holds the same on SQLite and PostgreSQL: a request outside one is refused
with a 4xx in the error envelope before anything is stored.
"""

from __future__ import annotations

MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
"""A thread's ``timeout_seconds`` (30 days)."""

MAX_ATTEMPTS = 100
"""A schedule's ``max_attempts``."""

MAX_CONCURRENT_THREADS = 100_000
"""The cluster-wide ``max_concurrent_threads`` setting."""

MAX_THREAD_NAME_CHARS = 255
"""A thread's ``name``."""

MAX_IDENTITY_CHARS = 255
"""``app_id`` and ``user_id``, in characters (the stored columns' width)."""

MAX_OFFSET = 2**63 - 1
"""A list's ``offset`` (a signed 64-bit integer on both databases)."""

MAX_JSON_DEPTH = 100
"""Nesting of arrays and objects in a JSON request body or a task's JSON output."""

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_CONCURRENT_THREADS",
    "MAX_IDENTITY_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_OFFSET",
    "MAX_THREAD_NAME_CHARS",
    "MAX_TIMEOUT_SECONDS",
]
