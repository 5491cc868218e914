"""The records database: one transaction per call, one thread hop per transaction.

Services batch the statements of one use case into a function ``fn(conn)`` and run it
with :meth:`Database.tx`; the function runs in a database thread inside one transaction.
SQLite gets a single dedicated thread and connection (writes are serial anyway, and no
busy-wait ever happens); PostgreSQL gets a small thread pool over a connection pool.
Driver errors are translated into :mod:`task_framework.errors` here, keeping the cause.
The SQLite thread keeps its connection checked out between transactions: checking the one
connection in and out of the pool per transaction costs more than a short transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from task_framework.errors import ServiceUnavailable

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

POSTGRES_POOL_SIZE = 8
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 64 * 1024
CHECKPOINT_INTERVAL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # Checkpoints (copying the WAL back, with an fsync) would stall the one writer thread
    # for tens of milliseconds: _Checkpointer runs them on a connection of its own.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _begin_immediate(conn: Connection) -> None:
    """pysqlite in autocommit mode: SQLAlchemy's begin() must emit BEGIN itself. IMMEDIATE
    takes the write lock at once, so a transaction never fails half-way on a busy lock."""
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    try:
        dbapi_conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from exc


class _Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` every second on its own connection.

    PASSIVE never waits for the writer, so requests are not held up by the copy or the
    fsync; the WAL is restarted from its beginning once a checkpoint has caught up.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            while not self._stop.wait(CHECKPOINT_INTERVAL_SECONDS):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(CHECKPOINT_INTERVAL_SECONDS * 5)


class Database:
    """An engine plus the executor its transactions run on."""

    def __init__(self, url: str) -> None:
        self._checkpointer: _Checkpointer | None = None
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False, "isolation_level": None},
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _begin_immediate)
            workers = 1
            if path and path != ":memory:":
                self._checkpointer = _Checkpointer(path)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=POSTGRES_POOL_SIZE,
                max_overflow=0,
                pool_pre_ping=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
            workers = POSTGRES_POOL_SIZE
        self._held = threading.local()  # the SQLite thread's connection, kept checked out
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="db", initializer=self._init_thread
        )

    def _init_thread(self) -> None:
        self._held.keep = self.is_sqlite

    def _held_connection(self) -> Connection | None:
        """The connection this (SQLite database) thread keeps between transactions."""
        if not getattr(self._held, "keep", False):
            return None
        conn: Connection | None = getattr(self._held, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._held.conn = self.engine.connect()
        return conn

    def _release_held(self) -> None:
        conn: Connection | None = getattr(self._held, "conn", None)
        if conn is not None:
            self._held.conn = None
            conn.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def tx_blocking(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on the calling thread."""
        try:
            held = self._held_connection()
            if held is not None:
                with held.begin():
                    return fn(held)
            with self.engine.begin() as conn:
                return fn(conn)
        except OperationalError as exc:
            raise ServiceUnavailable(f"Database unavailable: {exc.orig}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise ServiceUnavailable(f"Database unavailable: {exc.orig}") from exc
            raise

    async def tx(self, fn: Callable[[Connection, *Ts], T], /, *args: *Ts) -> T:
        """Run ``fn(conn, *args)`` in one transaction on a database thread."""

        def call(conn: Connection) -> T:
            return fn(conn, *args)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.tx_blocking, call)

    async def ping(self) -> None:
        await self.tx(lambda conn: conn.execute(text("SELECT 1")))

    def migrate(self) -> None:
        """Apply Alembic migrations up to head (blocking)."""
        from task_framework.store.migrate import upgrade

        upgrade(self.engine)

    async def close(self) -> None:
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.close)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._dispose)
        self._executor.shutdown(wait=False)

    def _dispose(self) -> None:
        self._release_held()
        self.engine.dispose()
