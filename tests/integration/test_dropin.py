"""What clients and task zips written for task-framework-py 0.0.20b0 rely on (issue 17):
redeploying the same zip answers 201, 422 bodies keep FastAPI's standard shape, and task
code can log through ``task_framework.logging`` (and ``context.logger`` at INFO)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Server, ServerFactory
from http_contract import wait_thread
from task_zips import build_zip

pytestmark = pytest.mark.slow

LOGGING_TASK = """\
from task_framework.logging import logger
from task_framework.models.artifact import Artifact

log = logger.bind(stage="boot")


async def run(context):
    logger.info("module-level %s", "hello")
    logger.info("order.placed", order_id=7, customer="Ada L")
    log.warning("bound")
    logger.debug("module-level debug")
    context.logger.info("context info")
    context.logger.debug("context debug")
    await context.publish_output_artifacts([Artifact(kind="json", ref="ok", value={"ok": 1})])
"""


def _package(version: str, **metadata: Any) -> bytes:
    meta = {"name": "logs", "version": version, "entry_point": "task:run", **metadata}
    return build_zip({"task_metadata.json": json.dumps(meta), "task.py": LOGGING_TASK})


async def _deploy(server: Server, package: bytes) -> Any:
    return await server.client.post(
        "/admin/tasks",
        files={"file": ("logs.zip", package, "application/zip")},
        headers=server.admin,
    )


async def _messages(server: Server, version: str) -> list[tuple[str, str]]:
    user = server.user()
    created = await server.client.post(
        "/threads",
        params={"task_id": "logs", "version": version},
        json={"mode": "sync", "inputs": [{"kind": "json", "value": {}}]},
        headers=user,
    )
    assert created.status_code == 201, created.text
    thread = await wait_thread(server, created.json()["id"])
    assert thread["state"] == "succeeded", thread
    logs = await server.client.get(f"/threads/{thread['id']}/logs", headers=user)
    assert logs.status_code == 200, logs.text
    return [(item["level"], item["message"]) for item in logs.json()["items"]]


async def test_redeploy_answers_201_and_task_logging_reaches_the_thread_log(
    make_server: ServerFactory,
) -> None:
    # The server itself logs at WARNING: the task's level is its own (INFO by default).
    server = await make_server(dev_tasks=[], log_level="WARNING")
    first = await _deploy(server, _package("1.0.0"))
    assert first.status_code == 201, first.text
    assert first.json()["was_new"] is True
    again = await _deploy(server, _package("1.0.0"))
    assert again.status_code == 201, again.text
    assert again.json() == {
        "task_id": "logs",
        "version": "1.0.0",
        "was_new": False,
        "message": "Task logs:1.0.0 already deployed (skipped)",
    }

    assert await _messages(server, "1.0.0") == [
        ("INFO", "module-level hello"),
        ("INFO", 'order.placed order_id=7 customer="Ada L"'),
        ("WARNING", "bound stage=boot"),
        ("INFO", "context info"),
    ]

    # A task asks for DEBUG in its metadata and gets it, from both loggers.
    assert (await _deploy(server, _package("2.0.0", log_level="debug"))).status_code == 201
    debug = await _messages(server, "2.0.0")
    assert ("DEBUG", "module-level debug") in debug
    assert ("DEBUG", "context debug") in debug

    refused = await _deploy(server, _package("3.0.0", log_level="LOUD"))
    assert refused.status_code == 400
    assert "log_level" in refused.json()["detail"]["detail"]


async def test_validation_errors_keep_fastapis_standard_shape(make_server: ServerFactory) -> None:
    server = await make_server()
    response = await server.client.post(
        "/threads", json={"inputs": [{"kind": "json", "value": {}}]}, headers=server.user()
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "mode"], "msg": "Field required", "type": "missing"}]
    }
    bad_query = await server.client.get("/threads", params={"limit": 0}, headers=server.user())
    assert bad_query.status_code == 422
    [error] = bad_query.json()["detail"]
    assert error["loc"] == ["query", "limit"]
    assert error["type"] == "greater_than_equal"

    # Every other error keeps the envelope.
    missing = await server.client.get("/threads/thread_nope", headers=server.user())
    assert missing.status_code == 404
    assert missing.json()["detail"]["code"] == "THREAD_NOT_FOUND"

    # The OpenAPI document says so: 422 is HTTPValidationError on every operation with input.
    document = (await server.client.get("/openapi.json")).json()
    create = document["paths"]["/threads"]["post"]["responses"]["422"]
    assert create["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            schema = (
                operation.get("responses", {})
                .get("422", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            if schema is not None:
                assert schema == {"$ref": "#/components/schemas/HTTPValidationError"}, (
                    method,
                    path,
                )
