"""TaskContext: what a task function receives (API.md §15.4).

The context talks to the server through a :class:`ContextBackend`: the worker process
uses a channel backend (``runner/child.py``), ``task_framework.testing`` an in-memory
one. Every I/O method has a blocking ``_sync`` form; the async form runs it in a thread,
so both work from sync and async task functions (and under ``asyncio.run`` in a sync one).

Standard library and pydantic only: this module runs inside task environments.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from task_framework.errors import ArtifactValidationError
from task_framework.models.artifact import Artifact

UPLOAD_CHUNK_BYTES = 1024 * 1024
"""Uploads read paths and file objects in pieces of this size, never whole."""
VALIDATION_PREFIX = "Output artifact validation failed: "

UploadData = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]


class ContextBackend(Protocol):
    """The server side of a running task, seen from the task's process (blocking calls)."""

    def is_cancelled(self) -> bool: ...

    def publish(self, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate and persist the whole list; raise ArtifactValidationError otherwise."""
        ...

    def signal_problem(self, problem: dict[str, Any]) -> None: ...

    def upload(
        self, chunks: Iterator[bytes], filename: str | None, media_type: str | None
    ) -> dict[str, Any]: ...

    def download(self, file_ref: str) -> Iterator[bytes]:
        """Chunks of the file; raise FileNotFoundError when it cannot be read."""
        ...


def _iter_upload(data: UploadData) -> tuple[Iterator[bytes], str | None]:
    """Chunks of ``data`` and a default file name, reading files lazily."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        return iter(
            [raw[i : i + UPLOAD_CHUNK_BYTES] for i in range(0, len(raw), UPLOAD_CHUNK_BYTES)]
            or [b""]
        ), None
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"No such file: '{path}'")

        def read_path() -> Iterator[bytes]:
            with path.open("rb") as handle:
                yield from iter(lambda: handle.read(UPLOAD_CHUNK_BYTES), b"")

        return read_path(), path.name
    if hasattr(data, "read"):
        handle = data
        name = getattr(handle, "name", None)

        def read_handle() -> Iterator[bytes]:
            while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                if not isinstance(chunk, bytes | bytearray):
                    raise TypeError("upload_file needs a binary file object")
                yield bytes(chunk)

        return read_handle(), Path(name).name if isinstance(name, str) else None
    raise TypeError("upload_file data must be bytes, a path or a binary file object")


_NO_DEFAULT: Any = object()
"""Tells "no default given" apart from an explicit ``None``."""


