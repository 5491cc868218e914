"""Which webhooks receive an event, and what they receive (API.md §12.3, §12.4).

Both work on plain rows: an ``events`` row (its ``data`` is the snapshot taken when the
event happened) and ``webhooks`` rows. Payloads are compact JSON objects whose keys with
no value are omitted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

INLINE_SMALL_LIMIT_BYTES = 1024 * 1024
TERMINAL_THREAD_EVENTS = frozenset(
    {"thread.succeeded", "thread.failed", "thread.timeout", "thread.stopped"}
)
SCOPE_METADATA_KEYS = ("tenant_id", "user_id", "app_id", "schedule_id")
_ARTIFACT_BASE_KEYS = ("id", "kind", "ref", "media_type", "explain", "size", "sha256")


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def dumps(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _event_value(event: Any, metadata: Mapping[str, Any], key: str) -> Any:
    value = metadata.get(key)
    if value is None and key in ("app_id", "user_id", "schedule_id"):
        value = getattr(event, key, None)
    return value


def matches(hook: Any, event: Any) -> bool:
    """Whether an enabled webhook row receives an events row (§12.3, steps 1–4)."""
    if event.created_at < hook.created_at:
        return False  # the webhook did not exist yet
    if (hook.app_id, hook.user_id) != (None, None) and (event.app_id, event.user_id) != (
        hook.app_id,
        hook.user_id,
    ):
        return False
    metadata: Mapping[str, Any] = (event.data or {}).get("metadata") or {}
    if hook.task_id is not None and metadata.get("task_id") != hook.task_id:
        return False
    if hook.task_version is not None and metadata.get("task_version") != hook.task_version:
        return False
    scope: Mapping[str, Any] = hook.scope or {}
    if scope.get("thread_id"):
        if event.thread_id != scope["thread_id"]:
            return False
    else:
        for key in SCOPE_METADATA_KEYS:
            wanted = scope.get(key)
            if wanted and _event_value(event, metadata, key) != wanted:
                return False
    filters: Mapping[str, Any] = hook.events or {}
    if filters.get("include") is not None:
        return bool(event.event_type in filters["include"])
    if filters.get("exclude") is not None:
        return event.event_type not in filters["exclude"]
    return True


def select_receivers(hooks: Iterable[Any], event: Any) -> list[Any]:
    """Matching webhooks, one per URL: the most recently created one (§12.3 step 5)."""
    newest: dict[str, Any] = {}
    for hook in hooks:
        if not matches(hook, event):
            continue
        current = newest.get(hook.url)
        if current is None or (hook.created_at, hook.id) > (current.created_at, current.id):
            newest[hook.url] = hook
    return list(newest.values())


def _selected(artifact: Mapping[str, Any], selectors: list[Mapping[str, Any]] | None) -> bool:
    if not selectors:
        return True
    ref = artifact.get("ref")
    if ref is None:
        return False
    for selector in selectors:
        pattern = str(selector.get("ref") or "")
        if pattern.endswith("*") and ref.startswith(pattern[:-1]):
            return True
        if pattern == ref:
            return True
    return False


def _small(content: Any) -> bool:
    encoded = dumps({"c": content}) if not isinstance(content, str) else content.encode()
    return len(encoded) < INLINE_SMALL_LIMIT_BYTES


def render_artifact(artifact: Mapping[str, Any], *, detail: str) -> dict[str, Any]:
    out = _compact({k: artifact.get(k) for k in _ARTIFACT_BASE_KEYS})
    text, value = artifact.get("text"), artifact.get("value")
    if detail == "inline_all":
        out.update(_compact({"text": text, "value": value}))
    else:
        if text is not None and _small(text):
            out["text"] = text
        if value is not None and _small(value):
            out["value"] = value
    out.update(_compact({"file_ref": artifact.get("file_ref"), "url": artifact.get("url")}))
    return out


def render_payload(event: Any, data_filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload of one event for one webhook's data filters (§12.4).

    ``download_url`` entries (``include_download_urls``) are added by the dispatcher when
    it sends, so that every attempt carries URLs that have not expired yet.
    """
    data: Mapping[str, Any] = event.data or {}
    filters: Mapping[str, Any] = data_filters or {}
    detail = filters.get("detail") or "inline_small"
    payload = _compact(
        {
            "event_id": event.id,
            "event_type": event.event_type,
            "timestamp": data.get("timestamp"),
            "thread_id": event.thread_id,
            "run_id": event.run_id,
            "schedule_id": event.schedule_id,
            "metadata": data.get("metadata") or None,
        }
    )
    if detail == "none":
        return payload

    def art(item: Mapping[str, Any]) -> dict[str, Any]:
        return render_artifact(item, detail=detail)

    if data.get("thread") is not None:
        payload["thread"] = data["thread"]
    if event.event_type in TERMINAL_THREAD_EVENTS and data.get("artifacts") is not None:
        selectors = filters.get("artifact_selectors")
        payload["artifacts"] = [art(a) for a in data["artifacts"] if _selected(a, selectors)]
    if event.event_type == "artifact.created" and data.get("artifact") is not None:
        payload["artifact"] = art(data["artifact"])
    if data.get("problem") is not None:
        payload["problem"] = _compact(data["problem"])
    if data.get("run") is not None:
        payload["run"] = _compact(data["run"])
    return payload


__all__ = ["dumps", "matches", "render_payload", "select_receivers"]
