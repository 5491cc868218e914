"""Cross-process wake-ups over PostgreSQL ``LISTEN/NOTIFY``.

A transaction that queues, settles or stops a thread also sends a notification; it is
delivered at commit, so a listener never sees a change before it is visible. Every
replica and worker listens on one dedicated connection (in a thread) and turns the
notifications into wake-ups of its own loops. Polling remains the fallback, so a lost
notification only costs latency. On SQLite (one process) this is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, text

log = logging.getLogger("task_framework.notify")

QUEUED = "tf_queued"
"""A thread was queued: workers with a free slot should claim."""
SETTLED = "tf_settled"
"""Payload: a thread id that reached a terminal state (sync requests wait for it)."""
STOP = "tf_stop"
"""Payload: a thread id whose stop was requested (its worker terminates it)."""
EVENTS = "tf_events"
"""Events were written to the outbox (webhook fan-out, live streams)."""
EVENTS_WRITTEN = "tf_events_written"
"""Set in ``conn.info`` by a transaction that wrote events; read at commit (delivery)."""
CHANNELS = (QUEUED, SETTLED, STOP, EVENTS)

RECONNECT_DELAY_SECONDS = 1.0
LISTEN_TIMEOUT_SECONDS = 1.0


def notify(conn: Connection, channel: str, payload: str = "") -> None:
    """Send ``channel`` when ``conn``'s transaction commits (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})


Handler = Callable[[str, str], None]


class Listener:
    """Listens on :data:`CHANNELS` and calls ``handler(channel, payload)`` on the loop."""

    def __init__(self, url: str, handler: Handler) -> None:
        # psycopg takes libpq URLs; drop SQLAlchemy's driver suffix.
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._handler = handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="pg-listener", daemon=True)
        self._thread.start()

    def _dispatch(self, channel: str, payload: str) -> None:
        with contextlib.suppress(Exception):
            self._handler(channel, payload)

    def _run(self) -> None:
        import psycopg

        assert self._loop is not None
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    # Anything sent while we were disconnected is lost: catch up.
                    self._loop.call_soon_threadsafe(self._dispatch, QUEUED, "")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                            self._loop.call_soon_threadsafe(
                                self._dispatch, note.channel, note.payload
                            )
            except Exception as exc:  # connection lost: reconnect after a pause
                if self._stop.is_set():
                    return
                log.warning("notification listener reconnecting: %s", exc)
                self._stop.wait(RECONNECT_DELAY_SECONDS)

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, LISTEN_TIMEOUT_SECONDS * 3)
