"""SettingsService over the SQLite settings store."""

from __future__ import annotations

from task_framework.services.settings import SettingsService
from task_framework.store.database import Database
from task_framework.store.sql import SqlSettingsStore


async def test_the_default_limit_holds_until_one_is_stored(sqlite_db: Database) -> None:
    service = SettingsService(SqlSettingsStore(sqlite_db), default_max_concurrent=3)
    assert await service.max_concurrent_threads() == 3
    assert await sqlite_db.tx(service.limit_in) == 3
    shown = await service.get()
    assert (shown["max_concurrent_threads"], shown["updated_by"]) == (3, None)

    updated = await service.update(max_concurrent_threads=0, updated_by="ops")
    assert (updated["max_concurrent_threads"], updated["updated_by"]) == (0, "ops")
    assert await service.max_concurrent_threads() == 0
    assert await sqlite_db.tx(service.limit_in) == 0
    unchanged = await service.update(max_concurrent_threads=None, updated_by="other")
    assert unchanged["updated_by"] == "ops"


async def test_the_first_start_is_recorded_once(sqlite_db: Database) -> None:
    service = SettingsService(SqlSettingsStore(sqlite_db), default_max_concurrent=0)
    await sqlite_db.tx(service.record_first_start)
    first = (await service.get())["updated_at"]
    await sqlite_db.tx(service.record_first_start)
    assert (await service.get())["updated_at"] == first  # until a limit is stored