class TaskContext:
    """The running thread as the task sees it."""

    def __init__(
        self,
        backend: ContextBackend,
        *,
        thread_id: str,
        inputs: Sequence[Mapping[str, Any]] = (),
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        traceparent: str | None = None,
    ) -> None:
        self._backend = backend
        self.thread_id = thread_id
        self.traceparent = traceparent
        """W3C ``traceparent`` of the span running this thread when the server traces
        (``TASK_FRAMEWORK_OTEL_ENABLED``), else None; see :meth:`otel_context`."""
        self.params: dict[str, Any] = dict(params or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.logger = logger or logging.getLogger("task")
        self._inputs = [dict(item) for item in inputs]
        self._config = dict(config or {})
        self._secrets = dict(secrets or {})

    # -- thread ------------------------------------------------------------------------
    def get_thread_id(self) -> str:
        return self.thread_id

    def get_metadata(self) -> dict[str, Any]:
        return self.metadata

    def get_params(self) -> dict[str, Any]:
        return self.params

    def is_cancelled(self) -> bool:
        """True once a stop or timeout was requested; clean up and return soon."""
        return self._backend.is_cancelled()

    # -- tracing -----------------------------------------------------------------------
    def otel_context(self) -> Any:
        """An OpenTelemetry ``Context`` whose current span is this thread's, for
        ``tracer.start_as_current_span(name, context=context.otel_context())``: the task's
        spans then join the thread's trace. None when the server does not trace. Needs
        ``opentelemetry-api`` in the task's own dependencies (ImportError otherwise)."""
        if not self.traceparent:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        return TraceContextTextMapPropagator().extract({"traceparent": self.traceparent})

    # -- configuration -----------------------------------------------------------------
    def get(self, name: str, default: Any = None) -> Any:
        """A secret, else a plain configuration value, else ``default``."""
        if name in self._secrets:
            return self._secrets[name]
        return self._config.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._secrets or name in self._config

    def get_env(self, name: str, default: Any = None) -> Any:
        """Plain configuration values only (deprecated: use ``get``)."""
        return self._config.get(name, default)

    def get_secret(self, name: str, default: Any = _NO_DEFAULT) -> Any:
        """Secret values only (deprecated: use ``get``); KeyError when missing and no
        default is given (an explicit ``None`` default returns ``None``)."""
        if name in self._secrets:
            return self._secrets[name]
        if default is not _NO_DEFAULT:
            return default
        raise KeyError(f"Secret '{name}' not found. Configure it for this task or pass a default.")

    def has_secret(self, name: str) -> bool:
        return name in self._secrets

    def get_all_env(self) -> dict[str, str]:
        return dict(self._config)

    # -- artifacts ---------------------------------------------------------------------
    def get_input_artifacts_sync(self) -> list[Artifact]:
        """The thread's input artifacts in request order (never outputs)."""
        return [Artifact.model_validate(item) for item in self._inputs]

    async def get_input_artifacts(self) -> list[Artifact]:
        return self.get_input_artifacts_sync()

    def publish_output_artifacts_sync(
        self, artifacts: Iterable[Artifact | Mapping[str, Any]]
    ) -> list[Artifact]:
        """Validate and persist all artifacts together; ArtifactValidationError otherwise."""
        now = datetime.now(UTC)
        payload = []
        for item in artifacts:
            artifact = (
                item.model_copy() if isinstance(item, Artifact) else Artifact.model_validate(item)
            )
            artifact.thread_id = self.thread_id
            artifact.direction = "output"
            if artifact.created_at is None:
                artifact.created_at = now
            payload.append(artifact.model_dump(mode="json"))
        try:
            stored = self._backend.publish(payload)
        except ArtifactValidationError as exc:
            message = str(exc)
            if not message.startswith(VALIDATION_PREFIX):
                message = VALIDATION_PREFIX + message
            raise ArtifactValidationError(message) from None
        return [Artifact.model_validate(item) for item in stored]

    async def publish_output_artifacts(
        self, artifacts: Iterable[Artifact | Mapping[str, Any]]
    ) -> list[Artifact]:
        return await asyncio.to_thread(self.publish_output_artifacts_sync, list(artifacts))

    # -- problems ----------------------------------------------------------------------
    def signal_problem_sync(
        self, error: BaseException | str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Record a problem on the thread; its state does not change."""
        problem: dict[str, Any] = {"message": str(error), "details": dict(details or {}) or None}
        if isinstance(error, BaseException):
            problem["exception_type"] = type(error).__name__
        self._backend.signal_problem(problem)

    async def signal_problem(
        self, error: BaseException | str, details: Mapping[str, Any] | None = None
    ) -> None:
        await asyncio.to_thread(self.signal_problem_sync, error, details)

    # -- files -------------------------------------------------------------------------
    def upload_file_sync(
        self, data: UploadData, filename: str | None = None, media_type: str | None = None
    ) -> dict[str, Any]:
        """Store bytes, a file at a path, or a binary file object; FileUploadResponse dict."""
        chunks, default_name = _iter_upload(data)
        return self._backend.upload(chunks, filename or default_name, media_type)

    async def upload_file(
        self, data: UploadData, filename: str | None = None, media_type: str | None = None
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.upload_file_sync, data, filename, media_type)

    def iter_file_sync(self, file_ref: str) -> Iterator[bytes]:
        """Chunks of a file; FileNotFoundError when the thread's owner cannot read it."""
        return self._backend.download(file_ref)

    async def iter_file(self, file_ref: str) -> AsyncIterator[bytes]:
        chunks = await asyncio.to_thread(self.iter_file_sync, file_ref)
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def download_file_sync(self, file_ref: str) -> bytes:
        """Bytes of a file; FileNotFoundError when the thread's owner cannot read it."""
        return b"".join(self.iter_file_sync(file_ref))

    async def download_file(self, file_ref: str) -> bytes:
        return await asyncio.to_thread(self.download_file_sync, file_ref)

    def download_file_to_sync(self, file_ref: str, path: str | os.PathLike[str]) -> Path:
        """Stream a file to ``path`` without holding it in memory; returns the path."""
        target = Path(path)
        chunks = self.iter_file_sync(file_ref)
        with target.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        return target

    async def download_file_to(self, file_ref: str, path: str | os.PathLike[str]) -> Path:
        return await asyncio.to_thread(self.download_file_to_sync, file_ref, path)


__all__ = ["ContextBackend", "TaskContext", "UploadData"]
