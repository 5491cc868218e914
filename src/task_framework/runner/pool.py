"""ProcessRunner: the Runner that runs threads in warm pools of worker processes.

Idle workers are kept per task version (``TaskSpec.pool_key``) and, by default, per owner
(``reuse="owner"``: a worker that ran a thread of one ``(app_id, user_id)`` never runs
another's), and reused LIFO, so the cold start (interpreter, SDK and task imports) is paid
once per worker. A worker is retired after ``max_runs_per_worker`` runs, after
``idle_seconds`` unused, and after any abnormal end (crash, stop, timeout, load failure,
leftover child processes). Every worker starts confined by the :class:`Sandbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from task_framework.runner.base import (
    TASK_CRASHED,
    TASK_LOAD_FAILED,
    TASK_TIMEOUT,
    ErrorInfo,
    Outcome,
    RunRequest,
    TaskHost,
    TaskSpec,
)
from task_framework.runner.process import (
    CRASH_TYPE,
    ProcessInfo,
    WorkerProcess,
    WorkerStartError,
    memory_error,
    scan_processes,
)
from task_framework.runner.sandbox import LimitPolicy, Sandbox, WorkerReuse

IDLE_SECONDS = 300.0
STOP_GRACE_SECONDS = 5.0
KILL_AFTER_SECONDS = 2.0
MAX_RUNS_PER_WORKER = 1000
LOG_FLUSH_SECONDS = 0.1
LIMITS_POLL_SECONDS = 0.5
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MAX_REAP_INTERVAL_SECONDS = 30.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_MIB = 1024 * 1024


@dataclass
class _Waiting:
    stop_requested: bool = False

    def stopped_meanwhile(self) -> bool:
        """Re-read the flag after an await (a plain re-check reads as unreachable)."""
        return self.stop_requested


PRESTART_AHEAD_RUNS = 20
"""A successor worker is started this many runs before a worker is used up."""


class ProcessRunner:
    """Runs each thread in a worker process of its task version's environment."""

    def __init__(
        self,
        *,
        sdk_root: Path,
        max_workers: int,
        max_workers_per_task: int | None = None,
        idle_seconds: float = IDLE_SECONDS,
        max_runs_per_worker: int = MAX_RUNS_PER_WORKER,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        kill_after_seconds: float = KILL_AFTER_SECONDS,
        max_memory_mb: int | None = None,
        log_flush_seconds: float = LOG_FLUSH_SECONDS,
        on_worker_start: Callable[[], None] | None = None,
        sandbox: Sandbox | None = None,
        reuse: WorkerReuse = "owner",
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._sdk_root = sdk_root
        self._sdk_path: Path | None = None
        self.max_workers = max_workers
        self.max_workers_per_task = min(max_workers_per_task or max_workers, max_workers)
        self.idle_seconds = idle_seconds
        self.max_runs_per_worker = max_runs_per_worker
        self.stop_grace_seconds = stop_grace_seconds
        self.kill_after_seconds = kill_after_seconds
        if sandbox is None:
            policy = LimitPolicy()
            if max_memory_mb is not None:
                policy = LimitPolicy(memory_mb=max_memory_mb)
            sandbox = Sandbox(data_dir=sdk_root, policy=policy)
        self.sandbox = sandbox
        self.reuse: WorkerReuse = reuse
        self.log_flush_seconds = log_flush_seconds
        self._on_worker_start = on_worker_start or (lambda: None)
        self._slots = asyncio.Semaphore(max_workers)
        self._task_slots: dict[str, asyncio.Semaphore] = {}
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._workers: set[WorkerProcess] = set()
        self._running: dict[str, WorkerProcess] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._limits_watch: asyncio.Task[None] | None = None
        self._cpu_start: dict[str, int] = {}
        self._closed = False

    # -- Runner ------------------------------------------------------------------------
    async def run(self, spec: TaskSpec, request: RunRequest, host: TaskHost) -> Outcome:
        """Run the thread to its end in a pooled worker; never raises for task faults."""
        if self._closed:
            raise RuntimeError("ProcessRunner is closed")
        self._start_background()
        waiting = self._waiting[request.thread_id] = _Waiting()
        task_key = f"{spec.task_id}:{spec.version}"
        task_slots = self._task_slots.setdefault(
            task_key, asyncio.Semaphore(self.max_workers_per_task)
        )
        try:
            async with task_slots, self._slots:
                if waiting.stop_requested:
                    return Outcome("stopped")
                try:
                    worker = await self._acquire(spec, request.owner)
                except WorkerStartError as exc:
                    return Outcome(
                        "failed", ErrorInfo(TASK_LOAD_FAILED, str(exc), "WorkerStartError")
                    )
                # Stays "waiting" while the worker starts, so a stop then is not lost.
                del self._waiting[request.thread_id]
                if waiting.stopped_meanwhile():
                    await self._release(worker)
                    return Outcome("stopped")
                return await self._run_on(worker, spec.entry_point, request, host)
        finally:
            self._waiting.pop(request.thread_id, None)

    async def _run_on(
        self, worker: WorkerProcess, entry_point: str, request: RunRequest, host: TaskHost
    ) -> Outcome:
        self._running[request.thread_id] = worker
        timer = None
        if request.timeout_seconds is not None:
            timeout = Outcome(
                "timeout", ErrorInfo(TASK_TIMEOUT, "Task execution timed out", "TimeoutError")
            )
            timer = asyncio.get_running_loop().call_later(
                request.timeout_seconds, self._end_soon, worker, timeout, self.stop_grace_seconds
            )
        try:
            return await worker.run(entry_point, request, host)
        finally:
            if timer is not None:
                timer.cancel()
            del self._running[request.thread_id]
            self._cpu_start.pop(request.thread_id, None)
            await self._release(worker)

    async def stop(self, thread_id: str) -> bool:
        """Cancel flag now; the process group is killed after the grace period."""
        waiting = self._waiting.get(thread_id)
        if waiting is not None:
            waiting.stop_requested = True
            return True
        worker = self._running.get(thread_id)
        if worker is None:
            return False
        self._end_soon(worker, Outcome("stopped"), self.stop_grace_seconds)
        return True

    async def check_entry_point(self, spec: TaskSpec) -> ErrorInfo | None:
        """Import the entry point in a fresh worker; keep that worker warm when it loads."""
        self._start_background()
        try:
            worker = await self._spawn(spec, counted=False)
        except WorkerStartError as exc:
            return ErrorInfo(TASK_LOAD_FAILED, str(exc), "WorkerStartError")
        error = await worker.check(spec.entry_point)
        if error is None and len(self._workers) <= self.max_workers and not self._closed:
            self._idle.setdefault(worker.idle_key, []).append(worker)
        else:
            await self._retire(worker)
        return error

    def counts(self) -> tuple[int, int]:
        """(busy workers, idle workers)."""
        return len(self._running), sum(len(idle) for idle in self._idle.values())

    async def close(self) -> None:
        """Kill every worker's process group and wait for them."""
        self._closed = True
        for task in (self._reaper, self._limits_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._idle.clear()
        workers = list(self._workers)
        await asyncio.gather(*(worker.kill() for worker in workers), return_exceptions=True)
        self._workers.clear()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- workers -----------------------------------------------------------------------
    def _sdk(self) -> Path:
        if self._sdk_path is None:
            from task_framework.runner.sdk import sdk_dir

            self._sdk_path = sdk_dir(self._sdk_root)
        return self._sdk_path

    def _adopt(self, worker: WorkerProcess) -> None:
        self._workers.add(worker)
        worker.on_exit = self._forget_idle

    def _forget_idle(self, worker: WorkerProcess) -> None:
        idle = self._idle.get(worker.idle_key)
        if idle and worker in idle:
            idle.remove(worker)
        self._workers.discard(worker)

    def _idle_key(self, spec: TaskSpec, owner: str) -> str:
        """Idle workers of one task version, and of one owner unless reuse is "task"."""
        if self.reuse == "task":
            return spec.pool_key
        return f"{spec.pool_key}|{owner}"

    async def _acquire(self, spec: TaskSpec, owner: str) -> WorkerProcess:
        await self._retire_stale(spec)
        own = self._idle_key(spec, owner)
        # The owner's own warm workers first, then fresh ones that never ran a thread.
        for key in dict.fromkeys((own, self._fresh_key(spec))):
            idle = self._idle.get(key)
            while idle:
                worker = idle.pop()
                if worker.alive:
                    worker.idle_key = own
                    return worker
        if len(self._workers) >= self.max_workers:
            await self._evict_oldest_idle()
        worker = await self._spawn(spec)
        worker.idle_key = own
        return worker

    def _fresh_key(self, spec: TaskSpec) -> str:
        return self._idle_key(spec, "")

    async def _spawn(self, spec: TaskSpec, *, counted: bool = True) -> WorkerProcess:
        """Start a confined worker, counted in the pool while it starts (unless it is only
        an entry-point check); raises WorkerStartError."""
        sandbox = self.sandbox
        if not sandbox.detected:
            await asyncio.to_thread(sandbox.detect)
        limits = sandbox.policy.resolve(spec.resources)
        try:
            launch = sandbox.prepare(
                code_dir=spec.code_dir, env_path=spec.env.path, sdk_path=self._sdk(), limits=limits
            )
        except OSError as exc:
            raise WorkerStartError(f"cannot prepare the worker's sandbox: {exc}") from exc
        worker = WorkerProcess(
            spec,
            log_flush_seconds=self.log_flush_seconds,
            launch=launch,
            idle_key=self._fresh_key(spec),
        )
        if counted:
            self._workers.add(worker)
        try:
            await worker.start(self._sdk())
        except BaseException:
            self._workers.discard(worker)
            raise
        self._adopt(worker)
        if counted:
            self._on_worker_start()
        return worker

    async def _release(self, worker: WorkerProcess) -> None:
        healthy = worker.reusable and worker.alive and not self._closed and self.reuse != "never"
        # A worker that is about to be used up gets its successor started while it still
        # serves, so that no thread waits for a cold start on its account.
        ahead = min(PRESTART_AHEAD_RUNS, self.max_runs_per_worker - 1)
        if healthy and worker.runs == self.max_runs_per_worker - ahead:
            self._in_background(self._prestart(worker.spec))
        if healthy and worker.runs < self.max_runs_per_worker:
            self._idle.setdefault(worker.idle_key, []).append(worker)
            return
        await self._retire(worker)

    async def _prestart(self, spec: TaskSpec) -> None:
        # A successor may take the pool one process over its limit for the few runs its
        # predecessor has left: at the limit (the default on a small machine) a recycle
        # would otherwise cost a thread a cold start, and the spawn competing for the CPU
        # slows the others around it.
        if len(self._workers) > self.max_workers:
            return
        try:
            worker = await self._spawn(spec)
        except WorkerStartError:
            return  # the used-up worker's replacement then starts when it is needed
        # Into the idle list below the worker it replaces (idle workers are reused newest
        # first), so the old one serves out its runs first.
        if self._closed:
            await self._retire(worker)
        else:
            self._idle.setdefault(worker.idle_key, []).insert(0, worker)

    async def _retire(self, worker: WorkerProcess) -> None:
        self._forget_idle(worker)
        await worker.kill()

    async def _retire_stale(self, spec: TaskSpec) -> None:
        """Idle workers of the same task version with older code or environment."""
        for idle in list(self._idle.values()):
            if (
                idle
                and idle[0].spec.pool_key != spec.pool_key
                and idle[0].spec.task_id == spec.task_id
                and (idle[0].spec.version == spec.version)
            ):
                for worker in list(idle):
                    await self._retire(worker)

    async def _evict_oldest_idle(self) -> None:
        candidates = [w for idle in self._idle.values() for w in idle]
        if candidates:
            await self._retire(min(candidates, key=lambda w: w.last_used))

    def _end_soon(self, worker: WorkerProcess, decision: Outcome, grace: float) -> None:
        self._in_background(
            worker.end(decision, grace_seconds=grace, kill_after_seconds=self.kill_after_seconds)
        )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the pool keeps (and awaits when it closes)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- background --------------------------------------------------------------------
    def _start_background(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())
        if self._limits_watch is None:
            self._limits_watch = asyncio.get_running_loop().create_task(self._watch_limits())

    async def _reap_idle(self) -> None:
        interval = min(max(self.idle_seconds / 4, 0.05), MAX_REAP_INTERVAL_SECONDS)
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self.idle_seconds
            for idle in list(self._idle.values()):
                for worker in [w for w in idle if w.last_used < deadline]:
                    await self._retire(worker)

    async def _watch_limits(self) -> None:
        """CPU time per thread, and resident memory where no cgroup limits it, summed over
        the worker and everything it started (one pass over /proc per look)."""
        while True:
            await asyncio.sleep(LIMITS_POLL_SECONDS)
            watched = [
                (thread_id, worker)
                for thread_id, worker in self._running.items()
                if worker.launch is not None
                and (worker.launch.limits.cpu_seconds or self._watches_memory(worker))
            ]
            if not watched:
                continue
            scan = await asyncio.to_thread(scan_processes)
            for thread_id, worker in watched:
                processes = [info for ns, group, info in scan if worker.owns(ns, group)]
                self._check_limits(thread_id, worker, processes)

    @staticmethod
    def _watches_memory(worker: WorkerProcess) -> bool:
        launch = worker.launch
        return launch is not None and bool(launch.limits.memory_mb) and not launch.cgroups

    def _check_limits(
        self, thread_id: str, worker: WorkerProcess, processes: list[ProcessInfo]
    ) -> None:
        assert worker.launch is not None
        limits = worker.launch.limits
        if self._watches_memory(worker):
            resident = sum(p.rss_pages for p in processes) * _PAGE_BYTES
            if resident > limits.memory_mb * _MIB:
                self._end_soon(worker, Outcome("failed", memory_error(limits.memory_mb)), 0)
                return
        if limits.cpu_seconds:
            ticks = sum(p.cpu_ticks for p in processes)
            start = self._cpu_start.setdefault(thread_id, ticks)
            if ticks - start > limits.cpu_seconds * _CLOCK_TICKS:
                message = f"Task exceeded its CPU time limit of {limits.cpu_seconds} s"
                error = ErrorInfo(TASK_CRASHED, message, CRASH_TYPE)
                self._end_soon(worker, Outcome("failed", error), 0)


__all__ = ["ProcessRunner"]
