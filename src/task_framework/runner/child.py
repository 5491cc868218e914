"""The worker process: receives threads over the channel and runs the task's entry point.

Started by ``runner/pool.py`` as ``<env>/bin/python -I -c <bootstrap>``. A reader thread
owns the receiving side of the socket (replies, chunks, ``cancel``); the main thread runs
one thread of the task at a time. Python-level stdout/stderr and ``logging`` are sent as
log records over the same channel, so their order relative to publishes is exact.

Standard library and pydantic only: this module runs inside task environments.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import logging
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from task_framework.context import ContextBackend, TaskContext
from task_framework.errors import ArtifactValidationError
from task_framework.logging import running_with
from task_framework.runner import protocol as p
from task_framework.runner.base import (
    OUTPUT_VALIDATION_FAILED,
    TASK_CRASHED,
    TASK_EXCEPTION,
    TASK_LOAD_FAILED,
    ErrorInfo,
)

WORKER_FD_ENV = "TASK_FRAMEWORK_WORKER_FD"
SCRATCH_ENV = "TASK_FRAMEWORK_SCRATCH"
LOG_FLUSH_SECONDS = 0.05
"""Buffered log records reach the parent at least this often while a task runs."""
LOG_BATCH_MAX = 256
DOWNLOAD_QUEUE_CHUNKS = 16
"""Chunks buffered per download before the reader stops reading (back-pressure)."""
_QUEUE_POLL_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1
_DEATH_SIGNAL = signal.SIGUSR2
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)

T = TypeVar("T")


def _die() -> None:
    """Kill the whole process group (the worker and anything the task spawned)."""
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os._exit(1)


class EntryPointError(Exception):
    """The entry point cannot be imported or called."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


