"""Thread use cases: create, read, list, stop, retry, delete, logs (API.md §3).

Each use case runs its reads and writes in one database transaction (one thread hop):
validation that needs stored data happens inside that transaction, so a rejected request
persists nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    and_,
    cast,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from task_framework.errors import (
    Conflict,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.models.artifact import Artifact
from task_framework.models.threads import (
    RETRYABLE_STATES,
    TERMINAL_STATES,
    ThreadCreateRequest,
    ThreadRetryRequest,
)
from task_framework.observability.tracing import NO_TRACING, Tracing
from task_framework.services.auth import Principal
from task_framework.services.crypto import SecretBox
from task_framework.services.events import insert_events, thread_event
from task_framework.services.records import (
    ARTIFACT_CONTENT_FIELDS,
    INSERT_ARTIFACTS,
    artifact_dict,
    log_dict,
    thread_dict,
)
from task_framework.services.tasks import TaskDefinition, TaskRegistry
from task_framework.services.urlguard import UrlGuard
from task_framework.services.webhooks import check_adhoc_events, seal_api_keys
from task_framework.store import notify
from task_framework.store.database import Database
from task_framework.store.paging import Page, PageRequest, paginate
from task_framework.store.prepared import Prepared
from task_framework.store.sql.webhooks import insert_source_webhooks, on_thread_deleted
from task_framework.store.tables import (
    artifacts,
    files,
    schedules,
    thread_inputs,
    thread_logs,
    threads,
)
from task_framework.store.tables import events as events_table
from task_framework.utils.artifact_validation import FILE_KINDS, service_rule_error
from task_framework.utils.schema_matching import match_any

if TYPE_CHECKING:
    from task_framework.services.executor import Executor


@dataclass(slots=True)
class ThreadFilters:
    state: str | None = None
    name: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    schedule_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    task_version: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    started_after: datetime | None = None
    finished_before: datetime | None = None


@dataclass(slots=True)
class ArtifactFilters:
    ref: str | None = None
    kind: str | None = None
    media_type: str | None = None
    direction: str | None = None
    include_archived: bool = False
    thread_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    task_id: str | None = None
    task_version: str | None = None


def like_or_equal(column: Any, pattern: str) -> Any:
    """Exact match, or a prefix match when ``pattern`` ends with ``*``."""
    if pattern.endswith("*"):
        prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(prefix + "%", escape="\\")
    return column == pattern


def owner_condition(table: Any, principal: Principal) -> Any:
    """Rows the caller may see: its own, or all for admins."""
    if principal.is_admin:
        return None
    return and_(table.c.app_id == principal.app_id, table.c.user_id == principal.user_id)


# -- loading --------------------------------------------------------------------------------


def load_threads(conn: Connection, rows: list[Any], *, show_stack: bool) -> list[dict[str, Any]]:
    """Thread rows with their inputs and outputs, in two queries for the whole batch."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    inputs: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    outputs: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    joined = (
        select(thread_inputs.c.thread_id.label("_for"), artifacts)
        .join(artifacts, artifacts.c.id == thread_inputs.c.artifact_id)
        .where(thread_inputs.c.thread_id.in_(ids))
        .order_by(thread_inputs.c.thread_id, thread_inputs.c.position)
    )
    for row in conn.execute(joined):
        inputs[row._mapping["_for"]].append(artifact_dict(row._mapping, direction="input"))
    produced = (
        select(artifacts)
        .where(artifacts.c.thread_id.in_(ids), artifacts.c.direction == "output")
        .order_by(artifacts.c.thread_id, artifacts.c.seq)
    )
    for row in conn.execute(produced):
        outputs[row.thread_id].append(artifact_dict(row._mapping))
    return [
        thread_dict(row._mapping, inputs[row.id], outputs[row.id], show_stack=show_stack)
        for row in rows
    ]


def load_thread(conn: Connection, thread_id: str, *, show_stack: bool) -> dict[str, Any]:
    row = conn.execute(select(threads).where(threads.c.id == thread_id)).first()
    if row is None:
        raise NotFound(f"Thread {thread_id} not found", code="THREAD_NOT_FOUND")
    return load_threads(conn, [row], show_stack=show_stack)[0]


