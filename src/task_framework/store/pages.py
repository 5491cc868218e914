"""A page of a list (API.md §1.4): what a list request asks for and what it gets.

No SQL here, so store interfaces and services can name pages without importing
SQLAlchemy; the keyset query itself is :func:`task_framework.store.paging.paginate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "PageRequest"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Any]
    total: int
    has_more: bool
    cursor: str | None

    def map(self, record: Callable[[Any], Any]) -> Page:
        """The same page with each row turned into ``record(row)`` (a store's records)."""
        return replace(self, rows=[record(row) for row in self.rows])

    def envelope(self, items: list[Any]) -> dict[str, Any]:
        return {
            "items": items,
            "pagination": {"cursor": self.cursor, "has_more": self.has_more, "total": self.total},
        }
