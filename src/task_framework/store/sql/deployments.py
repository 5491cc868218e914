"""Task packages, versions and the deploy history over SQLAlchemy Core
(``task_packages``, ``task_versions``, ``task_deployments``; ``threads`` for what runs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from task_framework.store.database import Database
from task_framework.store.deployments import DeploymentRecord, VersionChanged, VersionRecord
from task_framework.store.sql._dialect import translated
from task_framework.store.tables import task_deployments, task_packages, task_versions, threads

__all__ = ["SqlDeploymentStore"]


def _version(row: Row[Any]) -> VersionRecord:
    return VersionRecord(
        task_id=row.task_id,
        version=row.version,
        zip_hash=row.zip_hash,
        deployed_at=row.deployed_at,
        source=row.source,
        metadata=row.metadata,
    )


def _history(row: Row[Any]) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        task_id=row.task_id,
        version=row.version,
        status=row.status,
        deployed_at=row.deployed_at,
        zip_hash=row.zip_hash,
        zip_path=row.zip_path,
        error=row.error,
    )


def _version_row(conn: Connection, task_id: str, version: str) -> Row[Any] | None:
    return conn.execute(
        select(task_versions).where(
            task_versions.c.task_id == task_id, task_versions.c.version == version
        )
    ).first()


def _record(conn: Connection, history: DeploymentRecord) -> None:
    conn.execute(
        insert(task_deployments).values(
            id=history.id,
            task_id=history.task_id,
            version=history.version,
            zip_hash=history.zip_hash,
            zip_path=history.zip_path,
            status=history.status,
            error=history.error,
            deployed_at=history.deployed_at,
        )
    )


def _drop_unused_packages(conn: Connection, hashes: list[str]) -> None:
    for zip_hash in set(hashes):
        users = conn.execute(
            select(func.count())
            .select_from(task_versions)
            .where(task_versions.c.zip_hash == zip_hash)
        ).scalar_one()
        if not users:
            conn.execute(delete(task_packages).where(task_packages.c.zip_hash == zip_hash))


class SqlDeploymentStore:
    """:class:`~task_framework.store.deployments.DeploymentStore` on a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def version(self, task_id: str, version: str) -> VersionRecord | None:
        row = await self._db.tx(_version_row, task_id, version)
        return None if row is None else _version(row)

    async def versions(self, task_id: str | None = None) -> list[VersionRecord]:
        query = select(task_versions)
        if task_id is not None:
            query = query.where(task_versions.c.task_id == task_id)
        rows = await self._db.tx(lambda conn: list(conn.execute(query)))
        return [_version(row) for row in rows]

    async def package(self, zip_hash: str) -> bytes | None:
        data = await self._db.tx(
            lambda conn: conn.execute(
                select(task_packages.c.data).where(task_packages.c.zip_hash == zip_hash)
            ).scalar_one_or_none()
        )
        return None if data is None else bytes(data)

    async def publish(
        self,
        version: VersionRecord,
        data: bytes,
        history: DeploymentRecord,
        *,
        expected: str | None,
        at: datetime,
    ) -> None:
        def _publish(conn: Connection) -> None:
            row = _version_row(conn, version.task_id, version.version)
            current = None if row is None else str(row.zip_hash)
            if current != expected:
                raise VersionChanged(
                    f"Task {version.task_id}:{version.version} changed concurrently"
                )
            stored = conn.execute(
                select(task_packages.c.zip_hash).where(task_packages.c.zip_hash == version.zip_hash)
            ).first()
            if stored is None:
                conn.execute(
                    insert(task_packages).values(
                        zip_hash=version.zip_hash, data=data, size=len(data), created_at=at
                    )
                )
            values = {
                "zip_hash": version.zip_hash,
                "metadata": version.metadata,
                "source": version.source,
                "deployed_at": version.deployed_at,
            }
            if current is None:
                conn.execute(
                    insert(task_versions).values(
                        task_id=version.task_id, version=version.version, **values
                    )
                )
            else:
                conn.execute(
                    update(task_versions)
                    .where(
                        task_versions.c.task_id == version.task_id,
                        task_versions.c.version == version.version,
                    )
                    .values(**values)
                )
                _drop_unused_packages(conn, [current])
            _record(conn, history)

        with translated(f"Task {version.task_id}:{version.version}"):
            await self._db.tx(_publish)

    async def record(self, history: DeploymentRecord) -> None:
        with translated(f"Deployment {history.id!r}"):
            await self._db.tx(_record, history)

    async def history(self) -> list[DeploymentRecord]:
        rows = await self._db.tx(
            lambda conn: list(
                conn.execute(
                    select(task_deployments).order_by(
                        task_deployments.c.deployed_at.desc(), task_deployments.c.id.desc()
                    )
                )
            )
        )
        return [_history(row) for row in rows]

    async def delete_versions(self, task_id: str, versions: Sequence[str]) -> None:
        names = list(versions)

        def _delete(conn: Connection) -> None:
            hashes = list(
                conn.execute(
                    select(task_versions.c.zip_hash).where(
                        task_versions.c.task_id == task_id, task_versions.c.version.in_(names)
                    )
                ).scalars()
            )
            conn.execute(
                delete(task_versions).where(
                    task_versions.c.task_id == task_id, task_versions.c.version.in_(names)
                )
            )
            _drop_unused_packages(conn, hashes)

        await self._db.tx(_delete)

    async def running_threads(self, task_id: str, versions: Sequence[str]) -> list[str]:
        names = list(versions)
        return await self._db.tx(
            lambda conn: list(
                conn.execute(
                    select(threads.c.id).where(
                        threads.c.task_id == task_id,
                        threads.c.task_version.in_(names),
                        threads.c.state == "running",
                    )
                ).scalars()
            )
        )

    async def running_versions(self, versions: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        ids = sorted({task_id for task_id, _ in versions})

        def _running(conn: Connection) -> set[tuple[str, str]]:
            rows = conn.execute(
                select(threads.c.task_id, threads.c.task_version)
                .where(threads.c.task_id.in_(ids), threads.c.state == "running")
                .distinct()
            )
            return {(r.task_id, r.task_version) for r in rows}

        return await self._db.tx(_running)
