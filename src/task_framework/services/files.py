"""File use cases (API.md §8): uploads, two-step uploads, downloads, listing, retention.

Metadata lives in the ``files`` table; bytes live in a :class:`FileStorage`. A file is
visible once its row is ``complete``. Readers are the owner, admins, and the owner of
any artifact that references the file; writers and deleters are the owner and admins.
Also implements the ``FileStore`` port that running tasks use (``services/host.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from task_framework.errors import Conflict, PayloadTooLarge, ValidationFailed
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.observability.metrics import Metrics
from task_framework.services.auth import Principal
from task_framework.services.url_signing import UrlSigner
from task_framework.storage.base import FileStorage, check_file_ref, missing
from task_framework.store.files import FileChange, FileFilter, FileRecord, FileStore, Owner
from task_framework.store.pages import PageRequest

log = logging.getLogger("task_framework.files")

DEFAULT_MEDIA_TYPE = "application/octet-stream"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_DOWNLOAD_URL_SECONDS = 15 * 60

Describe = Callable[[], tuple[str | None, str | None]]
"""Called once the stream is exhausted: the final ``(filename, media_type)``."""


@dataclass(frozen=True, slots=True)
class SignedGrant:
    """Access granted by a verified pre-signed URL to one file."""

    file_ref: str


Access = Principal | SignedGrant


@dataclass(slots=True)
class Download:
    """What a GET/HEAD answers: the file, the byte range and (GET only) the chunks."""

    info: dict[str, Any]
    size: int
    start: int
    length: int
    partial: bool
    chunks: AsyncIterator[bytes] | None = None


def bare_media_type(value: str | None) -> str | None:
    """``text/plain; charset=utf-8`` → ``text/plain``; None for blank values."""
    if not value:
        return None
    bare = value.split(";", 1)[0].strip().lower()
    return bare or None


def resolve_media_type(media_type: str | None, filename: str | None) -> str:
    bare = bare_media_type(media_type)
    if bare:
        return bare
    if filename:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed:
            return guessed
    return DEFAULT_MEDIA_TYPE


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # int() refuses "²", which isdigit() accepts


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as ``(start, length)``; None for the whole file.

    Multi-range and malformed headers are ignored (whole file, RFC 9110); a syntactically
    valid range outside the file → 416 RANGE_NOT_SATISFIABLE.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not (_digits(first) or first == "") or not (_digits(last) or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        start = max(0, size - suffix)
        return start, size - start
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, end - start + 1


def _unsatisfiable(size: int) -> Conflict:
    return Conflict(
        f"Requested range not satisfiable (file size {size} bytes)",
        code="RANGE_NOT_SATISFIABLE",
        status=416,
    )


def upload_response(record: FileRecord) -> dict[str, Any]:
    return {
        "file_ref": record.file_ref,
        "size": record.size,
        "media_type": record.media_type,
        "sha256": record.sha256,
        "filename": record.filename,
        "created_at": format_ts(record.created_at),
    }


def file_info(record: FileRecord) -> dict[str, Any]:
    return {
        "file_ref": record.file_ref,
        "filename": record.filename,
        "media_type": record.media_type,
        "size": record.size,
        "sha256": record.sha256,
        "created_at": format_ts(record.created_at),
        "app_id": record.app_id,
        "user_id": record.user_id,
    }


class FileService:
    """Every file use case; the single writer of file records."""

    def __init__(
        self,
        records: FileStore,
        storage: FileStorage,
        signer: UrlSigner,
        metrics: Metrics,
        *,
        max_upload_bytes: int,
        public_base_url: str | None = None,
        s3_default_expiry_seconds: int = 3600,
    ) -> None:
        self.records = records
        self.storage = storage
        self.signer = signer
        self.metrics = metrics
        self.max_upload_bytes = max_upload_bytes
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._s3_default_expiry = s3_default_expiry_seconds
        self._put_locks: dict[str, asyncio.Lock] = {}

    # -- reading rows ----------------------------------------------------------------------
    async def _row(self, file_ref: str, access: Access | Owner, write: bool) -> FileRecord:
        """The file record if ``access`` may read (or write) it; NotFound otherwise."""
        owner: Owner | None
        if isinstance(access, SignedGrant):
            if access.file_ref != file_ref:
                raise missing(file_ref)
            owner = None
        elif isinstance(access, Principal):
            owner = None if access.is_admin else (access.app_id, access.user_id)
        else:
            owner = access
        row = await self.records.get(file_ref, owner=owner, write=write)
        if row is None:
            raise missing(file_ref)
        return row

    async def _readable(self, access: Access | Owner, file_ref: str) -> FileRecord:
        check_file_ref(file_ref)
        row = await self._row(file_ref, access, False)
        if not row.complete:
            row = await self._adopt_direct_upload(row)
        return row

    async def _adopt_direct_upload(self, row: FileRecord) -> FileRecord:
        """An S3 two-step upload goes straight to S3: record it once the object exists."""
        if self.storage.kind != "s3":
            raise missing(row.file_ref)
        size = await self.storage.size(row.file_ref)
        if size is None or (row.declared_size is not None and size != row.declared_size):
            raise missing(row.file_ref)
        digest = hashlib.sha256()
        chunks = await self.storage.get(row.file_ref)
        async for chunk in chunks:
            await asyncio.to_thread(digest.update, chunk)

        sha256 = digest.hexdigest()
        await self.records.complete(row.file_ref, FileChange(size=size, sha256=sha256))
        return replace(row, complete=True, size=size, sha256=sha256)

    # -- uploads ---------------------------------------------------------------------------
    async def store_stream(
        self,
        chunks: AsyncIterator[bytes],
        *,
        owner: Owner,
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]:
        """Store a new file owned by ``owner`` (task uploads); FileUploadResponse dict."""
        return await self.upload(chunks, owner=owner, describe=lambda: (filename, media_type))

    async def upload(
        self, chunks: AsyncIterator[bytes], *, owner: Owner, describe: Describe
    ) -> dict[str, Any]:
        """Stream a new file to storage while hashing; nothing remains if it fails."""
        started = time.perf_counter()
        file_ref = new_id("file")
        reservation = FileRecord(
            file_ref=file_ref,
            media_type=DEFAULT_MEDIA_TYPE,
            complete=False,
            created_at=utcnow(),
            app_id=owner[0],
            user_id=owner[1],
        )
        await self.records.add(reservation)
        try:
            stored = await self.storage.put(file_ref, chunks, max_bytes=self.max_upload_bytes)
            filename, media_type = describe()
            change = FileChange(
                size=stored.size,
                sha256=stored.sha256,
                media_type=resolve_media_type(media_type, filename),
                filename=filename,
            )
            await self.records.complete(file_ref, change)
        except BaseException:
            await asyncio.shield(self._discard(file_ref))
            raise
        self.metrics.record_file_upload(time.perf_counter() - started, stored.size)
        return upload_response(_completed(reservation, change))

    async def _discard(self, file_ref: str) -> None:
        with contextlib.suppress(Exception):
            await self.storage.delete(file_ref)
        with contextlib.suppress(Exception):
            await self.records.delete(file_ref)

    async def reserve(
        self,
        principal: Principal,
        *,
        filename: str | None,
        media_type: str,
        size: int,
        expires_in: int,
        base_url: str,
    ) -> dict[str, Any]:
        """``POST /uploads``: reserve a ref and return a pre-signed PUT URL."""
        if size > self.max_upload_bytes:
            raise PayloadTooLarge(
                f"File size {size} exceeds the maximum upload size of {self.max_upload_bytes} bytes"
            )
        if expires_in == 0:
            expires_in = (
                self._s3_default_expiry if self.storage.kind == "s3" else MAX_PRESIGN_SECONDS
            )
        file_ref = new_id("file")
        media = bare_media_type(media_type) or DEFAULT_MEDIA_TYPE
        row = FileRecord(
            file_ref=file_ref,
            media_type=media,
            complete=False,
            created_at=utcnow(),
            app_id=principal.app_id,
            user_id=principal.user_id,
            filename=filename,
            declared_size=size,
        )
        signed = await self.storage.presign(
            "PUT", file_ref, expires_in=expires_in, media_type=media
        )
        await self.records.add(row)
        return {
            "file_ref": file_ref,
            "upload_url": self._absolute(signed.url, base_url),
            "expires_at": format_ts(_from_unix(signed.expires_at)),
            "method": "PUT",
            "headers": signed.headers or {"Content-Type": media},
        }

    async def put(
        self,
        access: Access,
        file_ref: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str | None,
    ) -> dict[str, Any]:
        """``PUT /files/{ref}``: (re)write an issued ref; the last write wins."""
        check_file_ref(file_ref)
        started = time.perf_counter()
        row = await self._row(file_ref, access, True)
        sent = bare_media_type(content_type)
        media_type = row.media_type
        if row.declared_size is not None:
            if sent is not None and sent != row.media_type.lower():
                raise ValidationFailed(
                    f"Content-Type '{sent}' does not match the declared media type "
                    f"'{row.media_type}'"
                )
        elif sent is not None:
            media_type = sent
        # One writer per ref in this process, so the row always describes the stored bytes.
        lock = self._put_locks.setdefault(file_ref, asyncio.Lock())
        try:
            async with lock:
                stored = await self.storage.put(
                    file_ref,
                    chunks,
                    media_type=media_type,
                    max_bytes=self.max_upload_bytes,
                    expected_size=row.declared_size,
                )
                change = FileChange(size=stored.size, sha256=stored.sha256, media_type=media_type)
                await self.records.complete(file_ref, change)
        finally:
            if not lock.locked():
                self._put_locks.pop(file_ref, None)
        self.metrics.record_file_upload(time.perf_counter() - started, int(change.size or 0))
        return upload_response(_completed(row, change))

    # -- downloads -------------------------------------------------------------------------
    async def verify_signature(
        self, method: str, file_ref: str, *, expires: str | None, signature: str, kid: str | None
    ) -> SignedGrant:
        check_file_ref(file_ref)
        await self.signer.verify(method, file_ref, expires=expires, signature=signature, kid=kid)
        return SignedGrant(file_ref)

    async def open(
        self, access: Access, file_ref: str, *, range_header: str | None, body: bool
    ) -> Download:
        """Check access, resolve the range and (for GET) open the byte stream."""
        row = await self._readable(access, file_ref)
        size = await self.storage.size(file_ref)
        if size is None:
            raise missing(file_ref)
        selected = parse_range(range_header, size)
        start, length = selected if selected is not None else (0, size)
        download = Download(file_info(row), size, start, length, selected is not None)
        if body:
            chunks = await self.storage.get(file_ref, offset=start, length=length)
            download.chunks = self._timed(chunks)
        return download

    async def _timed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        sent = 0
        async for chunk in chunks:
            sent += len(chunk)
            yield chunk
        self.metrics.record_file_download(time.perf_counter() - started, sent)

    async def open_owned(self, file_ref: str, *, owner: Owner) -> AsyncIterator[bytes]:
        """Chunks of a file the thread's owner may read (task downloads)."""
        row = await self._readable(owner, file_ref)
        chunks = await self.storage.get(row.file_ref)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    async def download_url(
        self, file_ref: str, *, expires_in: int, base_url: str | None
    ) -> dict[str, Any]:
        """A pre-signed GET URL for an existing file (artifact downloads, webhooks)."""
        row = await self.records.get(file_ref)
        if row is None or (not row.complete and self.storage.kind != "s3"):
            raise missing(file_ref)
        if not row.complete:
            row = await self._adopt_direct_upload(row)
        if not await self.storage.exists(file_ref):
            raise missing(file_ref)
        signed = await self.storage.presign(
            "GET",
            file_ref,
            expires_in=expires_in,
            media_type=row.media_type,
            filename=row.filename,
        )
        return {
            "download_url": self._absolute(signed.url, base_url or ""),
            "expires_at": format_ts(_from_unix(signed.expires_at)),
            "expires_in": expires_in,
        }

    def _absolute(self, url: str, base_url: str) -> str:
        if not url.startswith("/"):
            return url
        return (self.public_base_url or base_url.rstrip("/")) + url

    # -- listing and deletion --------------------------------------------------------------
    async def list_files(
        self, principal: Principal, *, media_type: str | None, page: PageRequest
    ) -> dict[str, Any]:
        filters = FileFilter(
            app_id=principal.app_id,
            user_id=principal.user_id,
            any_app=principal.is_admin and principal.app_id is None,
            any_user=principal.is_admin and principal.user_id is None,
            media_type=media_type or None,
        )
        result = await self.records.list(filters, page)
        envelope = result.envelope([file_info(r) for r in result.rows])
        envelope["total"] = result.total
        return envelope

    async def delete(self, principal: Principal, file_ref: str) -> None:
        """``DELETE /files/{ref}``: bytes first, so a storage failure changes nothing."""
        check_file_ref(file_ref)
        await self._row(file_ref, principal, True)
        await self.storage.delete(file_ref)
        await self.records.delete(file_ref)

    async def delete_refs(self, refs: list[str]) -> None:
        """Retention: delete files that no artifact references (any more)."""
        for file_ref in await self.records.delete_unreferenced(refs):
            try:
                await self.storage.delete(file_ref)
            except Exception:
                log.warning("files.delete_failed", extra={"file_ref": file_ref}, exc_info=True)

    async def totals(self) -> tuple[int, int]:
        """Cluster-wide ``(count, bytes)`` of complete files (metrics gauges)."""
        return await self.records.totals()

    async def health(self) -> None:
        await self.storage.health()

    async def close(self) -> None:
        await self.storage.close()


def _completed(record: FileRecord, change: FileChange) -> FileRecord:
    """``record`` as :meth:`FileStore.complete` leaves it after ``change``."""
    return replace(
        record,
        complete=True,
        size=change.size,
        sha256=change.sha256,
        media_type=change.media_type or record.media_type,
        filename=change.filename if change.filename is not None else record.filename,
    )


def _from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


__all__ = [
    "Access",
    "Download",
    "FileService",
    "SignedGrant",
    "bare_media_type",
    "parse_range",
    "resolve_media_type",
]
