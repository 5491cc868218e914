"""RequestContextMiddleware: request ids, route-template labels, failures and streaming."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from task_framework.api.middleware import RequestContextMiddleware
from task_framework.observability.logging import configure_logging, reset_logging
from task_framework.observability.metrics import Metrics

REQUESTS = "task_framework_api_requests_total"
DURATION_COUNT = "task_framework_api_request_duration_seconds_count"


def _build_app(metrics: Metrics) -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, Any]:
        return {
            "id": thing_id,
            "request_id": structlog.contextvars.get_contextvars().get("request_id"),
        }

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_route() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(3):
                yield f"chunk{index};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    router = APIRouter()

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.include_router(router, prefix="/v1")
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_build_app(metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def _count(metrics: Metrics, name: str, method: str, endpoint: str, status: int) -> float:
    labels = {"method": method, "endpoint": endpoint, "status": str(status)}
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _total_requests(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "task_framework_api_requests"
        for sample in family.samples
        if sample.name == REQUESTS
    )


async def test_incoming_request_id_is_echoed_and_bound(client: httpx.AsyncClient) -> None:
    response = await client.get("/things/t1", headers={"X-Request-ID": "client-id-42"})

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-id-42"
    assert response.json()["request_id"] == "client-id-42"
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_request_id_is_generated_when_absent_or_unusable(
    client: httpx.AsyncClient,
) -> None:
    absent = await client.get("/things/t1")
    unusable = await client.get("/things/t1", headers={"X-Request-ID": "x" * 500})

    for response in (absent, unusable):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert absent.headers["x-request-id"] != unusable.headers["x-request-id"]


async def test_endpoint_label_is_the_route_template(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    await client.get("/things/a")
    await client.get("/things/b")
    await client.get("/v1/items/7")
    await client.get("/v1/items/not-an-int")

    assert _count(metrics, REQUESTS, "GET", "/things/{thing_id}", 200) == 2
    assert _count(metrics, DURATION_COUNT, "GET", "/things/{thing_id}", 200) == 2
    assert _count(metrics, REQUESTS, "GET", "/v1/items/{item_id}", 200) == 1
    assert _count(metrics, REQUESTS, "GET", "/v1/items/{item_id}", 422) == 1
    assert _total_requests(metrics) == 4


async def test_unmatched_paths_and_methods(client: httpx.AsyncClient, metrics: Metrics) -> None:
    missing = await client.get("/no/such/route")
    wrong_method = await client.delete("/things/a")

    assert missing.status_code == 404
    assert "x-request-id" in missing.headers
    assert _count(metrics, REQUESTS, "GET", "<unmatched>", 404) == 1
    assert wrong_method.status_code == 405
    assert _count(metrics, REQUESTS, "DELETE", "/things/{thing_id}", 405) == 1


async def test_unknown_methods_are_bucketed(client: httpx.AsyncClient, metrics: Metrics) -> None:
    await client.request("BREW", "/things/a")

    assert _count(metrics, REQUESTS, "OTHER", "/things/{thing_id}", 405) == 1


async def test_exception_is_a_500_counted_once_and_logged(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    log_stream = io.StringIO()
    configure_logging("INFO", stream=log_stream)
    try:
        response = await client.get("/boom", headers={"X-Request-ID": "failing-1"})
    finally:
        reset_logging()

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "failing-1"
    assert response.json()["detail"]["code"] == "INTERNAL_ERROR"
    assert "internal detail" not in response.text
    assert _count(metrics, REQUESTS, "GET", "/boom", 500) == 1
    assert _total_requests(metrics) == 1
    lines = [json.loads(text) for text in log_stream.getvalue().splitlines()]
    [line] = [line for line in lines if line["event"] == "api.request.failed"]
    assert line["event"] == "api.request.failed"
    assert line["request_id"] == "failing-1"
    assert line["endpoint"] == "/boom"
    assert "RuntimeError: internal detail" in line["exception"]


async def test_health_and_metrics_are_counted_but_not_timed(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    await client.get("/health")
    response = await client.get("/metrics")

    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert _count(metrics, REQUESTS, "GET", "/health", 200) == 1
    assert _count(metrics, REQUESTS, "GET", "/metrics", 200) == 1
    assert _count(metrics, DURATION_COUNT, "GET", "/health", 200) == 0
    assert _count(metrics, DURATION_COUNT, "GET", "/metrics", 200) == 0


async def test_streaming_response_passes_through(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.get("/stream")

    assert response.text == "chunk0;chunk1;chunk2;"
    assert "x-request-id" in response.headers
    assert _count(metrics, REQUESTS, "GET", "/stream", 200) == 1


def _http_scope(path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_body_chunks_are_forwarded_before_the_app_finishes() -> None:
    """The first chunk reaches the server while the app still waits to produce the next."""
    first_chunk_sent = asyncio.Event()
    sent: list[Message] = []

    async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await first_chunk_sent.wait()  # would deadlock if the middleware buffered
        await send({"type": "http.response.body", "body": b"second", "more_body": False})

    async def server_send(message: Message) -> None:
        sent.append(message)
        if message.get("body") == b"first":
            first_chunk_sent.set()

    middleware = RequestContextMiddleware(streaming_app, metrics=Metrics())
    await asyncio.wait_for(middleware(_http_scope("/s"), _no_body, server_send), timeout=5)

    assert [m.get("body") for m in sent[1:]] == [b"first", b"second"]
    assert (b"x-request-id", sent[0]["headers"][0][1]) in sent[0]["headers"]


async def test_failure_after_the_response_started_is_reraised_and_counted_once() -> None:
    metrics = Metrics()

    async def broken_stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("stream broke")

    async def server_send(message: Message) -> None:
        return None

    middleware = RequestContextMiddleware(broken_stream, metrics=metrics)
    with pytest.raises(RuntimeError, match="stream broke"):
        await middleware(_http_scope("/s"), _no_body, server_send)

    assert _count(metrics, REQUESTS, "GET", "<unmatched>", 500) == 1
    assert _total_requests(metrics) == 1


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    metrics = Metrics()
    await RequestContextMiddleware(app, metrics=metrics)({"type": "lifespan"}, receive, send)

    assert seen == ["lifespan"]
    assert _total_requests(metrics) == 0
