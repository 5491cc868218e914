"""S3 file storage (any S3-compatible endpoint): ``[<prefix>/]files/<ref>``.

boto3 is blocking, so every call runs on a worker thread. Streams larger than one part
are written with a multipart upload (parts of ``PART_BYTES``), which S3 makes visible
atomically on completion; a failed or oversized upload is aborted and leaves nothing.
botocore errors become ``StorageError`` (503) here, keeping the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from task_framework.errors import StorageError
from task_framework.storage.base import (
    READ_CHUNK_BYTES,
    Method,
    PresignedUrl,
    StoredObject,
    check_file_ref,
    content_disposition,
    missing,
    pump,
)

MiB = 1024 * 1024
PART_BYTES = 8 * MiB
"""Multipart part size (S3 needs at least 5 MiB for all parts but the last)."""
MAX_POOL_CONNECTIONS = 16
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

_BOTO_ERRORS = (BotoCoreError, ClientError)


def _storage_error(exc: Exception) -> StorageError:
    return StorageError(f"Storage backend error: {exc}")


def _is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES


class _MultipartWriter:
    """Holds back one block so that the last part (which may be small) is known."""

    def __init__(self, client: Any, bucket: str, key: str, media_type: str | None) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._media_type = media_type or "application/octet-stream"
        self._held: bytes | None = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _upload_part(self, data: bytes) -> None:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._media_type
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        answer = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            PartNumber=number,
            UploadId=self._upload_id,
            Body=data,
        )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def write(self, block: list[bytes]) -> None:
        if self._held is not None:
            try:
                self._upload_part(self._held)
            except _BOTO_ERRORS as exc:
                raise _storage_error(exc) from exc
        self._held = b"".join(block)

    def commit(self) -> None:
        try:
            self._commit()
        except _BOTO_ERRORS as exc:
            raise _storage_error(exc) from exc

    def _commit(self) -> None:
        held, self._held = self._held, None
        if self._upload_id is None:
            self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=held or b"", ContentType=self._media_type
            )
            return
        if held:
            self._upload_part(held)
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None

    def abort(self) -> None:
        self._held = None
        if self._upload_id is not None:
            with contextlib.suppress(*_BOTO_ERRORS):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )
            self._upload_id = None


class _BodyChunks:
    """Chunks of an S3 response body, read on a worker thread with one read ahead."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None]) -> None:
        self._read = read
        self._close = close
        self._pending: asyncio.Future[bytes] | None = None
        self._closed = False

    def __aiter__(self) -> _BodyChunks:
        return self

    def _start_read(self) -> None:
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, self._read, READ_CHUNK_BYTES)

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        if self._pending is None:
            self._start_read()
        assert self._pending is not None
        pending, self._pending = self._pending, None
        try:
            block = await pending
        except _BOTO_ERRORS as exc:
            await self.aclose()
            raise _storage_error(exc) from exc
        if not block:
            await self.aclose()
            raise StopAsyncIteration
        self._start_read()
        return block

    async def aclose(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.wait([pending])
        if not self._closed:
            self._closed = True
            self._close()


class S3Storage:
    """Files as objects in one bucket; native S3 pre-signed URLs."""

    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        prefix: str = "",
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client or boto3.session.Session().client(
            "s3",
            region_name=region or None,
            endpoint_url=endpoint_url or None,
            config=Config(
                signature_version="s3v4",
                # Path style works with every S3-compatible endpoint (MinIO, moto, ...).
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                max_pool_connections=MAX_POOL_CONNECTIONS,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def key(self, file_ref: str) -> str:
        name = f"files/{check_file_ref(file_ref)}"
        return f"{self.prefix}/{name}" if self.prefix else name

    async def _call(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except _BOTO_ERRORS as exc:
            raise _storage_error(exc) from exc

    async def put(
        self,
        file_ref: str,
        chunks: AsyncIterator[bytes],
        *,
        media_type: str | None = None,
        max_bytes: int | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        writer = _MultipartWriter(self._client, self.bucket, self.key(file_ref), media_type)
        return await pump(
            chunks,
            writer,
            block_bytes=PART_BYTES,
            max_bytes=max_bytes,
            expected_size=expected_size,
        )

    async def get(
        self, file_ref: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        key = self.key(file_ref)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if length == 0:
            # S3 cannot express an empty range; check existence and stream nothing.
            if await self.size(file_ref) is None:
                raise missing(file_ref)
            return _BodyChunks(lambda _n: b"", lambda: None)
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{last}"
        try:
            answer = await asyncio.to_thread(self._client.get_object, **params)
        except ClientError as exc:
            if _is_missing(exc):
                raise missing(file_ref) from exc
            raise _storage_error(exc) from exc
        except BotoCoreError as exc:
            raise _storage_error(exc) from exc
        body = answer["Body"]
        return _BodyChunks(body.read, body.close)

    async def size(self, file_ref: str) -> int | None:
        key = self.key(file_ref)
        try:
            answer = await asyncio.to_thread(self._client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise _storage_error(exc) from exc
        except BotoCoreError as exc:
            raise _storage_error(exc) from exc
        return int(answer["ContentLength"])

    async def exists(self, file_ref: str) -> bool:
        return await self.size(file_ref) is not None

    async def delete(self, file_ref: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self.key(file_ref))

    async def presign(
        self,
        method: Method,
        file_ref: str,
        *,
        expires_in: int,
        media_type: str | None = None,
        filename: str | None = None,
    ) -> PresignedUrl:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(file_ref)}
        headers: dict[str, str] = {}
        operation = "get_object"
        if method == "PUT":
            operation = "put_object"
            if media_type:
                params["ContentType"] = media_type
                headers["Content-Type"] = media_type
        else:
            if media_type:
                params["ResponseContentType"] = media_type
            params["ResponseContentDisposition"] = content_disposition(filename or file_ref)
        expires_at = int(time.time()) + expires_in
        url = await self._call(
            self._client.generate_presigned_url,
            ClientMethod=operation,
            Params=params,
            ExpiresIn=expires_in,
        )
        return PresignedUrl(str(url), expires_at, headers)

    async def health(self) -> None:
        await self._call(self._client.head_bucket, Bucket=self.bucket)

    async def close(self) -> None:
        with contextlib.suppress(AttributeError, *_BOTO_ERRORS):
            await asyncio.to_thread(self._client.close)


__all__ = ["PART_BYTES", "S3Storage"]
