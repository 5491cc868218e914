"""``/threads`` and ``/artifacts`` routes (API.md §3, §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from task_framework.api import examples
from task_framework.api.deps import Caller, Paging, ServicesDep, services_of
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.models._time import as_utc
from task_framework.models.artifact import Artifact
from task_framework.models.threads import (
    ArtifactListModel,
    ThreadCreateRequest,
    ThreadListModel,
    ThreadModel,
    ThreadRetryRequest,
    ThreadState,
)
from task_framework.services.threads import ArtifactFilters, ThreadFilters

router = APIRouter(route_class=StrictJSONRoute, responses=ERROR_RESPONSES)

TaskIdQuery = Annotated[str | None, Query(description="Task to run (required with several tasks)")]
VersionQuery = Annotated[str | None, Query(description="Task version (default: latest)")]
_queued = examples.THREAD_RESPONSES[202]


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


# POST /threads is the hot path: its optional query and header parameters are read from
# the request here (and documented below) instead of one FastAPI parameter each, whose
# per-request validation costs more than the rest of the route's parameter handling.
_IDEMPOTENCY_KEY_MAX = 255
_CREATE_PARAMETERS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }
    for name, description in (
        ("task_id", "Task to run (required with several tasks)"),
        ("version", "Task version (default: latest)"),
        ("task_version", "Task version (default: latest); same as `version`"),
    )
] + [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": _IDEMPOTENCY_KEY_MAX},
        "description": "Replays the thread created with the same key (body field wins)",
    }
]


@router.post(
    "/threads",
    tags=["threads"],
    status_code=201,
    response_model=ThreadModel,
    responses={
        **examples.THREAD_RESPONSES,
        202: {"model": ThreadModel, "description": "Queued (async)", **_queued},
        200: {"model": ThreadModel, "description": "Idempotent replay"},
    },
    summary="Create a thread (run a task)",
    openapi_extra={"parameters": _CREATE_PARAMETERS},
)
async def create_thread(
    body: Annotated[ThreadCreateRequest, Body(openapi_examples=examples.CREATE_THREAD)],
    principal: Caller,
    request: Request,
) -> Response:
    """Run a task: create a thread with its input artifacts.

    Auth: K. A regular key needs `X-User-Id` and `X-App-Id` (unless bound); the thread is
    owned by that identity. With several tasks deployed, `task_id` selects one.

    * `mode: "sync"` waits for the thread to finish and answers **201** with it (a failed
      or timed-out thread is still a 201, with `error` set).
    * `mode: "async"` answers **202** with the queued thread at once.
    * A repeated `Idempotency-Key` (or body `idempotency_key`) answers **200** with the
      thread created the first time; nothing runs again.

    Notable errors: 422 body schema (e.g. empty `inputs`); 400 TASK_ID_REQUIRED,
    ARTIFACT_REF_CONFLICT, VALIDATION_FAILED (an input does not match the task's input
    schemas, or references a foreign artifact or file), WEBHOOK_INVALID_URL; 404
    TASK_NOT_FOUND; 503 SERVICE_UNAVAILABLE when no task is deployed.
    """
    query = request.query_params
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > _IDEMPOTENCY_KEY_MAX:
        raise RequestValidationError(
            [
                {
                    "loc": ("header", "idempotency-key"),
                    "msg": f"String should have at most {_IDEMPOTENCY_KEY_MAX} characters",
                    "type": "string_too_long",
                }
            ]
        )
    thread, status = await services_of(request).threads.create(
        principal,
        body,
        task_id=query.get("task_id"),
        version=query.get("version") or query.get("task_version"),
        idempotency_key=idempotency_key,
    )
    return JSONResponse(thread, status_code=status)


@router.get("/threads", tags=["threads"], response_model=ThreadListModel, summary="List threads")
async def list_threads(
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    state: ThreadState | None = None,
    name: str | None = None,
    user_id: str | None = None,
    app_id: str | None = None,
    schedule_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    task_version: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    started_after: datetime | None = None,
    finished_before: datetime | None = None,
) -> Response:
    """List threads, newest first, with filters and pagination.

    Auth: K. A regular key sees only its own threads (`user_id`/`app_id` are forced to the
    caller); an admin key sees all and may filter by `user_id`/`app_id`. `name` matches
    exactly, or by prefix when it ends with `*`. Unparsable dates are 422;
    `created_after` later than `created_before` is 400 VALIDATION_FAILED.
    """
    filters = ThreadFilters(
        state=state,
        name=name,
        app_id=app_id,
        user_id=user_id,
        schedule_id=schedule_id,
        run_id=run_id,
        task_id=task_id,
        task_version=task_version,
        created_after=_utc(created_after),
        created_before=_utc(created_before),
        started_after=_utc(started_after),
        finished_before=_utc(finished_before),
    )
    return JSONResponse(await svc.threads.list_threads(principal, filters, paging))


@router.get(
    "/threads/{thread_id}/artifacts",
    tags=["threads"],
    response_model=ArtifactListModel,
    summary="List a thread's inputs and outputs",
)
async def thread_artifacts(
    thread_id: str,
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    ref: str | None = None,
    kind: str | None = None,
    media_type: str | None = None,
    direction: Literal["input", "output", "both"] = "both",
    include_archived: bool = False,
) -> Response:
    """A thread's input and output artifacts, oldest first.

    Auth: K, owner (admins: any thread). `direction` is the artifact's role in this thread;
    referenced inputs from other threads are included. An unknown or foreign thread is 404
    THREAD_NOT_FOUND.
    """
    filters = ArtifactFilters(
        ref=ref,
        kind=kind,
        media_type=media_type,
        direction=direction,
        include_archived=include_archived,
    )
    return JSONResponse(await svc.threads.thread_artifacts(principal, thread_id, filters, paging))


@router.get(
    "/threads/{thread_id}",
    tags=["threads"],
    response_model=ThreadModel,
    responses=examples.THREAD_RESPONSE,
    summary="Get a thread",
)
async def get_thread(thread_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """A thread with its inputs, outputs, error and problems.

    Auth: K, owner (admins: any thread). `error.stack_trace` is shown to admin keys only.
    An unknown or foreign thread is 404 THREAD_NOT_FOUND.
    """
    return JSONResponse(await svc.threads.get(principal, thread_id))


@router.delete(
    "/threads/{thread_id}", tags=["threads"], status_code=204, summary="Delete a terminal thread"
)
async def delete_thread(thread_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Delete a finished thread, its artifacts, events, logs and unreferenced files.

    Auth: K, owner (admins: any thread). Only terminal threads (`succeeded`, `failed`,
    `stopped`, `timeout`, `expired`) can be deleted, else 400 THREAD_INVALID_STATE; an input
    still referenced by another thread is kept. Answers 204.
    """
    refs = await svc.threads.delete(principal, thread_id)
    await svc.delete_files(refs)
    return Response(status_code=204)


