"""Parent side of one worker process: start it, run threads on it, kill its process group.

The pool (``runner/pool.py``) decides which worker runs what; this module speaks the
protocol (``runner/protocol.py``) and turns what the worker does into an :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from task_framework.errors import ArtifactValidationError, NotFound, TaskFrameworkError
from task_framework.runner import protocol as p
from task_framework.runner.base import (
    TASK_CRASHED,
    TASK_LOAD_FAILED,
    ErrorInfo,
    LogRecord,
    Outcome,
    RunRequest,
    TaskHost,
    TaskSpec,
)
from task_framework.runner.sandbox import WorkerLaunch

START_TIMEOUT_SECONDS = 60.0
"""A worker must say hello within this time (first imports on a cold disk are slow)."""
CHECK_TIMEOUT_SECONDS = 60.0
DRAIN_AFTER_EXIT_SECONDS = 1.0
"""After the worker exits, wait this long for the rest of its frames (logs, outcome)."""
UPLOAD_QUEUE_CHUNKS = 8
STDERR_TAIL_LINES = 20
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
"""The only server environment variables a worker sees (never secrets); ``HOME`` and
``TMPDIR`` are its scratch directory."""
WORKER_FD_ENV = "TASK_FRAMEWORK_WORKER_FD"
SCRATCH_ENV = "TASK_FRAMEWORK_SCRATCH"
CRASH_TYPE = "WorkerCrashed"

BOOTSTRAP = (
    "import os, sys\n"
    "sdk, code, ppid = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "lib = os.path.join(code, 'lib')\n"
    "sys.path[0:0] = [sdk, code] + ([lib] if os.path.isdir(lib) else [])\n"
    "from task_framework.runner.child import main\n"
    "main(ppid)\n"
)

_log = logging.getLogger("task_framework.runner")


class WorkerStartError(Exception):
    """The worker process did not come up (bad environment, protocol mismatch)."""


def memory_error(limit_mb: int) -> ErrorInfo:
    return ErrorInfo(
        TASK_CRASHED, f"Task process exceeded the memory limit of {limit_mb} MiB", CRASH_TYPE
    )


def crash_error(returncode: int) -> ErrorInfo:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        message = f"Task process was killed by signal {-returncode} ({name})"
    else:
        message = f"Task process exited with code {returncode}"
    return ErrorInfo(TASK_CRASHED, message, CRASH_TYPE)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    state: str
    rss_pages: int
    cpu_ticks: int
    """User and system time, its own and that of its waited-for children."""


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def scan_processes(namespaces: bool = True) -> list[tuple[str | None, int, ProcessInfo]]:
    """(PID namespace, process group, info) of every process, from one pass over /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state ppid pgrp ...; utime..cstime are fields 14-17 and
        # rss is field 24 (indexes 11-14 and 21 here).
        ticks = sum(int(value) for value in fields[11:15])
        info = ProcessInfo(int(entry), fields[0].decode(), int(fields[21]), ticks)
        namespace = _pid_namespace(info.pid) if namespaces else None
        found.append((namespace, int(fields[2]), info))
    return found


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _error_info(data: Any) -> ErrorInfo | None:
    if not isinstance(data, dict):
        return None
    return ErrorInfo(
        code=str(data.get("code") or TASK_CRASHED),
        message=str(data.get("message") or ""),
        exception_type=str(data.get("exception_type") or "Exception"),
        stack_trace=data.get("stack_trace"),
    )


