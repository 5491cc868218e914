"""Thread pages: list with the API's filters, start a thread, detail with live updates."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from task_framework.api.routes.streams import PING_SECONDS, SSE_MEDIA_TYPE, format_sse
from task_framework.errors import ValidationFailed
from task_framework.models._time import as_utc
from task_framework.models.threads import (
    TERMINAL_STATES,
    ThreadCreateRequest,
    ThreadRetryRequest,
)
from task_framework.services.streams import StreamItem, ThreadStreams, close_quietly
from task_framework.services.threads import ThreadFilters
from task_framework.store.paging import PageRequest
from task_framework.ui import retries
from task_framework.ui.common import (
    FormSession,
    Svc,
    UiSession,
    confirm_page,
    form_text,
    parse_json_field,
    redirect,
    render,
)
from task_framework.ui.sessions import Session

router = APIRouter()

PAGE_SIZE = 25
LOG_PAGE = 1000
THREAD_STATES = ("queued", "running", "succeeded", "failed", "stopped", "timeout", "expired")
FILTER_FIELDS = (
    "state",
    "name",
    "task_id",
    "task_version",
    "schedule_id",
    "run_id",
    "app_id",
    "user_id",
    "created_after",
    "created_before",
)
DEFAULT_INPUTS = '[{"kind": "json", "value": {}}]'


def _date(value: str | None, label: str) -> datetime | None:
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ValidationFailed(f"{label} is not a date and time (use 2026-01-31T12:00)") from exc


@router.get("/threads")
async def thread_list(
    request: Request,
    session: UiSession,
    svc: Svc,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    raw = {name: (request.query_params.get(name) or "").strip() for name in FILTER_FIELDS}
    if raw["state"] and raw["state"] not in THREAD_STATES:
        raise ValidationFailed(f"Unknown state '{raw['state']}'")
    filters = ThreadFilters(
        state=raw["state"] or None,
        name=raw["name"] or None,
        task_id=raw["task_id"] or None,
        task_version=raw["task_version"] or None,
        schedule_id=raw["schedule_id"] or None,
        run_id=raw["run_id"] or None,
        app_id=raw["app_id"] or None,
        user_id=raw["user_id"] or None,
        created_after=_date(raw["created_after"], "Created after"),
        created_before=_date(raw["created_before"], "Created before"),
    )
    page = await svc.threads.list_threads(
        session.principal, filters, PageRequest(limit=PAGE_SIZE, cursor=cursor or None)
    )
    kept = {k: v for k, v in raw.items() if v}
    return render(
        request,
        "threads.html",
        session,
        nav="threads",
        threads=page["items"],
        pagination=page["pagination"],
        filters=raw,
        kept=kept,
        states=THREAD_STATES,
        tasks=sorted({t.task_id for t in svc.registry.all()}),
        default_inputs=DEFAULT_INPUTS,
        first_page=cursor is None,
    )


@router.post("/threads")
async def thread_create(request: Request, session: FormSession, svc: Svc) -> Response:
    task = await form_text(request, "task_id")
    timeout = await form_text(request, "timeout_seconds")
    body = ThreadCreateRequest.model_validate(
        {
            "mode": "async",
            "name": (await form_text(request, "name")) or None,
            "inputs": parse_json_field(await form_text(request, "inputs"), "Inputs", []),
            "params": parse_json_field(await form_text(request, "params"), "Params", {}),
            "metadata": parse_json_field(await form_text(request, "metadata"), "Metadata", {}),
            "timeout_seconds": int(timeout) if timeout.isascii() and timeout.isdigit() else None,
        }
    )
    thread, _ = await svc.threads.create(
        session.principal, body, task_id=task or None, version=None, idempotency_key=None
    )
    return redirect(f"/threads/{thread['id']}", "created")


async def _log_window(
    svc: Svc, session: Session, thread_id: str, log_to: int | None
) -> dict[str, Any]:
    """Up to ``LOG_PAGE`` lines ending at line ``log_to`` (1-based), the latest by default.

    Paging is anchored at the end, so the first view of a long log shows how it ended
    (the final error) and "earlier" steps back one window at a time.
    """
    count = await svc.threads.logs(session.principal, thread_id, None, PageRequest(limit=1))
    total = int(count["pagination"]["total"])
    last = total if log_to is None else max(0, min(log_to, total))
    first = max(1, last - LOG_PAGE + 1)
    items: list[dict[str, Any]] = []
    if last:
        page = PageRequest(limit=last - first + 1, offset=first - 1)
        items = (await svc.threads.logs(session.principal, thread_id, None, page))["items"]
        last = first + len(items) - 1
    return {
        "lines": items,
        "first": first if items else 0,
        "last": last if items else 0,
        "total": total,
        "at_end": not items or last >= total,
        "earlier": first - 1 if items and first > 1 else None,
        "later": min(total, last + LOG_PAGE) if items and last < total else None,
        "first_window": min(total, LOG_PAGE) if items and first > 1 else None,
        "page": LOG_PAGE,
    }


@router.get("/threads/{thread_id}")
async def thread_detail(
    request: Request,
    thread_id: str,
    session: UiSession,
    svc: Svc,
    log_to: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    thread = await svc.threads.get(session.principal, thread_id)
    log = await _log_window(svc, session, thread_id, log_to)
    files = [a for a in thread["artifacts"] if a.get("file_ref")]
    lineage = await retries.lineage(svc, session.principal, thread)
    return render(
        request,
        "thread.html",
        session,
        nav="threads",
        thread=thread,
        log=log,
        logs=log["lines"],
        files=files,
        terminal=thread["state"] in TERMINAL_STATES,
        **lineage,
    )


@router.post("/threads/{thread_id}/stop")
async def thread_stop(thread_id: str, session: FormSession, svc: Svc) -> Response:
    await svc.threads.stop(session.principal, thread_id)
    return redirect(f"/threads/{thread_id}", "stopped")


@router.post("/threads/{thread_id}/retry")
async def thread_retry(thread_id: str, session: FormSession, svc: Svc) -> Response:
    original = await svc.threads.get(session.principal, thread_id)
    thread, _ = await svc.threads.retry(
        session.principal,
        thread_id,
        ThreadRetryRequest(mode="async"),
        task_id=None,
        version=None,
        name=original["name"],
        metadata={retries.RETRY_OF_KEY: thread_id},
    )
    return redirect(f"/threads/{thread['id']}", "retried")


@router.get("/threads/{thread_id}/delete")
async def thread_delete_confirm(
    request: Request, thread_id: str, session: UiSession, svc: Svc
) -> Response:
    thread = await svc.threads.get(session.principal, thread_id)
    label = thread["name"] or thread["id"]
    return confirm_page(
        request,
        session,
        nav="threads",
        title=f"Delete thread {label}?",
        consequences=[
            "The thread, its outputs, problems, events and log lines are deleted.",
            "Files that no other thread or schedule uses are deleted too.",
            "This cannot be undone.",
        ],
        action=f"/ui/threads/{thread_id}/delete",
        button="Delete thread",
        cancel=f"/ui/threads/{thread_id}",
    )


@router.post("/threads/{thread_id}/delete")
async def thread_delete(thread_id: str, session: FormSession, svc: Svc) -> Response:
    refs = await svc.threads.delete(session.principal, thread_id)
    await svc.delete_files(refs)
    return redirect("/threads", "deleted")


async def _sse(items: AsyncIterator[StreamItem | None]) -> AsyncIterator[str]:
    last_sent = time.monotonic()
    try:
        async for item in items:
            if item is not None:
                last_sent = time.monotonic()
                yield format_sse(item)
            elif time.monotonic() - last_sent >= PING_SECONDS:
                last_sent = time.monotonic()
                yield ": ping\n\n"
    finally:
        await close_quietly(items)


@router.get("/threads/{thread_id}/events")
async def thread_events(
    thread_id: str,
    session: UiSession,
    svc: Svc,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200)] = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The API's event stream (events and log lines), authenticated by the session."""
    # EventSource cannot send Last-Event-ID on its first request: the page passes the
    # position it rendered up to as ``after``, so the live view continues from there.
    items = await ThreadStreams(svc.db).open(
        session.principal, thread_id, after=last_event_id or after
    )
    headers: dict[str, Any] = {"X-Accel-Buffering": "no"}
    return StreamingResponse(_sse(items), media_type=SSE_MEDIA_TYPE, headers=headers)
