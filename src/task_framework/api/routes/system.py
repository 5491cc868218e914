"""Public routes: health, metrics, task metadata (API.md §9, §13)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from task_framework._version import __version__
from task_framework.api.deps import ServicesDep
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.errors import NotFound, TaskFrameworkError
from task_framework.models._time import format_ts_ms, utcnow
from task_framework.utils.schema_matching import display_fields

router = APIRouter(route_class=StrictJSONRoute)

PROBE_TIMEOUT_SECONDS = 1.0
METADATA_CACHE_CONTROL = "public, max-age=300"


class SandboxModel(BaseModel):
    mode: str
    layers: list[str]
    """Confinement layers of task processes in force on this replica."""
    missing: list[str]
    """Layers strict mode requires that this host does not offer."""
    landlock_abi: int
    cgroup: str | None = None


class HealthModel(BaseModel):
    status: str
    timestamp: str
    version: str
    database: str | None = None
    file_storage: str | None = None
    scheduler: str | None = None
    workers: str | None = None
    warning: str | None = None
    reason: str | None = None
    sandbox: SandboxModel | None = None


async def _probe(check: Any) -> str:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return "timeout"
    except Exception:
        return "unavailable"
    return "available"


@router.get(
    "/health",
    tags=["system"],
    response_model=HealthModel,
    responses={503: {"model": HealthModel, "description": "Not ready"}},
    summary="Health of this replica",
)
async def health(svc: ServicesDep) -> Response:
    """Liveness and readiness of this replica.

    Public: no key needed, no tenant data. Probes the database and the file storage
    (1 s each) and reports the scheduler, the workers and the sandbox layers in force.
    Answers 503 with `status: "unavailable"` and a `reason` when the database or the file
    storage is unreachable or the workers are stopped, so a load balancer can take the
    replica out of rotation.
    """
    now = format_ts_ms(utcnow())
    database = await _probe(svc.db.ping)
    storage = "not_configured" if svc.files is None else await _probe(svc.files.health)
    workers = "running" if svc.executor.running else "stopped"
    if database != "available" or storage in ("unavailable", "timeout") or workers != "running":
        reason = (
            f"database {database}"
            if database != "available"
            else f"file storage {storage}"
            if storage != "available"
            else "workers stopped"
        )
        down = {"status": "unavailable", "timestamp": now, "version": __version__, "reason": reason}
        return JSONResponse(down, status_code=503)
    body: dict[str, Any] = {
        "status": "ok",
        "timestamp": now,
        "version": __version__,
        "database": database,
        "file_storage": storage,
        "scheduler": "running" if svc.scheduler_running() else "stopped",
        "workers": workers,
    }
    if svc.sandbox is not None:
        body["sandbox"] = svc.sandbox.health()
    if len(svc.registry) == 0:
        body["warning"] = "No tasks registered"
    return JSONResponse(body)


@router.get("/metrics", tags=["system"], response_class=Response, summary="Prometheus metrics")
async def metrics(svc: ServicesDep) -> Response:
    """Prometheus metrics of this replica, in the text exposition format.

    Public: no key needed, no tenant data. Requests are labelled by route template.
    """
    busy, idle = svc.runner.counts()
    svc.metrics.set_workers(busy, idle)
    payload, content_type = svc.metrics.render()
    return Response(payload, media_type=None, headers={"Content-Type": content_type})


class TaskMetadataModel(BaseModel):
    name: str
    version: str
    description: str
    timestamp: str
    framework_version: str
    sdk_version: str | None
    api_version: str
    input_schemas: list[dict[str, Any]]
    output_schemas: list[dict[str, Any]]


def _schemas(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**item, "fields": display_fields(item)} for item in items]


@router.get(
    "/task/metadata",
    tags=["system"],
    response_model=TaskMetadataModel,
    responses=ERROR_RESPONSES,
    summary="Describe a deployed task",
)
async def task_metadata(
    svc: ServicesDep,
    task_id: Annotated[str | None, Query()] = None,
    version: Annotated[str | None, Query()] = None,
) -> Response:
    """Name, version, description and input/output schemas of a deployed task.

    Public: no key needed. Without `task_id` the only deployed task is described; with
    several tasks deployed `task_id` is required (400 TASK_ID_REQUIRED). An unknown task or
    version is 404 TASK_NOT_FOUND. Cached by clients for 5 minutes.
    """
    started = time.perf_counter()
    status = 200
    try:
        try:
            task = svc.registry.select(task_id, version)
        except TaskFrameworkError as exc:
            status = exc.status
            if exc.code == "TASK_NOT_FOUND" or exc.code == "SERVICE_UNAVAILABLE":
                status = 404
                raise NotFound(
                    f"Task {task_id or 'default'}:{version or 'latest'} not found",
                    code="TASK_NOT_FOUND",
                ) from exc
            raise
        body = {
            "name": task.task_id,
            "version": task.version,
            "description": task.description,
            "timestamp": format_ts_ms(utcnow()),
            "framework_version": __version__,
            "sdk_version": task.sdk_version or __version__,
            "api_version": "1",
            "input_schemas": _schemas(task.input_schemas),
            "output_schemas": _schemas(task.output_schemas),
        }
        return JSONResponse(body, headers={"Cache-Control": METADATA_CACHE_CONTROL})
    finally:
        svc.metrics.record_metadata_request(status, time.perf_counter() - started)
