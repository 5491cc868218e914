"""The server side of a running task's context calls (the runner's TaskHost).

Every write is fenced by the thread's lease token: once the thread was claimed again,
recovered or deleted, late calls from the old run are refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import Connection, func, insert, select, update

from task_framework.errors import ArtifactValidationError, NotFound, StorageError
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.artifact import Artifact
from task_framework.observability.tracing import Tracing
from task_framework.runner.base import LogRecord, TaskHost
from task_framework.services.events import insert_events, thread_event
from task_framework.services.records import INSERT_ARTIFACTS, artifact_dict
from task_framework.services.tasks import TaskDefinition
from task_framework.store.database import Database
from task_framework.store.tables import artifacts, files, thread_inputs, thread_logs, threads
from task_framework.utils.artifact_validation import FILE_KINDS, service_rule_error
from task_framework.utils.schema_matching import match_any
from task_framework.utils.strict_json import NotStrictJSON, check_strict


class FileStore(Protocol):
    """What a running task needs of file storage (implemented by the files service)."""

    async def store_stream(
        self,
        chunks: AsyncIterator[bytes],
        *,
        owner: tuple[str | None, str | None],
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]: ...

    def open_owned(
        self, file_ref: str, *, owner: tuple[str | None, str | None]
    ) -> AsyncIterator[bytes]: ...


TRUNCATION_MARKER = "[log truncated]"
_PREFIX = "Output artifact validation failed: "


class ThreadHost:
    """Persists what one run of one thread publishes."""

    def __init__(
        self,
        *,
        db: Database,
        thread: dict[str, Any],
        token: int,
        task: TaskDefinition,
        max_log_bytes: int,
        files_service: FileStore | None = None,
    ) -> None:
        self._db = db
        self._thread = thread
        self._token = token
        self._task = task
        self._max_log_bytes = max_log_bytes
        self._files = files_service
        meta = thread.get("metadata") or {}
        self._owner = (meta.get("app_id"), meta.get("user_id"))
        self._log_bytes = 0
        self._log_seq = 0
        self._log_truncated = False
        self.outputs: list[dict[str, Any]] = []
        """Outputs this run persisted, in publish order."""
        self.problems: list[dict[str, Any]] = []
        """Problems this run recorded."""

    def _fenced(self, conn: Connection) -> Any:
        row = conn.execute(
            select(threads.c.lease_token, threads.c.app_id, threads.c.user_id).where(
                threads.c.id == self._thread["id"]
            )
        ).first()
        if row is None or row.lease_token != self._token:
            raise ArtifactValidationError(_PREFIX + "this run of the thread is no longer current")
        return row

    async def publish_outputs(
        self, thread_id: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        checked: list[dict[str, Any]] = []
        refs: set[str] = set()
        for raw in items:
            try:
                check_strict(raw, where="an output artifact")
            except NotStrictJSON as exc:
                raise ArtifactValidationError(_PREFIX + str(exc)) from None
            try:
                artifact = Artifact.model_validate(raw).model_dump()
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ArtifactValidationError(_PREFIX + str(first.get("msg"))) from exc
            problem = service_rule_error(artifact["kind"], artifact)
            if problem is None:
                problem = match_any(artifact, self._task.output_schemas)
            if problem is not None:
                raise ArtifactValidationError(_PREFIX + problem)
            ref = artifact.get("ref")
            if ref is not None:
                if ref in refs:
                    raise ArtifactValidationError(
                        _PREFIX + f"Duplicate ref '{ref}' within thread '{thread_id}'"
                    )
                refs.add(ref)
            checked.append(artifact)
        now = utcnow()

        def _publish(conn: Connection) -> list[dict[str, Any]]:
            owner = self._fenced(conn)
            if refs:
                taken = set(
                    conn.execute(
                        select(artifacts.c.ref).where(
                            artifacts.c.ref.in_(refs),
                            (artifacts.c.thread_id == thread_id)
                            | artifacts.c.id.in_(
                                select(thread_inputs.c.artifact_id).where(
                                    thread_inputs.c.thread_id == thread_id
                                )
                            ),
                        )
                    ).scalars()
                )
                if taken:
                    ref = sorted(taken)[0]
                    raise ArtifactValidationError(
                        _PREFIX + f"Duplicate ref '{ref}' within thread '{thread_id}'"
                    )
            file_refs = {a["file_ref"] for a in checked if a.get("file_ref")}
            found: dict[str, Any] = {}
            if file_refs:
                found = {
                    r.file_ref: r
                    for r in conn.execute(
                        select(files).where(
                            files.c.file_ref.in_(file_refs), files.c.complete.is_(True)
                        )
                    )
                    if r.app_id == owner.app_id and r.user_id == owner.user_id
                }
                missing = sorted(file_refs - set(found))
                if missing:
                    raise ArtifactValidationError(_PREFIX + f"file '{missing[0]}' not found")
            seq = conn.execute(
                select(func.coalesce(func.max(artifacts.c.seq), -1)).where(
                    artifacts.c.thread_id == thread_id, artifacts.c.direction == "output"
                )
            ).scalar_one()
            rows = []
            for artifact in checked:
                seq += 1
                meta = found.get(artifact.get("file_ref") or "")
                size, sha = artifact.get("size"), artifact.get("sha256")
                if meta is not None and artifact["kind"] in FILE_KINDS:
                    size, sha = meta.size, meta.sha256
                rows.append(
                    {
                        **{
                            k: artifact.get(k)
                            for k in (
                                "kind",
                                "media_type",
                                "explain",
                                "ref",
                                "file_ref",
                                "url",
                                "value",
                                "text",
                            )
                        },
                        "id": new_id("artifact") if not artifact.get("id") else artifact["id"],
                        "thread_id": thread_id,
                        "app_id": owner.app_id,
                        "user_id": owner.user_id,
                        "task_id": self._thread["metadata"].get("task_id"),
                        "task_version": self._thread["metadata"].get("task_version"),
                        "direction": "output",
                        "seq": seq,
                        "size": size,
                        "sha256": sha,
                        "labels": artifact.get("labels") or {},
                        "created_at": artifact.get("created_at") or now,
                        "archived": False,
                        "archived_at": None,
                    }
                )
            existing_ids = set(
                conn.execute(
                    select(artifacts.c.id).where(artifacts.c.id.in_([r["id"] for r in rows]))
                ).scalars()
            )
            if existing_ids:
                raise ArtifactValidationError(
                    _PREFIX + f"artifact id '{sorted(existing_ids)[0]}' is already taken"
                )
            INSERT_ARTIFACTS.executemany(conn, rows)
            stored = [artifact_dict(r) for r in rows]
            insert_events(
                conn,
                [
                    thread_event("artifact.created", self._thread, at=now, artifact=a)
                    for a in stored
                ],
            )
            return stored

        result: list[dict[str, Any]] = await self._db.tx(_publish)
        self.outputs.extend(result)
        return result

    async def signal_problem(self, thread_id: str, problem: dict[str, Any]) -> None:
        now = utcnow()
        entry = {
            "message": str(problem.get("message", "")),
            "exception_type": problem.get("exception_type"),
            "details": problem.get("details"),
            "created_at": format_ts(now),
        }

        def _record(conn: Connection) -> None:
            self._fenced(conn)
            current = conn.execute(
                select(threads.c.problems).where(threads.c.id == thread_id)
            ).scalar()
            conn.execute(
                update(threads)
                .where(threads.c.id == thread_id)
                .values(problems=[*(current or []), entry])
            )
            insert_events(
                conn, [thread_event("thread.problem", self._thread, at=now, problem=entry)]
            )

        await self._db.tx(_record)
        self.problems.append(entry)

    async def write_logs(self, thread_id: str, records: list[LogRecord]) -> None:
        if self._log_truncated or not records:
            return
        rows = []
        for record in records:
            size = len(record.message.encode("utf-8", "replace"))
            if self._log_bytes + size > self._max_log_bytes:
                rows.append(
                    self._log_row(thread_id, record.timestamp, "log", TRUNCATION_MARKER, "WARNING")
                )
                self._log_truncated = True
                break
            self._log_bytes += size
            rows.append(
                self._log_row(
                    thread_id,
                    record.timestamp,
                    record.stream,
                    record.message,
                    record.level,
                    record.logger,
                )
            )

        def _append(conn: Connection) -> None:
            current = conn.execute(
                select(threads.c.lease_token).where(threads.c.id == thread_id)
            ).scalar()
            if current == self._token:  # a lost run's late lines are dropped
                conn.execute(insert(thread_logs), rows)

        await self._db.tx(_append)

    def _log_row(
        self,
        thread_id: str,
        timestamp: float,
        stream: str,
        message: str,
        level: str | None = None,
        logger: str | None = None,
    ) -> dict[str, Any]:
        from datetime import UTC, datetime

        self._log_seq += 1
        return {
            "thread_id": thread_id,
            "seq": self._log_seq,
            "timestamp": datetime.fromtimestamp(timestamp, UTC),
            "stream": stream,
            "level": level,
            "logger": logger,
            "message": message,
        }

    async def upload_file(
        self,
        thread_id: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]:
        if self._files is None:
            raise StorageError("File storage is not available")
        stored: dict[str, Any] = await self._files.store_stream(
            chunks, owner=self._owner, filename=filename, media_type=media_type
        )
        return stored

    async def download_file(self, thread_id: str, file_ref: str) -> AsyncIterator[bytes]:
        if self._files is None:
            raise NotFound(f"File {file_ref} does not exist", code="FILE_NOT_FOUND")
        async for chunk in self._files.open_owned(file_ref, owner=self._owner):
            yield chunk


class TracedHost:
    """A :class:`TaskHost` that traces the calls worth a span (tracing on only).

    Host calls arrive from the worker's reader loop, outside the run's span, so the
    parent is named explicitly.
    """

    def __init__(self, host: TaskHost, tracing: Tracing, *, parent: str | None) -> None:
        self._host = host
        self._tracing = tracing
        self._parent = parent

    async def publish_outputs(
        self, thread_id: str, artifacts: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        with self._tracing.span("thread.outputs.publish", parent=self._parent) as span:
            span.set_attribute("task_framework.artifacts", len(artifacts))
            try:
                return await self._host.publish_outputs(thread_id, artifacts)
            except ArtifactValidationError as exc:
                span.set_error(str(exc))
                raise

    async def signal_problem(self, thread_id: str, problem: dict[str, Any]) -> None:
        await self._host.signal_problem(thread_id, problem)

    async def write_logs(self, thread_id: str, records: list[LogRecord]) -> None:
        await self._host.write_logs(thread_id, records)

    async def upload_file(
        self,
        thread_id: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]:
        return await self._host.upload_file(
            thread_id, chunks, filename=filename, media_type=media_type
        )

    def download_file(self, thread_id: str, file_ref: str) -> AsyncIterator[bytes]:
        return self._host.download_file(thread_id, file_ref)
