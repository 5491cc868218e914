"""The API-key store: managed keys, held only as their SHA-256 (API.md §11.2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from task_framework.store.pages import Page, PageRequest

__all__ = ["ApiKeyRecord", "KeyFilter", "KeyStore"]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One managed key as stored. ``key_hash`` is the SHA-256 of the key, in hex."""

    id: str
    name: str
    role: str
    key_hash: str
    prefix: str
    created_at: datetime
    app_id: str | None = None
    user_id: str | None = None
    source: str = "managed"
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which keys a listing shows; ``None`` (or an empty string) matches any value."""

    role: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    include_revoked: bool = False


class KeyStore(Protocol):
    async def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this digest, revoked or expired ones included."""
        ...

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or expired ones included."""
        ...

    async def add(self, record: ApiKeyRecord) -> ApiKeyRecord:
        """Store a new key and return it as stored.

        Raises :class:`~task_framework.store.errors.UniqueViolation` when the id or the
        hash is taken."""
        ...

    async def mark_used(self, key_id: str, at: datetime) -> None:
        """Set ``last_used_at``; an unknown id is ignored."""
        ...

    async def list(self, filters: KeyFilter, page: PageRequest) -> Page:
        """One page of keys, newest first (route ``api-keys``); ``rows`` are
        :class:`ApiKeyRecord`."""
        ...

    async def revoke(self, key_id: str, at: datetime) -> None:
        """Set ``revoked_at`` unless already set (the first revocation time stays).

        Raises :class:`~task_framework.store.errors.RecordNotFound` for an unknown id."""
        ...

    async def count_active_admins(self, now: datetime) -> int:
        """Admin keys neither revoked nor expired at ``now``."""
        ...
