"""The records database: one transaction per call.

Services batch the statements of one use case into a function ``fn(conn)`` and run it
with :meth:`Database.tx`; the function runs in a database thread inside one transaction.
PostgreSQL gets a small thread pool over a connection pool. SQLite gets one connection,
kept checked out, used in turns: by one database thread for :meth:`Database.tx`, and on
the event loop for :meth:`Database.short_tx` (writes are serial anyway, and no busy-wait
happens within the process). Driver errors are translated into
:mod:`task_framework.errors` here, keeping the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from task_framework.errors import ServiceUnavailable, ValidationFailed
from task_framework.hardening import PRIVATE_DIR_MODE, private_file
from task_framework.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from task_framework.store.migrate import CipherFactory

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

POSTGRES_POOL_SIZE = 8
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 64 * 1024
CHECKPOINT_INTERVAL_SECONDS = 1.0
WAL_RESTART_PAGES = 16384
"""WAL size (in pages) from which the checkpointer starts the WAL over (64 MiB at 4 KiB):
large enough that the short pause of a restart comes every few seconds at most."""
WAL_RESTART_BUSY_MS = 200
WAL_RESTART_WAIT_SECONDS = 30.0
WAL_SIZE_LIMIT_BYTES = 96 * 1024 * 1024
"""A WAL file grown past this is truncated back to it when SQLite starts it over."""
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
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _private_sqlite_files(path: Path) -> None:
    """The database file is created 0600 before SQLite opens it; SQLite gives its -wal and
    -shm files the database file's mode. Files of an older installation are tightened."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        sibling = path.with_name(path.name + suffix)
        if sibling.exists():
            private_file(sibling)


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
    """Copies the WAL back into the database every second, on a connection of its own.

    A ``PASSIVE`` checkpoint never waits for the writer, so requests are not held up by the
    copy or its fsync. Under a steady stream of writes it never catches up completely,
    though, and SQLite only starts the WAL over after a checkpoint that did: so once the
    WAL holds :data:`WAL_RESTART_PAGES`, ``restart`` copies the little that is left, in a
    turn of the database connection, and the next transaction writes the WAL from its
    beginning again. A WAL that kept growing would slow every read down.
    """

    def __init__(self, path: str, restart: Callable[[], None]) -> None:
        self._path = path
        self._restart = restart
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            while not self._stop.wait(CHECKPOINT_INTERVAL_SECONDS):
                with contextlib.suppress(sqlite3.Error):
                    _busy, wal_pages, _copied = conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchone()
                    if wal_pages >= WAL_RESTART_PAGES:
                        self._restart()
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(CHECKPOINT_INTERVAL_SECONDS * 5)


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """Connection-level driver errors become :class:`StoreUnavailable` (503
    SERVICE_UNAVAILABLE), and a value the database refuses (text too long, a NUL on
    PostgreSQL) 400 VALIDATION_FAILED (a last line: the edge checks these first), keeping
    the cause."""
    try:
        yield
    except DataError as exc:
        raise ValidationFailed(f"Value refused by the database: {exc.orig}") from exc
    except OperationalError as exc:
        raise StoreUnavailable(f"Database unavailable: {exc.orig}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"Database unavailable: {exc.orig}") from exc
        raise


def _is_busy(error: BaseException | None) -> bool:
    """A SQLite "database is locked": another process holds the write lock."""
    orig = getattr(error, "orig", None)
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
    )


@dataclass(slots=True)
class _Pending:
    call: Callable[[Connection], Any]
    future: asyncio.Future[Any]


_SAVEPOINT = "short_tx"


def _run_batch(conn: Connection, batch: list[_Pending]) -> list[object]:
    """Run a batch of short transactions in ``conn``'s transaction: the result of each, or
    the exception it raised (its writes rolled back to its savepoint)."""
    if len(batch) == 1:
        return [batch[0].call(conn)]  # an exception rolls back the whole transaction
    raw = conn.connection.dbapi_connection
    assert raw is not None
    outcomes: list[object] = []
    for item in batch:
        raw.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            outcomes.append(item.call(conn))
        except OperationalError:
            raise  # the connection is in trouble: the whole batch fails
        except Exception as exc:
            raw.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            outcomes.append(exc)
        raw.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return outcomes


def _settle(batch: list[_Pending], outcomes: list[object]) -> None:
    """Hand each caller its result or exception (``outcomes`` in the order of ``batch``)."""
    for item, outcome in zip(batch, outcomes, strict=True):
        if item.future.done():
            continue
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)


