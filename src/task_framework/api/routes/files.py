"""``/files``, ``/uploads`` and ``/artifacts/{id}/download`` routes (API.md §4, §8).

Uploads are parsed from the raw request stream (``POST /files`` multipart with
``python_multipart``, ``PUT /files/{ref}`` raw body) and written to storage as they arrive;
nothing is spooled or buffered whole. ``/files/{ref}`` accepts an API key or a valid
pre-signed URL: when ``signature`` is present it alone decides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from task_framework.api.deps import (
    ApiKeyHeader,
    AppIdHeader,
    Caller,
    Paging,
    ServicesDep,
    UserIdHeader,
    caller,
    services_of,
)
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.api.multipart_names import disposition_names
from task_framework.errors import PayloadTooLarge, StorageError, ValidationFailed
from task_framework.services.files import (
    DEFAULT_DOWNLOAD_URL_SECONDS,
    MAX_PRESIGN_SECONDS,
    Access,
    Download,
    SignedGrant,
    bare_media_type,
)
from task_framework.storage.base import check_file_ref, content_disposition

router = APIRouter(route_class=StrictJSONRoute, responses=ERROR_RESPONSES)

MAX_FORM_FIELD_BYTES = 4096
"""Non-file form fields (``filename``, ``media_type``) are small; longer ones are refused."""
MULTIPART_OVERHEAD_BYTES = 1024 * 1024
"""Headers, boundaries and small fields allowed on top of the maximum file size."""
MAX_FILENAME_CHARS = 1024
FILE_FIELD = "file"
GENERIC_PART_TYPE = "application/octet-stream"


class CreateUploadRequest(BaseModel):
    filename: str | None = Field(None, max_length=MAX_FILENAME_CHARS)
    media_type: str = Field(pattern=r"^[^/\s]+/[^\s]+$", max_length=255)
    size: int = Field(ge=0)
    expires_in: int = Field(3600, ge=0, le=MAX_PRESIGN_SECONDS)


class UploadUrlResponse(BaseModel):
    file_ref: str
    upload_url: str
    expires_at: str
    method: str = "PUT"
    headers: dict[str, str]


class FileUploadResponse(BaseModel):
    file_ref: str
    size: int
    media_type: str
    sha256: str | None
    filename: str | None
    created_at: str


class FileInfo(BaseModel):
    file_ref: str
    filename: str | None
    media_type: str
    size: int | None
    sha256: str | None
    created_at: str
    app_id: str | None
    user_id: str | None


class FileListModel(BaseModel):
    items: list[FileInfo]
    total: int
    pagination: dict[str, Any]


class ArtifactDownloadResponse(BaseModel):
    download_url: str
    expires_at: str
    expires_in: int


async def file_access(
    request: Request,
    file_ref: str,
    x_api_key: ApiKeyHeader,
    x_app_id: AppIdHeader = None,
    x_user_id: UserIdHeader = None,
    signature: Annotated[str | None, Query(description="Pre-signed URL signature")] = None,
    expires: Annotated[str | None, Query(description="Pre-signed URL expiry (unix s)")] = None,
    kid: Annotated[str | None, Query(description="Pre-signed URL key id")] = None,
) -> Access:
    """K (an API key, owner checked later) or S (a pre-signed URL for this method)."""
    check_file_ref(file_ref)
    if signature is not None:
        grant: SignedGrant = await services_of(request).files.verify_signature(
            request.method, file_ref, expires=expires, signature=signature, kid=kid
        )
        return grant
    return await caller(request, x_api_key, x_app_id, x_user_id)


FileAccess = Annotated[Access, Depends(file_access)]
_KEY_OR_SIGNED: dict[str, Any] = {"security": [{}]}
"""OpenAPI: besides the API key (added by FastAPI), no key at all (a pre-signed URL)."""


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- uploads ----------------------------------------------------------------------------------


class _MultipartUpload:
    """Streams the ``file`` part of a multipart body; keeps the small fields aside."""

    def __init__(self, request: Request, *, max_body_bytes: int) -> None:
        content_type = request.headers.get("content-type", "")
        kind, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise ValidationFailed("Expected a multipart/form-data body with a 'file' part")
        self._request = request
        self._max_body = max_body_bytes
        self._fields: dict[str, str] = {}
        self._out: list[bytes] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._part: str | None = None
        self._field_value = bytearray()
        self.file_seen = False
        self.file_done = False
        self.ended = False
        self.part_filename: str | None = None
        self.part_type: str | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._field_value.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        name, filename = disposition_names(self._headers.get("content-disposition", b""))
        if name == FILE_FIELD and not self.file_seen:
            self.file_seen = True
            self.part_filename = filename
            content_type = self._headers.get("content-type")
            self.part_type = content_type.decode("utf-8", "replace") if content_type else None
        self._part = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == FILE_FIELD and self.file_seen and not self.file_done:
            # The whole received chunk is file data most of the time: keep it, uncopied.
            self._out.append(data if start == 0 and end == len(data) else data[start:end])
        elif self._part is not None:
            self._field_value += data[start:end]
            if len(self._field_value) > MAX_FORM_FIELD_BYTES:
                raise ValidationFailed(f"Form field '{self._part}' is too long")

    def _end(self) -> None:
        self.ended = True

    def _part_end(self) -> None:
        if self._part == FILE_FIELD and self.file_seen and not self.file_done:
            self.file_done = True
        elif self._part is not None and self._part not in self._fields:
            self._fields[self._part] = self._field_value.decode("utf-8", "replace")
        self._part = None

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        try:
            async for chunk in self._request.stream():
                seen += len(chunk)
                if seen > self._max_body:
                    raise PayloadTooLarge(
                        f"Request body exceeds the limit of {self._max_body} bytes"
                    )
                self._parser.write(chunk)
                if self._out:
                    out, self._out = self._out, []
                    yield out[0] if len(out) == 1 else b"".join(out)
            self._parser.finalize()
        except MultipartParseError as exc:
            raise ValidationFailed(f"Malformed multipart body: {exc}") from exc
        if self._out:
            yield b"".join(self._out)
            self._out = []
        if not self.file_seen:
            raise ValidationFailed("The multipart body has no 'file' part")
        if not (self.file_done and self.ended):
            raise ValidationFailed("Malformed multipart body: it ends before its last boundary")

    def describe(self) -> tuple[str | None, str | None]:
        filename = self._fields.get("filename") or self.part_filename or None
        if filename is not None and len(filename) > MAX_FILENAME_CHARS:
            raise ValidationFailed(f"filename is longer than {MAX_FILENAME_CHARS} characters")
        part_type = self.part_type
        if bare_media_type(part_type) == GENERIC_PART_TYPE:
            # What curl, httpx and browsers send for a type they do not know: the name's
            # extension says more (a ``.csv`` is text/csv). A ``media_type`` field still wins.
            part_type = None
        return filename, self._fields.get("media_type") or part_type or None


@router.post(
    "/files",
    tags=["files"],
    response_model=FileUploadResponse,
    summary="Upload a file (multipart, streamed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "filename": {"type": "string"},
                            "media_type": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(request: Request, principal: Caller, svc: ServicesDep) -> Response:
    """Upload a file as multipart form data (field `file`), streamed to storage.

    Auth: K; the file is owned by the caller. Optional form fields `filename` and
    `media_type` override the part's own. Use the returned `file_ref` in file artifacts.
    Over the maximum upload size: 413 FILE_SIZE_EXCEEDED (nothing is kept); storage
    failure: 503 FILE_STORAGE_ERROR.
    """
    upload = _MultipartUpload(
        request, max_body_bytes=svc.files.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    )
    stored = await svc.files.upload(
        upload.chunks(), owner=(principal.app_id, principal.user_id), describe=upload.describe
    )
    return JSONResponse(stored)


@router.post(
    "/uploads",
    tags=["files"],
    status_code=201,
    response_model=UploadUrlResponse,
    summary="Reserve a file and get a pre-signed upload URL",
)
async def create_upload(
    body: CreateUploadRequest, request: Request, principal: Caller, svc: ServicesDep
) -> Response:
    """Reserve a file ref and get a pre-signed URL to PUT its bytes to.

    Auth: K; the file is owned by the caller. `headers` lists the headers the PUT must
    send. A `size` over the maximum upload size is 413 FILE_SIZE_EXCEEDED.
    """
    reserved = await svc.files.reserve(
        principal,
        filename=body.filename,
        media_type=body.media_type,
        size=body.size,
        expires_in=body.expires_in,
        base_url=_base_url(request),
    )
    return JSONResponse(reserved, status_code=201)


@router.put(
    "/files/{file_ref}",
    tags=["files"],
    response_model=FileUploadResponse,
    summary="Upload the bytes of an issued file ref (API key or pre-signed URL)",
    openapi_extra=_KEY_OR_SIGNED,
)
async def put_file(
    file_ref: str, request: Request, access: FileAccess, svc: ServicesDep
) -> Response:
    """Upload the bytes of a file ref issued by `POST /uploads` (or `POST /files`).

    Auth: K (owner), or none with a pre-signed PUT URL (`expires` and `signature` in the
    query; when `signature` is present it alone decides). Refs that were not issued are 404
    FILE_NOT_FOUND; an expired URL is 403 FILE_UPLOAD_EXPIRED, a wrong one 403
    SIGNATURE_INVALID; more bytes than declared is 413 FILE_SIZE_EXCEEDED.
    """
    stored = await svc.files.put(
        access, file_ref, request.stream(), content_type=request.headers.get("content-type")
    )
    return JSONResponse(stored)


# -- downloads --------------------------------------------------------------------------------


def _download_headers(download: Download) -> dict[str, str]:
    info = download.info
    headers = {
        "Content-Type": info["media_type"] or "application/octet-stream",
        "Content-Length": str(download.length),
        "Content-Disposition": content_disposition(info["filename"] or info["file_ref"]),
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if info["sha256"]:
        headers["ETag"] = f'"{info["sha256"]}"'
    if download.partial:
        end = download.start + download.length - 1
        headers["Content-Range"] = f"bytes {download.start}-{end}/{download.size}"
    return headers


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
    206: {"description": "The requested range"},
    416: {"description": "Range not satisfiable"},
}


@router.get(
    "/files/{file_ref}",
    tags=["files"],
    response_class=StreamingResponse,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="download_file",
    summary="Download a file (API key or pre-signed URL; Range supported)",
    openapi_extra=_KEY_OR_SIGNED,
)
@router.head(
    "/files/{file_ref}",
    tags=["files"],
    response_class=StreamingResponse,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="head_file",
    summary="A file's download headers, without the bytes",
    openapi_extra=_KEY_OR_SIGNED,
)
async def download_file(
    file_ref: str,
    request: Request,
    access: FileAccess,
    svc: ServicesDep,
    expires_in: Annotated[int | None, Query(description="Accepted and ignored")] = None,
) -> Response:
    """Download a file's bytes (`GET`), or only its headers (`HEAD`).

    Auth: K (owner; admins: any), or none with a pre-signed GET URL (`expires` and
    `signature` in the query). A single `Range: bytes=a-b` answers 206; an unsatisfiable
    range is 416 RANGE_NOT_SATISFIABLE. Unknown or foreign files are 404 FILE_NOT_FOUND; an
    expired URL is 403 FILE_DOWNLOAD_EXPIRED, a wrong one 403 SIGNATURE_INVALID.
    """
    head = request.method == "HEAD"
    download = await svc.files.open(
        access, file_ref, range_header=request.headers.get("range"), body=not head
    )
    status = 206 if download.partial else 200
    headers = _download_headers(download)
    if download.chunks is None:
        return Response(status_code=status, headers=headers)
    return StreamingResponse(download.chunks, status_code=status, headers=headers)


@router.get("/files", tags=["files"], response_model=FileListModel, summary="List your files")
async def list_files(
    principal: Caller, svc: ServicesDep, paging: Paging, media_type: str | None = None
) -> Response:
    """List your files, newest first.

    Auth: K. A regular key sees its own files; an admin key sees all.
    """
    return JSONResponse(await svc.files.list_files(principal, media_type=media_type, page=paging))


@router.delete(
    "/files/{file_ref}", tags=["files"], status_code=204, summary="Delete a file (owner)"
)
async def delete_file(file_ref: str, principal: Caller, svc: ServicesDep) -> Response:
    """Delete a file's bytes and metadata.

    Auth: K, owner (admins: any). Artifacts that still reference it answer 404
    FILE_NOT_FOUND on download afterwards. Answers 204.
    """
    await svc.files.delete(principal, file_ref)
    return Response(status_code=204)


@router.get(
    "/artifacts/{artifact_id}/download",
    tags=["artifacts"],
    response_model=ArtifactDownloadResponse,
    summary="A pre-signed download URL for a file artifact",
)
async def artifact_download(
    artifact_id: str,
    request: Request,
    principal: Caller,
    svc: ServicesDep,
    expires_in: Annotated[int, Query(ge=1, le=MAX_PRESIGN_SECONDS)] = DEFAULT_DOWNLOAD_URL_SECONDS,
) -> Response:
    """A pre-signed, expiring download URL for a file artifact.

    Auth: K, owner (admins: any). The URL works without a key until it expires
    (`expires_in` seconds, default 900). An artifact without a file is 400
    ARTIFACT_DOWNLOAD_NOT_SUPPORTED; a missing file is 404 FILE_NOT_FOUND.
    """
    artifact = await svc.artifacts.get(principal, artifact_id)
    file_ref = artifact.get("file_ref")
    if not file_ref:
        raise ValidationFailed(
            f"Artifact {artifact_id} has no file. Only file artifacts support download URLs.",
            code="ARTIFACT_DOWNLOAD_NOT_SUPPORTED",
        )
    if svc.files is None:
        raise StorageError("File storage is not configured")
    url = await svc.files.download_url(file_ref, expires_in=expires_in, base_url=_base_url(request))
    return JSONResponse(url)


__all__ = ["router"]
