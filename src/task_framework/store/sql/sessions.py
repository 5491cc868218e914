"""The web UI's sessions over SQLAlchemy Core (the ``ui_sessions`` table)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from task_framework.store.database import Database
from task_framework.store.sessions import UiSessionRecord
from task_framework.store.sql._dialect import translated
from task_framework.store.tables import ui_sessions

__all__ = ["SqlUiSessionStore"]


def _record(row: Row[Any]) -> UiSessionRecord:
    return UiSessionRecord(**row._asdict())


class SqlUiSessionStore:
    """:class:`~task_framework.store.sessions.UiSessionStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, record: UiSessionRecord, *, prune_before: datetime) -> None:
        def _insert(conn: Connection) -> None:
            conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at < prune_before))
            with translated(f"UI session {record.id[:8]}"):
                conn.execute(insert(ui_sessions).values(**asdict(record)))

        await self._db.tx(_insert)

    async def get(self, session_id: str) -> UiSessionRecord | None:
        row = await self._db.tx(
            lambda conn: conn.execute(
                select(ui_sessions).where(ui_sessions.c.id == session_id)
            ).first()
        )
        return None if row is None else _record(row)

    async def touch(self, session_id: str, at: datetime) -> None:
        await self._db.tx(
            lambda conn: conn.execute(
                update(ui_sessions).where(ui_sessions.c.id == session_id).values(last_seen_at=at)
            )
        )

    async def revoke(self, session_id: str, at: datetime) -> None:
        await self._db.tx(
            lambda conn: conn.execute(
                update(ui_sessions)
                .where(ui_sessions.c.id == session_id, ui_sessions.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        )
