"""The records database's transactions: short ones sharing a commit, turns, the WAL.

Real SQLite files (and PostgreSQL where the behaviour is shared); no mocks.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from task_framework.errors import NotFound
from task_framework.models._time import utcnow
from task_framework.store import database as database_module
from task_framework.store.database import Database
from task_framework.store.prepared import Prepared
from task_framework.store.tables import settings_kv

_PUT = Prepared.insert(settings_kv, ("key", "value", "updated_at"))


def _put(conn: Connection, key: str) -> str:
    _PUT.execute(conn, {"key": key, "value": {"v": key}, "updated_at": utcnow()})
    return key


def _put_then_fail(conn: Connection, key: str) -> str:
    _put(conn, key)
    raise NotFound("deliberately failing after a write")


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(insert(settings_kv), rows)


def _keys(conn: Connection) -> set[str]:
    return set(conn.execute(select(settings_kv.c.key)).scalars())


@pytest.fixture
async def db(database_url: str) -> Any:
    database = Database(database_url)
    await asyncio.to_thread(database.migrate)
    yield database
    await database.close()


async def test_short_transactions_fail_alone(db: Database) -> None:
    """Requested together, they may share a commit: a failing one rolls back alone, the
    others are committed, and every caller gets its own result or exception."""
    results = await asyncio.gather(
        db.short_tx(_put, "first"),
        db.short_tx(_put_then_fail, "failed"),
        db.short_tx(_put, "first"),  # duplicate key: an IntegrityError for this one only
        db.short_tx(_put, "second"),
        return_exceptions=True,
    )
    # The two "first" inserts race: which one wins depends on the database's order (one
    # shared commit on SQLite, side by side on PostgreSQL); exactly one gets the error.
    firsts = [results[0], results[2]]
    assert firsts.count("first") == 1, firsts
    assert sum(isinstance(r, IntegrityError) for r in firsts) == 1, firsts
    assert isinstance(results[1], NotFound)
    assert results[3] == "second"
    stored = await db.tx(_keys)
    assert {"first", "second"} <= stored
    assert "failed" not in stored


async def test_short_transaction_waits_for_the_turn_in_flight(tmp_path: Path) -> None:
    """SQLite: a short transaction requested while a long one runs on the database thread
    runs after it, and sees what it committed (PostgreSQL runs them side by side)."""
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    await asyncio.to_thread(db.migrate)

    def slow(conn: Connection) -> None:
        _put(conn, "slow")
        time.sleep(0.2)

    try:
        long_running = asyncio.ensure_future(db.tx(slow))
        await asyncio.sleep(0.05)
        assert not long_running.done()
        seen = await db.short_tx(lambda conn: "slow" in _keys(conn))
        assert seen is True
        assert long_running.done()
    finally:
        await db.close()


async def test_cancelled_short_transaction_does_not_run(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cancel.db'}")
    await asyncio.to_thread(db.migrate)
    try:
        pending = asyncio.ensure_future(db.short_tx(_put, "cancelled"))
        kept = asyncio.ensure_future(db.short_tx(_put, "kept"))
        await asyncio.sleep(0)  # both are queued for the next commit
        pending.cancel()
        assert await kept == "kept"
        stored = await db.tx(_keys)
        assert "kept" in stored
        assert "cancelled" not in stored
    finally:
        await db.close()


async def test_short_transaction_waits_for_another_process_holding_the_lock(
    tmp_path: Path,
) -> None:
    """Another process writing: the short transaction is not refused, it waits its turn
    on the database thread (with the busy timeout) instead of blocking the event loop."""
    path = tmp_path / "shared.db"
    db = Database(f"sqlite:///{path}")
    await asyncio.to_thread(db.migrate)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(db.short_tx(_put, "after-the-other"))
        ticks = 0
        while not write.done() and ticks < 20:  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done()
        other.execute("COMMIT")
        assert await write == "after-the-other"
    finally:
        other.close()
        await db.close()


async def test_wal_starts_over_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a restart, a WAL under constant writes grows for ever (slowing reads)."""
    monkeypatch.setattr(database_module, "CHECKPOINT_INTERVAL_SECONDS", 0.05)
    monkeypatch.setattr(database_module, "WAL_RESTART_PAGES", 32)
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}")
    await asyncio.to_thread(db.migrate)
    written = 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            rows = [
                {"key": f"k{written + i}", "value": {"pad": "x" * 2000}, "updated_at": utcnow()}
                for i in range(20)
            ]
            await db.short_tx(_insert_rows, rows)
            written += len(rows)
            await asyncio.sleep(0.005)
        wal_pages = path.with_name("wal.db-wal").stat().st_size // 4096
    finally:
        await db.close()
    # ~20 rows of 2 KB per write, written for 1.5 s: well over a thousand pages in all.
    assert written * 2000 // 4096 > 10 * 32
    assert wal_pages < written * 2000 // 4096 // 2, (wal_pages, written)
