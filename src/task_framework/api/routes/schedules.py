"""``/schedules`` routes (API.md §6), plus ``:pause`` and ``:resume``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from task_framework.api import examples
from task_framework.api.deps import Caller, Paging, ServicesDep
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.models._time import as_utc
from task_framework.models.schedules import (
    RunListModel,
    RunModel,
    RunState,
    ScheduleCreateRequest,
    ScheduleListModel,
    ScheduleModel,
    ScheduleState,
    ScheduleUpdateRequest,
)
from task_framework.services.schedules import RunFilters

router = APIRouter(route_class=StrictJSONRoute, tags=["schedules"], responses=ERROR_RESPONSES)

TaskIdQuery = Annotated[str | None, Query(description="Task to run (wins over the body)")]
VersionQuery = Annotated[str | None, Query(description="Task version (default: latest)")]


@router.post(
    "/schedules", status_code=201, response_model=ScheduleModel, summary="Create a schedule"
)
async def create_schedule(
    body: Annotated[ScheduleCreateRequest, Body(openapi_examples=examples.CREATE_SCHEDULE)],
    principal: Caller,
    svc: ServicesDep,
    task_id: TaskIdQuery = None,
    version: VersionQuery = None,
    task_version: VersionQuery = None,
) -> Response:
    """Create a cron schedule that runs a task with a template of inputs.

    Auth: K; the schedule and the threads it starts are owned by the caller. Task
    selection as for `POST /threads` (query `task_id`/`version` win over the body). Each
    fire creates an async thread with fresh copies of `inputs_template`. Errors: 400
    SCHEDULE_INVALID_CRON, SCHEDULE_INVALID_TIMEZONE, SCHEDULE_VALIDATION_ERROR (e.g. an
    empty template), WEBHOOK_INVALID_URL; 404 TASK_NOT_FOUND.
    """
    schedule = await svc.schedules.create(
        principal, body, task_id=task_id, version=version or task_version
    )
    return JSONResponse(schedule, status_code=201)


@router.get("/schedules", response_model=ScheduleListModel, summary="List schedules")
async def list_schedules(
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    state: ScheduleState | None = None,
    task_id: str | None = None,
    task_version: str | None = None,
) -> Response:
    """List schedules, newest first.

    Auth: K. A regular key sees its own schedules; an admin key sees all.
    """
    return JSONResponse(
        await svc.schedules.list_schedules(
            principal, paging, state=state, task_id=task_id, task_version=task_version
        )
    )


@router.get("/schedules/{schedule_id}/runs", response_model=RunListModel, summary="List runs")
async def list_runs(
    schedule_id: str,
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    state: RunState | None = None,
    scheduled_after: datetime | None = None,
    scheduled_before: datetime | None = None,
    task_id: str | None = None,
    version: str | None = None,
) -> Response:
    """A schedule's runs (one per fire or manual trigger), newest fire first.

    Auth: K, owner (admins: any). Unparsable dates are 422. Unknown or foreign schedule:
    404 SCHEDULE_NOT_FOUND.
    """
    filters = RunFilters(
        state=state,
        scheduled_after=None if scheduled_after is None else as_utc(scheduled_after),
        scheduled_before=None if scheduled_before is None else as_utc(scheduled_before),
    )
    return JSONResponse(await svc.schedules.list_runs(principal, schedule_id, filters, paging))


@router.get("/schedules/{schedule_id}/runs/{run_id}", response_model=RunModel, summary="Get a run")
async def get_run(schedule_id: str, run_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """One run of a schedule, with the ids of its threads (one per attempt).

    Auth: K, owner (admins: any). 404 SCHEDULE_NOT_FOUND or RUN_NOT_FOUND.
    """
    return JSONResponse(await svc.schedules.get_run(principal, schedule_id, run_id))


@router.get("/schedules/{schedule_id}", response_model=ScheduleModel, summary="Get a schedule")
async def get_schedule(schedule_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """One schedule, with its next and last fire times.

    Auth: K, owner (admins: any). Unknown or foreign: 404 SCHEDULE_NOT_FOUND.
    """
    return JSONResponse(await svc.schedules.get(principal, schedule_id))


@router.patch("/schedules/{schedule_id}", response_model=ScheduleModel, summary="Update a schedule")
async def update_schedule(
    schedule_id: str, body: ScheduleUpdateRequest, principal: Caller, svc: ServicesDep
) -> Response:
    """Change a schedule: non-null fields replace the stored values.

    Auth: K, owner (admins: any). Validated like a create; `next_run_at` is recomputed
    and the new cron and time zone alone govern future fires. Unknown or foreign: 404
    SCHEDULE_NOT_FOUND.
    """
    return JSONResponse(await svc.schedules.update(principal, schedule_id, body))


@router.delete(
    "/schedules/{schedule_id}",
    status_code=204,
    summary="Delete a schedule and its runs (its threads are kept)",
)
async def delete_schedule(schedule_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Delete a schedule, its runs and its webhooks; the threads it started are kept.

    Auth: K, owner (admins: any). Answers 204; unknown or foreign: 404
    SCHEDULE_NOT_FOUND.
    """
    await svc.schedules.delete(principal, schedule_id)
    return Response(status_code=204)


@router.post(
    "/schedules/{schedule_id}:cancel", response_model=ScheduleModel, summary="Cancel a schedule"
)
async def cancel_schedule(schedule_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Cancel a schedule (`state: canceled`): no further fires.

    Auth: K, owner (admins: any). Unknown or foreign: 404 SCHEDULE_NOT_FOUND.
    """
    return JSONResponse(await svc.schedules.set_state(principal, schedule_id, "cancel"))


@router.post(
    "/schedules/{schedule_id}:pause", response_model=ScheduleModel, summary="Pause a schedule"
)
async def pause_schedule(schedule_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Pause a schedule: no fires until it is resumed.

    Auth: K, owner (admins: any). Unknown or foreign: 404 SCHEDULE_NOT_FOUND.
    """
    return JSONResponse(await svc.schedules.set_state(principal, schedule_id, "pause"))


@router.post(
    "/schedules/{schedule_id}:resume",
    response_model=ScheduleModel,
    summary="Resume a paused schedule (fires missed while paused are not run)",
)
async def resume_schedule(schedule_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Resume a paused schedule; fires missed while paused are not run.

    Auth: K, owner (admins: any). Unknown or foreign: 404 SCHEDULE_NOT_FOUND.
    """
    return JSONResponse(await svc.schedules.set_state(principal, schedule_id, "resume"))


@router.post(
    "/schedules/{schedule_id}:trigger",
    status_code=201,
    response_model=RunModel,
    summary="Run a schedule now",
)
async def trigger_schedule(schedule_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Fire a schedule now, as a manual run (`labels: {"trigger": "manual"}`).

    Auth: K, owner (admins: any). Allowed for active and paused schedules; a canceled one
    is 400 SCHEDULE_VALIDATION_ERROR. A second trigger within the same second is 409
    RUN_ALREADY_EXISTS. Answers 201 with the run.
    """
    return JSONResponse(await svc.schedules.trigger(principal, schedule_id), status_code=201)
