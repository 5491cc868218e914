"""What differs between SQLite and PostgreSQL for the store implementations, in one place:
how a unique violation is recognised and how an upsert (or an insert that keeps an existing
row) is written."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from task_framework.store.base import Tx
from task_framework.store.errors import StoreError, UniqueViolation

_POSTGRES_UNIQUE_VIOLATION = "23505"
_SQLITE_UNIQUE = {
    getattr(sqlite3, "SQLITE_CONSTRAINT_UNIQUE", 2067),
    getattr(sqlite3, "SQLITE_CONSTRAINT_PRIMARYKEY", 1555),
}


def conn_of(tx: Tx) -> Connection:
    """The connection behind a transaction handle (``Database.tx`` passes a Connection)."""
    return cast(Connection, tx)


def is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    if isinstance(orig, sqlite3.IntegrityError):
        return getattr(orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE
    return getattr(orig, "sqlstate", None) == _POSTGRES_UNIQUE_VIOLATION


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Integrity errors raised in the block become store errors, keeping the cause:
    :class:`UniqueViolation` for a duplicate key, :class:`StoreError` otherwise.
    (Unavailability is translated by ``Database`` itself.)"""
    try:
        yield
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise UniqueViolation(f"{what} already exists") from exc
        raise StoreError(f"{what} refused by the database: {exc.orig}") from exc


def upsert(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
) -> None:
    """Insert ``values``, or update the row with the same ``keys`` to them, atomically."""
    build = postgres_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = build(table).values(**values)
    changes = {name: statement.excluded[name] for name in values if name not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))


def insert_absent(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
) -> None:
    """Insert ``values`` unless a row with the same ``keys`` exists, atomically: of
    concurrent callers, the first one's row stays and no one gets an error."""
    build = postgres_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = build(table).values(**values)
    conn.execute(statement.on_conflict_do_nothing(index_elements=list(keys)))
