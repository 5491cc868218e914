"""The records database: one transaction per call, one thread hop per transaction.

Services batch the statements of one use case into a function ``fn(conn)`` and run it
with :meth:`Database.tx`; the function runs in a database thread inside one transaction.
SQLite gets a single dedicated thread and connection (writes are serial anyway, and no
busy-wait ever happens); PostgreSQL gets a small thread pool over a connection pool.
Driver errors are translated into :mod:`task_framework.errors` here, keeping the cause.
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
            # pysqlite in autocommit mode: SQLAlchemy's begin() must emit BEGIN itself.
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
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
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def tx_blocking(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on the calling thread."""
        try:
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
        await loop.run_in_executor(self._executor, self.engine.dispose)
        self._executor.shutdown(wait=False)
