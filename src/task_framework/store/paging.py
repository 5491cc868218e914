"""Keyset pagination shared by every list route (API.md §1.4).

A cursor is an opaque base64url token naming the list it came from and the sort key and
id of the last item served. Lists sort by ``(sort_column, id)``; ties break on id.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Select, and_, func, or_, select

from task_framework.errors import ValidationFailed
from task_framework.store.pages import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "PageRequest", "paginate"]


def _encode(route: str, key: Any, ident: Any) -> str:
    if isinstance(key, datetime):
        key = {"ts": key.isoformat()}
    raw = json.dumps([route, key, ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(route: str, cursor: str) -> tuple[Any, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, key, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(key, dict):
            key = datetime.fromisoformat(key["ts"])
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValidationFailed("Invalid cursor") from exc
    if tag != route:
        raise ValidationFailed("Invalid cursor: it was issued by another list")
    return key, ident


def _check_cursor_value(value: Any, column: Column[Any] | ColumnElement[Any]) -> None:
    """A decoded cursor part must have the column's Python type: a crafted cursor is bad
    input (400), not a database error."""
    # A TypeDecorator (UTCDateTime) reports ``object``; its implementation knows better.
    sql_type = getattr(column.type, "impl_instance", column.type)
    try:
        expected: type = sql_type.python_type
    except NotImplementedError:  # pragma: no cover - every sort column has a Python type
        return
    if isinstance(value, bool) or not isinstance(value, expected):
        raise ValidationFailed("Invalid cursor")


def paginate(
    conn: Connection,
    query: Select[Any],
    *,
    route: str,
    sort: Column[Any] | ColumnElement[Any],
    ident: Column[Any] | ColumnElement[Any],
    page: PageRequest,
    descending: bool = True,
    count: bool = True,
) -> Page:
    """Run ``query`` (already filtered) for one page; count the filtered total too."""
    total = 0
    if count:
        total = conn.execute(
            select(func.count()).select_from(query.order_by(None).subquery())
        ).scalar_one()
    paged = query
    if page.cursor:
        key, last_id = _decode(route, page.cursor)
        _check_cursor_value(key, sort)
        _check_cursor_value(last_id, ident)
        if descending:
            paged = paged.where(or_(sort < key, and_(sort == key, ident < last_id)))
        else:
            paged = paged.where(or_(sort > key, and_(sort == key, ident > last_id)))
    elif page.offset:
        paged = paged.offset(page.offset)
    order = (sort.desc(), ident.desc()) if descending else (sort.asc(), ident.asc())
    rows = list(conn.execute(paged.order_by(*order).limit(page.limit + 1)))
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    cursor = None
    if has_more:
        last = rows[-1]._mapping
        cursor = _encode(route, last[str(sort.key)], last[str(ident.key)])
    return Page(rows=rows, total=int(total), has_more=has_more, cursor=cursor)
