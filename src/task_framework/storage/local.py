"""Local-directory file storage: ``<root>/<file_ref>``, signed URLs served by this app.

Writes go to a temporary file in the same directory and are renamed over the target, so
a reader sees the old or the new bytes, never a partial file. Reads use ``os.pread`` on a
worker thread with one block read ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from task_framework.errors import StorageError
from task_framework.storage.base import (
    READ_CHUNK_BYTES,
    Method,
    PresignedUrl,
    StoredObject,
    check_file_ref,
    missing,
    pump,
)
from task_framework.storage.signing import UrlSigning

MiB = 1024 * 1024
WRITE_BLOCK_BYTES = 4 * MiB
"""Incoming chunks are gathered into blocks of this size before one thread hop."""
TEMP_SUFFIX = ".part"


class _TempFileWriter:
    def __init__(self, target: Path) -> None:
        self._target = target
        self._temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, block: list[bytes]) -> None:
        try:
            written = os.writev(self._fd, block)
            expected = sum(len(chunk) for chunk in block)
            if written < expected:  # a short writev: finish the rest piece by piece
                rest = memoryview(b"".join(block))[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        except OSError as exc:  # only the disk's errors; the source stream's pass through
            raise StorageError(f"Storage backend error: {exc}") from exc

    def commit(self) -> None:
        try:
            os.close(self._fd)
            self._fd = -1
            os.replace(self._temp, self._target)
        except OSError as exc:
            raise StorageError(f"Storage backend error: {exc}") from exc

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            self._temp.unlink()


class _FileChunks:
    """An async iterator over part of an open file; owns (and always closes) the fd."""

    def __init__(self, fd: int, offset: int, length: int | None) -> None:
        self._fd = fd
        self._position = offset
        self._remaining = length
        self._pending: asyncio.Future[bytes] | None = None

    def __aiter__(self) -> _FileChunks:
        return self

    def __del__(self) -> None:
        # Abandoned without aclose (e.g. a client disconnect): close once no read is running.
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if self._pending is None or self._pending.done():
            os.close(fd)
        else:
            self._pending.add_done_callback(lambda _: os.close(fd))

    def _start_read(self) -> None:
        remaining = self._remaining
        if self._fd < 0 or (remaining is not None and remaining <= 0):
            return
        size = READ_CHUNK_BYTES if remaining is None else min(READ_CHUNK_BYTES, remaining)
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, os.pread, self._fd, size, self._position)

    async def __anext__(self) -> bytes:
        if self._pending is None:
            self._start_read()
        pending, self._pending = self._pending, None
        block = b"" if pending is None else await pending
        if not block:
            await self.aclose()
            raise StopAsyncIteration
        self._position += len(block)
        if self._remaining is not None:
            self._remaining -= len(block)
        self._start_read()  # read ahead while the consumer sends this block
        return block

    async def aclose(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.wait([pending])
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalStorage:
    """Files in one directory; pre-signed URLs are HMAC-signed links to ``/files/<ref>``."""

    kind = "local"

    def __init__(self, root: Path, *, signer: UrlSigning) -> None:
        self.root = root
        self._signer = signer

    def _path(self, file_ref: str) -> Path:
        return self.root / check_file_ref(file_ref)

    async def put(
        self,
        file_ref: str,
        chunks: AsyncIterator[bytes],
        *,
        media_type: str | None = None,
        max_bytes: int | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        target = self._path(file_ref)
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            writer = await asyncio.to_thread(_TempFileWriter, target)
        except OSError as exc:
            raise StorageError(f"Storage backend error: {exc}") from exc
        return await pump(
            chunks,
            writer,
            block_bytes=WRITE_BLOCK_BYTES,
            max_bytes=max_bytes,
            expected_size=expected_size,
        )

    async def get(
        self, file_ref: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(file_ref)
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise missing(file_ref) from exc
        except OSError as exc:
            raise StorageError(f"Storage backend error: {exc}") from exc
        return _FileChunks(fd, offset, length)

    async def size(self, file_ref: str) -> int | None:
        path = self._path(file_ref)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"Storage backend error: {exc}") from exc

    async def exists(self, file_ref: str) -> bool:
        return await self.size(file_ref) is not None

    async def delete(self, file_ref: str) -> None:
        path = self._path(file_ref)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"Storage backend error: {exc}") from exc

    async def presign(
        self,
        method: Method,
        file_ref: str,
        *,
        expires_in: int,
        media_type: str | None = None,
        filename: str | None = None,
    ) -> PresignedUrl:
        check_file_ref(file_ref)
        params = await self._signer.sign(method, file_ref, expires_in=expires_in)
        return PresignedUrl(f"/files/{file_ref}?{params.query()}", params.expires)

    async def health(self) -> None:
        def _check() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StorageError(f"Storage backend error: {self.root} is not writable")

        try:
            await asyncio.to_thread(_check)
        except OSError as exc:
            raise StorageError(f"Storage backend error: {exc}") from exc

    async def close(self) -> None:
        return None


__all__ = ["LocalStorage"]
