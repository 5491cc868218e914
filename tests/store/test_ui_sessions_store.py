"""Contract of :class:`task_framework.store.sessions.UiSessionStore`, over SQLite and
PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from task_framework.models._time import utcnow
from task_framework.store.database import Database
from task_framework.store.errors import UniqueViolation
from task_framework.store.sessions import UiSessionRecord, UiSessionStore
from task_framework.store.sql import SqlUiSessionStore

NOW = utcnow().replace(microsecond=0)


def _session(session_id: str, **changes: object) -> UiSessionRecord:
    record = UiSessionRecord(
        id=session_id,
        key_hash="k" * 64,
        is_admin=False,
        csrf_token="c" * 43,
        created_at=NOW,
        last_seen_at=NOW,
        expires_at=NOW + timedelta(hours=24),
        key_id="key_1",
        key_name="ops",
        app_id="a",
        user_id="u",
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(store_db: Database) -> UiSessionStore:
    return SqlUiSessionStore(store_db)


async def test_create_then_get(store: UiSessionStore) -> None:
    assert await store.get("s1") is None
    record = _session("s1")
    await store.create(record, prune_before=NOW)
    assert await store.get("s1") == record
    admin = _session("s2", is_admin=True, key_id=None, key_name=None, app_id=None, user_id=None)
    await store.create(admin, prune_before=NOW)
    assert await store.get("s2") == admin


async def test_create_prunes_the_sessions_expired_before(store: UiSessionStore) -> None:
    await store.create(_session("old", expires_at=NOW - timedelta(seconds=1)), prune_before=NOW)
    await store.create(_session("edge", expires_at=NOW), prune_before=NOW)
    await store.create(_session("new"), prune_before=NOW)
    assert await store.get("old") is None
    assert await store.get("edge") is not None
    assert await store.get("new") is not None


async def test_create_refuses_a_duplicate_id(store: UiSessionStore) -> None:
    await store.create(_session("s1"), prune_before=NOW)
    with pytest.raises(UniqueViolation):
        await store.create(_session("s1"), prune_before=NOW)


async def test_touch_moves_last_seen(store: UiSessionStore) -> None:
    await store.create(_session("s1"), prune_before=NOW)
    later = NOW + timedelta(minutes=5)
    await store.touch("s1", later)
    await store.touch("absent", later)  # nothing to touch: no error
    stored = await store.get("s1")
    assert stored is not None
    assert stored.last_seen_at == later


async def test_revoke_keeps_the_first_revocation(store: UiSessionStore) -> None:
    await store.create(_session("s1"), prune_before=NOW)
    first, second = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    await store.revoke("s1", first)
    await store.revoke("s1", second)
    await store.revoke("absent", second)
    stored = await store.get("s1")
    assert stored is not None
    assert stored.revoked_at == first
