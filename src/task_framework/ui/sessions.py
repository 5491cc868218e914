"""Web UI sessions: an API key exchanged for a server-side session (cookie ``tf_session``).

The browser holds only a random token; the database holds its SHA-256, the key's SHA-256
and the identity the key stood for. Every request re-checks the key through the
:class:`KeyRing`, so revoking or expiring the key ends the session within the key cache
time. Each session has its own CSRF token, compared in constant time on every state
change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from task_framework.models._time import utcnow
from task_framework.services.auth import KeyRing, Principal, hash_key
from task_framework.store.sessions import UiSessionRecord, UiSessionStore

COOKIE_NAME = "tf_session"
COOKIE_PATH = "/ui"
IDLE_TIMEOUT = timedelta(hours=8)
"""A session unused for this long is over."""
ABSOLUTE_TIMEOUT = timedelta(hours=24)
"""A session ends this long after sign-in, used or not."""
TOUCH_INTERVAL = timedelta(minutes=1)
"""``last_seen_at`` is written at most this often (one write per minute, not per page)."""
TOKEN_BYTES = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: the caller it acts for and its CSRF token."""

    id: str
    principal: Principal
    csrf_token: str
    expires_at: datetime

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token, given or "")


class SessionStore:
    """Creates, resolves and revokes sessions (kept in a :class:`UiSessionStore`)."""

    def __init__(self, store: UiSessionStore, keys: KeyRing) -> None:
        self._store = store
        self._keys = keys

    async def create(self, api_key: str, principal: Principal) -> tuple[str, Session]:
        """A new session for a key that just authenticated; returns (cookie token, session)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = utcnow()
        session_id, csrf = _digest(token), secrets.token_urlsafe(TOKEN_BYTES)
        expires_at = now + ABSOLUTE_TIMEOUT
        record = UiSessionRecord(
            id=session_id,
            key_hash=hash_key(api_key),
            key_id=principal.key_id,
            key_name=principal.key_name,
            is_admin=principal.is_admin,
            app_id=principal.app_id,
            user_id=principal.user_id,
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
        )
        # Expired and revoked sessions are pruned as new ones arrive.
        await self._store.create(record, prune_before=now)
        return token, Session(session_id, principal, csrf, expires_at)

    async def resolve(self, token: str | None) -> Session | None:
        """The live session of a cookie token, else None (unknown, expired, revoked key)."""
        if not token or len(token) > 2 * TOKEN_BYTES + 8:
            return None
        session_id = _digest(token)
        now = utcnow()
        stored = await self._store.get(session_id)
        if (
            stored is None
            or stored.revoked_at is not None
            or stored.expires_at <= now
            or now - stored.last_seen_at > IDLE_TIMEOUT
        ):
            return None
        principal = await self._keys.principal_for_hash(
            stored.key_hash, is_admin=stored.is_admin, app_id=stored.app_id, user_id=stored.user_id
        )
        if principal is None:
            await self.revoke(session_id)
            return None
        if now - stored.last_seen_at > TOUCH_INTERVAL:
            await self._store.touch(session_id, now)
        return Session(session_id, principal, stored.csrf_token, stored.expires_at)

    async def revoke(self, session_id: str) -> None:
        await self._store.revoke(session_id, utcnow())


__all__ = ["COOKIE_NAME", "COOKIE_PATH", "Session", "SessionStore"]