def _task_traceback(exc: BaseException) -> str:
    """The traceback without the runner's and asyncio's own leading frames."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__
        or tb.tb_frame.f_code.co_filename.startswith(_ASYNCIO_DIR)
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def load_entry_point(entry_point: str) -> Callable[..., Any]:
    """Import ``module.path:function``; EntryPointError (TASK_LOAD_FAILED) otherwise."""
    module_name, sep, attr_path = entry_point.partition(":")
    if not sep or not module_name or not attr_path:
        raise EntryPointError(
            ErrorInfo(
                TASK_LOAD_FAILED,
                f"Invalid entry point '{entry_point}': expected 'module:function'",
                "ValueError",
            )
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            target = getattr(target, part)
    except BaseException as exc:  # SystemExit at import time is a load failure too
        raise EntryPointError(
            ErrorInfo(
                TASK_LOAD_FAILED,
                f"Cannot load entry point '{entry_point}': {exc}",
                type(exc).__name__,
                _task_traceback(exc),
            )
        ) from None
    if not callable(target):
        raise EntryPointError(
            ErrorInfo(TASK_LOAD_FAILED, f"Entry point '{entry_point}' is not callable", "TypeError")
        )
    try:
        inspect.signature(target).bind(None)
    except TypeError:
        raise EntryPointError(
            ErrorInfo(
                TASK_LOAD_FAILED,
                f"Entry point '{entry_point}' must take one argument (the context)",
                "TypeError",
            )
        ) from None
    except ValueError:  # no signature available (some builtins): call it and see
        pass
    return target  # type: ignore[no-any-return]


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _call(fn: Callable[..., Any], context: TaskContext) -> None:
    if inspect.iscoroutinefunction(fn):
        asyncio.run(fn(context))
    else:
        result = fn(context)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))


def invoke(fn: Callable[..., Any], context: TaskContext) -> tuple[ErrorInfo | None, int | None]:
    """Call the task function; (error or None, exit code when the task called sys.exit)."""
    try:
        with running_with(context.logger):  # ``task_framework.logging.logger`` writes here
            _call(fn, context)
    except ArtifactValidationError as exc:
        trace = _task_traceback(exc)
        return ErrorInfo(OUTPUT_VALIDATION_FAILED, str(exc), type(exc).__name__, trace), None
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        message = f"Task process exited with code {code}"
        return ErrorInfo(TASK_CRASHED, message, "WorkerCrashed", _task_traceback(exc)), code
    except BaseException as exc:
        return ErrorInfo(TASK_EXCEPTION, str(exc), type(exc).__name__, _task_traceback(exc)), None
    return None, None


def error_dict(info: ErrorInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "code": info.code,
        "message": info.message,
        "exception_type": info.exception_type,
        "stack_trace": info.stack_trace,
    }


class _Pending:
    """A request waiting for its reply (or, for downloads, its chunks)."""

    def __init__(self, streaming: bool = False) -> None:
        self.event = threading.Event()
        self.reply: dict[str, Any] = {}
        self.chunks: queue.Queue[tuple[str, Any]] | None = (
            queue.Queue(DOWNLOAD_QUEUE_CHUNKS) if streaming else None
        )
        self.abandoned = False

    def put(self, item: tuple[str, Any]) -> None:
        assert self.chunks is not None
        while not self.abandoned:
            try:
                self.chunks.put(item, timeout=_QUEUE_POLL_SECONDS)
                return
            except queue.Full:
                continue


class Channel:
    """The child's end of the socket: framed sends, a reader thread, batched logs."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.RLock()
        self._logs: list[list[Any]] = []
        self._logs_ready = threading.Condition(self._lock)
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancelled = threading.Event()
        self.thread_id: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._read_loop, name="tf-reader", daemon=True).start()
        threading.Thread(target=self._flush_loop, name="tf-logs", daemon=True).start()

    # -- sending -----------------------------------------------------------------------
    def send(self, message: dict[str, Any], payload: bytes = b"") -> None:
        with self._lock:
            self._flush_logs()
            p.send_frame(self._sock, message, payload)

    def log(self, stream: str, message: str, level: str | None, logger: str | None) -> None:
        with self._lock:
            self._logs.append([time.time(), stream, level, logger, message])
            if len(self._logs) >= LOG_BATCH_MAX:
                self._flush_logs()
            elif len(self._logs) == 1:
                self._logs_ready.notify()

    def flush(self) -> None:
        with self._lock:
            self._flush_logs()

    def _flush_logs(self) -> None:
        if self._logs:
            records, self._logs = self._logs, []
            p.send_frame(self._sock, {"type": p.LOG, "records": records})

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                while not self._logs:
                    self._logs_ready.wait()
            time.sleep(LOG_FLUSH_SECONDS)  # let a burst of lines share one frame
            self.flush()

    # -- requests ----------------------------------------------------------------------
    def open_request(self, streaming: bool = False) -> tuple[int, _Pending]:
        with self._lock:
            self._next_id += 1
            pending = _Pending(streaming)
            self._pending[self._next_id] = pending
            return self._next_id, pending

    def close_request(self, request_id: int) -> None:
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.abandoned = True

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and block until its reply."""
        request_id, pending = self.open_request()
        try:
            self.send({**message, "id": request_id})
            pending.event.wait()
            return pending.reply
        finally:
            self.close_request(request_id)

    # -- receiving ---------------------------------------------------------------------
    def _read_loop(self) -> None:
        stream = self._sock.makefile("rb")
        try:
            while (frame := p.read_frame(stream)) is not None:
                self._dispatch(*frame)
        except (OSError, p.ProtocolError):
            pass
        _die()  # the parent is gone: nothing of this worker may outlive it

    def _dispatch(self, message: dict[str, Any], payload: bytes) -> None:
        kind = message["type"]
        if kind == p.CANCEL:
            if message.get("thread_id") in (None, self.thread_id):
                self.cancelled.set()
            return
        if kind in (p.RUN, p.CHECK, p.SHUTDOWN):
            self.commands.put(message)
            return
        with self._lock:
            pending = self._pending.get(int(message.get("id", -1)))
        if pending is None:
            return
        if pending.chunks is not None:
            if kind == p.CHUNK:
                pending.put(("chunk", payload))
            elif kind == p.END:
                pending.put(("end", None))
            elif kind == p.REPLY:
                pending.put(("reply", message))
        elif kind == p.REPLY:
            pending.reply = message
            pending.event.set()


def _raise_reply_error(reply: dict[str, Any]) -> None:
    if reply.get("ok"):
        return
    error = reply.get("error") or {}
    kind, message = error.get("type"), str(error.get("message", "host error"))
    if kind == p.ERR_VALIDATION:
        raise ArtifactValidationError(message)
    if kind == p.ERR_NOT_FOUND:
        raise FileNotFoundError(message)
    raise RuntimeError(message)


class ChannelBackend(ContextBackend):
    """ContextBackend of a worker: every call is a request over the channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def is_cancelled(self) -> bool:
        return self._channel.cancelled.is_set()

    def publish(self, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reply = self._channel.call({"type": p.PUBLISH, "artifacts": artifacts})
        _raise_reply_error(reply)
        return list(reply.get("result") or [])

    def signal_problem(self, problem: dict[str, Any]) -> None:
        _raise_reply_error(self._channel.call({"type": p.PROBLEM, "problem": problem}))

    def upload(
        self, chunks: Iterator[bytes], filename: str | None, media_type: str | None
    ) -> dict[str, Any]:
        channel = self._channel
        request_id, pending = channel.open_request()
        try:
            channel.send(
                {
                    "type": p.UPLOAD_BEGIN,
                    "id": request_id,
                    "filename": filename,
                    "media_type": media_type,
                }
            )
            aborted = True
            try:
                for chunk in chunks:
                    for start in range(0, len(chunk), p.CHUNK_BYTES):
                        piece = chunk[start : start + p.CHUNK_BYTES]
                        channel.send({"type": p.UPLOAD_CHUNK, "id": request_id}, piece)
                aborted = False
            finally:
                channel.send({"type": p.UPLOAD_END, "id": request_id, "abort": aborted})
            pending.event.wait()
            _raise_reply_error(pending.reply)
            return dict(pending.reply.get("result") or {})
        finally:
            channel.close_request(request_id)

    def download(self, file_ref: str) -> Iterator[bytes]:
        channel = self._channel
        request_id, pending = channel.open_request(streaming=True)
        assert pending.chunks is not None
        chunks = pending.chunks
        try:
            channel.send({"type": p.DOWNLOAD, "id": request_id, "file_ref": file_ref})
            first = chunks.get()
            if first[0] == "reply":
                _raise_reply_error(first[1])
        except BaseException:
            channel.close_request(request_id)
            raise

        def stream(item: tuple[str, Any]) -> Iterator[bytes]:
            try:
                while item[0] == "chunk":
                    yield item[1]
                    item = chunks.get()
                if item[0] == "reply":
                    _raise_reply_error(item[1])
            finally:
                channel.close_request(request_id)

        return stream(first)


class _LineWriter(io.TextIOBase):
    """sys.stdout / sys.stderr of the worker: each line becomes a log record."""

    def __init__(self, channel: Channel, stream: str, fd: int) -> None:
        self._channel = channel
        self._stream = stream
        self._fd = fd
        self._partial = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # raw writes land in the pipe the parent drains

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._channel.log(self._stream, line, None, None)
        return len(text)

    def end_line(self) -> None:
        """Emit an unterminated last line (end of a run)."""
        with self._lock:
            line, self._partial = self._partial, ""
        if line:
            self._channel.log(self._stream, line, None, None)


class _ChannelLogHandler(logging.Handler):
    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._channel.log("log", message, record.levelname, record.name)


def _set_parent_death_signal(parent_pid: int) -> None:
    """Die with the parent even if the socket stays open somewhere (Linux only)."""
    signal.signal(_DEATH_SIGNAL, lambda _signum, _frame: _die())
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(_DEATH_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: the socket's end-of-file still ends the worker
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _die()


def _live_children() -> int:
    """Processes the worker's threads started and that still exist (zombies included)."""
    count = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as handle:
                count += len(handle.read().split())
    except OSError:
        return 0
    return count


class Worker:
    """The main loop of a worker process."""

    def __init__(self, channel: Channel, scratch: str | None = None) -> None:
        self._channel = channel
        self._scratch = scratch
        self._backend = ChannelBackend(channel)
        self._functions: dict[str, Callable[..., Any]] = {}
        self._stdout = _LineWriter(channel, "stdout", 1)
        self._stderr = _LineWriter(channel, "stderr", 2)
        self._handler = _ChannelLogHandler(channel)

    def install(self) -> None:
        sys.stdout = self._stdout
        sys.stderr = self._stderr
        root = logging.getLogger()
        root.handlers[:] = [self._handler]

    def _load(self, entry_point: str) -> Callable[..., Any]:
        fn = self._functions.get(entry_point)
        if fn is None:
            fn = self._functions[entry_point] = load_entry_point(entry_point)
        return fn

    def check(self, message: dict[str, Any]) -> None:
        try:
            self._load(str(message["entry_point"]))
            reply: dict[str, Any] = {"type": p.REPLY, "id": message["id"], "ok": True}
        except EntryPointError as exc:
            reply = {
                "type": p.REPLY,
                "id": message["id"],
                "ok": False,
                "error": error_dict(exc.info),
            }
        self._channel.send(reply)

    def run(self, message: dict[str, Any]) -> None:
        channel = self._channel
        thread_id = str(message["thread_id"])
        channel.cancelled.clear()
        channel.thread_id = thread_id
        level = logging.getLevelName(str(message.get("log_level", "INFO")).upper())
        logging.getLogger().setLevel(level if isinstance(level, int) else logging.INFO)
        exit_code: int | None = None
        workdir = self._enter_scratch()
        try:
            fn = self._load(str(message["entry_point"]))
        except EntryPointError as exc:
            error: ErrorInfo | None = exc.info
        else:
            context = TaskContext(
                self._backend,
                thread_id=thread_id,
                inputs=message.get("inputs") or [],
                params=message.get("params") or {},
                metadata=message.get("metadata") or {},
                config=message.get("config") or {},
                secrets=message.get("secrets") or {},
                traceparent=message.get("traceparent"),
            )
            error, exit_code = invoke(fn, context)
        self._stdout.end_line()
        self._stderr.end_line()
        if exit_code is None:
            self._leave_scratch(workdir)  # before the outcome: the thread ends clean
        outcome = {
            "type": p.OUTCOME,
            "thread_id": thread_id,
            "status": "succeeded" if error is None else "failed",
            "error": error_dict(error),
            "children": _live_children(),
            "exit": exit_code is not None,
        }
        channel.send(outcome)
        channel.thread_id = None
        if exit_code is not None:
            os._exit(exit_code)

    def _enter_scratch(self) -> str | None:
        """An empty working and temp directory for this thread, inside the worker's scratch.

        The same folder serves the next thread when this one leaves it empty (a fresh
        ``mkdir``/``rmdir`` pair costs ~0.1 ms on a journaling filesystem); whatever a
        thread leaves in it is removed before the next one starts.
        """
        if self._scratch is None:
            return None
        workdir = os.path.join(self._scratch, "work")
        with contextlib.suppress(FileExistsError):
            os.mkdir(workdir, 0o700)
        os.chdir(workdir)
        if os.environ.get("TMPDIR") != workdir:
            os.environ["TMPDIR"] = workdir
        tempfile.tempdir = workdir
        return workdir

    def _leave_scratch(self, workdir: str | None) -> None:
        if self._scratch is None or workdir is None:
            return
        os.chdir(self._scratch)
        with os.scandir(workdir) as entries:
            left = next(entries, None) is not None
        if left:
            shutil.rmtree(workdir, ignore_errors=True)

    def serve(self) -> None:
        while True:
            message = self._channel.commands.get()
            kind = message["type"]
            if kind == p.RUN:
                self.run(message)
            elif kind == p.CHECK:
                self.check(message)
            else:
                self._channel.flush()
                os._exit(0)  # skip interpreter teardown: task threads must not hold us


def main(parent_pid: int) -> None:
    """Entry of the worker process (called by the bootstrap)."""
    _set_parent_death_signal(parent_pid)
    if os.getpid() == 1:
        # PID 1 of its own namespace ignores signals it has no handler for: a stop's
        # SIGTERM must still end it (and with it, everything in the namespace).
        signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(128 + signal.SIGTERM))
    fd = int(os.environ.pop(WORKER_FD_ENV))
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    channel = Channel(sock)
    channel.start()
    worker = Worker(channel, os.environ.pop(SCRATCH_ENV, None))
    worker.install()
    channel.send({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "pid": os.getpid()})
    worker.serve()


__all__ = ["EntryPointError", "error_dict", "invoke", "load_entry_point", "main"]