def visible_thread_row(conn: Connection, principal: Principal, thread_id: str) -> Any:
    """The thread row if it exists and the caller may see it; else THREAD_NOT_FOUND."""
    row = conn.execute(select(threads).where(threads.c.id == thread_id)).first()
    if row is None or not principal.owns(row.app_id, row.user_id):
        raise NotFound(f"Thread {thread_id} not found", code="THREAD_NOT_FOUND")
    return row


# -- input resolution -------------------------------------------------------------------------


@dataclass(slots=True)
class _PlannedInputs:
    new_rows: list[dict[str, Any]]
    positions: list[str]
    as_dicts: list[dict[str, Any]]


def _resolve_inputs(
    conn: Connection,
    principal: Principal,
    items: list[dict[str, Any]],
    *,
    thread_id: str,
    owner: tuple[str | None, str | None],
    task: TaskDefinition,
    now: datetime,
    copy: bool,
) -> _PlannedInputs:
    """Check and prepare a thread's inputs. ``copy`` re-creates every input afresh (retry,
    schedules); otherwise a supplied id that exists is a reference."""
    supplied = [a["id"] for a in items if a.get("id")] if not copy else []
    existing: dict[str, Any] = {}
    if supplied:
        existing = {
            row.id: row
            for row in conn.execute(select(artifacts).where(artifacts.c.id.in_(supplied)))
        }
    planned = _PlannedInputs([], [], [])
    referenced: dict[str, dict[str, Any]] = {}
    new_file_refs: set[str] = set()
    for item in items:
        aid = item.get("id")
        if aid and aid in existing:
            found_row = existing[aid]
            if not principal.owns(found_row.app_id, found_row.user_id):
                raise ValidationFailed(f"Invalid artifact reference: Artifact {aid} not accessible")
            planned.positions.append(aid)
            referenced[aid] = artifact_dict(found_row._mapping, direction="input")
            continue
        problem = service_rule_error(item["kind"], item)
        if problem is not None:
            raise ValidationFailed(f"Invalid input artifact: {problem}")
        artifact_id = new_id("artifact") if copy or not aid else aid
        if item.get("file_ref"):
            new_file_refs.add(item["file_ref"])
        planned.new_rows.append(
            {
                "id": artifact_id,
                "thread_id": thread_id,
                "app_id": owner[0],
                "user_id": owner[1],
                "task_id": task.task_id,
                "task_version": task.version,
                "direction": "input",
                "seq": len(planned.positions),
                **{field: item.get(field) for field in ARTIFACT_CONTENT_FIELDS},
                "labels": item.get("labels") or {},
                "created_at": now,
                "archived": False,
                "archived_at": None,
            }
        )
        planned.positions.append(artifact_id)
    if new_file_refs:
        readable = {
            row.file_ref: row
            for row in conn.execute(
                select(files).where(files.c.file_ref.in_(new_file_refs), files.c.complete.is_(True))
            )
            if principal.owns(row.app_id, row.user_id)
        }
        for ref in sorted(new_file_refs):
            if ref not in readable:
                raise ValidationFailed(f"Invalid input artifact: file '{ref}' not found")
        for new_row in planned.new_rows:
            meta = readable.get(new_row["file_ref"]) if new_row["file_ref"] else None
            if meta is not None and new_row["kind"] in FILE_KINDS:
                new_row["size"], new_row["sha256"] = meta.size, meta.sha256
    created = {row["id"]: artifact_dict(row) for row in planned.new_rows}
    planned.as_dicts = [referenced.get(aid) or created[aid] for aid in planned.positions]
    for artifact in planned.as_dicts:
        problem = match_any(artifact, task.input_schemas)
        if problem is not None:
            raise ValidationFailed(f"Input artifact validation failed: {problem}")
    return planned