class _Run:
    """One thread on one worker: its host, its logs, and how it ends."""

    def __init__(self, worker: WorkerProcess, request: RunRequest, host: TaskHost) -> None:
        self.thread_id = request.thread_id
        self.host = host
        self.done: asyncio.Future[Outcome] = worker.loop.create_future()
        self.decision: Outcome | None = None
        """Set by a stop, timeout or memory kill: nothing the worker says changes it."""
        self.reported = asyncio.Event()
        """The worker sent its outcome (or died)."""
        self.outcome: Outcome | None = None
        self.children = 0
        self._logs: list[LogRecord] = []
        self._flush_seconds = worker.log_flush_seconds
        self._flush_handle: asyncio.TimerHandle | None = None
        self._write_lock = asyncio.Lock()
        self._worker = worker

    def resolve(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.done.set_result(outcome)

    def add_log(self, record: LogRecord) -> None:
        self._logs.append(record)
        if self._flush_handle is None:
            self._flush_handle = self._worker.loop.call_later(self._flush_seconds, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._worker.spawn(self.flush())

    async def flush(self) -> None:
        async with self._write_lock:
            if self._logs:
                records, self._logs = self._logs, []
                await self.host.write_logs(self.thread_id, records)

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        await self.flush()


class _Upload:
    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue(UPLOAD_QUEUE_CHUNKS)
        self.finished = False
        self.aborted = False
        self.ended = asyncio.Event()

    async def iterate(self) -> AsyncIterator[bytes]:
        while (chunk := await self.chunks.get()) is not None:
            yield chunk
        if self.aborted:
            raise RuntimeError("the task abandoned the upload")

    def finish(self) -> None:
        """The host stopped reading: free the queue so the reader never blocks on it."""
        self.finished = True
        while not self.chunks.empty():
            self.chunks.get_nowait()


class WorkerProcess:
    """A started worker: one thread at a time, then reused or killed."""

    def __init__(
        self,
        spec: TaskSpec,
        *,
        log_flush_seconds: float,
        launch: WorkerLaunch | None = None,
        idle_key: str = "",
    ) -> None:
        self.spec = spec
        self.launch = launch
        self.idle_key = idle_key or spec.pool_key
        """Where the pool keeps this worker while idle (task version and, maybe, owner)."""
        self.namespace: str | None = None
        """``pid:[inode]`` of the worker's own PID namespace, when it has one."""
        self.loop = asyncio.get_running_loop()
        self.log_flush_seconds = log_flush_seconds
        self.pid = 0
        self.runs = 0
        self.last_used = time.monotonic()
        self.reusable = True
        self.returncode: int | None = None
        self.on_exit: Callable[[WorkerProcess], None] | None = None
        self.exited = asyncio.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._run: _Run | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._uploads: dict[int, _Upload] = {}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._read_done = asyncio.Event()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._pidfd: int | None = None
        self._init_pidfd: int | None = None
        self.memory_exceeded = False

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, sdk_path: Path) -> None:
        """Spawn the process and wait for its hello; WorkerStartError otherwise."""
        spec, launch = self.spec, self.launch
        parent_sock, child_sock = socket.socketpair()
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env["PATH"] = os.pathsep.join([str(spec.env.path / "bin"), env.get("PATH", os.defpath)])
        env[WORKER_FD_ENV] = str(child_sock.fileno())
        cwd = spec.code_dir
        if launch is not None:
            cwd = launch.scratch
            env["HOME"] = env["TMPDIR"] = env[SCRATCH_ENV] = str(launch.scratch)
        prefix = launch.argv_prefix if launch is not None else []
        argv = [*prefix, str(spec.env.python), "-I", "-c", BOOTSTRAP, str(sdk_path)]
        # The worker checks that its parent is still there: the launcher, or, as PID 1 of
        # its own namespace, nobody it can see (0).
        parent = 0 if launch is not None and launch.pid_namespace else os.getpid()
        argv += [str(spec.code_dir), str(parent)]
        try:
            # Popen runs in the event loop thread on purpose: the parent-death signal
            # fires when the thread that forked exits, and this thread lives as long as we do.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                pass_fds=(child_sock.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            parent_sock.close()
            self._cleanup()
            raise WorkerStartError(f"cannot start {spec.env.python}: {exc}") from exc
        finally:
            child_sock.close()
        self.pid = self._proc.pid
        self._watch_exit()
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self.spawn(self._drain_pipe(self._proc.stdout, "stdout"))
        self.spawn(self._drain_pipe(self._proc.stderr, "stderr"))
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent_sock)
        try:
            hello = await asyncio.wait_for(self._read_frame(), START_TIMEOUT_SECONDS)
        except (TimeoutError, asyncio.IncompleteReadError, OSError, p.ProtocolError) as exc:
            await self.kill()
            tail = "\n".join(self._stderr_tail)
            raise WorkerStartError(f"worker did not start ({type(exc).__name__})\n{tail}") from exc
        if hello[0].get("type") != p.HELLO or hello[0].get("version") != p.PROTOCOL_VERSION:
            await self.kill()
            raise WorkerStartError(
                f"worker speaks protocol {hello[0].get('version')!r}, "
                f"expected {p.PROTOCOL_VERSION} (stale SDK overlay?)"
            )
        if launch is not None and launch.pid_namespace:
            self._watch_namespace_init()
        self.spawn(self._read_loop())

    def _watch_namespace_init(self) -> None:
        """The worker proper is the launcher's child, PID 1 of its own namespace: it exits
        only once every process in that namespace is gone, so its end is the end."""
        with contextlib.suppress(OSError):
            self.namespace = os.readlink(f"/proc/{self.pid}/ns/pid_for_children")
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            if children:
                self._init_pidfd = os.pidfd_open(int(children[0]))

    def owns(self, namespace: str | None, group: int) -> bool:
        """Whether a process of ``scan_processes`` belongs to this worker."""
        if self.namespace is not None:
            return namespace == self.namespace
        return group == self.pid

    def _cleanup(self) -> None:
        if self.launch is not None:
            self.launch.cleanup()

    async def kill(self) -> None:
        """SIGKILL the whole process group and wait until the worker is gone."""
        self.reusable = False
        if self.pid and self.alive:
            _killpg(self.pid, signal.SIGKILL)
            await self.exited.wait()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.loop.call_later(0.1, self._poll_exit)
            return
        self.loop.add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        assert self._pidfd is not None
        self.loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._on_exit()

    def _poll_exit(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self.loop.call_later(0.1, self._poll_exit)
        else:
            self._on_exit()

    def _on_exit(self) -> None:
        assert self._proc is not None
        # Kill the group while the exited leader still holds its id (no pgid reuse).
        _killpg(self.pid, signal.SIGKILL)
        self.returncode = self._proc.wait()
        self.reusable = False
        init = self._init_pidfd
        if init is not None and not select.select([init], [], [], 0)[0]:
            # The launcher was killed first: its child dies of that (parent-death signal),
            # taking the namespace with it; the worker has ended when that is done.
            self.loop.add_reader(init, self._on_init_exit)
            return
        self._on_exit_done()

    def _on_init_exit(self) -> None:
        assert self._init_pidfd is not None
        self.loop.remove_reader(self._init_pidfd)
        self._on_exit_done()

    def _on_exit_done(self) -> None:
        if self._init_pidfd is not None:
            os.close(self._init_pidfd)
            self._init_pidfd = None
        self.memory_exceeded = self.launch is not None and self.launch.memory_exceeded()
        self.loop.run_in_executor(None, self._cleanup)
        self.exited.set()
        if self._run is not None:
            self.spawn(self._finish_after_exit(self._run))
        if self.on_exit is not None:
            self.on_exit(self)
        for future in self._replies.values():
            if not future.done():
                future.set_result({"ok": False, "exited": True})

    async def _finish_after_exit(self, run: _Run) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._read_done.wait(), DRAIN_AFTER_EXIT_SECONDS)
        run.reported.set()
        assert self.returncode is not None
        crash = crash_error(self.returncode)
        if self.memory_exceeded and self.launch is not None:
            crash = memory_error(self.launch.limits.memory_mb)
        run.resolve(run.decision or run.outcome or Outcome("failed", crash))

    # -- frames ------------------------------------------------------------------------
    async def _read_frame(self) -> tuple[dict[str, Any], bytes]:
        assert self._reader is not None
        json_len, payload_len = p.decode_header(await self._reader.readexactly(p.HEADER.size))
        body = await self._reader.readexactly(json_len)
        payload = await self._reader.readexactly(payload_len) if payload_len else b""
        return p.decode_body(body), payload

    def send(self, message: dict[str, Any], payload: bytes = b"") -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(p.encode(message, payload))

    def _reply(
        self, request_id: Any, result: Any = None, error: tuple[str, str] | None = None
    ) -> None:
        if error is None:
            self.send({"type": p.REPLY, "id": request_id, "ok": True, "result": result})
        else:
            self.send(
                {
                    "type": p.REPLY,
                    "id": request_id,
                    "ok": False,
                    "error": {"type": error[0], "message": error[1]},
                }
            )

    async def _read_loop(self) -> None:
        try:
            while True:
                message, payload = await self._read_frame()
                await self._dispatch(message, payload)
        except (asyncio.IncompleteReadError, OSError, p.ProtocolError):
            pass
        finally:
            self._read_done.set()

    async def _drain_pipe(self, pipe: Any, stream: str) -> None:
        reader = asyncio.StreamReader()
        transport, _ = await self.loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").rstrip("\n")
                run = self._run
                if run is not None:
                    run.add_log(LogRecord(time.time(), stream, text))  # type: ignore[arg-type]
                elif stream == "stderr":
                    self._stderr_tail.append(text)
        except ValueError:  # a line longer than the reader's limit: drop the rest
            pass
        finally:
            transport.close()

    async def _dispatch(self, message: dict[str, Any], payload: bytes) -> None:
        kind = message["type"]
        run = self._run
        if kind == p.LOG:
            if run is not None:
                for ts, stream, level, logger, text in message.get("records", []):
                    run.add_log(LogRecord(ts, stream, text, level, logger))
        elif kind == p.OUTCOME:
            if run is not None and message.get("thread_id") == run.thread_id:
                self._on_outcome(run, message)
        elif kind == p.REPLY:
            future = self._replies.pop(int(message.get("id", -1)), None)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == p.UPLOAD_CHUNK:
            upload = self._uploads.get(int(message.get("id", -1)))
            if upload is not None and not upload.finished:
                await upload.chunks.put(payload)  # back-pressure: stop reading the socket
        elif kind == p.UPLOAD_END:
            upload = self._uploads.get(int(message.get("id", -1)))
            if upload is not None:
                upload.aborted = bool(message.get("abort"))
                upload.ended.set()
                if not upload.finished:
                    await upload.chunks.put(None)
        elif kind in (p.PUBLISH, p.PROBLEM, p.DOWNLOAD, p.UPLOAD_BEGIN):
            self._on_request(run, message)

    def _on_outcome(self, run: _Run, message: dict[str, Any]) -> None:
        status = message.get("status")
        error = _error_info(message.get("error"))
        run.outcome = Outcome("succeeded") if status == "succeeded" else Outcome("failed", error)
        run.children = int(message.get("children") or 0)
        if message.get("exit") or run.children or (error and error.code == TASK_LOAD_FAILED):
            self.reusable = False
        run.reported.set()
        if run.decision is None:
            run.resolve(run.outcome)

    def _on_request(self, run: _Run | None, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        refusal = None
        if run is None:
            refusal = "no thread is running in this worker"
        elif run.decision is not None:
            refusal = "the thread is being stopped"
        kind = message["type"]
        if kind == p.UPLOAD_BEGIN:
            upload = self._uploads[int(request_id or 0)] = _Upload()
            if refusal is not None:
                upload.finish()
                self.spawn(self._refuse_upload(int(request_id or 0), upload, refusal))
                return
        if refusal is not None or run is None:
            self._reply(request_id, error=(p.ERR_REJECTED, refusal or ""))
            return
        if kind == p.PUBLISH:
            self.spawn(self._publish(run, request_id, message.get("artifacts") or []))
        elif kind == p.PROBLEM:
            self.spawn(self._problem(run, request_id, message.get("problem") or {}))
        elif kind == p.DOWNLOAD:
            self.spawn(self._download(run, request_id, str(message.get("file_ref"))))
        else:
            self.spawn(self._upload(run, int(request_id or 0), upload, message))

    # -- host calls --------------------------------------------------------------------
    async def _publish(self, run: _Run, request_id: Any, artifacts: list[dict[str, Any]]) -> None:
        try:
            stored = await run.host.publish_outputs(run.thread_id, artifacts)
        except ArtifactValidationError as exc:
            self._reply(request_id, error=(p.ERR_VALIDATION, str(exc)))
        except Exception as exc:
            self._reply(request_id, error=_host_error(exc))
        else:
            self._reply(request_id, stored)

    async def _problem(self, run: _Run, request_id: Any, problem: dict[str, Any]) -> None:
        try:
            await run.host.signal_problem(run.thread_id, problem)
        except Exception as exc:
            self._reply(request_id, error=_host_error(exc))
        else:
            self._reply(request_id)

    async def _download(self, run: _Run, request_id: Any, file_ref: str) -> None:
        assert self._writer is not None
        try:
            async for chunk in run.host.download_file(run.thread_id, file_ref):
                for start in range(0, len(chunk), p.CHUNK_BYTES):
                    self.send(
                        {"type": p.CHUNK, "id": request_id}, chunk[start : start + p.CHUNK_BYTES]
                    )
                    await self._writer.drain()
        except NotFound as exc:
            self._reply(request_id, error=(p.ERR_NOT_FOUND, str(exc)))
        except Exception as exc:
            self._reply(request_id, error=_host_error(exc))
        else:
            self.send({"type": p.END, "id": request_id})

    async def _upload(
        self, run: _Run, request_id: int, upload: _Upload, begin: dict[str, Any]
    ) -> None:
        result: Any = None
        error: tuple[str, str] | None = None
        try:
            result = await run.host.upload_file(
                run.thread_id,
                upload.iterate(),
                filename=begin.get("filename"),
                media_type=begin.get("media_type"),
            )
        except Exception as exc:
            error = _host_error(exc)
        finally:
            upload.finish()
        await upload.ended.wait()
        self._uploads.pop(request_id, None)
        self._reply(request_id, result, error)

    async def _refuse_upload(self, request_id: int, upload: _Upload, refusal: str) -> None:
        await upload.ended.wait()
        self._uploads.pop(request_id, None)
        self._reply(request_id, error=(p.ERR_REJECTED, refusal))

    # -- runs --------------------------------------------------------------------------
    async def run(self, entry_point: str, request: RunRequest, host: TaskHost) -> Outcome:
        """Run one thread; the pool arranges stop, timeout and memory kills via ``end``."""
        run = self._run = _Run(self, request, host)
        self.runs += 1
        self.send(
            {
                "type": p.RUN,
                "thread_id": request.thread_id,
                "entry_point": entry_point,
                "inputs": request.inputs,
                "params": request.params,
                "metadata": request.metadata,
                "config": request.config,
                "secrets": request.secrets,
                "log_level": request.log_level,
                "traceparent": request.traceparent,
            }
        )
        if not self.alive:  # died between runs: report the crash
            self.spawn(self._finish_after_exit(run))
        try:
            outcome = await run.done
        finally:
            await run.close()
            self._run = None
            self.last_used = time.monotonic()
        return outcome

    def current_thread(self) -> str | None:
        return self._run.thread_id if self._run is not None else None

    async def end(
        self, decision: Outcome, *, grace_seconds: float, kill_after_seconds: float
    ) -> None:
        """Stop the current thread: cancel flag, grace, SIGTERM, then SIGKILL the group."""
        run = self._run
        if run is None or run.decision is not None:
            return
        run.decision = decision
        self.reusable = False
        self.send({"type": p.CANCEL, "thread_id": run.thread_id})
        if grace_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.reported.wait(), grace_seconds)
        if self.alive:
            _killpg(self.pid, signal.SIGTERM if grace_seconds > 0 else signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), kill_after_seconds)
        if self.alive:
            _killpg(self.pid, signal.SIGKILL)
        await self.exited.wait()
        if run.outcome is not None:  # it finished in the grace period: the decision stands
            run.resolve(decision)

    async def check(self, entry_point: str) -> ErrorInfo | None:
        """Ask the worker to import ``entry_point``; the load error or None."""
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._replies[self._next_id] = future
        self.send({"type": p.CHECK, "id": self._next_id, "entry_point": entry_point})
        try:
            reply = await asyncio.wait_for(future, CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            self.reusable = False
            return ErrorInfo(TASK_LOAD_FAILED, f"Loading '{entry_point}' timed out", "TimeoutError")
        if reply.get("exited"):
            assert self.returncode is not None
            crash = crash_error(self.returncode)
            return ErrorInfo(TASK_LOAD_FAILED, f"{crash.message} while loading", CRASH_TYPE)
        if not reply.get("ok"):
            self.reusable = False
            return _error_info(reply.get("error"))
        return None


__all__ = [
    "ProcessInfo",
    "WorkerProcess",
    "WorkerStartError",
    "crash_error",
    "memory_error",
    "scan_processes",
]


def _host_error(exc: Exception) -> tuple[str, str]:
    """What the task is told when the server side of a context call fails.

    Our own errors carry a message meant for users; anything else is a server fault whose
    details (SQL, paths) stay in the server log.
    """
    if isinstance(exc, TaskFrameworkError):
        return p.ERR_HOST, exc.message
    _log.error("task host call failed", exc_info=exc)
    return p.ERR_HOST, "Internal error in the task server"
