"""The ``FileStorage`` port: file bytes by ``file_ref``, streamed both ways.

Adapters (``local.py``, ``s3.py``) implement :class:`FileStorage`. Metadata (owner, name,
media type) lives in the records store; storage only keeps bytes. Writes go through
:func:`pump`, which coalesces incoming chunks into blocks, hashes and counts them, enforces
the size limits and hands each block to a :class:`BlockWriter` on a worker thread while the
next block is being received, so neither hashing nor disk/network I/O blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import quote

from task_framework.errors import NotFound, PayloadTooLarge, ValidationFailed

MiB = 1024 * 1024
READ_CHUNK_BYTES = 1 * MiB
"""Size of the chunks ``get`` yields."""

FILE_REF_PATTERN = re.compile(r"^file_[A-Za-z0-9]{12,}$")
FILE_REF_MIN_LENGTH = 17
FILE_REF_MAX_LENGTH = 128

Method = Literal["GET", "PUT"]


def check_file_ref(file_ref: str) -> str:
    """Return ``file_ref`` if well formed; ValidationFailed (400) otherwise.

    Every adapter calls this before building a path or key from the ref.
    """
    if (
        not FILE_REF_MIN_LENGTH <= len(file_ref) <= FILE_REF_MAX_LENGTH
        or FILE_REF_PATTERN.fullmatch(file_ref) is None
    ):
        raise ValidationFailed(f"Invalid file reference: {file_ref[:FILE_REF_MAX_LENGTH]!r}")
    return file_ref


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else "_" for ch in filename)
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def missing(file_ref: str) -> NotFound:
    return NotFound(f"File {file_ref} does not exist", code="FILE_NOT_FOUND")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a completed ``put`` wrote."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PresignedUrl:
    """A URL that grants one method on one file until ``expires_at`` (unix seconds).

    Local storage returns a server-relative URL (``/files/...``); the service prefixes it
    with the public base URL. ``headers`` must be sent with the request (S3 PUT).
    """

    url: str
    expires_at: int
    headers: dict[str, str] = field(default_factory=dict)


class FileStorage(Protocol):
    """Bytes of files, addressed by a validated ``file_ref``."""

    kind: str
    """``"local"`` or ``"s3"``."""

    async def put(
        self,
        file_ref: str,
        chunks: AsyncIterator[bytes],
        *,
        media_type: str | None = None,
        max_bytes: int | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        """Store the stream atomically (readers see the old or the new bytes, never a mix).

        Over ``max_bytes`` → PayloadTooLarge; a total different from ``expected_size`` →
        ValidationFailed (fewer) or PayloadTooLarge (more). On any failure nothing of this
        write remains and a previous version of the file is untouched.
        """
        ...

    async def get(
        self, file_ref: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Open the file (NotFound now if absent) and return an iterator of its chunks."""
        ...

    async def size(self, file_ref: str) -> int | None:
        """The stored size in bytes, or None when the file does not exist."""
        ...

    async def exists(self, file_ref: str) -> bool: ...

    async def delete(self, file_ref: str) -> None:
        """Remove the file; a missing file is not an error."""
        ...

    async def presign(
        self,
        method: Method,
        file_ref: str,
        *,
        expires_in: int,
        media_type: str | None = None,
        filename: str | None = None,
    ) -> PresignedUrl:
        """A URL for ``method`` on the file, valid for ``expires_in`` seconds.

        For PUT, ``media_type`` is the type the upload must declare; for GET, the
        ``media_type`` and ``filename`` the download should be served with, where the
        backend serves it directly.
        """
        ...

    async def health(self) -> None:
        """Return when the backend is usable; raise StorageError otherwise."""
        ...

    async def close(self) -> None: ...


class BlockWriter(Protocol):
    """The blocking half of a ``put``; every method runs on a worker thread."""

    def write(self, block: list[bytes]) -> None:
        """Append one block, given as the chunks it was received in (never copied)."""
        ...

    def commit(self) -> None: ...

    def abort(self) -> None:
        """Discard everything written; must not raise."""
        ...


MAX_CHUNKS_PER_BLOCK = 512
"""Below the usual ``IOV_MAX`` (1024), so a block is one ``writev``."""


async def _blocks(chunks: AsyncIterator[bytes], block_bytes: int) -> AsyncIterator[list[bytes]]:
    """Group chunks into blocks of at least ``block_bytes`` without copying them."""
    block: list[bytes] = []
    size = 0
    async for chunk in chunks:
        if not chunk:
            continue
        block.append(chunk)
        size += len(chunk)
        if size >= block_bytes or len(block) >= MAX_CHUNKS_PER_BLOCK:
            yield block
            block, size = [], 0
    if block:
        yield block


async def pump(
    chunks: AsyncIterator[bytes],
    writer: BlockWriter,
    *,
    block_bytes: int,
    max_bytes: int | None,
    expected_size: int | None,
) -> StoredObject:
    """Feed ``chunks`` to ``writer`` block by block, one block in flight; commit or abort."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    total = 0
    pending: asyncio.Future[None] | None = None
    limit = max_bytes
    if expected_size is not None:
        limit = expected_size if limit is None else min(limit, expected_size)

    def _write(block: list[bytes]) -> None:
        for chunk in block:
            digest.update(chunk)  # hashlib releases the GIL for large buffers
        writer.write(block)

    committed = False
    try:
        async for block in _blocks(chunks, block_bytes):
            total += sum(len(chunk) for chunk in block)
            if limit is not None and total > limit:
                raise PayloadTooLarge(
                    f"File exceeds the maximum size of {limit} bytes"
                    if limit == max_bytes
                    else f"File exceeds its declared size of {expected_size} bytes"
                )
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, _write, block)
        if pending is not None:
            await pending
            pending = None
        if expected_size is not None and total != expected_size:
            raise ValidationFailed(
                f"Received {total} bytes but the upload declared {expected_size} bytes"
            )
        await loop.run_in_executor(None, writer.commit)
        committed = True
    finally:
        if not committed:
            if pending is not None:
                # The block in flight must land before its file or upload is discarded.
                await asyncio.shield(asyncio.wait([pending]))
                if not pending.cancelled():
                    pending.exception()  # already reported by the raise above, if any
            await asyncio.shield(loop.run_in_executor(None, writer.abort))
    return StoredObject(size=total, sha256=digest.hexdigest())


__all__ = [
    "FILE_REF_PATTERN",
    "READ_CHUNK_BYTES",
    "BlockWriter",
    "FileStorage",
    "Method",
    "PresignedUrl",
    "StoredObject",
    "check_file_ref",
    "content_disposition",
    "missing",
    "pump",
]
