"""Matching artifacts against a task's ``input_schemas`` / ``output_schemas`` (API.md §5.9).

``jsonschema`` is imported lazily: the server always has it, a task environment may not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "object": (dict,),
    "array": (list,),
}


def _json_schema_error(value: Any, json_schema: Mapping[str, Any]) -> str | None:
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(json_schema)
    errors = sorted(
        validator_cls(json_schema).iter_errors(value), key=lambda e: list(e.absolute_path)
    )
    if not errors:
        return None
    first = errors[0]
    path = ".".join(str(part) for part in first.absolute_path) or "root"
    return f"JSON Schema validation failed at '{path}': {first.message}"


def _field_error(artifact: Mapping[str, Any], fields: Sequence[Mapping[str, Any]]) -> str | None:
    value = artifact.get("value")
    target: Mapping[str, Any] = value if isinstance(value, dict) else artifact
    for spec in fields:
        name = str(spec.get("name", ""))
        present = name in target and target[name] is not None
        if spec.get("required") and not present:
            return f"missing required field '{name}'"
        expected = _TYPE_CHECKS.get(str(spec.get("type", "")))
        if present and expected is not None:
            item = target[name]
            if not isinstance(item, expected) or (expected == (int,) and isinstance(item, bool)):
                return f"field '{name}' must be of type {spec.get('type')}"
    return None


def schema_error(artifact: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    """Why ``artifact`` does not match ``schema``, or ``None`` when it does."""
    kind = artifact.get("kind")
    if schema.get("kind") != kind:
        return f"kind '{kind}' != '{schema.get('kind')}'"
    json_schema = schema.get("json_schema")
    if kind == "json" and isinstance(json_schema, Mapping):
        if artifact.get("value") is None:
            return "JSON Schema validation failed at 'root': value is required"
        return _json_schema_error(artifact.get("value"), json_schema)
    fields = schema.get("fields") or []
    return _field_error(artifact, fields) if isinstance(fields, list) else None


def match_any(artifact: Mapping[str, Any], schemas: Sequence[Mapping[str, Any]]) -> str | None:
    """``None`` when ``artifact`` matches one of ``schemas`` (an empty list matches all).

    Otherwise a message: "artifact with kind '<k>' does not match any allowed schema.
    Errors: schema '<kind>': <reason>; ...".
    """
    if not schemas:
        return None
    reasons = []
    for schema in schemas:
        reason = schema_error(artifact, schema)
        if reason is None:
            return None
        reasons.append(f"schema '{schema.get('kind')}': {reason}")
    return (
        f"artifact with kind '{artifact.get('kind')}' does not match any allowed schema. "
        f"Errors: {'; '.join(reasons)}"
    )


def display_fields(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``fields`` for display: derived from ``json_schema`` when ``fields`` is empty."""
    fields = schema.get("fields") or []
    json_schema = schema.get("json_schema")
    if fields or not isinstance(json_schema, Mapping):
        return list(fields)
    required = set(json_schema.get("required") or [])
    properties = json_schema.get("properties") or {}
    return [
        {
            "name": name,
            "type": (prop or {}).get("type", "any") if isinstance(prop, Mapping) else "any",
            "required": name in required,
            "description": (prop or {}).get("description") if isinstance(prop, Mapping) else None,
        }
        for name, prop in properties.items()
    ]
