"""docs/reference/cli.md and api.md are generated and cannot drift from the code."""

from __future__ import annotations

from task_framework.cli.reference_docs import (
    API_OUTPUT,
    CLI_OUTPUT,
    openapi_document,
    render_api_reference,
    render_cli_reference,
)

HINT = "stale: run python -m task_framework.cli.reference_docs"


def test_cli_reference_is_current() -> None:
    assert CLI_OUTPUT.read_text(encoding="utf-8") == render_cli_reference(), HINT


def test_api_reference_is_current() -> None:
    assert API_OUTPUT.read_text(encoding="utf-8") == render_api_reference(), HINT


def test_api_reference_has_one_section_per_route() -> None:
    document = openapi_document()
    text = API_OUTPUT.read_text(encoding="utf-8")
    for path, item in document["paths"].items():
        for method in item:
            if method in ("get", "head", "post", "put", "patch", "delete"):
                assert f"## `{method.upper()} {path}`" in text
    assert "## `GET /threads/{thread_id}/events`" in text
    assert "* Auth: A (admin key)" in text


def test_cli_reference_lists_every_remote_group() -> None:
    text = CLI_OUTPUT.read_text(encoding="utf-8")
    for group in (
        "threads",
        "artifacts",
        "files",
        "tasks",
        "schedules",
        "webhooks",
        "keys",
        "credentials",
    ):
        assert f"## `task-framework {group}`" in text
    assert "### `task-framework threads logs`" in text
    assert "`TASK_FRAMEWORK_API_KEY`" in text
