"""Admin task deployment routes (API.md §10.1).

The upload is parsed from the raw request stream and spooled to a file under
``DATA_DIR/tmp`` with its size counted as it arrives (413 past the limit), so a package
is never held whole in memory nor written outside the data directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from task_framework.api.deps import Admin, ServicesDep
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.api.multipart_names import disposition_names
from task_framework.errors import InvalidTaskPackage, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(route_class=StrictJSONRoute, responses=ERROR_RESPONSES, tags=["tasks"])

FILE_FIELD = "file"

StopRunning = Annotated[
    bool, Query(description="Also stop the running threads of the removed version(s)")
]


class TaskDeploymentResponse(BaseModel):
    task_id: str
    version: str
    was_new: bool
    message: str


class TaskSummary(BaseModel):
    task_id: str
    name: str
    description: str
    versions: list[str]
    latest_version: str
    total_versions: int
    entry_point: str
    deployed_at: str | None
    sdk_version: str | None


class TaskListResponse(BaseModel):
    tasks: list[TaskSummary]
    total: int
    total_versions: int


class TaskVersionInfo(BaseModel):
    task_id: str
    version: str
    name: str
    description: str
    entry_point: str
    deployed_at: str | None
    zip_path: str | None
    base_path: str | None
    zip_hash: str | None
    input_schemas: list[dict[str, Any]]
    output_schemas: list[dict[str, Any]]
    requirements: list[dict[str, Any]]
    sdk_version: str | None


class TaskUndeployResponse(BaseModel):
    undeployed: list[str]
    message: str


class DeploymentRecord(BaseModel):
    zip_path: str | None
    zip_hash: str | None
    task_id: str
    version: str
    deployed_at: str | None
    status: str
    error: str | None


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


class _Spool:
    """Receives multipart callbacks; writes the ``file`` part to ``path``, counting bytes."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.filename: str | None = None
        self.found = False
        self.size = 0
        self._handle: Any = None
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        name, filename = disposition_names(self._headers.get(b"content-disposition", b""))
        if name == FILE_FIELD and not self.found:
            self.found = True
            self.filename = filename
            self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in _part_end/close

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._handle is None:
            return
        self.size += end - start
        if self.size > self.limit:
            raise PayloadTooLarge(f"Task package exceeds the limit of {self.limit} bytes")
        self._handle.write(data[start:end])

    def _part_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def _receive_upload(request: Request, path: Path, limit: int) -> _Spool:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidTaskPackage("Send the package as multipart/form-data with a 'file' field")
    spool = _Spool(path, limit)
    parser = MultipartParser(boundary, spool.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidTaskPackage(f"Malformed multipart body: {exc}") from exc
    finally:
        spool.close()
    if not spool.found:
        raise InvalidTaskPackage("No file uploaded: send the package in the 'file' field")
    if not (spool.filename or "").lower().endswith(".zip"):
        raise InvalidTaskPackage("File must be a .zip file")
    return spool


@router.post(
    "/admin/tasks",
    status_code=201,
    response_model=TaskDeploymentResponse,
    openapi_extra=_UPLOAD_BODY,
    summary="Deploy a task package",
)
async def deploy_task(
    request: Request,
    _: Admin,
    svc: ServicesDep,
    force: Annotated[bool, Query(description="Replace a version deployed with other content")] = (
        False
    ),
) -> Response:
    """Deploy a task package: a `.zip` in the multipart field `file`.

    Auth: A. The package is validated as untrusted input, its dependencies are installed
    into its own environment and its entry point is load-checked before it is registered.
    A new version answers 201 (`was_new: true`); the same version with identical content
    201 (`was_new: false`); with different content 409 TASK_ALREADY_EXISTS unless
    `force=true`. Errors: 400 INVALID_TASK_PACKAGE, 400 TASK_DEPLOYMENT_FAILED (install or
    load failure, with the installer's output), 413 FILE_SIZE_EXCEEDED.
    """
    tmp_dir = svc.deployments.tmp_dir
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=tmp_dir)
    os.close(fd)
    path = Path(name)
    try:
        await _receive_upload(request, path, svc.settings.max_package_bytes)
        result, _was_new = await svc.deployments.deploy(path, force=force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    # 201 also when identical content was already there (``was_new: false``), as 0.0.20b0
    # answers: deploy scripts check for 201.
    return JSONResponse(result, status_code=201)


@router.get("/admin/tasks", response_model=TaskListResponse, summary="List deployed tasks")
async def list_tasks(_: Admin, svc: ServicesDep) -> Response:
    """The deployed tasks, each with its versions (newest first).

    Auth: A.
    """
    return JSONResponse(await svc.deployments.list_tasks())


# Declared before /admin/tasks/{task_id}... (API.md §2 path precedence).
@router.get(
    "/admin/tasks/deployments/history",
    response_model=list[DeploymentRecord],
    summary="Deployment history",
)
async def deployment_history(_: Admin, svc: ServicesDep) -> Response:
    """Every deployment attempt, newest first, failed ones included.

    Auth: A.
    """
    return JSONResponse(await svc.deployments.history())


@router.get("/admin/tasks/{task_id}", response_model=TaskSummary, summary="Get a task")
async def get_task(task_id: str, _: Admin, svc: ServicesDep) -> Response:
    """One deployed task and its versions.

    Auth: A. Unknown: 404 TASK_NOT_FOUND.
    """
    return JSONResponse(await svc.deployments.get_task(task_id))


@router.delete(
    "/admin/tasks/{task_id}", response_model=TaskUndeployResponse, summary="Undeploy a task"
)
async def undeploy_task(
    task_id: str, _: Admin, svc: ServicesDep, stop_running: StopRunning = False
) -> Response:
    """Undeploy every version of a task.

    Auth: A. Threads, artifacts, schedules and configuration are kept; queued threads of
    the task fail with TASK_UNAVAILABLE, running ones finish unless `stop_running=true`.
    Unknown: 404 TASK_NOT_FOUND.
    """
    return JSONResponse(await svc.deployments.undeploy(task_id, stop_running=stop_running))


@router.get(
    "/admin/tasks/{task_id}/download",
    response_class=Response,
    summary="Download the latest package",
)
async def download_latest(task_id: str, _: Admin, svc: ServicesDep) -> Response:
    """Download the stored package of a task's latest version (`application/zip`).

    Auth: A. Unknown: 404 TASK_NOT_FOUND.
    """
    return _zip_response(*await svc.deployments.package(task_id, None))


@router.get(
    "/admin/tasks/{task_id}/versions",
    response_model=list[TaskVersionInfo],
    summary="List a task's versions",
)
async def list_versions(task_id: str, _: Admin, svc: ServicesDep) -> Response:
    """The deployed versions of a task, newest first.

    Auth: A. Unknown: 404 TASK_NOT_FOUND.
    """
    return JSONResponse(await svc.deployments.versions(task_id))


@router.get(
    "/admin/tasks/{task_id}/versions/{version}",
    response_model=TaskVersionInfo,
    summary="Get a task version",
)
async def get_version(task_id: str, version: str, _: Admin, svc: ServicesDep) -> Response:
    """One deployed task version, with its schemas and requirements.

    Auth: A. Unknown task or version: 404 TASK_NOT_FOUND.
    """
    return JSONResponse(await svc.deployments.version(task_id, version))


@router.delete(
    "/admin/tasks/{task_id}/versions/{version}",
    response_model=TaskUndeployResponse,
    summary="Undeploy a task version",
)
async def undeploy_version(
    task_id: str, version: str, _: Admin, svc: ServicesDep, stop_running: StopRunning = False
) -> Response:
    """Undeploy one version of a task.

    Auth: A. As for undeploying a task, for this version only. Unknown task or version:
    404 TASK_NOT_FOUND.
    """
    result = await svc.deployments.undeploy(task_id, version, stop_running=stop_running)
    return JSONResponse(result)


@router.get(
    "/admin/tasks/{task_id}/versions/{version}/download",
    response_class=Response,
    summary="Download a version's package",
)
async def download_version(task_id: str, version: str, _: Admin, svc: ServicesDep) -> Response:
    """Download the stored package of one task version (`application/zip`).

    Auth: A. Unknown task or version: 404 TASK_NOT_FOUND.
    """
    return _zip_response(*await svc.deployments.package(task_id, version))


def _zip_response(filename: str, data: bytes) -> Response:
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
