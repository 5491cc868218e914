"""The queue worker of one replica: claims queued threads, runs them, settles them.

The ``threads`` table is the queue (ARCHITECTURE.md §3). A claim sets ``running``, the
lease owner and expiry, and bumps ``lease_token`` (the fencing token) in one statement
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL). The lease is renewed while the task runs;
every later write about the run checks the token, so a worker that lost its lease cannot
overwrite a newer outcome. Any replica fails threads whose lease expired (``WORKER_LOST``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, func, select, text, update

from task_framework.errors import ServiceUnavailable, TaskFrameworkError
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.threads import TERMINAL_STATES
from task_framework.observability.tracing import NO_TRACING, Tracing
from task_framework.runner.base import (
    TASK_CRASHED,
    TASK_TIMEOUT,
    ErrorInfo,
    Outcome,
    Runner,
    RunRequest,
    TaskResources,
)
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.runner.sandbox import LimitPolicy
from task_framework.services.events import THREAD_TERMINAL_EVENTS, insert_events, thread_event
from task_framework.services.host import FileStore, ThreadHost, TracedHost
from task_framework.services.settings import SettingsService
from task_framework.services.tasks import TaskDefinition, TaskRegistry
from task_framework.services.threads import load_thread, load_threads
from task_framework.store import notify
from task_framework.store.database import Database
from task_framework.store.prepared import Prepared
from task_framework.store.tables import threads

log = logging.getLogger("task_framework.executor")

IDLE_POLL_SECONDS = 1.0
"""How often an idle replica looks for queued threads it was not woken for."""
WAIT_POLL_SECONDS = 1.0
"""How often a sync request re-reads a thread another replica may be running."""
LIMIT_LOCK_KEY = 0x7466_6C69  # advisory lock serialising claims under a cluster limit


class ConfigSource(Protocol):
    """Stored task configuration (credentials service)."""

    async def resolve(self, task_id: str, version: str) -> tuple[dict[str, str], dict[str, str]]:
        """(plain values, secret values) stored for one task version."""
        ...


# Hot-path statements, built once: only their parameters change per thread.
_QUEUED_AHEAD = Prepared(select(threads.c.id).where(threads.c.state == "queued").limit(1))
_RUNNING = Prepared(select(func.count()).select_from(threads).where(threads.c.state == "running"))
_SETTLE = Prepared(
    update(threads)
    .where(
        threads.c.id == bindparam("b_id"),
        threads.c.lease_token == bindparam("b_token"),
        threads.c.state == "running",
    )
    .values(
        state=bindparam("b_state"),
        error=bindparam("b_error", type_=threads.c.error.type),
        finished_at=bindparam("b_finished", type_=threads.c.finished_at.type),
        lease_owner=None,
        lease_expires_at=None,
    )
)


@dataclass(slots=True)
class _Claimed:
    thread: dict[str, Any]
    token: int
    created_by_admin: bool
    timeout_seconds: int | None
    owner: str = ""
    """``app_id/user_id``: warm workers are not shared across owners."""
    traceparent: str | None = None
    """The span that created the thread (tracing on): the run continues its trace."""
    claim_started: datetime | None = None
    claim_ended: datetime | None = None


def worker_lost_error() -> dict[str, Any]:
    return {
        "code": "WORKER_LOST",
        "message": "Worker lost",
        "exception_type": "WorkerLost",
        "stack_trace": None,
        "details": None,
    }


def _error_dict(error: ErrorInfo | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "code": error.code,
        "message": error.message,
        "exception_type": error.exception_type,
        "stack_trace": error.stack_trace,
        "details": None,
    }


class Executor:
    """Claims and runs threads on this replica."""

    def __init__(
        self,
        *,
        db: Database,
        runner: Runner,
        registry: TaskRegistry,
        builder: EnvironmentBuilder,
        settings: SettingsService,
        capacity: int,
        lease_seconds: float,
        shutdown_grace_seconds: float,
        max_log_bytes: int,
        host_factory: Callable[..., ThreadHost] = ThreadHost,
        files: FileStore | None = None,
        config: ConfigSource | None = None,
        task_filter: frozenset[str] | None = None,
        on_state: Callable[[str], None] | None = None,
        on_finished: Callable[[str, str, float], None] | None = None,
        on_crash: Callable[[], None] | None = None,
        on_artifact: Callable[[str], None] | None = None,
        limits: LimitPolicy | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.replica_id = new_id("replica")
        self._tracing = tracing
        self._limits = limits or LimitPolicy()
        self._db = db
        self._runner = runner
        self._registry = registry
        self._builder = builder
        self._settings = settings
        self._capacity = capacity
        self._lease = timedelta(seconds=lease_seconds)
        self._lease_seconds = lease_seconds
        self._shutdown_grace = shutdown_grace_seconds
        self._max_log_bytes = max_log_bytes
        self._host_factory = host_factory
        self._task_filter = task_filter
        self.files = files
        self.config = config
        self._on_state = on_state or (lambda _state: None)
        self._on_finished = on_finished or (lambda _task, _state, _duration: None)
        self._on_crash = on_crash or (lambda: None)
        self.on_artifact = on_artifact or (lambda _kind: None)
        """Called with the kind of every artifact created (inputs and outputs)."""
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._reserved = 0  # slots held by requests that may claim their own new thread
        self._backlog = False  # queued threads may be waiting for a free slot
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False
        self._settle_listeners: list[Callable[[dict[str, Any]], None]] = []
        # Stopped after the claim but before the runner had the thread (see stop_local).
        self._stop_early: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming (unless this replica has no worker slots) and recovering."""
        self._loops = [asyncio.create_task(self._recovery_loop(), name="executor-recovery")]
        if self._capacity > 0:
            self._loops += [
                asyncio.create_task(self._dispatch_loop(), name="executor-dispatch"),
                asyncio.create_task(self._lease_loop(), name="executor-lease"),
            ]

    def handle_notification(self, channel: str, payload: str) -> None:
        """React to another process's change (see store/notify.py)."""
        if channel == notify.QUEUED:
            self.wake()
        elif channel == notify.SETTLED and payload in self._waiters:
            asyncio.get_running_loop().create_task(self._settle_from_store(payload))
        elif channel == notify.STOP and payload in self._running:
            asyncio.get_running_loop().create_task(self.stop_local(payload))

    async def _settle_from_store(self, thread_id: str) -> None:
        thread = await self._db.tx(lambda c: load_thread(c, thread_id, show_stack=True))
        if thread["state"] in TERMINAL_STATES:
            self.thread_settled(thread_id, thread)

    @property
    def running(self) -> bool:
        return bool(self._loops) and not self._closing

    async def close(self) -> None:
        """Stop claiming; give running threads the shutdown grace, then fail them."""
        self._closing = True
        self._wake.set()
        for loop_task in self._loops[1:2]:  # the dispatcher: claim nothing more
            loop_task.cancel()
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=self._shutdown_grace)
        for thread_id, task in list(self._running.items()):
            if not task.done():
                await self._db.tx(self._fail_lost, thread_id)
                task.cancel()
        for task in [*self._loops, *self._running.values()]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._running.values(), return_exceptions=True)

    def _fail_lost(self, conn: Connection, thread_id: str) -> None:
        now = utcnow()
        result = conn.execute(
            update(threads)
            .where(threads.c.id == thread_id, threads.c.state == "running")
            .values(state="failed", error=worker_lost_error(), finished_at=now, lease_owner=None)
        )
        if result.rowcount:
            _record_settled(conn, [load_thread(conn, thread_id, show_stack=True)], now)

    def wake(self) -> None:
        self._wake.set()

    # -- sync waiting ---------------------------------------------------------------------

    async def wait_for(self, thread_id: str) -> dict[str, Any]:
        """Wait until the thread is terminal; return it (admin view)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(thread_id, []).append(future)
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(future), WAIT_POLL_SECONDS)
                except TimeoutError:
                    thread = await self._db.tx(lambda c: load_thread(c, thread_id, show_stack=True))
                    if thread["state"] in TERMINAL_STATES:
                        return thread
        finally:
            waiters = self._waiters.get(thread_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(thread_id, None)

    def thread_settled(self, thread_id: str, thread: dict[str, Any]) -> None:
        for future in self._waiters.pop(thread_id, []):
            if not future.done():
                future.set_result(thread)
        for listener in self._settle_listeners:
            listener(thread)

    def add_settle_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(thread)`` whenever this replica sees a thread settle."""
        self._settle_listeners.append(listener)

    async def stop_local(self, thread_id: str) -> None:
        if thread_id in self._running and not await self._runner.stop(thread_id):
            # Claimed, but not handed to the runner yet: _run must not start it.
            self._stop_early.add(thread_id)

    # -- claiming -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            free = self._capacity - len(self._running) - self._reserved
            claimed: list[_Claimed] = []
            # Until a claim comes back short, queued threads may be waiting for a slot: a
            # finishing thread then wakes this loop (see _execute).
            self._backlog = True
            if free > 0:
                claim_started = utcnow()
                try:
                    claimed, limited = await self._db.tx(self._claim, free)
                except (ServiceUnavailable, TaskFrameworkError) as exc:
                    log.warning("claim failed: %s", exc)
                    await asyncio.sleep(IDLE_POLL_SECONDS)
                    continue
                claim_ended = utcnow()
                for item in claimed:
                    item.claim_started, item.claim_ended = claim_started, claim_ended
                    self._launch(item)
                self._backlog = len(claimed) == free or limited
            if claimed and len(claimed) == free:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)

    def _task_conditions(self) -> list[Any]:
        if self._task_filter is None:
            return []
        return [threads.c.task_id.in_(sorted(self._task_filter))]

    def _launch(self, item: _Claimed) -> None:
        thread_id = item.thread["id"]
        self._running[thread_id] = asyncio.create_task(
            self._execute(item), name=f"thread-{thread_id}"
        )

    # A request that creates a thread may run it at once on this replica (one transaction
    # less, no hand-off to the dispatcher) when a local slot is free, nothing is queued
    # ahead of it and the cluster limit allows. FIFO order and the limit still hold.

    def reserve(self) -> bool:
        """Hold a local slot for a thread about to be created (see :meth:`claim_new`)."""
        if self._closing or len(self._running) + self._reserved >= self._capacity:
            return False
        if self._task_filter is not None:
            return False  # filtered workers claim through the dispatcher only
        self._reserved += 1
        return True

    def release(self) -> None:
        self._reserved -= 1

    def _under_limit(self, conn: Connection, wanted: int) -> int:
        """How many of ``wanted`` threads may start now under the stored cluster limit."""
        limit = self._settings.limit_in(conn)
        if limit <= 0:
            return wanted
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LIMIT_LOCK_KEY})
        running = _RUNNING.first(conn)[0]
        return max(min(wanted, limit - int(running)), 0)

    def claim_new(self, conn: Connection) -> dict[str, Any] | None:
        """In the creating transaction, before the thread's row is written: the values that
        claim it for this replica, or None when it must queue."""
        if _QUEUED_AHEAD.first(conn) is not None or not self._under_limit(conn, 1):
            return None
        now = utcnow()
        return {
            "state": "running",
            "started_at": now,
            "lease_owner": self.replica_id,
            "lease_expires_at": now + self._lease,
            "lease_token": 1,
        }

    def start_claimed(
        self,
        thread: dict[str, Any],
        *,
        token: int,
        created_by_admin: bool,
        timeout: int | None,
        owner: str,
        traceparent: str | None = None,
    ) -> None:
        """Run a thread claimed by :meth:`claim_new`; its reservation becomes the slot."""
        self._reserved -= 1
        claimed = _Claimed(thread, token, created_by_admin, timeout, owner, traceparent)
        if self._tracing.enabled:
            # Claimed in the creating transaction: the claim ended with it.
            claimed.claim_started = datetime.fromisoformat(thread["started_at"])
            claimed.claim_ended = utcnow()
        self._launch(claimed)

    def _claim(self, conn: Connection, wanted: int) -> tuple[list[_Claimed], bool]:
        """Claim up to ``wanted`` queued threads; also whether the cluster limit held
        some back."""
        allowed = self._under_limit(conn, wanted)
        if allowed <= 0:
            return [], True
        limited, wanted = allowed < wanted, allowed
        now = utcnow()
        candidates = (
            select(threads.c.id)
            .where(threads.c.state == "queued", *self._task_conditions())
            .order_by(threads.c.created_at, threads.c.id)
            .limit(wanted)
            .with_for_update(skip_locked=True)
        )
        rows = list(
            conn.execute(
                update(threads)
                .where(threads.c.id.in_(candidates.scalar_subquery()))
                .values(
                    state="running",
                    started_at=now,
                    lease_owner=self.replica_id,
                    lease_expires_at=now + self._lease,
                    lease_token=threads.c.lease_token + 1,
                )
                .returning(*threads.c)
            )
        )
        if not rows:
            return [], limited
        rows.sort(key=lambda r: (r.created_at, r.id))
        loaded = load_threads(conn, rows, show_stack=True)
        insert_events(conn, [thread_event("thread.started", t, at=now) for t in loaded])
        claimed = [
            _Claimed(
                thread=t,
                token=r.lease_token,
                created_by_admin=bool(r.created_by_admin),
                timeout_seconds=r.timeout_seconds,
                owner=f"{r.app_id or ''}/{r.user_id or ''}",
                traceparent=r.traceparent,
            )
            for t, r in zip(loaded, rows, strict=True)
        ]
        return claimed, limited

    # -- running --------------------------------------------------------------------------

    async def _execute(self, claimed: _Claimed) -> None:
        thread = claimed.thread
        thread_id = thread["id"]
        self._on_state("running")
        timer = self._arm_timeout(claimed)
        tracing = self._tracing
        attributes = self._record_claim(claimed) if tracing.enabled else None
        try:
            with tracing.span(
                "thread.run", parent=claimed.traceparent, kind="consumer", attributes=attributes
            ) as span:
                outcome, host = await self._run(claimed)
                for output in host.outputs if host is not None else []:
                    self.on_artifact(output["kind"])
                if outcome.error is not None and outcome.error.code == TASK_CRASHED:
                    self._on_crash()
                with tracing.span("thread.settle"):
                    final = await self._db.short_tx(self._finish, claimed, outcome, host)
                if final is not None:
                    self._on_state(final["state"])
                    self._on_finished(
                        thread["metadata"].get("task_id") or "", final["state"], _duration(final)
                    )
                else:
                    final = await self._db.tx(lambda c: load_thread(c, thread_id, show_stack=True))
                span.set_attribute("task_framework.thread.state", final["state"])
                if final["state"] != "succeeded":
                    span.set_error(final["state"])
                log.debug("thread.settled", extra={"thread_id": thread_id, "state": final["state"]})
                self.thread_settled(thread_id, final)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("thread execution failed unexpectedly", extra={"thread_id": thread_id})
        finally:
            if timer is not None:
                timer.cancel()
            self._running.pop(thread_id, None)
            self._stop_early.discard(thread_id)
            if self._backlog:
                self._wake.set()

    def _record_claim(self, claimed: _Claimed) -> dict[str, str]:
        """The spans of what happened before the run (tracing on): the time in the queue
        and the claim; the attributes of the run's span."""
        thread = claimed.thread
        meta = thread["metadata"]
        attributes = {
            "task_framework.thread_id": thread["id"],
            "task_framework.task_id": meta.get("task_id") or "",
            "task_framework.task_version": meta.get("task_version") or "",
            "task_framework.replica_id": self.replica_id,
        }
        created = datetime.fromisoformat(thread["created_at"])
        claim_started = claimed.claim_started or created
        claim_ended = claimed.claim_ended or claim_started
        self._tracing.record(
            "thread.queued",
            parent=claimed.traceparent,
            start=created,
            end=claim_started,
            attributes=attributes,
        )
        self._tracing.record(
            "thread.claim",
            parent=claimed.traceparent,
            start=claim_started,
            end=claim_ended,
            attributes=attributes,
        )
        return attributes

    def _arm_timeout(self, claimed: _Claimed) -> asyncio.TimerHandle | None:
        """``timeout_seconds`` counts from ``started_at`` (API.md §15.2): when it runs out
        the thread becomes ``timeout`` at once, then its process is stopped like a
        ``:stop`` (cancel flag, grace period, kill)."""
        meta = claimed.thread["metadata"]
        task = self._registry.get(meta.get("task_id") or "", meta.get("task_version") or "")
        wanted = task.resources if task is not None else TaskResources()
        # No timeout of its own: the task's or server's default; never over the ceiling.
        limit = self._limits.wall_limit(wanted, claimed.timeout_seconds)
        if limit is None:
            return None
        started = datetime.fromisoformat(claimed.thread["started_at"])
        delay = limit - (utcnow() - started).total_seconds()
        loop = asyncio.get_running_loop()
        return loop.call_later(max(delay, 0.0), lambda: loop.create_task(self._time_out(claimed)))

    async def _time_out(self, claimed: _Claimed) -> None:
        thread_id = claimed.thread["id"]
        try:
            with self._tracing.span("thread.settle", parent=claimed.traceparent) as span:
                span.set_attribute("task_framework.thread.state", "timeout")
                thread = await self._db.tx(self._settle_timeout, claimed)
        except TaskFrameworkError as exc:
            log.warning("timeout not recorded: %s", exc)
            return
        if thread is not None:
            self._on_state("timeout")
            task_id = thread["metadata"].get("task_id") or ""
            self._on_finished(task_id, "timeout", _duration(thread))
            self.thread_settled(thread_id, thread)
        await self.stop_local(thread_id)

    def _settle_timeout(self, conn: Connection, claimed: _Claimed) -> dict[str, Any] | None:
        now = utcnow()
        error = {
            "code": TASK_TIMEOUT,
            "message": "Task execution timed out",
            "exception_type": "TimeoutError",
            "stack_trace": None,
            "details": None,
        }
        if not _settle(conn, claimed, "timeout", error, now):
            return None
        thread = load_thread(conn, claimed.thread["id"], show_stack=True)
        _record_settled(conn, [thread], now)
        return thread

    async def _run(self, claimed: _Claimed) -> tuple[Outcome, ThreadHost | None]:
        thread = claimed.thread
        meta = thread["metadata"]
        task = self._registry.get(meta.get("task_id") or "", meta.get("task_version") or "")
        if task is None:
            missing = f"Task {meta.get('task_id')}:{meta.get('task_version')} is not deployed"
            return Outcome(
                "failed", ErrorInfo("TASK_UNAVAILABLE", missing, "TaskUnavailable")
            ), None
        try:
            if task.env is None or (task.dev and task.dependencies_changed()):
                # Dev tasks: edited dependency files get a fresh environment.
                task.env = await self._builder.ensure(task.deps_dir)
            spec = task.spec()
        except TaskFrameworkError as exc:
            error = ErrorInfo("TASK_LOAD_FAILED", exc.message, type(exc).__name__)
            return Outcome("failed", error), None
        plain, secret = await self._configuration(task, thread["params"], claimed.created_by_admin)
        request = RunRequest(
            thread_id=thread["id"],
            inputs=thread["inputs"],
            params=thread["params"],
            metadata=meta,
            config=plain,
            secrets=secret,
            timeout_seconds=None,  # enforced by _arm_timeout, from started_at
            log_level=task.log_level,
            owner=claimed.owner,
        )
        host = self._host_factory(
            db=self._db,
            thread=thread,
            token=claimed.token,
            task=task,
            max_log_bytes=self._max_log_bytes,
            files_service=self.files,
        )
        if thread["id"] in self._stop_early:
            return Outcome("stopped"), host
        if not self._tracing.enabled:
            return await self._runner.run(spec, request, host), host
        with self._tracing.span("worker.run", kind="client") as span:
            # The task continues from here: its own spans are children of this one.
            request.traceparent = span.traceparent
            traced = TracedHost(host, self._tracing, parent=span.traceparent)
            outcome = await self._runner.run(spec, request, traced)
            if outcome.error is not None:
                span.set_error(outcome.error.code)
        return outcome, host

    async def _configuration(
        self, task: TaskDefinition, params: dict[str, Any], by_admin: bool
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(plain, secret) values for the declared requirements (API.md §14.4): admin
        overrides, then the stored task configuration, then defaults."""
        overrides = params.get("_env_overrides") if by_admin else None
        stored_plain: dict[str, str] = {}
        stored_secret: dict[str, str] = {}
        if self.config is not None and task.requirements:
            stored_plain, stored_secret = await self.config.resolve(task.task_id, task.version)
        plain: dict[str, str] = {}
        secret: dict[str, str] = {}
        for requirement in task.requirements:
            name = requirement["name"]
            if isinstance(overrides, dict) and name in overrides:
                plain[name] = str(overrides[name])
            elif name in stored_secret:
                secret[name] = stored_secret[name]
            elif name in stored_plain:
                plain[name] = stored_plain[name]
            elif requirement.get("default") is not None:
                plain[name] = str(requirement["default"])
        return plain, secret

    def _finish(
        self, conn: Connection, claimed: _Claimed, outcome: Outcome, host: ThreadHost | None
    ) -> dict[str, Any] | None:
        """Settle the run, fenced by its lease token; None when someone else settled it.

        The final thread is built from what this run knows (its inputs, and the outputs and
        problems its host persisted) instead of being read back.
        """
        now = utcnow()
        if not _settle(conn, claimed, outcome.status, _error_dict(outcome.error), now):
            return None
        thread = dict(claimed.thread)
        outputs = host.outputs if host is not None else []
        thread.update(
            state=outcome.status,
            error=_error_dict(outcome.error),
            finished_at=format_ts(now),
            outputs=outputs,
            problems=[*thread["problems"], *(host.problems if host is not None else [])],
            artifacts=thread["inputs"] + outputs,
        )
        _record_settled(conn, [thread], now)
        return thread

    # -- leases -----------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        interval = max(self._lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            if not self._running:
                continue
            try:
                stopped = await self._db.tx(self._renew, list(self._running))
            except TaskFrameworkError as exc:
                log.warning("lease renewal failed: %s", exc)
                continue
            for thread_id in stopped:
                await self._runner.stop(thread_id)

    def _renew(self, conn: Connection, ids: list[str]) -> list[str]:
        now = utcnow()
        conn.execute(
            update(threads)
            .where(threads.c.id.in_(ids), threads.c.lease_owner == self.replica_id)
            .values(lease_expires_at=now + self._lease)
        )
        # Threads stopped through another replica: their process runs here.
        return [
            row.id
            for row in conn.execute(
                select(threads.c.id).where(threads.c.id.in_(ids), threads.c.state != "running")
            )
        ]

    async def _recovery_loop(self) -> None:
        interval = max(min(self._lease_seconds / 2, 5.0), 0.2)
        while True:
            try:
                recovered = await self._db.tx(self._recover)
                for thread in recovered:
                    self._on_state("failed")
                    self.thread_settled(thread["id"], thread)
            except TaskFrameworkError as exc:
                log.warning("lease recovery failed: %s", exc)
            await asyncio.sleep(interval)

    def _recover(self, conn: Connection) -> list[dict[str, Any]]:
        now = utcnow()
        rows = list(
            conn.execute(
                update(threads)
                .where(threads.c.state == "running", threads.c.lease_expires_at < now)
                .values(
                    state="failed",
                    error=worker_lost_error(),
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    # A new fencing token: the lost worker, should it come back, is refused.
                    lease_token=threads.c.lease_token + 1,
                )
                .returning(*threads.c)
            )
        )
        loaded = load_threads(conn, rows, show_stack=True)
        _record_settled(conn, loaded, now)
        return loaded

    def counts(self) -> tuple[int, int]:
        return len(self._running), self._capacity - len(self._running)


def _settle(
    conn: Connection, claimed: _Claimed, state: str, error: dict[str, Any] | None, at: datetime
) -> bool:
    """End a run this replica holds, fenced by its lease token: False when the thread is
    no longer this run's to settle (stopped, recovered, or settled already)."""
    params = {
        "b_id": claimed.thread["id"],
        "b_token": claimed.token,
        "b_state": state,
        "b_error": error,
        "b_finished": at,
    }
    return _SETTLE.execute(conn, params) > 0


def _record_settled(conn: Connection, settled: list[dict[str, Any]], at: datetime) -> None:
    """Threads this transaction settled: their terminal events, and a wake-up for requests
    waiting on them in other processes."""
    for thread in settled:
        notify.notify(conn, notify.SETTLED, thread["id"])
    insert_events(
        conn,
        [
            thread_event(THREAD_TERMINAL_EVENTS[t["state"]], t, at=at, artifacts=t["artifacts"])
            for t in settled
        ],
    )


def _duration(thread: dict[str, Any]) -> float:
    started, finished = thread.get("started_at"), thread.get("finished_at")
    if not started or not finished:
        return 0.0
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
