"""The cluster settings store: key/value records of the ``settings`` table (API.md §11.1)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from task_framework.store.base import Tx

__all__ = ["Expiry", "SettingRecord", "SettingsSnapshot", "SettingsStore"]


@dataclass(frozen=True, slots=True)
class SettingRecord:
    """One setting; ``value`` is any JSON value."""

    key: str
    value: Any
    updated_at: datetime
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class SettingsSnapshot:
    """Settings read in one transaction, with the queue's counts at that moment."""

    records: dict[str, SettingRecord] = field(default_factory=dict)
    running_threads: int = 0
    queued_threads: int = 0


@dataclass(frozen=True, slots=True)
class Expiry:
    """Entries whose key starts with ``prefix`` and that were last written before
    ``before``."""

    prefix: str
    before: datetime


class SettingsStore(Protocol):
    def value_in(self, tx: Tx, key: str) -> Any:
        """The stored value of ``key`` (None when absent), read in the caller's
        transaction ``tx``. Cheap: the executor calls it in every claim."""
        ...

    def add_in(self, tx: Tx, record: SettingRecord) -> bool:
        """Store ``record`` in ``tx`` unless ``record.key`` exists; whether it was stored."""
        ...

    def setdefault_in(self, tx: Tx, record: SettingRecord) -> Any:
        """The stored value of ``record.key``, storing ``record`` first when the key is
        absent, in ``tx``. Concurrent callers all get the value of the first one to
        store (per-installation secrets: the salt, the URL-signing key)."""
        ...

    async def setdefault(self, record: SettingRecord) -> Any:
        """:meth:`setdefault_in`, in a transaction of its own."""
        ...

    async def get(self, key: str) -> SettingRecord | None:
        """The record of ``key``, if stored."""
        ...

    async def read(self, keys: Collection[str]) -> SettingsSnapshot:
        """The records of ``keys`` that exist, and the running and queued thread counts."""
        ...

    async def put(self, record: SettingRecord, *, then_read: Collection[str]) -> SettingsSnapshot:
        """Create or replace ``record``, then :meth:`read` ``then_read``, in one transaction."""
        ...

    async def replace(self, record: SettingRecord, *, expire: Expiry) -> None:
        """Create or replace ``record``, first dropping what ``expire`` names, in one
        transaction (short-lived entries such as the UI's one-time results)."""
        ...

    async def take(self, key: str, *, expire: Expiry) -> SettingRecord | None:
        """Delete ``key`` and return its record (None when absent), first dropping what
        ``expire`` names, in one transaction: of concurrent callers one gets the record."""
        ...