def _check_duplicate_refs(items: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for item in items:
        ref = item.get("ref")
        if ref is None:
            continue
        if ref in seen:
            raise Conflict(
                f"Duplicate ref '{ref}' within thread inputs",
                code="ARTIFACT_REF_CONFLICT",
                status=400,
            )
        seen.add(ref)
    ids = [item["id"] for item in items if item.get("id")]
    if len(ids) != len(set(ids)):
        raise ValidationFailed("Input artifact ids must be unique within a request")


_INSERT_THREAD = Prepared.insert(
    threads,
    (
        *("id", "name", "state", "app_id", "user_id", "task_id", "task_version", "metadata"),
        *("params", "error", "problems", "schedule_id", "run_id", "attempt", "timeout_seconds"),
        *("created_by_admin", "adhoc_webhooks", "idempotency_scope", "created_at", "started_at"),
        *("lease_owner", "lease_expires_at", "lease_token", "stop_requested", "traceparent"),
    ),
)
_INSERT_INPUTS = Prepared.insert(thread_inputs, ("thread_id", "position", "artifact_id"))


@dataclass(slots=True)
class _NewThread:
    principal: Principal
    task: TaskDefinition
    inputs: list[dict[str, Any]]
    name: str | None
    params: dict[str, Any]
    metadata: dict[str, Any]
    owner: tuple[str | None, str | None]
    timeout_seconds: int | None
    webhooks: list[dict[str, Any]] | None
    idempotency_scope: str | None = None
    schedule_id: str | None = None
    run_id: str | None = None
    attempt: int | None = None
    copy_inputs: bool = False
    created_by_admin: bool = False
    claim: Callable[[Connection], dict[str, Any] | None] | None = None
    """Claims the new thread for this replica inside the transaction (see Executor)."""
    claimed_token: int | None = None
    seal: Callable[[str], str] | None = None
    """Seals the secrets of new ad-hoc webhooks (needed when ``webhooks`` is given)."""
    traceparent: str | None = None
    """The span that creates the thread (tracing on): its later hops continue that trace."""


def insert_thread(conn: Connection, plan: _NewThread) -> tuple[dict[str, Any], bool]:
    """Validate and persist a new thread with its inputs and events, in ``conn``'s
    transaction. Returns (thread, created); created is False for an idempotent replay."""
    if plan.idempotency_scope is not None:
        found = conn.execute(
            select(threads).where(threads.c.idempotency_scope == plan.idempotency_scope)
        ).first()
        if found is not None:
            return load_threads(conn, [found], show_stack=plan.principal.is_admin)[0], False
    now = utcnow()
    thread_id = new_id("thread")
    resolved = _resolve_inputs(
        conn,
        plan.principal,
        plan.inputs,
        thread_id=thread_id,
        owner=plan.owner,
        task=plan.task,
        now=now,
        copy=plan.copy_inputs,
    )
    row = {
        "id": thread_id,
        "name": plan.name,
        "state": "queued",
        "app_id": plan.owner[0],
        "user_id": plan.owner[1],
        "task_id": plan.task.task_id,
        "task_version": plan.metadata.get("task_version", plan.task.version),
        "metadata": plan.metadata,
        "params": plan.params,
        "error": None,
        "problems": [],
        "schedule_id": plan.schedule_id,
        "run_id": plan.run_id,
        "attempt": plan.attempt,
        "timeout_seconds": plan.timeout_seconds,
        "created_by_admin": plan.created_by_admin,
        "adhoc_webhooks": plan.webhooks,
        "idempotency_scope": plan.idempotency_scope,
        "created_at": now,
        "started_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "lease_token": 0,
        "stop_requested": False,
        "traceparent": plan.traceparent,
    }
    claimed = plan.claim(conn) if plan.claim is not None else None
    if claimed is not None:
        row.update(claimed)
    _INSERT_THREAD.execute(conn, row)
    INSERT_ARTIFACTS.executemany(conn, resolved.new_rows)
    _INSERT_INPUTS.executemany(
        conn,
        [
            {"thread_id": thread_id, "position": i, "artifact_id": aid}
            for i, aid in enumerate(resolved.positions)
        ],
    )
    thread = thread_dict(
        {**row, "state": "queued", "started_at": None, "finished_at": None},
        resolved.as_dicts,
        [],
        show_stack=False,
    )
    new_ids = {r["id"] for r in resolved.new_rows}
    rows = [thread_event("thread.created", thread, at=now)]
    rows += [
        thread_event("artifact.created", thread, at=now, artifact=a)
        for a in resolved.as_dicts
        if a["id"] in new_ids
    ]
    # Ad-hoc webhooks exist before thread.created, so they receive it (API.md §12.1).
    if plan.webhooks:
        assert plan.seal is not None, "ad-hoc webhooks need a seal for their secrets"
        insert_source_webhooks(
            conn, plan.webhooks, seal=plan.seal, source="thread", owner=plan.owner, now=now,
            thread_id=thread_id,
        )  # fmt: skip
    if claimed is not None:
        thread["state"] = "running"
        thread["started_at"] = format_ts(claimed["started_at"])
        plan.claimed_token = claimed["lease_token"]
        rows.append(thread_event("thread.started", thread, at=claimed["started_at"]))
    else:
        notify.notify(conn, notify.QUEUED)
    insert_events(conn, rows)
    return thread, True


class ThreadService:
    """Thread and artifact use cases for the API."""

    def __init__(
        self, db: Database, registry: TaskRegistry, executor: Executor, *, secret_box: SecretBox
    ) -> None:
        self._db = db
        self._registry = registry
        self._executor = executor
        self._secrets = secret_box
        self.url_guard: UrlGuard | None = None  # set by the app; checks ad-hoc callback URLs
        self.tracing: Tracing = NO_TRACING  # set by the app

    async def create(
        self,
        principal: Principal,
        body: ThreadCreateRequest,
        *,
        task_id: str | None,
        version: str | None,
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], int]:
        """Returns (thread, status): 201 sync, 202 async, 200 idempotent replay."""
        task = self._registry.select(task_id, version)
        items = [a.model_dump(exclude_unset=False) for a in body.inputs]
        _check_duplicate_refs(items)
        webhooks = [w.model_dump() for w in body.all_webhooks()] or None
        if webhooks:
            check_adhoc_events(webhooks)
            if self.url_guard is not None:
                for hook in webhooks:
                    hook["callback_url"] = await self.url_guard.check(hook["callback_url"])
            # Sealed as kept on the thread (for retries) and on the webhook rows.
            seal_api_keys(webhooks, self._secrets.seal)
        metadata = {
            **body.metadata,
            "user_id": principal.user_id,
            "app_id": principal.app_id,
            "task_id": task.task_id,
            "task_version": version or task.version,
        }
        key = body.idempotency_key or idempotency_key
        scope = None
        if key:
            scope = "\x1f".join((principal.app_id or "", principal.user_id or "", key))
        plan = _NewThread(
            principal=principal,
            task=task,
            inputs=items,
            name=body.name,
            params=body.params,
            metadata=metadata,
            owner=(principal.app_id, principal.user_id),
            timeout_seconds=body.timeout_seconds,
            webhooks=webhooks,
            seal=self._secrets.seal,
            idempotency_scope=scope,
            created_by_admin=principal.is_admin,
        )
        # Sync requests may run their thread at once here; async ones answer "queued".
        reserved = body.mode == "sync" and self._executor.reserve()
        if reserved:
            plan.claim = self._executor.claim_new
        try:
            with self.tracing.span("thread.create", attributes=self._span_attributes(plan)) as span:
                plan.traceparent = span.traceparent
                thread, created = await self._tx_insert(plan)
                span.set_attribute("task_framework.thread_id", thread["id"])
        finally:
            if reserved and plan.claimed_token is None:
                self._executor.release()
        if not created:
            return thread, 200
        self._count_new_inputs(thread)
        if plan.claimed_token is not None:
            self._executor.start_claimed(
                thread,
                token=plan.claimed_token,
                created_by_admin=principal.is_admin,
                timeout=body.timeout_seconds,
                owner=f"{plan.owner[0] or ''}/{plan.owner[1] or ''}",
                traceparent=plan.traceparent,
            )
        else:
            self._executor.wake()
        if body.mode == "async":
            return thread, 202
        return await self._wait_final(principal, thread["id"]), 201

    def _span_attributes(self, plan: _NewThread) -> dict[str, str] | None:
        if not self.tracing.enabled:
            return None
        version = plan.metadata.get("task_version", plan.task.version)
        return {"task_framework.task_id": plan.task.task_id, "task_framework.task_version": version}

    async def _wait_final(self, principal: Principal, thread_id: str) -> dict[str, Any]:
        """A sync request's answer: the terminal thread, stack trace for admins only."""
        final = await self._executor.wait_for(thread_id)
        if not principal.is_admin and final.get("error"):
            final["error"] = {**final["error"], "stack_trace": None}
        return final

    def _count_new_inputs(self, thread: dict[str, Any]) -> None:
        for artifact in thread["inputs"]:
            if artifact["thread_id"] == thread["id"]:  # not a reference to another thread's
                self._executor.on_artifact(artifact["kind"])

    async def _tx_insert(self, plan: _NewThread) -> tuple[dict[str, Any], bool]:
        """Insert a thread; an idempotency race replays the winner."""
        try:
            result: tuple[dict[str, Any], bool] = await self._db.short_tx(insert_thread, plan)
            return result
        except IntegrityError as exc:
            if plan.idempotency_scope is None:
                raise ValidationFailed("An input artifact id is already taken") from exc
        # A concurrent request took the same idempotency key: replay its thread.
        plan.claim = None
        plan.claimed_token = None
        replay: tuple[dict[str, Any], bool] = await self._db.short_tx(insert_thread, plan)
        if replay[1]:
            raise ValidationFailed("Conflicting concurrent request; retry it")
        return replay

    async def get(self, principal: Principal, thread_id: str) -> dict[str, Any]:
        def _get(conn: Connection) -> dict[str, Any]:
            row = visible_thread_row(conn, principal, thread_id)
            return load_threads(conn, [row], show_stack=principal.is_admin)[0]

        result: dict[str, Any] = await self._db.tx(_get)
        return result

    async def list_threads(
        self, principal: Principal, filters: ThreadFilters, page: PageRequest
    ) -> dict[str, Any]:
        if (
            filters.created_after
            and filters.created_before
            and filters.created_after > filters.created_before
        ):
            raise ValidationFailed("created_after must not be later than created_before")
        conditions = []
        if principal.is_admin:
            if filters.app_id is not None:
                conditions.append(threads.c.app_id == filters.app_id)
            if filters.user_id is not None:
                conditions.append(threads.c.user_id == filters.user_id)
        else:
            conditions.append(owner_condition(threads, principal))
        simple = {
            "state": threads.c.state,
            "schedule_id": threads.c.schedule_id,
            "run_id": threads.c.run_id,
            "task_id": threads.c.task_id,
            "task_version": threads.c.task_version,
        }
        for attr, column in simple.items():
            value = getattr(filters, attr)
            if value is not None:
                conditions.append(column == value)
        if filters.name:
            conditions.append(like_or_equal(threads.c.name, filters.name))
        if filters.created_after:
            conditions.append(threads.c.created_at >= filters.created_after)
        if filters.created_before:
            conditions.append(threads.c.created_at <= filters.created_before)
        if filters.started_after:
            conditions.append(threads.c.started_at >= filters.started_after)
        if filters.finished_before:
            conditions.append(threads.c.finished_at <= filters.finished_before)
        query = select(threads)
        if conditions:
            query = query.where(and_(*conditions))

        def _list(conn: Connection) -> dict[str, Any]:
            result = paginate(
                conn,
                query,
                route="threads",
                sort=threads.c.created_at,
                ident=threads.c.id,
                page=page,
            )
            return result.envelope(load_threads(conn, result.rows, show_stack=principal.is_admin))

        envelope: dict[str, Any] = await self._db.tx(_list)
        return envelope

    async def stop(self, principal: Principal, thread_id: str) -> dict[str, Any]:
        now = utcnow()

        def _stop(conn: Connection) -> tuple[dict[str, Any], bool]:
            row = visible_thread_row(conn, principal, thread_id)
            if row.state not in ("queued", "running"):
                raise InvalidState(f"Thread {thread_id} is in state {row.state}, cannot stop")
            was_running = row.state == "running"
            notify.notify(conn, notify.SETTLED, thread_id)
            if was_running:
                notify.notify(conn, notify.STOP, thread_id)
            changed = conn.execute(
                update(threads)
                .where(threads.c.id == thread_id, threads.c.state == row.state)
                .values(state="stopped", finished_at=now, stop_requested=True)
            ).rowcount
            if not changed:  # it settled meanwhile (SQLite serialises; PostgreSQL may race)
                raise InvalidState(f"Thread {thread_id} is no longer {row.state}, cannot stop")
            thread = load_thread(conn, thread_id, show_stack=principal.is_admin)
            insert_events(
                conn,
                [thread_event("thread.stopped", thread, at=now, artifacts=thread["artifacts"])],
            )
            return thread, was_running

        thread, was_running = await self._db.tx(_stop)
        self._executor.thread_settled(thread_id, thread)
        if was_running:
            await self._executor.stop_local(thread_id)
        return thread

    async def retry(
        self,
        principal: Principal,
        thread_id: str,
        body: ThreadRetryRequest,
        *,
        task_id: str | None,
        version: str | None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], int]:
        """A new thread from a retryable one (API.md §3.5). The API copies no name and
        adds no metadata; ``name`` and ``metadata`` (merged over the copied metadata) let
        the web UI keep the name and record the original."""

        def _source(conn: Connection) -> tuple[Any, list[dict[str, Any]]]:
            row = visible_thread_row(conn, principal, thread_id)
            if row.state not in RETRYABLE_STATES:
                raise InvalidState(f"Thread {thread_id} is in state {row.state}, cannot retry")
            return row, load_threads(conn, [row], show_stack=False)[0]["inputs"]

        source, inputs = await self._db.tx(_source)
        copied = {**(source.metadata or {}), **(metadata or {})}
        task = self._registry.select(
            task_id or copied.get("task_id") or source.task_id,
            version if task_id else (version or copied.get("task_version") or source.task_version),
        )
        copies = [
            {k: v for k, v in a.items() if k not in ("id", "thread_id", "created_at", "direction")}
            for a in inputs
        ]
        webhooks = source.adhoc_webhooks
        plan = _NewThread(
            principal=principal,
            task=task,
            inputs=[Artifact.model_validate(c).model_dump() for c in copies],
            name=name,
            params=dict(source.params or {}),
            metadata={**copied, "task_id": task.task_id, "task_version": task.version},
            owner=(source.app_id, source.user_id),
            timeout_seconds=source.timeout_seconds,
            webhooks=webhooks,  # their api_key values are sealed already
            seal=self._secrets.seal,
            schedule_id=source.schedule_id if body.preserve_run_id else None,
            run_id=source.run_id if body.preserve_run_id else None,
            attempt=(source.attempt or 0) + 1,
            copy_inputs=True,
            created_by_admin=bool(source.created_by_admin),
        )
        with self.tracing.span("thread.create", attributes=self._span_attributes(plan)) as span:
            plan.traceparent = span.traceparent
            thread, _ = await self._db.short_tx(insert_thread, plan)
            span.set_attribute("task_framework.thread_id", thread["id"])
        self._count_new_inputs(thread)
        self._executor.wake()
        if body.mode == "async":
            return thread, 202
        return await self._wait_final(principal, thread["id"]), 201

    async def delete(self, principal: Principal, thread_id: str) -> list[str]:
        """Delete a terminal thread; returns file refs no longer referenced (to delete)."""

        def _delete(conn: Connection) -> list[str]:
            row = visible_thread_row(conn, principal, thread_id)
            if row.state not in TERMINAL_STATES:
                raise InvalidState(f"Thread {thread_id} is in state {row.state}, cannot delete")
            # Candidates: the thread's own artifacts, and inputs it referenced whose own
            # thread is gone (kept only for this reference until now).
            referenced = select(thread_inputs.c.artifact_id).where(
                thread_inputs.c.thread_id == thread_id
            )
            own = list(
                conn.execute(
                    select(artifacts.c.id, artifacts.c.file_ref).where(
                        (artifacts.c.thread_id == thread_id)
                        | (
                            artifacts.c.id.in_(referenced)
                            & ~exists().where(threads.c.id == artifacts.c.thread_id)
                        )
                    )
                )
            )
            own_ids = [a.id for a in own]
            conn.execute(delete(thread_inputs).where(thread_inputs.c.thread_id == thread_id))
            still_used = set()
            if own_ids:
                still_used = {
                    r.artifact_id
                    for r in conn.execute(
                        select(thread_inputs.c.artifact_id).where(
                            thread_inputs.c.artifact_id.in_(own_ids)
                        )
                    )
                }
            removable = [a for a in own if a.id not in still_used]
            if removable:
                conn.execute(delete(artifacts).where(artifacts.c.id.in_([a.id for a in removable])))
            conn.execute(delete(thread_logs).where(thread_logs.c.thread_id == thread_id))
            conn.execute(delete(events_table).where(events_table.c.thread_id == thread_id))
            on_thread_deleted(conn, thread_id)
            conn.execute(delete(threads).where(threads.c.id == thread_id))
            return unreferenced_files(conn, {a.file_ref for a in removable if a.file_ref})

        refs: list[str] = await self._db.tx(_delete)
        return refs

    async def thread_artifacts(
        self, principal: Principal, thread_id: str, filters: ArtifactFilters, page: PageRequest
    ) -> dict[str, Any]:
        def _list(conn: Connection) -> dict[str, Any]:
            visible_thread_row(conn, principal, thread_id)
            as_input = exists().where(
                thread_inputs.c.thread_id == thread_id,
                thread_inputs.c.artifact_id == artifacts.c.id,
            )
            own_output = and_(artifacts.c.thread_id == thread_id, artifacts.c.direction == "output")
            direction = filters.direction or "both"
            scope: ColumnElement[bool]
            if direction == "input":
                scope = as_input
            elif direction == "output":
                scope = own_output
            else:
                scope = or_(as_input, own_output)
            query = select(artifacts).where(scope, *_artifact_conditions(filters))
            result = paginate(
                conn,
                query,
                route=f"thread-artifacts:{thread_id}",
                sort=artifacts.c.created_at,
                ident=artifacts.c.id,
                page=page,
                descending=False,
            )
            items = []
            for row in result.rows:
                role = (
                    "output"
                    if row.thread_id == thread_id and row.direction == "output"
                    else "input"
                )
                items.append(artifact_dict(row._mapping, direction=role))
            return result.envelope(items)

        envelope: dict[str, Any] = await self._db.tx(_list)
        return envelope

    async def logs(
        self, principal: Principal, thread_id: str, stream: str | None, page: PageRequest
    ) -> dict[str, Any]:
        def _logs(conn: Connection) -> dict[str, Any]:
            visible_thread_row(conn, principal, thread_id)
            query = select(thread_logs).where(thread_logs.c.thread_id == thread_id)
            if stream:
                query = query.where(thread_logs.c.stream == stream)
            result: Page = paginate(
                conn,
                query,
                route=f"logs:{thread_id}",
                sort=thread_logs.c.seq,
                ident=thread_logs.c.seq,
                page=page,
                descending=False,
            )
            return result.envelope([log_dict(r._mapping) for r in result.rows])

        envelope: dict[str, Any] = await self._db.tx(_logs)
        return envelope


