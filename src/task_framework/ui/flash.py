"""One-time results of a form, kept server-side for the page the form redirects to.

A create form answers with a redirect (post/redirect/get), so reloading the result page
cannot send the form again. What that page must show once, such as a new API key or a
webhook's signing secret, waits here under the session's id and is handed out by the
first read. It lives in this process's memory only: never in a URL, a cookie or the
database. With several replicas the redirected request must reach the same one (as it
does behind sticky sessions); otherwise the page says the secret is shown only once.
"""

from __future__ import annotations

import time
from typing import Any

FLASH_TTL_SECONDS = 300.0
"""A result not picked up this long after the form is dropped."""
MAX_FLASHES = 1000
"""Pending results held at most (the oldest are dropped first)."""


class FlashStore:
    """Results waiting for one page view, keyed by (session id, kind)."""

    def __init__(self, *, ttl_seconds: float = FLASH_TTL_SECONDS) -> None:
        self._ttl = ttl_seconds
        self._items: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def put(self, session_id: str, kind: str, value: dict[str, Any]) -> None:
        self._prune()
        if len(self._items) >= MAX_FLASHES:
            oldest = min(self._items, key=lambda k: self._items[k][0])
            del self._items[oldest]
        self._items[(session_id, kind)] = (time.monotonic() + self._ttl, value)

    def pop(self, session_id: str, kind: str) -> dict[str, Any] | None:
        """The result left for this session, once; None when there is none (any more)."""
        found = self._items.pop((session_id, kind), None)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, (until, _) in self._items.items() if until < now]:
            del self._items[key]


__all__ = ["FLASH_TTL_SECONDS", "FlashStore"]
