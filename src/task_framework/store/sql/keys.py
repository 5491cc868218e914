"""API keys over SQLAlchemy Core (the ``api_keys`` table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from task_framework.store.database import Database
from task_framework.store.errors import RecordNotFound
from task_framework.store.keys import ApiKeyRecord, KeyFilter
from task_framework.store.pages import Page, PageRequest
from task_framework.store.paging import paginate
from task_framework.store.sql._dialect import translated
from task_framework.store.tables import api_keys

__all__ = ["SqlKeyStore"]


def _record(row: Row[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        key_hash=row.key_hash,
        prefix=row.prefix,
        created_at=row.created_at,
        app_id=row.app_id,
        user_id=row.user_id,
        source=row.source,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlKeyStore:
    """:class:`~task_framework.store.keys.KeyStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._db.tx(
            lambda conn: conn.execute(
                select(api_keys).where(api_keys.c.key_hash == key_hash)
            ).first()
        )
        return None if row is None else _record(row)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._db.tx(
            lambda conn: conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        )
        return None if row is None else _record(row)

    async def add(self, record: ApiKeyRecord) -> ApiKeyRecord:
        def _add(conn: Connection) -> Row[Any]:
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    name=record.name,
                    role=record.role,
                    app_id=record.app_id,
                    user_id=record.user_id,
                    key_hash=record.key_hash,
                    prefix=record.prefix,
                    source=record.source,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                    last_used_at=record.last_used_at,
                    revoked_at=record.revoked_at,
                )
            )
            return conn.execute(select(api_keys).where(api_keys.c.id == record.id)).one()

        with translated("API key"):
            return _record(await self._db.tx(_add))

    async def mark_used(self, key_id: str, at: datetime) -> None:
        await self._db.tx(
            lambda conn: conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at)
            )
        )

    async def list(self, filters: KeyFilter, page: PageRequest) -> Page:
        query = select(api_keys)
        if filters.role:
            query = query.where(api_keys.c.role == filters.role)
        if filters.app_id:
            query = query.where(api_keys.c.app_id == filters.app_id)
        if filters.user_id:
            query = query.where(api_keys.c.user_id == filters.user_id)
        if not filters.include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))

        def _list(conn: Connection) -> Page:
            return paginate(
                conn,
                query,
                route="api-keys",
                sort=api_keys.c.created_at,
                ident=api_keys.c.id,
                page=page,
            )

        return (await self._db.tx(_list)).map(_record)

    async def revoke(self, key_id: str, at: datetime) -> None:
        def _revoke(conn: Connection) -> bool:
            found = conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id)).first()
            if found is None:
                return False
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            return True

        if not await self._db.tx(_revoke):
            raise RecordNotFound(f"API key {key_id} not found")

    async def count_active_admins(self, now: datetime) -> int:
        def _count(conn: Connection) -> int:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(api_keys)
                    .where(
                        api_keys.c.role == "admin",
                        api_keys.c.revoked_at.is_(None),
                        api_keys.c.expires_at.is_(None) | (api_keys.c.expires_at > now),
                    )
                ).scalar_one()
            )

        return await self._db.tx(_count)
