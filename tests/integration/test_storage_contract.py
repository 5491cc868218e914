"""One contract suite over every FileStorage adapter: local directory and S3 (moto)."""

# ruff: noqa: F811 - pytest fixtures imported from s3_support are parameters by name

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from s3_support import S3Bucket, moto_endpoint, s3_bucket  # noqa: F401
from task_framework.errors import NotFound, PayloadTooLarge, StorageError, ValidationFailed
from task_framework.ids import new_id
from task_framework.services.url_signing import UrlSigner
from task_framework.storage.base import FileStorage
from task_framework.storage.local import LocalStorage
from task_framework.storage.s3 import PART_BYTES, S3Storage
from task_framework.store.database import Database

MiB = 1024 * 1024
SIGNING_KEY = "contract-test-key"


def _data(size: int, seed: int = 1) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _read(
    storage: FileStorage, ref: str, *, offset: int = 0, length: int | None = None
) -> bytes:
    chunks = await storage.get(ref, offset=offset, length=length)
    return b"".join([chunk async for chunk in chunks])


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStorage]:
    db = Database(f"sqlite:///{tmp_path / 'signing.db'}")
    adapter: FileStorage
    if request.param == "local":
        signer = UrlSigner(configured_keys=[SIGNING_KEY])
        adapter = LocalStorage(tmp_path / "files", signer=signer)
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        adapter = S3Storage(
            bucket=bucket.bucket, endpoint_url=bucket.endpoint_url, prefix="tenant-a/"
        )
    yield adapter
    await adapter.close()
    await db.close()


async def test_round_trip_across_blocks(storage: FileStorage) -> None:
    data = _data(2 * PART_BYTES + 12345)
    ref = new_id("file")
    stored = await storage.put(ref, _chunks(data), media_type="application/x-test")
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await storage.size(ref) == len(data)
    assert await storage.exists(ref)
    assert await _read(storage, ref) == data


async def test_empty_file(storage: FileStorage) -> None:
    ref = new_id("file")
    stored = await storage.put(ref, _chunks(b""))
    assert (stored.size, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await _read(storage, ref) == b""


async def test_ranged_reads(storage: FileStorage) -> None:
    data = _data(3 * MiB + 7)
    ref = new_id("file")
    await storage.put(ref, _chunks(data))
    assert await _read(storage, ref, offset=10, length=100) == data[10:110]
    assert await _read(storage, ref, offset=len(data) - 5) == data[-5:]
    assert await _read(storage, ref, offset=MiB, length=2 * MiB) == data[MiB : 3 * MiB]
    assert await _read(storage, ref, offset=4, length=0) == b""


async def test_overwrite_replaces_whole_content(storage: FileStorage) -> None:
    ref = new_id("file")
    await storage.put(ref, _chunks(_data(5 * MiB, seed=1)))
    second = _data(1000, seed=2)
    await storage.put(ref, _chunks(second))
    assert await _read(storage, ref) == second


async def test_over_the_limit_stores_nothing_and_keeps_previous(storage: FileStorage) -> None:
    ref = new_id("file")
    with pytest.raises(PayloadTooLarge):
        await storage.put(ref, _chunks(_data(PART_BYTES + MiB)), max_bytes=PART_BYTES)
    assert not await storage.exists(ref)
    original = _data(1000)
    await storage.put(ref, _chunks(original))
    with pytest.raises(PayloadTooLarge):
        await storage.put(ref, _chunks(_data(3 * PART_BYTES, seed=3)), max_bytes=2 * PART_BYTES)
    assert await _read(storage, ref) == original


async def test_expected_size_is_enforced(storage: FileStorage) -> None:
    ref = new_id("file")
    with pytest.raises(ValidationFailed):
        await storage.put(ref, _chunks(_data(100)), expected_size=101)
    with pytest.raises(PayloadTooLarge):
        await storage.put(ref, _chunks(_data(102)), expected_size=101)
    assert not await storage.exists(ref)
    await storage.put(ref, _chunks(_data(101)), expected_size=101)
    assert await storage.size(ref) == 101


async def test_failing_stream_leaves_nothing(storage: FileStorage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield _data(PART_BYTES + MiB)
        yield _data(PART_BYTES)
        raise ConnectionResetError("client went away")

    ref = new_id("file")
    with pytest.raises(ConnectionResetError):
        await storage.put(ref, broken())
    assert not await storage.exists(ref)


async def test_missing_files(storage: FileStorage) -> None:
    ref = new_id("file")
    with pytest.raises(NotFound):
        await storage.get(ref)
    assert await storage.size(ref) is None
    await storage.delete(ref)  # missing is fine


async def test_delete(storage: FileStorage) -> None:
    ref = new_id("file")
    await storage.put(ref, _chunks(b"x"))
    await storage.delete(ref)
    assert not await storage.exists(ref)


@pytest.mark.parametrize("ref", ["../../etc/passwd", "file_short", "file_" + "a" * 200, "x" * 20])
async def test_malformed_refs_are_refused_before_io(storage: FileStorage, ref: str) -> None:
    with pytest.raises(ValidationFailed):
        await storage.get(ref)
    with pytest.raises(ValidationFailed):
        await storage.put(ref, _chunks(b"x"))
    with pytest.raises(ValidationFailed):
        await storage.delete(ref)


async def test_health(storage: FileStorage) -> None:
    await storage.health()


async def test_presigned_urls(storage: FileStorage) -> None:
    ref = new_id("file")
    data = _data(2048)
    url = await storage.presign("PUT", ref, expires_in=60, media_type="text/plain")
    assert url.expires_at > 0
    if isinstance(storage, S3Storage):
        assert url.headers == {"Content-Type": "text/plain"}
        async with httpx.AsyncClient() as client:
            put = await client.put(url.url, content=data, headers=url.headers)
            assert put.status_code == 200, put.text
            get_url = await storage.presign("GET", ref, expires_in=60, filename="ü.txt")
            got = await client.get(get_url.url)
        assert got.status_code == 200
        assert got.content == data
        assert "filename*=UTF-8''%C3%BC.txt" in got.headers["content-disposition"]
    else:
        assert url.url.startswith(f"/files/{ref}?expires=")
        assert "&signature=" in url.url
        assert "&kid=" in url.url


async def test_s3_errors_become_storage_errors(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(bucket="no-such-bucket-here", endpoint_url=s3_bucket.endpoint_url)
    with pytest.raises(StorageError, match="Storage backend error"):
        await storage.health()
    with pytest.raises(StorageError) as caught:
        await storage.put(new_id("file"), _chunks(b"abc"))
    assert caught.value.__cause__ is not None


async def test_s3_keys_and_aborted_uploads(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(
        bucket=s3_bucket.bucket, endpoint_url=s3_bucket.endpoint_url, prefix="/pre/"
    )
    ref = new_id("file")
    await storage.put(ref, _chunks(b"abc"))
    with pytest.raises(PayloadTooLarge):
        await storage.put(new_id("file"), _chunks(_data(3 * PART_BYTES)), max_bytes=PART_BYTES * 2)
    assert s3_bucket.keys() == [f"pre/files/{ref}"]
    assert s3_bucket.pending_multipart_uploads() == 0


async def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'signing.db'}")
    storage = LocalStorage(tmp_path / "files", signer=UrlSigner(configured_keys=["k"]))
    ref = new_id("file")
    await storage.put(ref, _chunks(b"abc"))
    with pytest.raises(PayloadTooLarge):
        await storage.put(new_id("file"), _chunks(_data(MiB)), max_bytes=1000)
    assert os.listdir(tmp_path / "files") == [ref]
    await db.close()
