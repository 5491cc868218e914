"""File, schedule and webhook pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from task_framework.api.routes.files import MULTIPART_OVERHEAD_BYTES, _MultipartUpload
from task_framework.errors import ValidationFailed
from task_framework.models._time import utcnow
from task_framework.models.schedules import ScheduleCreateRequest
from task_framework.models.webhooks import WebhookCreateRequest
from task_framework.services.cron import CronError, load_zone, parse_cron
from task_framework.services.events import EVENT_TYPES
from task_framework.services.schedules import RunFilters
from task_framework.services.webhooks import DeliveryFilters, WebhookFilters
from task_framework.storage.base import check_file_ref, content_disposition
from task_framework.store.paging import PageRequest
from task_framework.ui.common import (
    FormSession,
    StreamSession,
    Svc,
    UiSession,
    confirm_page,
    flashes,
    form_text,
    parse_json_field,
    redirect,
    render,
    short_ts,
)

router = APIRouter()

PAGE_SIZE = 25
PREVIEW_FIRES = 5
DELIVERY_PAGE = 100
"""Delivery attempts read per page of a webhook (grouped by event for display)."""
PENDING_SHOWN = 50
NEW_WEBHOOK_FLASH = "new_webhook"
CursorQuery = Annotated[str | None, Query(max_length=2048)]


def _page(cursor: str | None, size: int = PAGE_SIZE) -> PageRequest:
    return PageRequest(limit=size, cursor=cursor or None)


# -- files ----------------------------------------------------------------------------------


@router.get("/files")
async def file_list(
    request: Request, session: UiSession, svc: Svc, cursor: CursorQuery = None
) -> Response:
    page = await svc.files.list_files(session.principal, media_type=None, page=_page(cursor))
    return render(
        request,
        "files.html",
        session,
        nav="files",
        files=page["items"],
        pagination=page["pagination"],
        first_page=cursor is None,
    )


@router.post("/files")
async def file_upload(request: Request, session: StreamSession, svc: Svc) -> Response:
    """Multipart ``file`` streamed to storage (the CSRF token comes in a header or query)."""
    upload = _MultipartUpload(
        request, max_body_bytes=svc.files.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    )
    owner = (session.principal.app_id, session.principal.user_id)
    stored = await svc.files.upload(upload.chunks(), owner=owner, describe=upload.describe)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(stored)
    return redirect("/files", "uploaded")


@router.get("/files/{file_ref}/download")
async def file_download(file_ref: str, session: UiSession, svc: Svc) -> Response:
    check_file_ref(file_ref)
    download = await svc.files.open(session.principal, file_ref, range_header=None, body=True)
    info = download.info
    headers = {
        "Content-Length": str(download.length),
        "Content-Disposition": content_disposition(info["filename"] or info["file_ref"]),
    }
    assert download.chunks is not None
    # Always a download, never rendered: a hostile HTML file cannot run in the UI origin.
    return StreamingResponse(
        download.chunks, media_type="application/octet-stream", headers=headers
    )


@router.get("/files/{file_ref}/delete")
async def file_delete_confirm(
    request: Request, file_ref: str, session: UiSession, svc: Svc
) -> Response:
    check_file_ref(file_ref)
    download = await svc.files.open(session.principal, file_ref, range_header=None, body=False)
    info = download.info
    return confirm_page(
        request,
        session,
        nav="files",
        title=f"Delete the file {info['filename'] or file_ref}?",
        consequences=[
            f"The file ({download.length} bytes) is deleted from storage.",
            "Artifacts that point to it can no longer be downloaded.",
            "This cannot be undone.",
        ],
        action=f"/ui/files/{file_ref}/delete",
        button="Delete file",
        cancel="/ui/files",
    )


@router.post("/files/{file_ref}/delete")
async def file_delete(file_ref: str, session: FormSession, svc: Svc) -> Response:
    await svc.files.delete(session.principal, file_ref)
    return redirect("/files", "deleted")


# -- schedules ------------------------------------------------------------------------------


def next_fires(cron: str, timezone: str, count: int = PREVIEW_FIRES) -> list[dict[str, str]]:
    """The next fire times of an expression, in its zone and in UTC."""
    try:
        spec = parse_cron(cron)
    except CronError as exc:
        raise ValidationFailed(f"Invalid cron expression: {exc}") from exc
    try:
        zone = load_zone(timezone)
    except ValueError as exc:
        raise ValidationFailed(f"Invalid time zone: {timezone}") from exc
    fires = []
    current = utcnow()
    for _ in range(count):
        found = spec.next_after(current, zone)
        if found is None:
            break
        fires.append(
            {
                "local": found.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
                "utc": short_ts(found),
            }
        )
        current = found
    return fires


@router.get("/schedules/preview")
async def schedule_preview(
    _: UiSession,
    cron: Annotated[str, Query(max_length=255)] = "",
    timezone: Annotated[str, Query(max_length=64)] = "UTC",
) -> Response:
    try:
        return JSONResponse({"fires": next_fires(cron, timezone or "UTC"), "error": None})
    except ValidationFailed as exc:
        return JSONResponse({"fires": [], "error": exc.message})


@router.get("/schedules")
async def schedule_list(
    request: Request, session: UiSession, svc: Svc, cursor: CursorQuery = None
) -> Response:
    page = await svc.schedules.list_schedules(
        session.principal, _page(cursor), state=None, task_id=None, task_version=None
    )
    return render(
        request,
        "schedules.html",
        session,
        nav="schedules",
        schedules=page["items"],
        pagination=page["pagination"],
        first_page=cursor is None,
        tasks=sorted({t.task_id for t in svc.registry.all()}),
    )


@router.post("/schedules")
async def schedule_create(request: Request, session: FormSession, svc: Svc) -> Response:
    attempts = await form_text(request, "max_attempts")
    body = ScheduleCreateRequest.model_validate(
        {
            "cron": await form_text(request, "cron"),
            "timezone": (await form_text(request, "timezone")) or "UTC",
            "task_id": (await form_text(request, "task_id")) or None,
            "inputs_template": parse_json_field(
                await form_text(request, "inputs_template"), "Inputs template", []
            ),
            "params": parse_json_field(await form_text(request, "params"), "Params", {}),
            "concurrency_policy": (await form_text(request, "concurrency_policy")) or "allow",
            "max_attempts": int(attempts) if attempts.isascii() and attempts.isdigit() else 1,
        }
    )
    if not body.inputs_template:
        raise ValidationFailed("The inputs template needs at least one artifact")
    created = await svc.schedules.create(session.principal, body, task_id=None, version=None)
    return redirect(f"/schedules/{created['id']}", "created")


@router.get("/schedules/{schedule_id}")
async def schedule_detail(
    request: Request, schedule_id: str, session: UiSession, svc: Svc, cursor: CursorQuery = None
) -> Response:
    schedule = await svc.schedules.get(session.principal, schedule_id)
    runs = await svc.schedules.list_runs(
        session.principal, schedule_id, RunFilters(), _page(cursor)
    )
    fires: list[dict[str, str]] = []
    if schedule["state"] == "active":
        fires = next_fires(schedule["cron"], schedule["timezone"])
    return render(
        request,
        "schedule.html",
        session,
        nav="schedules",
        schedule=schedule,
        runs=runs["items"],
        pagination=runs["pagination"],
        first_page=cursor is None,
        fires=fires,
    )


_SCHEDULE_ACTIONS = {"pause": "paused", "resume": "resumed", "cancel": "canceled"}


@router.get("/schedules/{schedule_id}/cancel")
async def schedule_cancel_confirm(
    request: Request, schedule_id: str, session: UiSession, svc: Svc
) -> Response:
    schedule = await svc.schedules.get(session.principal, schedule_id)
    return confirm_page(
        request,
        session,
        nav="schedules",
        title=f"Cancel schedule {schedule_id}?",
        consequences=[
            f"It no longer fires ({schedule['cron']}, {schedule['timezone']}) and cannot "
            "be resumed or run by hand; pause it instead to stop it for a while.",
            "Its runs and the threads they started are kept.",
        ],
        action=f"/ui/schedules/{schedule_id}/cancel",
        button="Cancel schedule",
        cancel=f"/ui/schedules/{schedule_id}",
    )


@router.get("/schedules/{schedule_id}/delete")
async def schedule_delete_confirm(
    request: Request, schedule_id: str, session: UiSession, svc: Svc
) -> Response:
    schedule = await svc.schedules.get(session.principal, schedule_id)
    return confirm_page(
        request,
        session,
        nav="schedules",
        title=f"Delete schedule {schedule_id}?",
        consequences=[
            f"It no longer fires ({schedule['cron']}, {schedule['timezone']}).",
            "Its run history is deleted; threads it started are kept.",
            "This cannot be undone.",
        ],
        action=f"/ui/schedules/{schedule_id}/delete",
        button="Delete schedule",
        cancel=f"/ui/schedules/{schedule_id}",
    )


@router.post("/schedules/{schedule_id}/{action}")
async def schedule_action(
    schedule_id: str, action: str, session: FormSession, svc: Svc
) -> Response:
    if action in _SCHEDULE_ACTIONS:
        await svc.schedules.set_state(session.principal, schedule_id, action)
        return redirect(f"/schedules/{schedule_id}", _SCHEDULE_ACTIONS[action])
    if action == "trigger":
        await svc.schedules.trigger(session.principal, schedule_id)
        return redirect(f"/schedules/{schedule_id}", "triggered")
    if action == "delete":
        await svc.schedules.delete(session.principal, schedule_id)
        return redirect("/schedules", "deleted")
    raise ValidationFailed(f"Unknown action '{action}'")


# -- webhooks -------------------------------------------------------------------------------


@router.get("/webhooks")
async def webhook_list(
    request: Request, session: UiSession, svc: Svc, cursor: CursorQuery = None
) -> Response:
    page = await svc.webhooks.list_webhooks(session.principal, WebhookFilters(), _page(cursor))
    return render(
        request,
        "webhooks.html",
        session,
        nav="webhooks",
        webhooks=page["items"],
        pagination=page["pagination"],
        first_page=cursor is None,
        event_types=sorted(EVENT_TYPES),
        created=None,
    )


@router.post("/webhooks")
async def webhook_create(request: Request, session: FormSession, svc: Svc) -> Response:
    form = await request.form()
    events = [e for e in form.getlist("events") if isinstance(e, str)]
    timeout = await form_text(request, "timeout_seconds")
    payload: dict[str, Any] = {
        "url": await form_text(request, "url"),
        "timeout_seconds": int(timeout) if timeout.isascii() and timeout.isdigit() else None,
        "task_id": (await form_text(request, "task_id")) or None,
    }
    if events:
        payload["events"] = {"include": events}
    created = await svc.webhooks.create(session.principal, WebhookCreateRequest(**payload))
    # Post/redirect/get: the secret waits server-side for the next page, shown once.
    await flashes(request).put(
        session.id, NEW_WEBHOOK_FLASH, {"id": created["id"], "secret": created["secret"]}
    )
    return redirect(f"/webhooks/{created['id']}", "webhook_created")


def _by_event(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempts grouped by event, newest attempt first: one row per event, not per try."""
    groups: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda d: (d["timestamp"], d["attempt"]), reverse=True):
        group = groups.get(row["event_id"])
        if group is None:
            groups[row["event_id"]] = {"latest": row, "attempts": [row]}
        else:
            group["attempts"].append(row)
    return list(groups.values())


