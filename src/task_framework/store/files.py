"""The file-records store: the ``files`` rows (API.md §8). The bytes are not here: they
live behind the ``storage/`` port; a record says who owns a file and whether it is
complete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from task_framework.store.pages import Page, PageRequest

__all__ = ["FileChange", "FileFilter", "FileRecord", "FileStore", "Owner"]

Owner = tuple[str | None, str | None]
"""``(app_id, user_id)``; ``None`` parts match only ``None`` (NULL)."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    file_ref: str
    media_type: str
    complete: bool
    created_at: datetime
    app_id: str | None = None
    user_id: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None
    declared_size: int | None = None


@dataclass(frozen=True, slots=True)
class FileChange:
    """What completing a file writes; ``None`` for ``media_type`` or ``filename`` keeps
    the stored value. ``complete`` becomes true."""

    size: int
    sha256: str
    media_type: str | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class FileFilter:
    """Which complete files a listing shows: those of ``app_id`` and of ``user_id``
    (``None`` matching only ``None``), unless ``any_app`` / ``any_user``; and, when set,
    of ``media_type`` only."""

    app_id: str | None = None
    user_id: str | None = None
    any_app: bool = False
    any_user: bool = False
    media_type: str | None = None


class FileStore(Protocol):
    async def get(
        self, file_ref: str, *, owner: Owner | None = None, write: bool = False
    ) -> FileRecord | None:
        """The file's record, complete or not; None when absent or hidden from ``owner``.

        With ``owner`` set, a file is visible when ``owner`` owns it or (unless ``write``)
        when an artifact of ``owner`` refers to it. Without, every file is visible."""
        ...

    async def add(self, record: FileRecord) -> None:
        """Store a new record; :class:`~task_framework.store.errors.UniqueViolation`
        when the ref is taken."""
        ...

    async def complete(self, file_ref: str, change: FileChange) -> None:
        """Apply ``change`` and mark the file complete; an unknown ref is ignored."""
        ...

    async def delete(self, file_ref: str) -> None:
        """Remove the record; an unknown ref is ignored."""
        ...

    async def delete_unreferenced(self, file_refs: Sequence[str]) -> list[str]:
        """Remove, in one transaction, the records among ``file_refs`` that no artifact
        refers to; those refs, in the given order."""
        ...

    async def list(self, filters: FileFilter, page: PageRequest) -> Page:
        """One page of complete files, newest first (route ``files``); ``rows`` are
        :class:`FileRecord`."""
        ...

    async def totals(self) -> tuple[int, int]:
        """``(count, bytes)`` of the complete files."""
        ...
