"""Artifact kind rules and the error task code sees when an artifact is refused.

Two layers (API.md §5.2): the *model rule* runs when an artifact is parsed (422 over
HTTP, ``pydantic.ValidationError`` in task code); the *service rule* runs when it is
created (400 over HTTP, :class:`ArtifactValidationError` in task code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from task_framework.errors import ArtifactValidationError

TEXT_KINDS = frozenset({"text", "rich_text"})
VALUE_KINDS = frozenset({"json", "metrics", "provenance", "geo", "patch"})
FILE_KINDS = frozenset({"file", "binary", "log", "table"})
URL_KINDS = frozenset({"url", "http_request"})
KNOWN_KINDS = TEXT_KINDS | VALUE_KINDS | FILE_KINDS | URL_KINDS | {"bundle", "http_response"}


def model_rule_error(kind: str, fields: Mapping[str, Any]) -> str | None:
    """The model-rule violation of an artifact, or ``None`` when it passes."""
    file_ref = fields.get("file_ref")
    value = fields.get("value")
    if kind in TEXT_KINDS:
        if fields.get("text") is None and not file_ref:
            return f"Artifact of kind '{kind}' requires 'text' or 'file_ref'"
    elif kind in VALUE_KINDS:
        if value is None and not file_ref:
            return f"Artifact of kind '{kind}' requires 'value' or 'file_ref'"
    elif kind in FILE_KINDS:
        if not file_ref:
            return f"Artifact of kind '{kind}' requires 'file_ref'"
    elif kind in URL_KINDS:
        if not fields.get("url"):
            return f"Artifact of kind '{kind}' requires 'url'"
    elif kind == "bundle":
        if not isinstance(value, list) or not value:
            return "Artifact of kind 'bundle' requires 'value' to be a non-empty list"
    elif kind == "http_response":
        if not (isinstance(value, dict) and "status" in value) and not file_ref:
            return "Artifact of kind 'http_response' requires 'value.status' or 'file_ref'"
    return None


def service_rule_error(kind: str, fields: Mapping[str, Any]) -> str | None:
    """The service-rule violation (file existence is checked by the caller)."""
    if kind not in KNOWN_KINDS:
        return f"Invalid artifact type: {kind}"
    return model_rule_error(kind, fields)


__all__ = [
    "FILE_KINDS",
    "KNOWN_KINDS",
    "ArtifactValidationError",
    "model_rule_error",
    "service_rule_error",
]
