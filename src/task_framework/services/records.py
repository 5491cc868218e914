"""Rows to API dicts: every field present, absent values ``null`` (API.md §1.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from task_framework.models._time import format_ts
from task_framework.store.prepared import Prepared
from task_framework.store.tables import artifacts

ARTIFACT_CONTENT_FIELDS = (
    "kind",
    "media_type",
    "explain",
    "ref",
    "size",
    "sha256",
    "file_ref",
    "url",
    "value",
    "text",
)
ARTIFACT_ROW_FIELDS = (
    *("id", "thread_id", "app_id", "user_id", "task_id", "task_version", "direction", "seq"),
    *ARTIFACT_CONTENT_FIELDS,
    *("labels", "created_at", "archived", "archived_at"),
)
INSERT_ARTIFACTS = Prepared.insert(artifacts, ARTIFACT_ROW_FIELDS)
"""Insert artifact rows holding every one of :data:`ARTIFACT_ROW_FIELDS`."""


def artifact_dict(m: Mapping[Any, Any], *, direction: str | None = None) -> dict[str, Any]:
    """An artifact row as the API shows it; ``direction`` overrides the stored role."""
    return {
        "id": m["id"],
        "thread_id": m["thread_id"],
        "kind": m["kind"],
        "media_type": m["media_type"],
        "explain": m["explain"],
        "ref": m["ref"],
        "size": m["size"],
        "sha256": m["sha256"],
        "file_ref": m["file_ref"],
        "url": m["url"],
        "value": m["value"],
        "text": m["text"],
        "labels": m["labels"] or {},
        "created_at": format_ts(m["created_at"]),
        "archived": bool(m["archived"]),
        "archived_at": format_ts(m["archived_at"]),
        "task_id": m["task_id"],
        "task_version": m["task_version"],
        "direction": direction or m["direction"],
    }


def thread_dict(
    m: Mapping[Any, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    *,
    show_stack: bool,
) -> dict[str, Any]:
    error = m["error"]
    if error is not None and not show_stack:
        error = {**error, "stack_trace": None}
    return {
        "id": m["id"],
        "name": m["name"],
        "state": m["state"],
        "metadata": m["metadata"] or {},
        "params": m["params"] or {},
        "error": error,
        "problems": m["problems"] or [],
        "inputs": inputs,
        "outputs": outputs,
        "created_at": format_ts(m["created_at"]),
        "started_at": format_ts(m["started_at"]),
        "finished_at": format_ts(m["finished_at"]),
        "schedule_id": m["schedule_id"],
        "run_id": m["run_id"],
        "attempt": m["attempt"],
        "artifacts": inputs + outputs,
    }


def log_dict(m: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "seq": m["seq"],
        "timestamp": format_ts(m["timestamp"]),
        "stream": m["stream"],
        "level": m["level"],
        "logger": m["logger"],
        "message": m["message"],
    }
