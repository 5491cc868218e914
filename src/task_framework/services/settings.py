"""Cluster-wide settings stored in the database (API.md §11.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from task_framework.models._time import format_ts, utcnow
from task_framework.store.base import Tx
from task_framework.store.settings import SettingRecord, SettingsSnapshot, SettingsStore

MAX_CONCURRENT_KEY = "max_concurrent_threads"
CLUSTER_STARTED_KEY = "cluster_started_at"
_SHOWN = (MAX_CONCURRENT_KEY, CLUSTER_STARTED_KEY)


class SettingsService:
    def __init__(self, store: SettingsStore, *, default_max_concurrent: int) -> None:
        self._store = store
        self._default = default_max_concurrent

    def record_first_start(self, tx: Tx) -> None:
        """Note when the cluster first started, in ``tx`` (a no-op after the first time)."""
        now = utcnow()
        self._store.add_in(tx, SettingRecord(CLUSTER_STARTED_KEY, format_ts(now), now))

    def limit_in(self, tx: Tx) -> int:
        """The cluster limit as stored now, read in ``tx``'s transaction (0: none)."""
        value = self._store.value_in(tx, MAX_CONCURRENT_KEY)
        return self._default if value is None else int(value)

    async def max_concurrent_threads(self) -> int:
        """The cluster limit as stored now (claims read it in their own transaction)."""
        stored = await self._store.get(MAX_CONCURRENT_KEY)
        return self._default if stored is None or stored.value is None else int(stored.value)

    def _view(self, snapshot: SettingsSnapshot) -> dict[str, Any]:
        stored = snapshot.records.get(MAX_CONCURRENT_KEY)
        started = snapshot.records.get(CLUSTER_STARTED_KEY)
        updated_at: datetime | None = (
            stored.updated_at if stored else (started.updated_at if started else None)
        )
        return {
            "max_concurrent_threads": int(stored.value) if stored else self._default,
            "updated_at": format_ts(updated_at or utcnow()),
            "updated_by": stored.updated_by if stored else None,
            "current_running_threads": snapshot.running_threads,
            "current_queued_threads": snapshot.queued_threads,
        }

    async def get(self) -> dict[str, Any]:
        return self._view(await self._store.read(_SHOWN))

    async def update(
        self, *, max_concurrent_threads: int | None, updated_by: str
    ) -> dict[str, Any]:
        if max_concurrent_threads is None:
            return await self.get()
        record = SettingRecord(MAX_CONCURRENT_KEY, max_concurrent_threads, utcnow(), updated_by)
        return self._view(await self._store.put(record, then_read=_SHOWN))
