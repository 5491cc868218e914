"""Contract of :class:`task_framework.store.settings.SettingsStore`, over SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import Connection, insert

from task_framework.errors import NotFound
from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.store.base import Tx
from task_framework.store.database import Database
from task_framework.store.settings import Expiry, SettingRecord, SettingsStore
from task_framework.store.sql import SqlSettingsStore
from task_framework.store.tables import threads


@pytest.fixture
def store(store_db: Database) -> SettingsStore:
    return SqlSettingsStore(store_db)


async def test_get_and_value_in_see_what_put_stored(
    store_db: Database, store: SettingsStore
) -> None:
    assert await store.get("limit") is None
    assert await store_db.tx(store.value_in, "limit") is None
    record = SettingRecord("limit", 4, utcnow(), "ops")
    await store.put(record, then_read=[])
    assert await store.get("limit") == record
    assert await store_db.tx(store.value_in, "limit") == 4


async def test_put_replaces_and_returns_what_it_reads_after(store: SettingsStore) -> None:
    first = SettingRecord("limit", 4, utcnow(), "ops")
    await store.put(first, then_read=[])
    second = SettingRecord("limit", {"nested": [1, "two"]}, first.updated_at + timedelta(1))
    other = SettingRecord("other", "x", utcnow())
    await store.put(other, then_read=[])
    snapshot = await store.put(second, then_read=["limit", "absent"])
    assert snapshot.records == {"limit": second}
    assert await store.get("limit") == second
    assert await store.get("other") == other


async def test_add_in_stores_only_when_absent(store_db: Database, store: SettingsStore) -> None:
    first = SettingRecord("started", "2026-01-01T00:00:00Z", utcnow())
    later = SettingRecord("started", "2027-01-01T00:00:00Z", utcnow() + timedelta(1))
    assert await store_db.tx(store.add_in, first) is True
    assert await store_db.tx(store.add_in, later) is False
    assert await store.get("started") == first


async def test_add_in_belongs_to_the_callers_transaction(
    store_db: Database, store: SettingsStore
) -> None:
    record = SettingRecord("started", "now", utcnow())

    def add_then_fail(tx: Tx) -> None:
        assert store.add_in(tx, record)
        assert store.value_in(tx, "started") == "now"  # seen inside the transaction
        raise NotFound("roll back")

    with pytest.raises(NotFound):
        await store_db.tx(add_then_fail)
    assert await store.get("started") is None


async def test_read_counts_running_and_queued_threads(
    store_db: Database, store: SettingsStore
) -> None:
    def add_threads(conn: Connection) -> None:
        for state in ("running", "queued", "queued", "succeeded", "failed"):
            conn.execute(
                insert(threads).values(
                    id=new_id("thread"),
                    state=state,
                    metadata={},
                    params={},
                    problems=[],
                    created_at=utcnow(),
                )
            )

    empty = await store.read(["limit"])
    assert (empty.records, empty.running_threads, empty.queued_threads) == ({}, 0, 0)
    await store_db.tx(add_threads)
    snapshot = await store.read(["limit"])
    assert (snapshot.running_threads, snapshot.queued_threads) == (1, 2)


async def test_setdefault_stores_only_when_absent_and_returns_the_stored_value(
    store_db: Database, store: SettingsStore
) -> None:
    first = SettingRecord("salt", "first", utcnow())
    assert await store.setdefault(first) == "first"
    assert await store.setdefault(SettingRecord("salt", "second", utcnow())) == "first"
    assert await store_db.tx(store.setdefault_in, SettingRecord("salt", "third", utcnow())) == (
        "first"
    )
    assert await store.get("salt") == first


async def test_concurrent_setdefaults_all_get_the_first_value(store: SettingsStore) -> None:
    values = await asyncio.gather(
        *(store.setdefault(SettingRecord("key", f"v{i}", utcnow())) for i in range(8))
    )
    assert len(set(values)) == 1
    stored = await store.get("key")
    assert stored is not None
    assert stored.value == values[0]


async def test_setdefault_in_belongs_to_the_callers_transaction(
    store_db: Database, store: SettingsStore
) -> None:
    def add_then_fail(tx: Tx) -> None:
        assert store.setdefault_in(tx, SettingRecord("salt", "x", utcnow())) == "x"
        raise NotFound("roll back")

    with pytest.raises(NotFound):
        await store_db.tx(add_then_fail)
    assert await store.get("salt") is None


async def test_replace_and_take_hand_a_record_out_once_and_drop_expired_ones(
    store: SettingsStore,
) -> None:
    now = utcnow()
    expire = Expiry("flash:", now - timedelta(minutes=5))
    stale = SettingRecord("flash:stale", {"v": 0}, now - timedelta(minutes=10))
    other = SettingRecord("limit", 4, now - timedelta(days=1))  # old, but not under the prefix
    await store.put(stale, then_read=[])
    await store.put(other, then_read=[])

    await store.replace(SettingRecord("flash:a", {"v": 1}, now), expire=expire)
    assert await store.get("flash:stale") is None  # expired entries go with the write
    assert await store.get("limit") == other
    newer = SettingRecord("flash:a", {"v": 2}, now)
    await store.replace(newer, expire=expire)  # replaces, no unique violation
    assert await store.get("flash:a") == newer

    results = await asyncio.gather(*(store.take("flash:a", expire=expire) for _ in range(4)))
    assert [r for r in results if r is not None] == [newer]  # one caller gets it
    assert await store.take("flash:a", expire=expire) is None
    assert await store.get("limit") == other


async def test_take_drops_expired_entries_even_when_its_key_is_absent(
    store: SettingsStore,
) -> None:
    now = utcnow()
    await store.put(SettingRecord("flash:old", {"v": 0}, now - timedelta(hours=1)), then_read=[])
    assert await store.take("flash:none", expire=Expiry("flash:", now)) is None
    assert await store.get("flash:old") is None