@router.post(
    "/threads/{thread_id}:stop",
    tags=["threads"],
    status_code=202,
    response_model=ThreadModel,
    summary="Stop a queued or running thread",
)
async def stop_thread(thread_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Stop a queued or running thread.

    Auth: K, owner (admins: any thread). A queued thread never runs; a running one sees
    `context.is_cancelled()` at once and its process is terminated after the stop grace
    period. Answers 202 with the `stopped` thread; other states are 400
    THREAD_INVALID_STATE.
    """
    return JSONResponse(await svc.threads.stop(principal, thread_id), status_code=202)


@router.post(
    "/threads/{thread_id}:retry",
    tags=["threads"],
    status_code=201,
    response_model=ThreadModel,
    responses={
        **examples.THREAD_RESPONSES,
        202: {"model": ThreadModel, "description": "Queued (async)", **_queued},
    },
    summary="Re-run a failed, stopped or timed-out thread as a new thread",
)
async def retry_thread(
    thread_id: str,
    principal: Caller,
    svc: ServicesDep,
    body: Annotated[ThreadRetryRequest | None, Body()] = None,
    task_id: TaskIdQuery = None,
    version: VersionQuery = None,
) -> Response:
    """Run a failed, stopped, timed-out or expired thread again, as a new thread.

    Auth: K, owner (admins: any thread). The new thread copies params, metadata, owner,
    timeout and ad-hoc webhooks, gets fresh copies of the inputs and `attempt` + 1; the
    original is unchanged. The body is optional (`mode` defaults to `sync`: 201 with the
    finished thread; `async`: 202). Other states are 400 THREAD_INVALID_STATE; a task no
    longer deployed is 404 TASK_NOT_FOUND.
    """
    thread, status = await svc.threads.retry(
        principal, thread_id, body or ThreadRetryRequest(), task_id=task_id, version=version
    )
    return JSONResponse(thread, status_code=status)


# -- /artifacts -------------------------------------------------------------------------------


@router.get(
    "/artifacts", tags=["artifacts"], response_model=ArtifactListModel, summary="List artifacts"
)
async def list_artifacts(
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    ref: str | None = None,
    kind: str | None = None,
    media_type: str | None = None,
    thread_id: str | None = None,
    app_id: str | None = None,
    user_id: str | None = None,
    task_id: str | None = None,
    task_version: str | None = None,
    direction: Literal["input", "output"] | None = None,
    include_archived: bool = False,
) -> Response:
    """List artifacts across threads, newest first.

    Auth: K. A regular key sees only the artifacts of its own threads (app and user); an
    admin key sees all and may filter by `app_id`/`user_id`. Archived artifacts are left out
    unless `include_archived=true`. Items carry `task_id`/`task_version` of their thread.
    """
    filters = ArtifactFilters(
        ref=ref,
        kind=kind,
        media_type=media_type,
        direction=direction,
        include_archived=include_archived,
        thread_id=thread_id,
        app_id=app_id,
        user_id=user_id,
        task_id=task_id,
        task_version=task_version,
    )
    return JSONResponse(await svc.artifacts.list_artifacts(principal, filters, paging))


@router.get(
    "/artifacts/{artifact_id}",
    tags=["artifacts"],
    response_model=Artifact,
    responses=examples.ARTIFACT_RESPONSE,
    summary="Get an artifact",
)
async def get_artifact(artifact_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """One artifact.

    Auth: K, owner (admins: any). An unknown or foreign artifact is 404
    ARTIFACT_NOT_FOUND.
    """
    return JSONResponse(await svc.artifacts.get(principal, artifact_id))


@router.delete(
    "/artifacts/{artifact_id}", tags=["artifacts"], status_code=204, summary="Delete an artifact"
)
async def delete_artifact(artifact_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Delete an artifact, and its file when nothing else references it.

    Auth: K, owner (admins: any). Answers 204; an unknown or foreign artifact is 404
    ARTIFACT_NOT_FOUND.
    """
    refs = await svc.artifacts.delete(principal, artifact_id)
    svc.metrics.record_artifacts_deleted()
    await svc.delete_files(refs)
    return Response(status_code=204)


@router.post(
    "/artifacts/{artifact_id}:archive",
    tags=["artifacts"],
    response_model=Artifact,
    summary="Archive an artifact",
)
async def archive_artifact(artifact_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Archive an artifact (idempotent): it leaves default listings but stays readable.

    Auth: K, owner (admins: any). Answers 200 with the artifact (`archived: true`); an
    unknown or foreign artifact is 404 ARTIFACT_NOT_FOUND.
    """
    artifact, changed = await svc.artifacts.archive(principal, artifact_id)
    if changed:
        svc.metrics.record_artifacts_archived()
    return JSONResponse(artifact)
