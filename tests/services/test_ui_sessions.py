"""The web UI's SessionStore over the SQLite session and key stores."""

from __future__ import annotations

from datetime import timedelta

from task_framework.services.auth import KeyRing
from task_framework.store.database import Database
from task_framework.store.sql import SqlKeyStore, SqlUiSessionStore
from task_framework.ui.sessions import IDLE_TIMEOUT, SessionStore

KEY = "tfk_admin_0123456789abcdef"


async def _sessions(db: Database) -> tuple[SessionStore, KeyRing]:
    keys = KeyRing(SqlKeyStore(db), api_keys=[], admin_api_keys=[KEY])
    return SessionStore(SqlUiSessionStore(db), keys), keys


async def test_a_session_resolves_until_revoked(sqlite_db: Database) -> None:
    sessions, keys = await _sessions(sqlite_db)
    principal = await keys.authenticate(api_key=KEY, admin_key=None, app_id=None, user_id=None)
    token, session = await sessions.create(KEY, principal)
    resolved = await sessions.resolve(token)
    assert resolved is not None
    assert resolved.id == session.id
    assert resolved.principal.is_admin
    assert resolved.csrf_ok(session.csrf_token)
    assert not resolved.csrf_ok("forged")
    assert await sessions.resolve("unknown") is None
    await sessions.revoke(session.id)
    assert await sessions.resolve(token) is None


async def test_an_idle_session_is_over(sqlite_db: Database) -> None:
    sessions, keys = await _sessions(sqlite_db)
    principal = await keys.authenticate(api_key=KEY, admin_key=None, app_id=None, user_id=None)
    token, session = await sessions.create(KEY, principal)
    store = SqlUiSessionStore(sqlite_db)
    stored = await store.get(session.id)
    assert stored is not None
    await store.touch(session.id, stored.last_seen_at - IDLE_TIMEOUT - timedelta(seconds=1))
    assert await sessions.resolve(token) is None
