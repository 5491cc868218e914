"""Server-Sent Events routes: ``/threads/{id}/events`` and ``/threads/{id}/logs`` (§3.8, §3.9).

Included before the threads router, so these paths win over ``/threads/{thread_id}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from task_framework.api.deps import Caller, ServicesDep
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.limits import MAX_OFFSET
from task_framework.models.threads import LogListModel
from task_framework.services.streams import StreamItem, ThreadStreams, close_quietly
from task_framework.store.paging import PageRequest

router = APIRouter(route_class=StrictJSONRoute, responses=ERROR_RESPONSES)

PING_SECONDS = 15.0
"""A ``: ping`` comment is sent after this long without a message (keeps proxies open)."""
SSE_MEDIA_TYPE = "text/event-stream"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events (`id`, `event`, `data` JSON)",
        "content": {SSE_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}

AfterQuery = Annotated[
    str | None, Query(description="Resume after this event id (Last-Event-ID wins)")
]
LastEventIdHeader = Annotated[str | None, Header(alias="Last-Event-ID")]


def format_sse(item: StreamItem) -> str:
    """One SSE message; the JSON is compact, so ``data`` is a single line."""
    data = json.dumps(item.data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {item.id}\nevent: {item.event}\ndata: {data}\n\n"


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


def _stream(items: AsyncIterator[StreamItem | None]) -> StreamingResponse:
    return StreamingResponse(_sse(items), media_type=SSE_MEDIA_TYPE, headers=_SSE_HEADERS)


@router.get(
    "/threads/{thread_id}/events",
    tags=["threads"],
    response_class=StreamingResponse,
    responses=_SSE_RESPONSE,
    summary="Stream a thread's events and log lines (Server-Sent Events)",
)
async def thread_events(
    thread_id: str,
    principal: Caller,
    svc: ServicesDep,
    after: AfterQuery = None,
    last_event_id: LastEventIdHeader = None,
) -> Response:
    """Stream a thread's events as Server-Sent Events.

    Auth: K, owner (admins: any thread). Replays the stored events after `Last-Event-ID`
    (or `after`), then live ones; log lines arrive as `event: log` with ids `log_<seq>`.
    Each `data` is the webhook payload of the event. A `: ping` comment is sent every 15 s;
    the stream ends after the terminal event. An unknown or foreign thread is 404
    THREAD_NOT_FOUND.
    """
    items = await ThreadStreams(svc.db).open(principal, thread_id, after=last_event_id or after)
    return _stream(items)


@router.get(
    "/threads/{thread_id}/logs",
    tags=["threads"],
    response_model=LogListModel,
    responses=_SSE_RESPONSE,
    summary="A thread's logs (a page, or a live SSE stream with follow=true)",
)
async def thread_logs(
    thread_id: str,
    principal: Caller,
    svc: ServicesDep,
    stream: Literal["stdout", "stderr", "log"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: str | None = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    follow: Annotated[bool, Query(description="Stream records as SSE until the end")] = False,
    after: AfterQuery = None,
    last_event_id: LastEventIdHeader = None,
) -> Response:
    """A thread's stdout, stderr and logging records, oldest first.

    Auth: K, owner (admins: any thread). Readable while the thread runs. By default a page
    of log records; with `follow=true` a Server-Sent Events stream of them until the thread
    ends. Output past the per-thread cap ends with a `[log truncated]` record. An unknown
    or foreign thread is 404 THREAD_NOT_FOUND.
    """
    if follow:
        items = await ThreadStreams(svc.db).open(
            principal,
            thread_id,
            after=last_event_id or after,
            with_events=False,
            log_stream=stream,
        )
        return _stream(items)
    page = PageRequest(limit=limit, cursor=cursor or None, offset=offset)
    return JSONResponse(await svc.threads.logs(principal, thread_id, stream, page))
