"""Unit-test a task function without a server: ``run_task(fn, inputs=..., params=...)``.

The function gets a real :class:`~task_framework.context.TaskContext` backed by memory:
publishes are checked against the kind rules, ``output_schemas``, ref uniqueness and file
existence like the server does; files live in a dict; logs and prints are collected.

Standard library and pydantic only (``jsonschema`` is used when installed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from task_framework.context import ContextBackend, TaskContext
from task_framework.errors import ArtifactValidationError
from task_framework.models.artifact import Artifact
from task_framework.runner.base import ErrorInfo, LogRecord
from task_framework.runner.child import invoke
from task_framework.utils.artifact_validation import FILE_KINDS, service_rule_error
from task_framework.utils.schema_matching import match_any

DOWNLOAD_CHUNK_BYTES = 1024 * 1024


@dataclass
class TaskResult:
    """What a task did in :func:`run_task`."""

    outputs: list[Artifact] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    error: ErrorInfo | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.error is None


def _schema_error(artifact: Mapping[str, Any], schemas: Sequence[Mapping[str, Any]]) -> str | None:
    try:
        return match_any(artifact, schemas)
    except ImportError:  # no jsonschema here: check only what needs no json_schema
        plain = [{k: v for k, v in s.items() if k != "json_schema"} for s in schemas]
        return match_any(artifact, plain)


class MemoryBackend(ContextBackend):
    """A ContextBackend keeping outputs, problems and files in memory."""

    def __init__(
        self,
        thread_id: str,
        *,
        output_schemas: Sequence[Mapping[str, Any]] = (),
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.output_schemas = list(output_schemas)
        self.outputs: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = dict(files or {})
        self.cancelled = threading.Event()
        self._lock = threading.Lock()

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()

    def _errors(self, artifacts: list[dict[str, Any]]) -> list[str]:
        errors = []
        refs = {a.get("ref") for a in self.outputs if a.get("ref")}
        for artifact in artifacts:
            kind = str(artifact.get("kind"))
            problem = service_rule_error(kind, artifact) or _schema_error(
                artifact, self.output_schemas
            )
            if problem:
                errors.append(problem)
            ref = artifact.get("ref")
            if ref and ref in refs:
                errors.append(f"Duplicate ref '{ref}' within thread '{self.thread_id}'")
            refs.add(ref)
            file_ref = artifact.get("file_ref")
            if file_ref and file_ref not in self.files:
                errors.append(f"File '{file_ref}' does not exist")
            elif kind in FILE_KINDS and file_ref and artifact.get("size") is None:
                artifact["size"] = len(self.files[file_ref])
        return errors

    def publish(self, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            errors = self._errors(artifacts)
            if errors:
                raise ArtifactValidationError("; ".join(errors))
            stored = [{**a, "id": a.get("id") or f"artifact_{uuid.uuid4().hex}"} for a in artifacts]
            self.outputs.extend(stored)
        return stored

    def signal_problem(self, problem: dict[str, Any]) -> None:
        with self._lock:
            self.problems.append({**problem, "created_at": datetime.now(UTC).isoformat()})

    def upload(
        self, chunks: Iterator[bytes], filename: str | None, media_type: str | None
    ) -> dict[str, Any]:
        data = b"".join(chunks)
        file_ref = f"file_{uuid.uuid4().hex}"
        with self._lock:
            self.files[file_ref] = data
        return {
            "file_ref": file_ref,
            "size": len(data),
            "media_type": media_type or "application/octet-stream",
            "sha256": hashlib.sha256(data).hexdigest(),
            "filename": filename,
            "created_at": datetime.now(UTC).isoformat(),
        }

    def download(self, file_ref: str) -> Iterator[bytes]:
        with self._lock:
            data = self.files.get(file_ref)
        if data is None:
            raise FileNotFoundError(f"File {file_ref} does not exist")
        return iter(
            [data[i : i + DOWNLOAD_CHUNK_BYTES] for i in range(0, len(data), DOWNLOAD_CHUNK_BYTES)]
            or [b""]
        )


class _Collector(logging.Handler):
    def __init__(self, records: list[LogRecord]) -> None:
        super().__init__()
        self._records = records
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(
            LogRecord(record.created, "log", self.format(record), record.levelname, record.name)
        )


class _Lines(io.TextIOBase):
    def __init__(self, records: list[LogRecord], stream: str) -> None:
        self._records = records
        self._stream = stream
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._records.append(LogRecord(time.time(), self._stream, line))  # type: ignore[arg-type]
        return len(text)

    def end(self) -> None:
        if self._partial:
            self.write("\n")


def _as_input(item: Artifact | Mapping[str, Any], thread_id: str) -> dict[str, Any]:
    artifact = item if isinstance(item, Artifact) else Artifact.model_validate(item)
    data = artifact.model_dump(mode="json")
    data["direction"] = "input"
    data["thread_id"] = data.get("thread_id") or thread_id
    return data


def run_task(
    fn: Callable[..., Any],
    *,
    inputs: Sequence[Artifact | Mapping[str, Any]] = (),
    params: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    config: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    output_schemas: Sequence[Mapping[str, Any]] = (),
    files: Mapping[str, bytes] | None = None,
    thread_id: str | None = None,
    log_level: str = "DEBUG",
    traceparent: str | None = None,
) -> TaskResult:
    """Run a sync or async task function once against an in-memory context
    (``traceparent``: what ``context.traceparent`` says, as if the server traced)."""
    thread_id = thread_id or f"thread_{uuid.uuid4().hex}"
    backend = MemoryBackend(thread_id, output_schemas=output_schemas, files=files)
    logs: list[LogRecord] = []
    logger = logging.getLogger("task")
    logger.setLevel(log_level.upper())
    context = TaskContext(
        backend,
        thread_id=thread_id,
        inputs=[_as_input(item, thread_id) for item in inputs],
        params=params,
        metadata=metadata,
        config=config,
        secrets=secrets,
        logger=logger,
        traceparent=traceparent,
    )
    handler = _Collector(logs)
    handler.setLevel(log_level.upper())
    stdout, stderr = _Lines(logs, "stdout"), _Lines(logs, "stderr")
    outcome: list[ErrorInfo | None] = [None]

    def target() -> None:
        outcome[0] = invoke(fn, context)[0]

    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            # A thread of its own: asyncio.run works even when the caller is inside a loop.
            runner = threading.Thread(target=target, name=f"run_task-{thread_id}")
            runner.start()
            runner.join()
        stdout.end()
        stderr.end()
    finally:
        root.removeHandler(handler)
    return TaskResult(
        outputs=[Artifact.model_validate(item) for item in backend.outputs],
        problems=backend.problems,
        logs=logs,
        error=outcome[0],
        files=backend.files,
    )


__all__ = ["MemoryBackend", "TaskResult", "run_task"]
