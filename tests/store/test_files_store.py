"""Contract of :class:`task_framework.store.files.FileStore`, over SQLite and PostgreSQL.
Artifacts (which make a file readable to their owner) are not behind a store interface
yet: the tests write them with SQLAlchemy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from task_framework.errors import ValidationFailed
from task_framework.models._time import utcnow
from task_framework.store.database import Database
from task_framework.store.errors import UniqueViolation
from task_framework.store.files import FileChange, FileFilter, FileRecord, FileStore
from task_framework.store.pages import PageRequest
from task_framework.store.sql import SqlFileStore
from task_framework.store.tables import artifacts


@pytest.fixture
def store(store_db: Database) -> FileStore:
    return SqlFileStore(store_db)


def _file(ref: str, **fields: object) -> FileRecord:
    values: dict[str, object] = {
        "file_ref": ref,
        "media_type": "application/octet-stream",
        "complete": True,
        "created_at": utcnow(),
        "app_id": "app1",
        "user_id": "user1",
        "size": 3,
        "sha256": "a" * 64,
        **fields,
    }
    return FileRecord(**values)  # type: ignore[arg-type]


async def _artifact(db: Database, file_ref: str, app_id: str | None, user_id: str | None) -> None:
    await db.tx(
        lambda conn: conn.execute(
            insert(artifacts).values(
                id=f"art_{file_ref}_{app_id}_{user_id}",
                app_id=app_id,
                user_id=user_id,
                kind="file",
                file_ref=file_ref,
                labels={},
                created_at=utcnow(),
            )
        )
    )


async def test_add_and_get(store: FileStore) -> None:
    record = _file("file_a", filename="a.txt", declared_size=3, complete=False)
    await store.add(record)
    assert await store.get("file_a") == record
    assert await store.get("file_b") is None


async def test_a_duplicate_ref_is_a_unique_violation(store: FileStore) -> None:
    first = _file("file_a")
    await store.add(first)
    with pytest.raises(UniqueViolation):
        await store.add(_file("file_a", filename="other"))
    assert await store.get("file_a") == first


async def test_owners_see_their_files_and_artifact_owners_read_them(
    store: FileStore, store_db: Database
) -> None:
    await store.add(_file("file_a"))
    await store.add(_file("file_n", app_id=None, user_id=None))
    assert await store.get("file_a", owner=("app1", "user1"), write=True) is not None
    assert await store.get("file_a", owner=("app1", "user2")) is None
    assert await store.get("file_a", owner=("app1", None)) is None
    assert await store.get("file_n", owner=(None, None), write=True) is not None
    assert await store.get("file_n", owner=("app1", "user1")) is None

    await _artifact(store_db, "file_a", "app1", "user2")
    assert await store.get("file_a", owner=("app1", "user2")) is not None
    assert await store.get("file_a", owner=("app1", "user2"), write=True) is None
    await _artifact(store_db, "file_n", None, "user3")
    assert await store.get("file_n", owner=(None, "user3")) is not None
    assert await store.get("file_n", owner=("app1", "user3")) is None


async def test_complete_writes_the_change_and_keeps_what_it_does_not_name(
    store: FileStore,
) -> None:
    await store.add(
        _file("file_a", complete=False, size=None, sha256=None, filename="a.txt", media_type="x/y")
    )
    await store.complete("file_a", FileChange(size=5, sha256="b" * 64))
    done = await store.get("file_a")
    assert done is not None
    assert (done.complete, done.size, done.sha256, done.filename, done.media_type) == (
        True,
        5,
        "b" * 64,
        "a.txt",
        "x/y",
    )
    await store.complete(
        "file_a", FileChange(size=6, sha256="c" * 64, media_type="text/plain", filename="b")
    )
    again = await store.get("file_a")
    assert again is not None
    assert (again.size, again.media_type, again.filename) == (6, "text/plain", "b")
    await store.complete("file_missing", FileChange(size=1, sha256="d" * 64))
    assert await store.get("file_missing") is None


async def test_delete_and_delete_unreferenced(store: FileStore, store_db: Database) -> None:
    for ref in ("file_a", "file_b", "file_c"):
        await store.add(_file(ref))
    await store.delete("file_a")
    await store.delete("file_a")
    assert await store.get("file_a") is None
    await _artifact(store_db, "file_b", "app1", "user1")
    assert await store.delete_unreferenced(["file_c", "file_b", "file_x"]) == [
        "file_c",
        "file_x",
    ]
    assert await store.get("file_b") is not None
    assert await store.get("file_c") is None
    assert await store.delete_unreferenced([]) == []


async def test_list_shows_complete_files_of_the_filter_newest_first(store: FileStore) -> None:
    now = utcnow()
    await store.add(_file("file_1", created_at=now - timedelta(seconds=3)))
    await store.add(_file("file_2", created_at=now - timedelta(seconds=2), media_type="text/csv"))
    await store.add(_file("file_3", created_at=now - timedelta(seconds=1), complete=False))
    await store.add(_file("file_4", created_at=now, user_id="user2"))
    await store.add(_file("file_5", created_at=now, app_id=None, user_id=None))

    def refs(page: object) -> list[str]:
        return [r.file_ref for r in page.rows]  # type: ignore[attr-defined]

    mine = await store.list(FileFilter("app1", "user1"), PageRequest())
    assert (refs(mine), mine.total, mine.has_more) == (["file_2", "file_1"], 2, False)
    assert all(isinstance(r, FileRecord) for r in mine.rows)
    assert refs(await store.list(FileFilter(None, None), PageRequest())) == ["file_5"]
    every = await store.list(FileFilter(any_app=True, any_user=True), PageRequest())
    assert sorted(refs(every)) == ["file_1", "file_2", "file_4", "file_5"]
    app = await store.list(FileFilter("app1", any_user=True), PageRequest())
    assert refs(app) == ["file_4", "file_2", "file_1"]
    csv = await store.list(FileFilter("app1", "user1", media_type="text/csv"), PageRequest())
    assert refs(csv) == ["file_2"]

    first = await store.list(FileFilter("app1", any_user=True), PageRequest(limit=2))
    assert (refs(first), first.total, first.has_more) == (["file_4", "file_2"], 3, True)
    rest = await store.list(
        FileFilter("app1", any_user=True), PageRequest(limit=2, cursor=first.cursor)
    )
    assert (refs(rest), rest.has_more, rest.cursor) == (["file_1"], False, None)
    with pytest.raises(ValidationFailed):
        await store.list(FileFilter(), PageRequest(cursor="not-a-cursor"))


async def test_totals_count_complete_files(store: FileStore) -> None:
    assert await store.totals() == (0, 0)
    await store.add(_file("file_1", size=10))
    await store.add(_file("file_2", size=5))
    await store.add(_file("file_3", size=7, complete=False))
    assert await store.totals() == (2, 15)
