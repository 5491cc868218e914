"""Strict JSON: what the API accepts, stores and answers.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity`` and turns ``"\\ud800"`` into
a lone surrogate. None of these survive the trip to a client (strict encoders refuse
them; a lone surrogate has no UTF-8 form) or to PostgreSQL (JSONB refuses them and
``\\u0000``). So the edge refuses them, with NUL characters and nesting deeper than
:data:`~task_framework.limits.MAX_JSON_DEPTH`, in request bodies and in what tasks
publish; and :func:`repaired` makes anything stored before readable again.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from task_framework.limits import MAX_JSON_DEPTH

__all__ = ["NotStrictJSON", "check_strict", "loads_strict", "repaired"]

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


class NotStrictJSON(ValueError):
    """A value that strict JSON cannot carry; the message says what and where."""


def _refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not allowed in JSON")


def loads_strict(raw: bytes | str) -> Any:
    """Parse ``raw``; raise :class:`NotStrictJSON` (a ``ValueError``) unless strict.

    Syntax errors raise ``json.JSONDecodeError`` as ``json.loads`` does.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise NotStrictJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_strict(value)
    return value


def _text_problem(text: str) -> str | None:
    found = _BAD_TEXT.search(text)
    if found is None:
        return None
    return "NUL character" if found.group() == "\x00" else "lone surrogate"


def check_strict(value: Any, *, where: str = "JSON") -> None:
    """Raise :class:`NotStrictJSON` if ``value`` holds a non-finite number, a NUL or a
    lone surrogate in a string or key, or nests deeper than the bound."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem is not None:
                raise NotStrictJSON(f"{problem} in a string is not allowed in {where}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise NotStrictJSON(f"{item} is not allowed in {where}")
        elif isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise NotStrictJSON(f"{where} nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = _text_problem(key) if isinstance(key, str) else None
                    if problem is not None:
                        raise NotStrictJSON(f"{problem} in a key is not allowed in {where}")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def repaired(value: Any) -> Any:
    """A copy of ``value`` that strict JSON can carry: non-finite numbers become null and
    lone surrogates U+FFFD (records stored before the edge refused them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _BAD_TEXT.sub(_replace, value) if _BAD_TEXT.search(value) else value
    if isinstance(value, dict):
        return {repaired(key): repaired(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [repaired(child) for child in value]
    return value


def _replace(found: re.Match[str]) -> str:
    return found.group() if found.group() == "\x00" else "\ufffd"
