"""Client models, the SSE decoder, error mapping and the generated sync client."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx

from task_framework.client import ApiError
from task_framework.client import _ops as ops
from task_framework.client._base import Settings, disposition_filename, target_path
from task_framework.client._unasync import TARGET, render
from task_framework.client.errors import error_from_response
from task_framework.client.models import Artifact, Page, Thread

THREAD = {
    "id": "thread_1",
    "name": None,
    "state": "succeeded",
    "metadata": {"task_id": "hello"},
    "params": {},
    "error": None,
    "problems": [],
    "inputs": [],
    "outputs": [
        {
            "id": "artifact_1",
            "kind": "json",
            "ref": "greeting",
            "value": {"a": 1},
            "created_at": "2026-01-01T10:00:00.123456Z",
            "new_field": 1,
        }
    ],
    "artifacts": [],
    "created_at": "2026-01-01T10:00:00.123456Z",
    "started_at": None,
    "finished_at": None,
    "schedule_id": None,
    "run_id": None,
    "attempt": None,
    "added_by_a_newer_server": True,
}


def test_thread_parses_keeps_unknown_fields_and_finds_outputs() -> None:
    thread = Thread.model_validate(THREAD)
    assert thread.is_terminal
    assert thread.succeeded
    greeting = thread.output("greeting")
    assert greeting is not None
    assert greeting.value == {"a": 1}
    assert thread.created_at == datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert thread.to_json()["added_by_a_newer_server"] is True
    assert thread.output("missing") is None


def test_page_of_threads() -> None:
    page = Page[Thread].model_validate(
        {"items": [THREAD], "pagination": {"cursor": "c1", "has_more": True, "total": 9}}
    )
    assert (page.cursor, page.has_more, page.total) == ("c1", True, 9)
    assert page.items[0].id == "thread_1"


def test_request_bodies_drop_nulls_and_server_fields() -> None:
    artifact = Artifact(kind="json", value={"x": 1}, direction="output", thread_id="t")
    body = ops.artifacts([artifact, {"kind": "text", "text": "hi"}])
    assert body == [
        {"kind": "json", "value": {"x": 1}, "labels": {}},
        {"kind": "text", "text": "hi"},
    ]
    assert ops.query(a=None, b=True, c=1) == {"b": "true", "c": 1}


def test_sse_decoder() -> None:
    decoder = ops.SSEDecoder()
    lines = [": ping", "", "id: event_1", "event: thread.started", 'data: {"a": 1}', ""]
    events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
    assert len(events) == 1
    assert (events[0].id, events[0].event, events[0].data) == (
        "event_1",
        "thread.started",
        {"a": 1},
    )
    assert not events[0].is_terminal
    tail = [decoder.feed(x) for x in ("id: log_3", "event: log", 'data: {"message": "m"}', "")]
    assert tail[-1] is not None
    assert tail[-1].is_log


def test_error_envelope_becomes_api_error() -> None:
    envelope = {
        "detail": {
            "type": "t",
            "title": "Not Found",
            "status": 404,
            "detail": "Thread x not found",
            "code": "THREAD_NOT_FOUND",
        }
    }
    response = httpx.Response(404, json=envelope, headers={"x-request-id": "r1"})
    error = error_from_response(response)
    assert isinstance(error, ApiError)
    assert (error.status, error.code, error.detail, error.request_id) == (
        404,
        "THREAD_NOT_FOUND",
        "Thread x not found",
        "r1",
    )
    plain = error_from_response(httpx.Response(502, text="bad gateway"))
    assert (plain.status, plain.code) == (502, "HTTP_ERROR")


def test_settings_from_environment(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("TASK_FRAMEWORK_URL", "http://example:1/")
    monkeypatch.setenv("TASK_FRAMEWORK_API_KEY", "tfk_env")
    settings = Settings.resolve(None, None, app_id="a", user_id=None)
    assert settings.base_url == "http://example:1"
    assert settings.headers()["X-API-Key"] == "tfk_env"
    assert settings.headers()["X-App-Id"] == "a"
    assert Settings.resolve("http://explicit", "k", app_id=None, user_id=None).api_key == "k"


def test_download_names_are_safe(tmp_path: Path) -> None:
    assert disposition_filename('attachment; filename="../../etc/passwd"') == "passwd"
    assert disposition_filename("attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.txt") == "résumé.txt"
    assert target_path(tmp_path, None, "fallback.bin") == tmp_path / "fallback.bin"
    assert target_path(tmp_path / "x.bin", None, "f") == tmp_path / "x.bin"


def test_generated_sync_client_is_current() -> None:
    assert TARGET.read_text() == render(), "run python -m task_framework.client._unasync"
