"""Fixtures of the store contract suites: a fresh, migrated database per test, on SQLite
and on PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from task_framework.store.database import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await asyncio.to_thread(database.migrate)
    try:
        yield database
    finally:
        await database.close()
