"""Contract of :class:`task_framework.store.keys.KeyStore`, over SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from task_framework.errors import ValidationFailed
from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.store.database import Database
from task_framework.store.errors import RecordNotFound, UniqueViolation
from task_framework.store.keys import ApiKeyRecord, KeyFilter, KeyStore
from task_framework.store.pages import PageRequest
from task_framework.store.sql import SqlKeyStore


@pytest.fixture
def store(store_db: Database) -> KeyStore:
    return SqlKeyStore(store_db)


def _key(name: str = "k", **fields: object) -> ApiKeyRecord:
    ident = new_id("apikey")
    base = ApiKeyRecord(
        id=ident,
        name=name,
        role="user",
        key_hash=f"{ident:0>64}"[-64:],
        prefix="tfk_" + ident[-8:],
        created_at=utcnow(),
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


async def test_add_returns_the_key_as_stored_and_find_by_hash_finds_it(store: KeyStore) -> None:
    expires = utcnow() + timedelta(days=1)
    record = _key("ci", app_id="app1", user_id="user1", expires_at=expires)
    assert await store.add(record) == record
    assert await store.find_by_hash(record.key_hash) == record
    assert await store.find_by_hash("0" * 64) is None
    assert await store.get(record.id) == record
    assert await store.get("apikey_unknown") is None


async def test_a_duplicate_hash_or_id_is_a_unique_violation(store: KeyStore) -> None:
    first = await store.add(_key("first"))
    with pytest.raises(UniqueViolation):
        await store.add(_key("same hash", key_hash=first.key_hash))
    with pytest.raises(UniqueViolation):
        await store.add(_key("same id", id=first.id))
    page = await store.list(KeyFilter(), PageRequest())
    assert [r.name for r in page.rows] == ["first"]


async def test_mark_used_sets_last_used_at(store: KeyStore) -> None:
    record = await store.add(_key())
    at = utcnow()
    await store.mark_used(record.id, at)
    await store.mark_used("apikey_unknown", at)  # ignored
    found = await store.find_by_hash(record.key_hash)
    assert found is not None
    assert found.last_used_at == at


async def test_revoke_keeps_the_first_time_and_unknown_ids_are_not_found(
    store: KeyStore,
) -> None:
    record = await store.add(_key())
    first = utcnow()
    await store.revoke(record.id, first)
    await store.revoke(record.id, first + timedelta(hours=1))
    found = await store.find_by_hash(record.key_hash)
    assert found is not None
    assert found.revoked_at == first
    with pytest.raises(RecordNotFound):
        await store.revoke("apikey_unknown", first)


async def test_list_filters_and_hides_revoked_keys_unless_asked(store: KeyStore) -> None:
    start = utcnow()
    admin = await store.add(_key("admin", role="admin", created_at=start))
    a1 = await store.add(_key("a1", app_id="a", user_id="u1", created_at=start + timedelta(1)))
    a2 = await store.add(_key("a2", app_id="a", user_id="u2", created_at=start + timedelta(2)))
    gone = await store.add(_key("gone", app_id="a", created_at=start + timedelta(3)))
    await store.revoke(gone.id, utcnow())

    async def names(filters: KeyFilter) -> list[str]:
        return [r.name for r in (await store.list(filters, PageRequest())).rows]

    assert await names(KeyFilter()) == ["a2", "a1", "admin"]  # newest first
    assert await names(KeyFilter(include_revoked=True)) == ["gone", "a2", "a1", "admin"]
    assert await names(KeyFilter(role="admin")) == [admin.name]
    assert await names(KeyFilter(app_id="a")) == [a2.name, a1.name]
    assert await names(KeyFilter(app_id="a", user_id="u1")) == [a1.name]
    assert await names(KeyFilter(user_id="nobody")) == []
    page = await store.list(KeyFilter(include_revoked=True), PageRequest())
    assert all(isinstance(row, ApiKeyRecord) for row in page.rows)
    assert next(r for r in page.rows if r.id == gone.id).revoked_at is not None


async def test_list_pages_with_a_cursor(store: KeyStore) -> None:
    start = utcnow()
    for i in range(5):
        await store.add(_key(f"k{i}", created_at=start + timedelta(seconds=i)))
    first = await store.list(KeyFilter(), PageRequest(limit=2))
    assert [r.name for r in first.rows] == ["k4", "k3"]
    assert (first.total, first.has_more) == (5, True)
    second = await store.list(KeyFilter(), PageRequest(limit=2, cursor=first.cursor))
    assert [r.name for r in second.rows] == ["k2", "k1"]
    last = await store.list(KeyFilter(), PageRequest(limit=2, cursor=second.cursor))
    assert [r.name for r in last.rows] == ["k0"]
    assert (last.has_more, last.cursor) == (False, None)
    with pytest.raises(ValidationFailed):
        await store.list(KeyFilter(), PageRequest(cursor="not-a-cursor"))


async def test_count_active_admins_leaves_out_users_revoked_and_expired_keys(
    store: KeyStore,
) -> None:
    now = utcnow()
    assert await store.count_active_admins(now) == 0
    await store.add(_key("admin", role="admin"))
    await store.add(_key("later", role="admin", expires_at=now + timedelta(minutes=1)))
    await store.add(_key("expired", role="admin", expires_at=now))
    revoked = await store.add(_key("revoked", role="admin"))
    await store.revoke(revoked.id, now)
    await store.add(_key("user"))
    assert await store.count_active_admins(now) == 2
    assert await store.count_active_admins(now + timedelta(minutes=2)) == 1
