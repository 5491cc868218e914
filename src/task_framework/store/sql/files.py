"""File records over SQLAlchemy Core (the ``files`` table; ``artifacts`` for references)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, exists, func, insert, select, update

from task_framework.store.database import Database
from task_framework.store.files import FileChange, FileFilter, FileRecord, Owner
from task_framework.store.pages import Page, PageRequest
from task_framework.store.paging import paginate
from task_framework.store.sql._dialect import translated
from task_framework.store.tables import artifacts, files

__all__ = ["SqlFileStore"]


def _record(row: Row[Any]) -> FileRecord:
    return FileRecord(
        file_ref=row.file_ref,
        media_type=row.media_type,
        complete=bool(row.complete),
        created_at=row.created_at,
        app_id=row.app_id,
        user_id=row.user_id,
        filename=row.filename,
        size=row.size,
        sha256=row.sha256,
        declared_size=row.declared_size,
    )


def _same(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


def _owned_by(owner: Owner) -> Any:
    return and_(_same(files.c.app_id, owner[0]), _same(files.c.user_id, owner[1]))


def _referenced_by(owner: Owner) -> Any:
    """The file is referenced by an artifact of ``owner`` (artifact readers may read it)."""
    app_id, user_id = owner
    return exists().where(
        artifacts.c.file_ref == files.c.file_ref,
        _same(artifacts.c.app_id, app_id),
        _same(artifacts.c.user_id, user_id),
    )


class SqlFileStore:
    """:class:`~task_framework.store.files.FileStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(
        self, file_ref: str, *, owner: Owner | None = None, write: bool = False
    ) -> FileRecord | None:
        query = select(files).where(files.c.file_ref == file_ref)
        if owner is not None:
            query = query.where(
                _owned_by(owner) if write else _owned_by(owner) | _referenced_by(owner)
            )
        row = await self._db.tx(lambda conn: conn.execute(query).first())
        return None if row is None else _record(row)

    async def add(self, record: FileRecord) -> None:
        with translated(f"File {record.file_ref!r}"):
            await self._db.tx(lambda conn: conn.execute(insert(files).values(**asdict(record))))

    async def complete(self, file_ref: str, change: FileChange) -> None:
        values: dict[str, Any] = {"size": change.size, "sha256": change.sha256, "complete": True}
        if change.media_type is not None:
            values["media_type"] = change.media_type
        if change.filename is not None:
            values["filename"] = change.filename
        await self._db.tx(
            lambda conn: conn.execute(
                update(files).where(files.c.file_ref == file_ref).values(**values)
            )
        )

    async def delete(self, file_ref: str) -> None:
        await self._db.tx(
            lambda conn: conn.execute(delete(files).where(files.c.file_ref == file_ref))
        )

    async def delete_unreferenced(self, file_refs: Sequence[str]) -> list[str]:
        refs = list(file_refs)

        def _unreferenced(conn: Connection) -> list[str]:
            used = set(
                conn.execute(
                    select(artifacts.c.file_ref).where(artifacts.c.file_ref.in_(refs))
                ).scalars()
            )
            gone = [r for r in refs if r not in used]
            if gone:
                conn.execute(delete(files).where(files.c.file_ref.in_(gone)))
            return gone

        return await self._db.tx(_unreferenced)

    async def list(self, filters: FileFilter, page: PageRequest) -> Page:
        conditions: list[Any] = [files.c.complete.is_(True)]
        if not filters.any_app:
            conditions.append(_same(files.c.app_id, filters.app_id))
        if not filters.any_user:
            conditions.append(_same(files.c.user_id, filters.user_id))
        if filters.media_type:
            conditions.append(files.c.media_type == filters.media_type)
        query = select(files).where(*conditions)

        def _list(conn: Connection) -> Page:
            return paginate(
                conn,
                query,
                route="files",
                sort=files.c.created_at,
                ident=files.c.file_ref,
                page=page,
            )

        return (await self._db.tx(_list)).map(_record)

    async def totals(self) -> tuple[int, int]:
        def _totals(conn: Connection) -> tuple[int, int]:
            count, total = conn.execute(
                select(func.count(), func.coalesce(func.sum(files.c.size), 0)).where(
                    files.c.complete.is_(True)
                )
            ).one()
            return int(count), int(total)

        return await self._db.tx(_totals)
