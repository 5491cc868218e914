"""FileService over the SQLite file-records store and local storage: who sees which
file, two-step uploads, listing and retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from task_framework.errors import NotFound, PayloadTooLarge, ValidationFailed
from task_framework.observability.metrics import Metrics
from task_framework.services.auth import Principal
from task_framework.services.files import FileService, SignedGrant
from task_framework.services.url_signing import UrlSigner
from task_framework.storage.local import LocalStorage
from task_framework.store.database import Database
from task_framework.store.files import FileRecord
from task_framework.store.pages import PageRequest
from task_framework.store.sql import SqlFileStore

ALICE = Principal(is_admin=False, app_id="app1", user_id="alice")
BOB = Principal(is_admin=False, app_id="app1", user_id="bob")
ADMIN = Principal(is_admin=True)


@pytest.fixture
def records(sqlite_db: Database) -> SqlFileStore:
    return SqlFileStore(sqlite_db)


@pytest.fixture
def service(sqlite_db: Database, records: SqlFileStore, tmp_path: Path) -> FileService:
    signer = UrlSigner(configured_keys=["k" * 32])
    root = tmp_path / "files"
    root.mkdir()
    return FileService(
        records, LocalStorage(root, signer=signer), signer, Metrics(), max_upload_bytes=100
    )


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(chunks: AsyncIterator[bytes] | None) -> bytes:
    assert chunks is not None
    return b"".join([chunk async for chunk in chunks])


async def test_an_upload_is_recorded_complete_and_readable_by_its_owner_only(
    service: FileService, records: SqlFileStore
) -> None:
    shown = await service.store_stream(
        _chunks(b"hel", b"lo"), owner=("app1", "alice"), filename="a.txt", media_type=None
    )
    ref = shown["file_ref"]
    assert (shown["size"], shown["media_type"], shown["filename"]) == (5, "text/plain", "a.txt")
    stored = await records.get(ref)
    assert stored is not None
    assert stored.complete
    assert stored.sha256 == shown["sha256"]
    download = await service.open(ALICE, ref, range_header="bytes=1-2", body=True)
    assert (download.partial, await _read(download.chunks)) == (True, b"el")
    assert (await service.open(ADMIN, ref, range_header=None, body=False)).size == 5
    with pytest.raises(NotFound):
        await service.open(BOB, ref, range_header=None, body=False)
    with pytest.raises(NotFound):
        await service.open(SignedGrant("file_other"), ref, range_header=None, body=False)


async def test_a_failed_upload_leaves_no_record(
    service: FileService, records: SqlFileStore
) -> None:
    with pytest.raises(PayloadTooLarge):
        await service.store_stream(
            _chunks(b"x" * 101), owner=("app1", "alice"), filename=None, media_type=None
        )
    assert await records.totals() == (0, 0)
    listed = await service.list_files(ADMIN, media_type=None, page=PageRequest())
    assert listed["items"] == []


async def test_a_reserved_ref_is_written_by_its_owner_with_the_declared_type(
    service: FileService, records: SqlFileStore
) -> None:
    reserved = await service.reserve(
        ALICE, filename="d.csv", media_type="text/csv", size=3, expires_in=60, base_url="http://h"
    )
    ref = reserved["file_ref"]
    assert reserved["upload_url"].startswith("http://h/files/")
    pending = await records.get(ref)
    assert pending is not None
    assert not pending.complete
    assert pending.declared_size == 3
    with pytest.raises(NotFound):  # not complete yet: not visible
        await service.open(ALICE, ref, range_header=None, body=False)
    with pytest.raises(NotFound):
        await service.put(BOB, ref, _chunks(b"abc"), content_type=None)
    with pytest.raises(ValidationFailed):
        await service.put(ALICE, ref, _chunks(b"abc"), content_type="text/plain")
    written = await service.put(ALICE, ref, _chunks(b"abc"), content_type="text/csv")
    assert (written["size"], written["filename"], written["media_type"]) == (3, "d.csv", "text/csv")
    assert await records.get(ref) == FileRecord(
        file_ref=ref,
        media_type="text/csv",
        complete=True,
        created_at=pending.created_at,
        app_id="app1",
        user_id="alice",
        filename="d.csv",
        size=3,
        sha256=written["sha256"],
        declared_size=3,
    )


async def test_listing_delete_and_retention(service: FileService, records: SqlFileStore) -> None:
    a = await service.store_stream(
        _chunks(b"a"), owner=("app1", "alice"), filename="a", media_type="text/plain"
    )
    b = await service.store_stream(
        _chunks(b"bb"), owner=("app1", "bob"), filename="b", media_type=None
    )
    mine = await service.list_files(ALICE, media_type=None, page=PageRequest())
    assert [i["file_ref"] for i in mine["items"]] == [a["file_ref"]]
    assert mine["total"] == 1
    every = await service.list_files(ADMIN, media_type=None, page=PageRequest())
    assert {i["file_ref"] for i in every["items"]} == {a["file_ref"], b["file_ref"]}
    plain = await service.list_files(ADMIN, media_type="text/plain", page=PageRequest())
    assert [i["file_ref"] for i in plain["items"]] == [a["file_ref"]]
    assert await service.totals() == (2, 3)

    with pytest.raises(NotFound):
        await service.delete(BOB, a["file_ref"])
    await service.delete(ALICE, a["file_ref"])
    assert await records.get(a["file_ref"]) is None
    await service.delete_refs([b["file_ref"]])
    assert await records.get(b["file_ref"]) is None
    assert await service.totals() == (0, 0)
