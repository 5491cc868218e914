"""InlineRunner: the Runner test double. Runs the entry point in a thread of this process.

For unit tests of the layers above the runner: no environments, no processes, the same
TaskContext and the same TaskHost calls. There is no isolation; a timeout or stop
returns its outcome after the grace period but cannot kill the thread (it is left to end).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from task_framework.context import ContextBackend, TaskContext
from task_framework.errors import NotFound
from task_framework.runner.base import (
    TASK_TIMEOUT,
    ErrorInfo,
    LogRecord,
    Outcome,
    RunRequest,
    TaskHost,
    TaskSpec,
)
from task_framework.runner.child import EntryPointError, invoke, load_entry_point

STOP_GRACE_SECONDS = 5.0


class _Bridge(ContextBackend):
    """Blocking context calls from the task thread, answered by the host on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: TaskHost, thread_id: str) -> None:
        self._loop = loop
        self._host = host
        self._thread_id = thread_id
        self.cancelled = threading.Event()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()

    def publish(self, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call(self._host.publish_outputs(self._thread_id, artifacts)))

    def signal_problem(self, problem: dict[str, Any]) -> None:
        self._call(self._host.signal_problem(self._thread_id, problem))

    def upload(
        self, chunks: Iterator[bytes], filename: str | None, media_type: str | None
    ) -> dict[str, Any]:
        async def pull() -> AsyncIterator[bytes]:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk

        return dict(
            self._call(
                self._host.upload_file(
                    self._thread_id, pull(), filename=filename, media_type=media_type
                )
            )
        )

    def download(self, file_ref: str) -> Iterator[bytes]:
        async def collect() -> list[bytes]:
            try:
                return [
                    chunk async for chunk in self._host.download_file(self._thread_id, file_ref)
                ]
            except NotFound as exc:
                raise FileNotFoundError(str(exc)) from None

        return iter(self._call(collect()))


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[LogRecord] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            LogRecord(record.created, "log", self.format(record), record.levelname, record.name)
        )


class InlineRunner:
    """Runs threads in-process; entry points come from ``functions`` or are imported."""

    def __init__(
        self,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        *,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.functions = dict(functions or {})
        self.stop_grace_seconds = stop_grace_seconds
        self._running: dict[str, tuple[_Bridge, asyncio.Event]] = {}
        self._import_lock = threading.Lock()

    def _resolve(self, spec: TaskSpec) -> Callable[..., Any]:
        fn = self.functions.get(spec.entry_point)
        if fn is not None:
            return fn
        with self._import_lock:
            code_dir = str(spec.code_dir)
            if code_dir not in sys.path:
                sys.path.insert(0, code_dir)
            return load_entry_point(spec.entry_point)

    async def run(self, spec: TaskSpec, request: RunRequest, host: TaskHost) -> Outcome:
        """Run the thread in a worker thread of this process."""
        try:
            fn = self._resolve(spec)
        except EntryPointError as exc:
            return Outcome("failed", exc.info)
        loop = asyncio.get_running_loop()
        bridge = _Bridge(loop, host, request.thread_id)
        logs = _Logs()
        logs.setLevel(request.log_level.upper())
        # A private logger per run: records stay with their thread, nothing global changes.
        logger = logging.Logger(f"task.{request.thread_id}", request.log_level.upper())
        logger.addHandler(logs)
        context = TaskContext(
            bridge,
            thread_id=request.thread_id,
            inputs=request.inputs,
            params=request.params,
            metadata=request.metadata,
            config=request.config,
            secrets=request.secrets,
            logger=logger,
            traceparent=request.traceparent,
        )
        finished: asyncio.Future[ErrorInfo | None] = loop.create_future()

        def settle(error: ErrorInfo | None) -> None:
            if not finished.done():
                finished.set_result(error)

        def target() -> None:
            loop.call_soon_threadsafe(settle, invoke(fn, context)[0])

        stopped = asyncio.Event()
        self._running[request.thread_id] = (bridge, stopped)
        threading.Thread(target=target, name=f"inline-{request.thread_id}", daemon=True).start()
        try:
            outcome = await self._wait(finished, stopped, bridge, request.timeout_seconds)
        finally:
            del self._running[request.thread_id]
        if logs.records:
            await host.write_logs(request.thread_id, logs.records)
        return outcome

    async def _wait(
        self,
        finished: asyncio.Future[ErrorInfo | None],
        stopped: asyncio.Event,
        bridge: _Bridge,
        limit_seconds: float | None,
    ) -> Outcome:
        stop_wait = asyncio.ensure_future(stopped.wait())
        pending: set[asyncio.Future[Any]] = {finished, stop_wait}
        try:
            await asyncio.wait(pending, timeout=limit_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if finished.done():
            error = finished.result()
            return Outcome("succeeded") if error is None else Outcome("failed", error)
        bridge.cancelled.set()
        await asyncio.wait({finished}, timeout=self.stop_grace_seconds)
        if stopped.is_set():
            return Outcome("stopped")
        return Outcome(
            "timeout", ErrorInfo(TASK_TIMEOUT, "Task execution timed out", "TimeoutError")
        )

    async def stop(self, thread_id: str) -> bool:
        entry = self._running.get(thread_id)
        if entry is None:
            return False
        entry[0].cancelled.set()
        entry[1].set()
        return True

    async def check_entry_point(self, spec: TaskSpec) -> ErrorInfo | None:
        try:
            self._resolve(spec)
        except EntryPointError as exc:
            return exc.info
        return None

    def counts(self) -> tuple[int, int]:
        return len(self._running), 0

    async def close(self) -> None:
        for bridge, stopped in self._running.values():
            bridge.cancelled.set()
            stopped.set()


__all__ = ["InlineRunner"]
