"""Fast tests of services over the SQLite store: a fresh database file per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from task_framework.store.database import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'records.db'}")
    await asyncio.to_thread(database.migrate)
    try:
        yield database
    finally:
        await database.close()
