"""Helpers for the HTTP contract tests: envelope checks, tiny dev tasks, polling."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import Server

TERMINAL = frozenset({"succeeded", "failed", "stopped", "timeout", "expired"})
POLL_SECONDS = 0.05
DEFAULT_WAIT_SECONDS = 30.0


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    detail: str | None = None,
    detail_prefix: str | None = None,
) -> dict[str, Any]:
    """Assert an error response in the ``{"detail": {...}}`` envelope; return the inner dict.

    A 422 is checked in FastAPI's standard shape instead (``{"detail": [{loc, msg, type}]}``,
    API.md §3) and returned as ``{"code", "detail", "errors"}``: ``detail`` joins the
    messages, so ``detail``/``detail_prefix`` match any one of them."""
    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id"), "every response carries X-Request-ID"
    assert response.headers["content-type"].startswith("application/json")
    if status == 422:
        return _validation_problem(response, code, detail=detail, detail_prefix=detail_prefix)
    problem: dict[str, Any] = response.json()["detail"]
    assert problem["type"] == f"https://httpstatus.es/{status}"
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert problem["status"] == status
    assert problem["code"] == code, problem
    if detail is not None:
        assert problem["detail"] == detail
    if detail_prefix is not None:
        assert str(problem["detail"]).startswith(detail_prefix), problem["detail"]
    return problem


def _validation_problem(
    response: httpx.Response, code: str, *, detail: str | None, detail_prefix: str | None
) -> dict[str, Any]:
    assert code == "VALIDATION_FAILED", "a 422 carries no code of its own"
    body = response.json()
    assert set(body) == {"detail"}, body
    errors = body["detail"]
    assert isinstance(errors, list), body
    assert errors, body
    for error in errors:
        assert {"loc", "msg", "type"} <= set(error), error
        assert isinstance(error["loc"], list), error
        assert isinstance(error["msg"], str), error
    messages = [str(e["msg"]).removeprefix("Value error, ") for e in errors]
    if detail is not None:
        assert detail in messages, messages
    if detail_prefix is not None:
        assert any(m.startswith(detail_prefix) for m in messages), messages
    return {"code": code, "detail": "; ".join(messages), "errors": errors}


def write_dev_task(
    root: Path, name: str, body: str, *, metadata: dict[str, Any] | None = None
) -> Path:
    """A dev task folder ``root/name`` whose ``task.py`` defines ``run(context)``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "version": "1.0.0", "entry_point": "task:run", **(metadata or {})}
    (folder / "task_metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    (folder / "task.py").write_text(textwrap.dedent(body), encoding="utf-8")
    return folder


async def wait_thread(
    server: Server,
    thread_id: str,
    states: frozenset[str] = TERMINAL,
    *,
    timeout: float = DEFAULT_WAIT_SECONDS,
) -> dict[str, Any]:
    """Poll ``GET /threads/{id}`` (admin) until the thread is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        response = await server.client.get(f"/threads/{thread_id}", headers=server.admin)
        assert response.status_code == 200, response.text
        thread: dict[str, Any] = response.json()
        if thread["state"] in states:
            return thread
        assert time.monotonic() < deadline, f"thread stayed {thread['state']}"
        await asyncio.sleep(POLL_SECONDS)


async def admin_total(server: Server, path: str, **params: str) -> int:
    """``pagination.total`` of an admin list call."""
    response = await server.client.get(path, params=params, headers=server.admin)
    assert response.status_code == 200, response.text
    total: int = response.json()["pagination"]["total"]
    return total
