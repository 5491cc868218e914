"""Contract of :class:`task_framework.store.deployments.DeploymentStore`, over SQLite and
PostgreSQL. Threads are not behind a store interface yet: the tests write them with
SQLAlchemy."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from task_framework.models._time import utcnow
from task_framework.store.database import Database
from task_framework.store.deployments import (
    DeploymentRecord,
    DeploymentStore,
    VersionChanged,
    VersionRecord,
)
from task_framework.store.errors import UniqueViolation
from task_framework.store.sql import SqlDeploymentStore
from task_framework.store.tables import threads


@pytest.fixture
def store(store_db: Database) -> DeploymentStore:
    return SqlDeploymentStore(store_db)


def _version(task_id: str, version: str, zip_hash: str, **fields: object) -> VersionRecord:
    values: dict[str, object] = {
        "task_id": task_id,
        "version": version,
        "zip_hash": zip_hash,
        "deployed_at": utcnow(),
        "source": "api",
        "metadata": {"task_id": task_id, "version": version, "entry_point": "main:run"},
        **fields,
    }
    return VersionRecord(**values)  # type: ignore[arg-type]


def _history(
    task_id: str, version: str, *, status: str = "deployed", at: datetime | None = None, n: int = 0
) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"dep_{task_id}_{version}_{status}_{n}",
        task_id=task_id,
        version=version,
        status=status,
        deployed_at=at or utcnow(),
        zip_hash="h",
        zip_path=f"packages/{task_id}/{version}.zip",
        error=None if status == "deployed" else "boom",
    )


async def _publish(
    store: DeploymentStore, record: VersionRecord, data: bytes, *, expected: str | None, n: int = 0
) -> None:
    await store.publish(
        record, data, _history(record.task_id, record.version, n=n), expected=expected, at=utcnow()
    )


async def test_publish_stores_the_package_the_version_and_the_history(
    store: DeploymentStore,
) -> None:
    record = _version("t", "1.0", "h1", source="discovery")
    await _publish(store, record, b"zip-1", expected=None)
    assert await store.version("t", "1.0") == record
    assert await store.version("t", "2.0") is None
    assert await store.package("h1") == b"zip-1"
    assert await store.package("h2") is None
    assert [h.id for h in await store.history()] == ["dep_t_1.0_deployed_0"]


async def test_publish_checks_the_expected_hash(store: DeploymentStore) -> None:
    await _publish(store, _version("t", "1.0", "h1"), b"zip-1", expected=None)
    with pytest.raises(VersionChanged):
        await _publish(store, _version("t", "1.0", "h2"), b"zip-2", expected=None, n=1)
    with pytest.raises(VersionChanged):
        await _publish(store, _version("t", "2.0", "h2"), b"zip-2", expected="h1", n=1)
    assert (await store.version("t", "1.0")).zip_hash == "h1"  # type: ignore[union-attr]
    assert await store.version("t", "2.0") is None
    assert await store.package("h2") is None
    assert len(await store.history()) == 1


async def test_a_replace_drops_the_package_no_version_uses(store: DeploymentStore) -> None:
    await _publish(store, _version("t", "1.0", "h1"), b"zip-1", expected=None)
    await _publish(store, _version("t", "2.0", "h1"), b"zip-1", expected=None, n=1)
    await _publish(store, _version("t", "1.0", "h2"), b"zip-2", expected="h1", n=2)
    assert await store.package("h1") == b"zip-1"  # still used by 2.0
    replaced = _version("t", "2.0", "h3", metadata={"changed": True})
    await _publish(store, replaced, b"zip-3", expected="h1", n=3)
    assert await store.version("t", "2.0") == replaced
    assert await store.package("h1") is None
    assert await store.package("h2") == b"zip-2"


async def test_a_duplicate_history_id_is_a_unique_violation_and_writes_nothing(
    store: DeploymentStore,
) -> None:
    await _publish(store, _version("t", "1.0", "h1"), b"zip-1", expected=None)
    taken = _history("t", "1.0")
    with pytest.raises(UniqueViolation):
        await store.publish(_version("t", "2.0", "h2"), b"zip-2", taken, expected=None, at=utcnow())
    assert await store.version("t", "2.0") is None
    assert await store.package("h2") is None


async def test_versions_and_delete_versions(store: DeploymentStore) -> None:
    await _publish(store, _version("t", "1.0", "h1"), b"zip-1", expected=None)
    await _publish(store, _version("t", "2.0", "h1"), b"zip-1", expected=None, n=1)
    await _publish(store, _version("u", "1.0", "h2"), b"zip-2", expected=None, n=2)
    listed = sorted((v.task_id, v.version) for v in await store.versions())
    assert listed == [("t", "1.0"), ("t", "2.0"), ("u", "1.0")]
    assert sorted(v.version for v in await store.versions("t")) == ["1.0", "2.0"]
    assert await store.versions("x") == []

    await store.delete_versions("t", ["1.0", "9.9"])
    assert await store.package("h1") == b"zip-1"
    await store.delete_versions("t", ["2.0"])
    assert await store.versions("t") == []
    assert await store.package("h1") is None
    assert await store.package("h2") == b"zip-2"


async def test_record_and_history_newest_first(store: DeploymentStore) -> None:
    now = utcnow()
    older = _history("t", "1.0", status="failed", at=now - timedelta(seconds=5))
    newer = _history("t", "2.0", status="failed", at=now)
    await store.record(older)
    await store.record(newer)
    assert await store.history() == [newer, older]
    with pytest.raises(UniqueViolation):
        await store.record(older)


async def _thread(db: Database, thread_id: str, task_id: str, version: str, state: str) -> None:
    await db.tx(
        lambda conn: conn.execute(
            insert(threads).values(
                id=thread_id,
                state=state,
                task_id=task_id,
                task_version=version,
                metadata={},
                params={},
                problems=[],
                created_at=utcnow(),
            )
        )
    )


async def test_running_threads_and_versions(store: DeploymentStore, store_db: Database) -> None:
    await _thread(store_db, "thr_1", "t", "1.0", "running")
    await _thread(store_db, "thr_2", "t", "2.0", "running")
    await _thread(store_db, "thr_3", "t", "1.0", "queued")
    await _thread(store_db, "thr_4", "u", "1.0", "running")
    assert await store.running_threads("t", ["1.0"]) == ["thr_1"]
    assert sorted(await store.running_threads("t", ["1.0", "2.0"])) == ["thr_1", "thr_2"]
    assert await store.running_threads("t", ["3.0"]) == []
    assert await store.running_versions([("t", "1.0")]) >= {("t", "1.0")}
    assert ("u", "1.0") not in await store.running_versions([("t", "1.0")])
    assert await store.running_versions([("x", "1.0")]) == set()
