"""The web UI's sessions (``ui_sessions``): an API key exchanged for a server-side session.

The store holds the SHA-256 of the cookie token (the session id), the key's SHA-256 and
the identity the key stood for; never the token or the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["UiSessionRecord", "UiSessionStore"]


@dataclass(frozen=True, slots=True)
class UiSessionRecord:
    """One session as stored."""

    id: str
    key_hash: str
    is_admin: bool
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    key_id: str | None = None
    key_name: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    revoked_at: datetime | None = None


class UiSessionStore(Protocol):
    async def create(self, record: UiSessionRecord, *, prune_before: datetime) -> None:
        """Store ``record``, deleting the sessions that expired before ``prune_before``,
        in one transaction."""
        ...

    async def get(self, session_id: str) -> UiSessionRecord | None:
        """The session ``session_id``, expired or revoked ones included."""
        ...

    async def touch(self, session_id: str, at: datetime) -> None:
        """Record that the session was used at ``at``; nothing when it does not exist."""
        ...

    async def revoke(self, session_id: str, at: datetime) -> None:
        """Mark the session revoked at ``at``, unless it already is (or does not exist)."""
        ...
