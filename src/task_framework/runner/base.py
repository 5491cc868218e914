"""The runner port: run one thread of one task version, isolated, and report its outcome.

The server hands a :class:`TaskSpec` (which code, in which environment) and a
:class:`RunRequest` (the thread) to a :class:`Runner`. Context calls that need the server
(publishing outputs, problems, logs, files) come back through the :class:`TaskHost` the
caller passes in. Implementations: ``runner.pool.ProcessRunner`` (real worker processes
in per-version virtual environments) and ``runner.inline.InlineRunner`` (in-process test
double for unit tests of other layers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

OutcomeStatus = Literal["succeeded", "failed", "timeout", "stopped"]
LogStream = Literal["stdout", "stderr", "log"]

# ThreadError codes produced by the runner (API.md §5.1).
TASK_EXCEPTION = "TASK_EXCEPTION"
OUTPUT_VALIDATION_FAILED = "OUTPUT_VALIDATION_FAILED"
TASK_TIMEOUT = "TASK_TIMEOUT"
TASK_CRASHED = "TASK_CRASHED"
TASK_LOAD_FAILED = "TASK_LOAD_FAILED"


@dataclass(frozen=True, slots=True)
class TaskEnv:
    """A built virtual environment, keyed by the hash of what it was built from."""

    key: str
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


Network = Literal["none", "outbound"]
NETWORKS: tuple[Network, ...] = ("none", "outbound")
RESOURCE_KEYS = ("memory_mb", "cpu_seconds", "max_processes", "timeout_seconds")


@dataclass(frozen=True, slots=True)
class TaskResources:
    """What a task's metadata asks for; None leaves the server default."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    max_processes: int | None = None
    timeout_seconds: int | None = None
    network: Network | None = None

    def as_metadata(self) -> dict[str, Any]:
        resources = {k: getattr(self, k) for k in RESOURCE_KEYS if getattr(self, k) is not None}
        out: dict[str, Any] = {}
        if resources:
            out["resources"] = resources
        if self.network is not None:
            out["network"] = self.network
        return out


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task version's code in one environment: what a worker process runs."""

    task_id: str
    version: str
    entry_point: str
    """``module.path:function``; resolved inside ``code_dir``."""
    code_dir: Path
    """Package root; it and its ``lib/`` (when present) go on ``sys.path``."""
    env: TaskEnv
    code_token: str = ""
    """Changes whenever the code changes (dev tasks): idle workers of an old token retire."""
    resources: TaskResources = field(default_factory=TaskResources)
    """What the task's metadata asks of the sandbox (limits, network)."""

    @property
    def pool_key(self) -> str:
        return f"{self.task_id}:{self.version}:{self.env.key}:{self.code_dir}:{self.code_token}"


@dataclass(slots=True)
class RunRequest:
    """One thread, as the worker needs it."""

    thread_id: str
    inputs: list[dict[str, Any]]
    """Input artifacts as JSON dicts (Artifact.model_dump(mode="json")), in request order."""
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    """Plain configuration values (``context.get_env``)."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Secret values (``context.get_secret``); never logged."""
    timeout_seconds: float | None = None
    log_level: str = "INFO"
    owner: str = ""
    """``app_id/user_id`` of the thread: a warm worker only serves one owner."""
    traceparent: str | None = None
    """W3C ``traceparent`` of the worker round trip (tracing on): ``context.traceparent``."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """How a thread failed: the ThreadError of API.md §5.1 (without ``details``)."""

    code: str
    message: str
    exception_type: str
    stack_trace: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: OutcomeStatus
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    timestamp: float
    """Unix time (seconds, float) when the line or record was produced."""
    stream: LogStream
    message: str
    level: str | None = None
    logger: str | None = None


class TaskHost(Protocol):
    """Server side of the context calls a running task makes.

    Methods raise ``task_framework.errors.ArtifactValidationError`` (publish) or
    ``task_framework.errors.NotFound`` (download); the runner carries the message back to
    the task as ``ArtifactValidationError`` / ``FileNotFoundError``.
    """

    async def publish_outputs(
        self, thread_id: str, artifacts: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Validate the whole list, persist it, return the stored artifacts."""
        ...

    async def signal_problem(self, thread_id: str, problem: dict[str, Any]) -> None:
        """Record ``{message, exception_type?, details?}`` on the thread."""
        ...

    async def write_logs(self, thread_id: str, records: list[LogRecord]) -> None:
        """Append log records (batched by the runner)."""
        ...

    async def upload_file(
        self,
        thread_id: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]:
        """Store a file owned by the thread's owner; return a FileUploadResponse dict."""
        ...

    def download_file(self, thread_id: str, file_ref: str) -> AsyncIterator[bytes]:
        """Stream a file the thread's owner may read; raise NotFound otherwise."""
        ...


class Runner(Protocol):
    """Runs threads in isolation. One ``run`` per thread; ``stop`` from anywhere."""

    async def run(self, spec: TaskSpec, request: RunRequest, host: TaskHost) -> Outcome:
        """Run the thread to its end and return the outcome. Never raises for task faults."""
        ...

    async def stop(self, thread_id: str) -> bool:
        """Request a stop: cancel flag now, process group killed after the grace period.

        Returns False when the thread is not running here. ``run`` then returns ``stopped``.
        """
        ...

    async def check_entry_point(self, spec: TaskSpec) -> ErrorInfo | None:
        """Import the entry point in a fresh worker; the load error, or None when it loads."""
        ...

    def counts(self) -> tuple[int, int]:
        """(busy workers, idle workers) on this replica."""
        ...

    async def close(self) -> None:
        """Terminate every worker."""
        ...
