"""Credentials and task configuration over SQLAlchemy Core (``credentials``,
``task_configs``)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from task_framework.store.credentials import (
    CredentialChange,
    CredentialRecord,
    References,
    TaskConfigRecord,
)
from task_framework.store.database import Database
from task_framework.store.errors import RecordNotFound
from task_framework.store.sql._dialect import translated, upsert
from task_framework.store.tables import credentials, task_configs

__all__ = ["SqlVaultStore"]


def _credential(row: Row[Any]) -> CredentialRecord:
    return CredentialRecord(
        name=row.name,
        value=row.value,
        description=row.description,
        tags=tuple(row.tags or ()),
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )


def _config(row: Row[Any]) -> TaskConfigRecord:
    return TaskConfigRecord(
        task_id=row.task_id,
        version=row.version,
        config_values=row.config_values,
        updated_at=row.updated_at,
    )


def _credential_in(conn: Connection, name: str) -> CredentialRecord:
    row = conn.execute(select(credentials).where(credentials.c.name == name)).first()
    if row is None:
        raise RecordNotFound(f"Credential {name!r} not found")
    return _credential(row)


def _credentials_named(conn: Connection, names: Collection[str]) -> dict[str, CredentialRecord]:
    if not names:
        return {}
    rows = conn.execute(select(credentials).where(credentials.c.name.in_(list(names)))).all()
    return {row.name: _credential(row) for row in rows}


def _config_where(task_id: str, version: str) -> tuple[Any, Any]:
    return (task_configs.c.task_id == task_id, task_configs.c.version == version)


class SqlVaultStore:
    """:class:`~task_framework.store.credentials.VaultStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- credentials ------------------------------------------------------------------------

    async def list_credentials(self) -> list[CredentialRecord]:
        rows = await self._db.tx(
            lambda conn: conn.execute(select(credentials).order_by(credentials.c.name)).all()
        )
        return [_credential(row) for row in rows]

    async def get_credential(self, name: str) -> CredentialRecord:
        return await self._db.tx(_credential_in, name)

    async def add_credential(self, record: CredentialRecord) -> CredentialRecord:
        def _add(conn: Connection) -> CredentialRecord:
            conn.execute(
                insert(credentials).values(
                    name=record.name,
                    value=record.value,
                    description=record.description,
                    tags=list(record.tags),
                    created_at=record.created_at,
                    updated_at=record.updated_at,
                    expires_at=record.expires_at,
                )
            )
            return _credential_in(conn, record.name)

        with translated(f"Credential {record.name!r}"):
            return await self._db.tx(_add)

    async def update_credential(
        self, name: str, change: CredentialChange, at: datetime
    ) -> CredentialRecord:
        values: dict[str, Any] = {"updated_at": at}
        if change.value is not None:
            values["value"] = change.value
        if change.description is not None:
            values["description"] = change.description
        if change.tags is not None:
            values["tags"] = list(change.tags)
        if change.expires_at is not None:
            values["expires_at"] = change.expires_at

        def _update(conn: Connection) -> CredentialRecord:
            conn.execute(update(credentials).where(credentials.c.name == name).values(values))
            return _credential_in(conn, name)

        return await self._db.tx(_update)

    async def delete_credential(self, name: str) -> None:
        def _delete(conn: Connection) -> int:
            return conn.execute(delete(credentials).where(credentials.c.name == name)).rowcount

        if not await self._db.tx(_delete):
            raise RecordNotFound(f"Credential {name!r} not found")

    async def credential_and_configs(
        self, name: str
    ) -> tuple[CredentialRecord, list[TaskConfigRecord]]:
        def _read(conn: Connection) -> tuple[CredentialRecord, list[TaskConfigRecord]]:
            found = _credential_in(conn, name)
            rows = conn.execute(
                select(task_configs).order_by(task_configs.c.task_id, task_configs.c.version)
            ).all()
            return found, [_config(row) for row in rows]

        return await self._db.tx(_read)

    # -- task configuration ---------------------------------------------------------------

    async def config(
        self, task_id: str, version: str, *, references: References
    ) -> tuple[TaskConfigRecord | None, dict[str, CredentialRecord]]:
        def _read(conn: Connection) -> tuple[TaskConfigRecord | None, dict[str, CredentialRecord]]:
            row = conn.execute(select(task_configs).where(*_config_where(task_id, version))).first()
            if row is None:
                return None, {}
            record = _config(row)
            return record, _credentials_named(conn, references(record.config_values))

        return await self._db.tx(_read)

    async def put_config(
        self, record: TaskConfigRecord, *, references: Collection[str]
    ) -> dict[str, CredentialRecord]:
        def _put(conn: Connection) -> dict[str, CredentialRecord]:
            found = _credentials_named(conn, references)
            missing = tuple(sorted(set(references) - found.keys()))
            if missing:
                raise RecordNotFound(
                    f"Credentials not found: {', '.join(missing)}", missing=missing
                )
            upsert(
                conn,
                task_configs,
                {
                    "task_id": record.task_id,
                    "version": record.version,
                    "config_values": record.config_values,
                    "updated_at": record.updated_at,
                },
                keys=["task_id", "version"],
            )
            return found

        return await self._db.tx(_put)

    async def delete_config(self, task_id: str, version: str) -> None:
        def _delete(conn: Connection) -> int:
            return conn.execute(
                delete(task_configs).where(*_config_where(task_id, version))
            ).rowcount

        if not await self._db.tx(_delete):
            raise RecordNotFound(f"No configuration for {task_id}:{version}")
