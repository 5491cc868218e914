"""Examples shown in the OpenAPI document (and so in ``/docs`` and ``/redoc``).

Request examples are what "Try it out" pre-fills, so each one is a request the server
accepts as it stands (given a deployed task that takes a JSON input, like
``examples/hello``). Response examples are abridged real responses.
"""

from __future__ import annotations

import copy
from typing import Any

_THREAD_ID = "thread_d3065b2f8a2e4b7c9f1e0a4b5c6d7e8f"
_INPUT_ID = "artifact_715d2c4e9b0a4f1e8d3c2b1a0f9e8d7c"
_OUTPUT_ID = "artifact_0b9a8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
_CREATED = "2026-11-29T23:06:48.891842Z"


def _artifact(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": _INPUT_ID,
        "thread_id": _THREAD_ID,
        "kind": "json",
        "media_type": None,
        "ref": None,
        "explain": None,
        "size": None,
        "sha256": None,
        "file_ref": None,
        "url": None,
        "value": None,
        "text": None,
        "labels": {},
        "created_at": "2026-11-29T23:06:48.892484Z",
        "archived": False,
        "archived_at": None,
        "task_id": None,
        "task_version": None,
        "direction": "input",
    }
    return {**base, **fields}


ARTIFACT = _artifact(
    id=_OUTPUT_ID,
    ref="greeting",
    media_type="application/json",
    value={"greeting": "Hello, Ada!"},
    created_at="2026-11-29T23:06:49.102311Z",
    direction="output",
)
_INPUT = _artifact(value={"name": "Ada"})

THREAD = {
    "id": _THREAD_ID,
    "name": "greet Ada",
    "state": "succeeded",
    "metadata": {
        "user_id": "user123",
        "app_id": "app456",
        "task_id": "hello",
        "task_version": "1.0.0",
    },
    "params": {},
    "error": None,
    "problems": [],
    "inputs": [_INPUT],
    "outputs": [ARTIFACT],
    "artifacts": [_INPUT, ARTIFACT],
    "created_at": _CREATED,
    "started_at": "2026-11-29T23:06:48.953012Z",
    "finished_at": "2026-11-29T23:06:49.110954Z",
    "schedule_id": None,
    "run_id": None,
    "attempt": None,
}
QUEUED_THREAD = {
    **THREAD,
    "state": "queued",
    "outputs": [],
    "artifacts": [_INPUT],
    "started_at": None,
    "finished_at": None,
}

ERROR_ENVELOPE: dict[str, Any] = {
    "detail": {
        "type": "https://httpstatus.es/404",
        "title": "Not Found",
        "status": 404,
        "detail": f"Thread {_THREAD_ID} not found",
        "code": "THREAD_NOT_FOUND",
        "instance": f"/threads/{_THREAD_ID}",
    }
}


_KEEP_NULLS: dict[str, Any] = {}


def _json(examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for example in examples.values():
        _KEEP_NULLS[example["summary"]] = example["value"]
    return {"content": {"application/json": {"examples": examples}}}


def restore_nulls(node: Any) -> None:
    """Put back the ``null`` fields of the response examples into an OpenAPI document.

    FastAPI drops every ``None`` when it encodes the document, which would make the
    examples claim that absent values are omitted; responses always carry them.
    """
    if isinstance(node, dict):
        summary = node.get("summary")
        if "value" in node and isinstance(summary, str) and summary in _KEEP_NULLS:
            node["value"] = copy.deepcopy(_KEEP_NULLS[summary])
        for child in node.values():
            restore_nulls(child)
    elif isinstance(node, list):
        for child in node:
            restore_nulls(child)


THREAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: _json({"succeeded": {"summary": "A sync thread, finished", "value": THREAD}}),
    202: _json({"queued": {"summary": "An async thread, queued", "value": QUEUED_THREAD}}),
}
"""Response examples of the routes that answer a Thread (201 sync, 202 async)."""

THREAD_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: _json({"thread": {"summary": "A thread", "value": THREAD}})
}
ARTIFACT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: _json({"artifact": {"summary": "An output artifact", "value": ARTIFACT}})
}

CREATE_THREAD: dict[str, dict[str, Any]] = {
    "sync": {
        "summary": "Run and wait for the result (201)",
        "value": {
            "mode": "sync",
            "name": "greet Ada",
            "inputs": [{"kind": "json", "value": {"name": "Ada"}}],
            "params": {},
        },
    },
    "async": {
        "summary": "Queue, answer at once (202), and call a webhook when done",
        "value": {
            "mode": "async",
            "inputs": [{"kind": "json", "value": {"name": "Grace"}}],
            "metadata": {"request": "r-42"},
            "idempotency_key": "order-42",
            "timeout_seconds": 600,
            "webhooks": [
                {
                    "callback_url": "https://example.com/hooks/threads",
                    "events": ["thread.succeeded", "thread.failed"],
                }
            ],
        },
    },
}

CREATE_SCHEDULE: dict[str, dict[str, Any]] = {
    "weekdays": {
        "summary": "Every weekday at 09:30 Berlin time",
        "value": {
            "cron": "30 9 * * 1-5",
            "timezone": "Europe/Berlin",
            "inputs_template": [{"kind": "json", "value": {"name": "team"}}],
            "params": {},
            "concurrency_policy": "forbid",
            "max_attempts": 3,
            "misfire_policy": "skip",
        },
    }
}

CREATE_WEBHOOK: dict[str, dict[str, Any]] = {
    "finished": {
        "summary": "Finished threads of one task",
        "value": {
            "url": "https://example.com/hooks/tasks",
            "events": {"include": ["thread.succeeded", "thread.failed"]},
            "task_id": "hello",
            "data_filters": {"detail": "inline_small"},
            "timeout_seconds": 10,
        },
    }
}

PUT_CREDENTIAL: dict[str, dict[str, Any]] = {
    "create": {
        "summary": "Store a secret",
        "value": {
            "value": "sk-live-0123456789",
            "description": "Payment provider key",
            "tags": ["payments"],
            "expires_at": "2027-12-31T00:00:00Z",
        },
    },
    "describe": {
        "summary": "Change the description only (the value is kept)",
        "value": {"description": "Payment provider key (rotated yearly)"},
    },
}

CREATE_API_KEY: dict[str, dict[str, Any]] = {
    "bound": {
        "summary": "A regular key bound to one app and user",
        "value": {"name": "billing-backend", "role": "user", "app_id": "billing", "user_id": "svc"},
    },
    "admin": {
        "summary": "An admin key that expires",
        "value": {"name": "ops", "role": "admin", "expires_at": "2027-06-30T00:00:00Z"},
    },
}