def _artifact_conditions(filters: ArtifactFilters) -> list[Any]:
    conditions = []
    if filters.ref:
        conditions.append(like_or_equal(artifacts.c.ref, filters.ref))
    if filters.kind:
        conditions.append(artifacts.c.kind == filters.kind)
    if filters.media_type:
        conditions.append(artifacts.c.media_type == filters.media_type)
    if not filters.include_archived:
        conditions.append(artifacts.c.archived.is_(False))
    return conditions


def unreferenced_files(conn: Connection, refs: set[str]) -> list[str]:
    """Of ``refs``, those that no artifact and no schedule's inputs template references."""
    if not refs:
        return []
    used = {
        r.file_ref
        for r in conn.execute(select(artifacts.c.file_ref).where(artifacts.c.file_ref.in_(refs)))
    }
    # Templates are JSON; a file ref is a long random token, so a text match is exact enough.
    template = cast(schedules.c.inputs_template, Text)
    for ref in refs - used:
        found = conn.execute(
            select(schedules.c.id).where(template.contains(ref, autoescape=True)).limit(1)
        ).first()
        if found is not None:
            used.add(ref)
    return sorted(refs - used)


class ArtifactService:
    """``/artifacts`` use cases."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_artifacts(
        self, principal: Principal, filters: ArtifactFilters, page: PageRequest
    ) -> dict[str, Any]:
        conditions = _artifact_conditions(filters)
        if principal.is_admin:
            if filters.app_id is not None:
                conditions.append(artifacts.c.app_id == filters.app_id)
            if filters.user_id is not None:
                conditions.append(artifacts.c.user_id == filters.user_id)
        else:
            conditions.append(owner_condition(artifacts, principal))
        for attr in ("thread_id", "task_id", "task_version", "direction"):
            value = getattr(filters, attr)
            if value is not None:
                conditions.append(artifacts.c[attr] == value)
        query = select(artifacts).where(*conditions)

        def _list(conn: Connection) -> dict[str, Any]:
            result = paginate(
                conn,
                query,
                route="artifacts",
                sort=artifacts.c.created_at,
                ident=artifacts.c.id,
                page=page,
            )
            return result.envelope([artifact_dict(r._mapping) for r in result.rows])

        envelope: dict[str, Any] = await self._db.tx(_list)
        return envelope

    @staticmethod
    def _visible(conn: Connection, principal: Principal, artifact_id: str) -> Any:
        row = conn.execute(select(artifacts).where(artifacts.c.id == artifact_id)).first()
        if row is None or not principal.owns(row.app_id, row.user_id):
            raise NotFound(
                f"Artifact with ID '{artifact_id}' does not exist or is not accessible",
                code="ARTIFACT_NOT_FOUND",
                extra={"title": "Artifact Not Found"},
            )
        return row

    async def get(self, principal: Principal, artifact_id: str) -> dict[str, Any]:
        def _get(conn: Connection) -> dict[str, Any]:
            return artifact_dict(self._visible(conn, principal, artifact_id)._mapping)

        result: dict[str, Any] = await self._db.tx(_get)
        return result

    async def archive(self, principal: Principal, artifact_id: str) -> tuple[dict[str, Any], bool]:
        now = utcnow()

        def _archive(conn: Connection) -> tuple[dict[str, Any], bool]:
            row = self._visible(conn, principal, artifact_id)
            changed = not row.archived
            if changed:
                conn.execute(
                    update(artifacts)
                    .where(artifacts.c.id == artifact_id)
                    .values(archived=True, archived_at=now)
                )
                row = self._visible(conn, principal, artifact_id)
            return artifact_dict(row._mapping), changed

        result: tuple[dict[str, Any], bool] = await self._db.tx(_archive)
        return result

    async def delete(self, principal: Principal, artifact_id: str) -> list[str]:
        def _delete(conn: Connection) -> list[str]:
            row = self._visible(conn, principal, artifact_id)
            conn.execute(delete(thread_inputs).where(thread_inputs.c.artifact_id == artifact_id))
            conn.execute(delete(artifacts).where(artifacts.c.id == artifact_id))
            return unreferenced_files(conn, {row.file_ref} if row.file_ref else set())

        refs: list[str] = await self._db.tx(_delete)
        return refs