@router.get("/webhooks/{webhook_id}")
async def webhook_detail(
    request: Request, webhook_id: str, session: UiSession, svc: Svc, cursor: CursorQuery = None
) -> Response:
    webhook = await svc.webhooks.get(session.principal, webhook_id)
    shown = await flashes(request).pop(session.id, NEW_WEBHOOK_FLASH)
    if shown is not None and shown["id"] == webhook_id:
        webhook = {**webhook, "secret": shown["secret"]}
    # Pending retries are due in the future: listed apart, soonest first, with their time.
    pending = await svc.webhooks.list_deliveries(
        session.principal,
        webhook_id,
        DeliveryFilters(status="pending"),
        PageRequest(limit=PENDING_SHOWN),
    )
    history = await svc.webhooks.list_deliveries(
        session.principal, webhook_id, DeliveryFilters(), _page(cursor, DELIVERY_PAGE)
    )
    done = [d for d in history["items"] if d["status"] != "pending"]
    return render(
        request,
        "webhook.html",
        session,
        nav="webhooks",
        webhook=webhook,
        pending=sorted(pending["items"], key=lambda d: d["timestamp"]),
        pending_total=pending["pagination"]["total"],
        events=_by_event(done),
        pagination=history["pagination"],
        first_page=cursor is None,
    )


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
async def webhook_redeliver(
    webhook_id: str, delivery_id: str, session: FormSession, svc: Svc
) -> Response:
    await svc.webhooks.redeliver(session.principal, webhook_id, delivery_id)
    return redirect(f"/webhooks/{webhook_id}", "redelivered")


@router.get("/webhooks/{webhook_id}/delete")
async def webhook_delete_confirm(
    request: Request, webhook_id: str, session: UiSession, svc: Svc
) -> Response:
    webhook = await svc.webhooks.get(session.principal, webhook_id)
    return confirm_page(
        request,
        session,
        nav="webhooks",
        title=f"Delete the webhook to {webhook['url']}?",
        consequences=[
            "No more events are sent to this URL; pending retries are dropped.",
            "Its delivery history is deleted.",
            "This cannot be undone: a new webhook gets a new signing secret.",
        ],
        action=f"/ui/webhooks/{webhook_id}/delete",
        button="Delete webhook",
        cancel=f"/ui/webhooks/{webhook_id}",
    )


@router.post("/webhooks/{webhook_id}/delete")
async def webhook_delete(webhook_id: str, session: FormSession, svc: Svc) -> Response:
    await svc.webhooks.delete(session.principal, webhook_id)
    return redirect("/webhooks", "deleted")
