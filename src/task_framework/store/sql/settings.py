"""Cluster settings over SQLAlchemy Core (the ``settings`` table).

The snapshot also counts running and queued threads (the ``threads`` table), in the
same transaction, until the threads store exists to ask.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, select

from task_framework.store.base import Tx
from task_framework.store.database import Database
from task_framework.store.prepared import Prepared
from task_framework.store.settings import Expiry, SettingRecord, SettingsSnapshot
from task_framework.store.sql._dialect import conn_of, insert_absent, translated, upsert
from task_framework.store.tables import settings_kv, threads

__all__ = ["SqlSettingsStore"]

_VALUE = Prepared(select(settings_kv.c.value).where(settings_kv.c.key == bindparam("key")))


def _record(row: Row[Any]) -> SettingRecord:
    return SettingRecord(
        key=row.key, value=row.value, updated_at=row.updated_at, updated_by=row.updated_by
    )


def _snapshot(conn: Connection, keys: Collection[str]) -> SettingsSnapshot:
    records = {
        row.key: _record(row)
        for row in conn.execute(select(settings_kv).where(settings_kv.c.key.in_(list(keys))))
    }
    counts: dict[str, int] = dict(
        conn.execute(
            select(threads.c.state, func.count())
            .where(threads.c.state.in_(["running", "queued"]))
            .group_by(threads.c.state)
        ).all()
    )
    return SettingsSnapshot(
        records=records,
        running_threads=int(counts.get("running", 0)),
        queued_threads=int(counts.get("queued", 0)),
    )


def _expire(conn: Connection, expire: Expiry) -> None:
    conn.execute(
        delete(settings_kv).where(
            settings_kv.c.key.startswith(expire.prefix, autoescape=True),
            settings_kv.c.updated_at < expire.before,
        )
    )


class SqlSettingsStore:
    """:class:`~task_framework.store.settings.SettingsStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def value_in(self, tx: Tx, key: str) -> Any:
        row = _VALUE.first(conn_of(tx), {"key": key})
        return None if row is None else row[0]

    def add_in(self, tx: Tx, record: SettingRecord) -> bool:
        conn = conn_of(tx)
        found = conn.execute(
            select(settings_kv.c.key).where(settings_kv.c.key == record.key)
        ).first()
        if found is not None:
            return False
        with translated(f"Setting {record.key!r}"):
            conn.execute(
                insert(settings_kv).values(
                    key=record.key,
                    value=record.value,
                    updated_at=record.updated_at,
                    updated_by=record.updated_by,
                )
            )
        return True

    def setdefault_in(self, tx: Tx, record: SettingRecord) -> Any:
        conn = conn_of(tx)
        insert_absent(
            conn,
            settings_kv,
            {
                "key": record.key,
                "value": record.value,
                "updated_at": record.updated_at,
                "updated_by": record.updated_by,
            },
            keys=["key"],
        )
        return _VALUE.first(conn, {"key": record.key})[0]

    async def setdefault(self, record: SettingRecord) -> Any:
        return await self._db.tx(self.setdefault_in, record)

    async def get(self, key: str) -> SettingRecord | None:
        row = await self._db.tx(
            lambda conn: conn.execute(select(settings_kv).where(settings_kv.c.key == key)).first()
        )
        return None if row is None else _record(row)

    async def read(self, keys: Collection[str]) -> SettingsSnapshot:
        return await self._db.tx(_snapshot, keys)

    async def put(self, record: SettingRecord, *, then_read: Collection[str]) -> SettingsSnapshot:
        def _put(conn: Connection) -> SettingsSnapshot:
            upsert(
                conn,
                settings_kv,
                {
                    "key": record.key,
                    "value": record.value,
                    "updated_at": record.updated_at,
                    "updated_by": record.updated_by,
                },
                keys=["key"],
            )
            return _snapshot(conn, then_read)

        return await self._db.tx(_put)

    async def replace(self, record: SettingRecord, *, expire: Expiry) -> None:
        def _replace(conn: Connection) -> None:
            _expire(conn, expire)
            upsert(
                conn,
                settings_kv,
                {
                    "key": record.key,
                    "value": record.value,
                    "updated_at": record.updated_at,
                    "updated_by": record.updated_by,
                },
                keys=["key"],
            )

        await self._db.tx(_replace)

    async def take(self, key: str, *, expire: Expiry) -> SettingRecord | None:
        def _take(conn: Connection) -> Row[Any] | None:
            _expire(conn, expire)
            return conn.execute(
                delete(settings_kv).where(settings_kv.c.key == key).returning(settings_kv)
            ).first()

        row = await self._db.tx(_take)
        return None if row is None else _record(row)