class Database:
    """An engine plus the executor its transactions run on."""

    def __init__(self, url: str) -> None:
        self._checkpointer: _Checkpointer | None = None
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                _private_sqlite_files(Path(path))
            self.engine: Engine = create_engine(
                self.url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False, "isolation_level": None},
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _begin_immediate)
            workers = 1
        else:
            self.engine = create_engine(
                self.url,
                pool_size=POSTGRES_POOL_SIZE,
                max_overflow=0,
                pool_pre_ping=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
            workers = POSTGRES_POOL_SIZE
        # SQLite: one connection, kept checked out (a pool checkout per transaction costs
        # more than a short transaction). Its transactions take turns: on the event loop
        # under ``_turn``, and the thread lock guards against any other thread.
        self._sqlite_lock = threading.Lock()
        self._sqlite_conn: Connection | None = None
        self._busy_timeout_ms = SQLITE_BUSY_TIMEOUT_MS
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Pending] = []  # short transactions waiting for the next commit
        self._committer: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")
        if self.is_sqlite and path and path != ":memory:":
            self._checkpointer = _Checkpointer(path, self._restart_wal)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def tx_blocking(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on the calling thread."""
        if self.is_sqlite:
            return self._sqlite_tx(fn, SQLITE_BUSY_TIMEOUT_MS)
        with _translated_errors(), self.engine.begin() as conn:
            return fn(conn)

    def _sqlite_tx(self, fn: Callable[[Connection], T], busy_timeout_ms: int) -> T:
        """One transaction on the SQLite connection."""
        with self._sqlite_lock, _translated_errors():
            conn = self._sqlite_conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._sqlite_conn = self.engine.connect()
                self._busy_timeout_ms = SQLITE_BUSY_TIMEOUT_MS
            self._set_busy_timeout(conn, busy_timeout_ms)
            with conn.begin():
                return fn(conn)

    def _sqlite_turn(self) -> asyncio.Lock:
        if self._turn is None:
            self._turn = asyncio.Lock()
            self._loop = asyncio.get_running_loop()
        return self._turn

    def _restart_wal(self) -> None:
        """From the checkpointer thread: start the WAL over in a turn of the connection, so
        that writers wait for it on the event loop rather than in SQLite's busy handler
        (which sleeps in steps of up to 100 ms)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._restart_now()
            return
        with contextlib.suppress(Exception):  # the loop stopped: try again next time
            asyncio.run_coroutine_threadsafe(self._restart_in_turn(), loop).result(
                WAL_RESTART_WAIT_SECONDS
            )

    async def _restart_in_turn(self) -> None:
        async with self._sqlite_turn():
            await asyncio.get_running_loop().run_in_executor(self._executor, self._restart_now)

    def _restart_now(self) -> None:
        with self._sqlite_lock, contextlib.suppress(sqlite3.Error, DBAPIError):
            conn = self._sqlite_conn
            if conn is None or conn.closed or conn.invalidated:
                return  # nothing written through this database yet
            # Another process reading may hold the restart up: give up after a moment.
            previous = self._busy_timeout_ms
            self._set_busy_timeout(conn, WAL_RESTART_BUSY_MS)
            raw = conn.connection.dbapi_connection
            assert raw is not None
            try:  # on the driver: SQLAlchemy would begin a transaction first
                raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                self._set_busy_timeout(conn, previous)

    def _set_busy_timeout(self, conn: Connection, milliseconds: int) -> None:
        """How long SQLite waits for another process's lock; the SQLite lock is held."""
        if milliseconds != self._busy_timeout_ms:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.execute(f"PRAGMA busy_timeout={milliseconds}")
            self._busy_timeout_ms = milliseconds

    async def tx(self, fn: Callable[[Connection, *Ts], T], /, *args: *Ts) -> T:
        """Run ``fn(conn, *args)`` in one transaction on a database thread."""

        def call(conn: Connection) -> T:
            return fn(conn, *args)

        loop = asyncio.get_running_loop()
        # The caller's context variables (bound log fields, the current span) hold inside
        # fn, as with asyncio.to_thread.
        context = contextvars.copy_context()
        if not self.is_sqlite:
            return await loop.run_in_executor(self._executor, context.run, self.tx_blocking, call)
        async with self._sqlite_turn():
            return await loop.run_in_executor(self._executor, context.run, self.tx_blocking, call)

    async def short_tx(self, fn: Callable[[Connection, *Ts], T], /, *args: *Ts) -> T:
        """Like :meth:`tx`, for a transaction that only touches a few rows by key.

        On SQLite it runs on the event loop, after any transaction in flight on the
        database thread (the hand-off to that thread and back costs more than such a
        transaction), and together with the other short transactions requested in the
        same turn of the loop: one commit for all, each in a savepoint of its own, so
        one that fails rolls back alone. Should another process hold the write lock,
        they queue on the database thread like :meth:`tx` instead of waiting here.
        """
        if not self.is_sqlite:
            return await self.tx(fn, *args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Pending(lambda conn: fn(conn, *args), future))
        if self._committer is None:
            self._committer = loop.create_task(self._commit_pending())
        result: T = await future
        return result

    async def _commit_pending(self) -> None:
        turn = self._sqlite_turn()
        if turn.locked():
            await turn.acquire()
            turn.release()  # nothing else runs on the loop until the batch is committed
        self._committer = None
        batch = [item for item in self._pending if not item.future.done()]  # not cancelled
        self._pending = []
        if not batch:
            return
        try:
            outcomes = self._sqlite_tx(lambda conn: _run_batch(conn, batch), 0)
        except ServiceUnavailable as exc:
            if not _is_busy(exc.__cause__):
                _settle(batch, [exc] * len(batch))
                return
            # Another process holds the write lock: wait for it on the database thread.
            for item in batch:
                try:
                    outcome: object = await self.tx(item.call)
                except Exception as error:
                    outcome = error
                _settle([item], [outcome])
            return
        except Exception as exc:  # rolled back: a lone transaction failed, or the batch
            _settle(batch, [exc] * len(batch))
            return
        _settle(batch, outcomes)

    async def ping(self) -> None:
        await self.tx(lambda conn: conn.execute(text("SELECT 1")))

    def migrate(self, *, cipher: CipherFactory | None = None) -> None:
        """Apply Alembic migrations up to head (blocking); ``cipher`` gives the vault key
        to a migration that encrypts stored secrets (see ``store.migrate``)."""
        from task_framework.store.migrate import upgrade

        upgrade(self.engine, cipher=cipher)

    async def close(self) -> None:
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.close)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._dispose)
        self._executor.shutdown(wait=False)

    def _dispose(self) -> None:
        with self._sqlite_lock:
            if self._sqlite_conn is not None:
                self._sqlite_conn.close()
                self._sqlite_conn = None
        self.engine.dispose()
