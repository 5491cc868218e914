"""Hot-path statements: compiled once per dialect, run on the driver's cursor.

SQLAlchemy Core spends tens of microseconds per ``execute`` on the statement cache, the
execution context, events and the result object. The handful of statements every thread
runs (its row, its inputs, its events, its settling) are compiled here once per dialect and
executed on the DBAPI cursor of the caller's connection, so they stay inside its
transaction. Parameters go through the column types' own bind processors (JSON, UTC
datetimes), so what is stored is exactly what Core would have stored; driver errors are
wrapped in SQLAlchemy's exceptions, as Core would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: bool
    order: tuple[str, ...]
    defaults: dict[str, Any]  # literal values in the statement (``values(x=None)``)
    processors: tuple[tuple[str, Processor], ...]
    results: tuple[Processor | None, ...]  # per selected column


class Prepared:
    """One statement whose parameters are named bind parameters (no expanding ``IN``)."""

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    @classmethod
    def insert(cls, table: Table, columns: Sequence[str]) -> Prepared:
        """``INSERT INTO table (columns) VALUES (:column, ...)``."""
        return cls(insert(table).values({name: bindparam(name) for name in columns}))

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            processors = []
            for name, bind in compiled.binds.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    processors.append((name, process))
            found = _Compiled(
                sql=compiled.string,
                positional=bool(compiled.positional),
                order=tuple(compiled.positiontup or ()),
                defaults={
                    name: bind.value for name, bind in compiled.binds.items() if not bind.required
                },
                processors=tuple(processors),
                results=tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in getattr(self._statement, "selected_columns", ())
                ),
            )
            self._compiled[dialect.name] = found
        return found

    def _parameters(self, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {**compiled.defaults, **params}
        for name, process in compiled.processors:
            if name in values:
                values[name] = process(values[name])
        if compiled.positional:
            return tuple(values[name] for name in compiled.order)
        return values

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run once; the number of rows matched."""
        compiled = self._for(conn.dialect)
        cursor = _run(conn, compiled.sql, self._parameters(compiled, params), many=False)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first row (a tuple, values converted by the column types), or None."""
        compiled = self._for(conn.dialect)
        cursor = _run(conn, compiled.sql, self._parameters(compiled, params or {}), many=False)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, compiled.results, strict=True)
        )

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        compiled = self._for(conn.dialect)
        if len(rows) == 1:
            _run(conn, compiled.sql, self._parameters(compiled, rows[0]), many=False).close()
        elif rows:
            batch = [self._parameters(compiled, row) for row in rows]
            _run(conn, compiled.sql, batch, many=True).close()


def _run(conn: Connection, sql: str, params: Any, *, many: bool) -> Any:
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cursor = dbapi_conn.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        cursor.close()
        dialect = conn.dialect
        invalidated = dialect.is_disconnect(exc, dbapi_conn, cursor)
        if invalidated:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            params,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        ) from exc
    return cursor
