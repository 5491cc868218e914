"""The webhook dispatcher of one replica (API.md §12.5, §12.6).

Two durable steps, both plain database rows, so a crash or ``kill -9`` loses nothing:

1. Fan-out: events after the cursor (a ``settings`` row) are matched against enabled
   webhooks; the pending attempt rows are inserted and the cursor advanced in ONE
   transaction (the cursor row is locked on PostgreSQL), so each event is fanned out
   exactly once whatever the number of replicas.
2. Sending: due pending rows are claimed with a lease (``SKIP LOCKED`` on PostgreSQL),
   sent, and their outcome recorded on the same row; a failure queues the next attempt
   row from the retry schedule. An expired lease (crashed sender) is claimed again, so
   delivery is at least once; receivers de-duplicate on ``webhook-id``.

PostgreSQL hands out event numbers before commit, so a number can become visible after a
higher one. The fan-out stops at such a gap until every transaction that was running when
the gap was seen has ended (``pg_current_snapshot``), then treats what is still missing
as rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, bindparam, event, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.observability.metrics import Metrics
from task_framework.observability.tracing import NO_TRACING, TRACEPARENT_HEADER, Tracing
from task_framework.services.crypto import DecryptionFailed, SecretBox
from task_framework.services.events import EVENTS_WRITTEN
from task_framework.services.urlguard import BlockedAddress, Target, UrlGuard
from task_framework.services.webhook_payloads import dumps, render_payload, select_receivers
from task_framework.services.webhook_signing import signature_headers
from task_framework.services.webhooks import (
    FAN_OUT_CURSOR_KEY,
    WEBHOOKS_WRITTEN,
    cancel_pending,
    read_fan_out_cursor,
    webhooks_changed,
    write_fan_out_cursor,
)
from task_framework.store.database import Database
from task_framework.store.tables import (
    events,
    settings_kv,
    threads,
    webhook_deliveries,
    webhooks,
)

log = logging.getLogger("task_framework.webhooks")

PER_ENDPOINT_CONCURRENCY = 4  # requests in flight per delivery URL on one replica
# Claimed attempts wait locally for a send slot, so a slot never waits for a database
# round trip; at most this many times the slots are claimed ahead.
PREFETCH_FACTOR = 4
COALESCE_SECONDS = 0.002  # lets completions accumulate into one claim / one write
FAN_OUT_BATCH = 500  # events per fan-out transaction
FAN_OUT_COALESCE_SECONDS = 0.01
HOOKS_CHECK_SECONDS = 1.0  # how long "no enabled webhook" is trusted before asking again
IDLE_ADVANCE_SECONDS = 5.0
POLL_SECONDS = 0.25  # catches events and due retries written by other replicas
LEASE_MARGIN_SECONDS = 15.0  # lease = the webhook's timeout x PREFETCH_FACTOR + this
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_RESPONSE_READ_BYTES = 64 * 1024
MAX_STORED_TEXT_BYTES = 4 * 1024
GAP_MAX_WAIT_SECONDS = 60.0  # a PostgreSQL seq gap is given up after this at the latest
JITTER = 0.1  # retry delays vary by ±10 %
CLOSE_GRACE_SECONDS = 5.0
MAX_TLS_CLIENTS = 64
DOWNLOAD_URL_EXPIRES_SECONDS = 3600
_PER_URL_CLAIMS = PER_ENDPOINT_CONCURRENCY * PREFETCH_FACTOR
_rng = secrets.SystemRandom()

# A pre-signed download URL for a file ref (expiring after the given seconds).
Presigner = Callable[[str, int], Awaitable[str]]


@dataclass(slots=True)
class _Job:
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    attempt: int
    manual: bool
    payload: dict[str, Any]
    thread_id: str | None
    run_id: str | None
    url: str
    secret: str
    api_key: str | None
    timeout: float
    download_urls: bool
    traceparent: str | None = None
    """The thread's trace (tracing on): the delivery is a span of it."""


@dataclass(slots=True)
class _Outcome:
    job: _Job
    payload: dict[str, Any]
    started: datetime
    status_code: int | None
    duration_ms: int | None
    error: str | None
    body: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(slots=True)
class _Gap:
    upto: int  # highest missing seq
    xmax: int  # transactions below this id must end before the gap is final
    since: float


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    raw = value.encode()
    if len(raw) <= MAX_STORED_TEXT_BYTES:
        return value
    return raw[:MAX_STORED_TEXT_BYTES].decode(errors="ignore")


def _enabled_webhook_exists(conn: Connection) -> bool:
    return (
        conn.execute(select(webhooks.c.id).where(webhooks.c.enabled.is_(True)).limit(1)).first()
        is not None
    )


def _locked_cursor(conn: Connection) -> int:
    cursor = read_fan_out_cursor(conn, for_update=True)
    assert cursor is not None, "the fan-out cursor is created when the dispatcher starts"
    return cursor


def _advance_cursor_idle(conn: Connection, upto: int | None) -> int | None:
    """Move the fan-out cursor to ``upto`` if still no webhook is enabled; return the
    newest event now (the next step's ``upto``), or None when webhooks appeared."""
    cursor = _locked_cursor(conn)
    if _enabled_webhook_exists(conn):
        return None
    if upto is not None and upto > cursor:
        write_fan_out_cursor(conn, upto, utcnow())
    newest: int | None = conn.execute(select(func.max(events.c.seq))).scalar()
    return newest


class Dispatcher:
    """Fans events out to webhooks and sends the attempts, on this replica."""

    def __init__(
        self,
        db: Database,
        guard: UrlGuard,
        metrics: Metrics,
        *,
        retry_schedule: Sequence[float],
        disable_after_seconds: float,
        max_concurrency: int,
        user_agent: str,
        secret_box: SecretBox,
        presign: Presigner | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._db = db
        self._tracing = tracing
        self._guard = guard
        self._metrics = metrics
        self._retry = [float(s) for s in retry_schedule]
        self._disable_after = timedelta(seconds=disable_after_seconds)
        self._max_concurrency = max_concurrency
        self._user_agent = user_agent
        self._presign = presign
        self._secrets = secret_box
        self._owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{new_id('x')[-8:]}"
        self._fan_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._flush_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._per_url: dict[str, int] = {}  # claimed, not yet finished
        self._url_slots: dict[str, asyncio.Semaphore] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._outcomes: list[_Outcome] = []
        self._gap: _Gap | None = None
        self._hooks_exist = True
        self._hooks_checked_at = float("-inf")
        self._idle_advanced_at = float("-inf")
        self._idle_mark: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._http: httpx.AsyncClient | None = None
        self._tls: dict[str, httpx.AsyncClient] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._db.tx(_init_cursor)
        event.listen(self._db.engine, "commit", self._on_commit)
        self._http = self._new_client()
        self._tasks = [
            asyncio.create_task(self._fan_out_loop(), name="webhooks-fan-out"),
            asyncio.create_task(self._send_loop(), name="webhooks-send"),
            asyncio.create_task(self._flush_loop(), name="webhooks-flush"),
        ]

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            event.remove(self._db.engine, "commit", self._on_commit)
        for task in self._tasks[:2]:
            task.cancel()
        if self._inflight:
            # Unfinished sends keep their lease and are sent again after it expires.
            _, pending = await asyncio.wait(self._inflight, timeout=CLOSE_GRACE_SECONDS)
            for task in pending:
                task.cancel()
        with contextlib.suppress(Exception):
            await self._flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in [self._http, *self._tls.values()]:
            if client is not None:
                await client.aclose()

    def wake(self) -> None:
        """Look for new events and due attempts now (thread-safe via the loop)."""
        self._fan_wake.set()
        self._send_wake.set()

    def _on_commit(self, conn: Any) -> None:
        if conn.info.pop(WEBHOOKS_WRITTEN, False):
            # A webhook was created or changed here: stop trusting "none enabled" at once.
            self._hooks_checked_at = float("-inf")
        if conn.info.pop(EVENTS_WRITTEN, False) and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._fan_wake.set)

    # -- fan-out ----------------------------------------------------------------------------

    async def _fan_out_loop(self) -> None:
        while True:
            self._fan_wake.clear()
            try:
                if not await self._any_enabled_webhook():
                    await self._advance_idle()
                    queued, more = 0, False
                else:
                    queued, more = await self._db.tx(self._fan_out)
            except Exception:
                log.exception("webhooks.fan_out_failed")
                queued, more = 0, False
                await asyncio.sleep(POLL_SECONDS)
            if queued:
                self._send_wake.set()
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fan_wake.wait(), POLL_SECONDS)
                # Let the events of concurrent requests gather: one batch instead of one
                # transaction per event-writing commit under load.
                await asyncio.sleep(FAN_OUT_COALESCE_SECONDS)

    # With no enabled webhook there is nobody to deliver to: the per-event transaction is
    # skipped, and the cursor moves in one cheap step every IDLE_ADVANCE_SECONDS, only up
    # to the newest event of the previous step (so a webhook created meanwhile still gets
    # every event written after it; the check is repeated inside that transaction).

    async def _any_enabled_webhook(self) -> bool:
        now = time.monotonic()
        if now - self._hooks_checked_at >= HOOKS_CHECK_SECONDS:
            self._hooks_exist = await self._db.tx(_enabled_webhook_exists)
            self._hooks_checked_at = now
        return self._hooks_exist

    async def _advance_idle(self) -> None:
        now = time.monotonic()
        if now - self._idle_advanced_at < IDLE_ADVANCE_SECONDS:
            return
        self._idle_advanced_at = now
        self._idle_mark = await self._db.tx(_advance_cursor_idle, self._idle_mark)

    def _fan_out(self, conn: Connection) -> tuple[int, bool]:
        """One batch; returns (attempts queued, whether more events may be waiting)."""
        postgres = conn.dialect.name == "postgresql"
        final_upto = -1
        if postgres and self._gap is not None:
            xmin = int(
                conn.execute(
                    text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                ).scalar_one()
            )
            if xmin >= self._gap.xmax or time.monotonic() - self._gap.since > GAP_MAX_WAIT_SECONDS:
                final_upto, self._gap = self._gap.upto, None
        cursor = _locked_cursor(conn)
        # Sequence numbers first: the snapshots are read only when a webhook may want them.
        rows = conn.execute(
            select(events.c.seq, events.c.thread_id)
            .where(events.c.seq > cursor)
            .order_by(events.c.seq)
            .limit(FAN_OUT_BATCH)
        ).all()
        accepted = []
        expected = cursor + 1
        for row in rows:
            if postgres and row.seq != expected and row.seq - 1 > final_upto:
                if self._gap is None:
                    xmax = conn.execute(
                        text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
                    )
                    self._gap = _Gap(row.seq - 1, int(xmax.scalar_one()), time.monotonic())
                break
            accepted.append(row)
            expected = row.seq + 1
        if not accepted:
            return 0, False
        thread_ids = {r.thread_id for r in accepted if r.thread_id}
        hooks = conn.execute(
            select(webhooks).where(
                webhooks.c.enabled.is_(True),
                or_(webhooks.c.thread_id.is_(None), webhooks.c.thread_id.in_(thread_ids)),
            )
        ).all()
        now = utcnow()
        if hooks:
            accepted = list(
                conn.execute(
                    select(events)
                    .where(events.c.seq.in_([r.seq for r in accepted]))
                    .order_by(events.c.seq)
                )
            )
        attempts = [
            {
                "id": new_id("delivery"),
                "webhook_id": hook.id,
                "event_id": ev.id,
                "event_type": ev.event_type,
                "event_payload": render_payload(ev, hook.data_filters),
                "thread_id": ev.thread_id,
                "run_id": ev.run_id,
                "attempt": 1,
                "timestamp": now,
                "status": "pending",
                "delivery_url": hook.url,
                "manual": False,
                "next_attempt_at": now,
            }
            for ev in accepted
            for hook in select_receivers(hooks, ev)
        ]
        if attempts:
            conn.execute(insert(webhook_deliveries), attempts)
        write_fan_out_cursor(conn, accepted[-1].seq, now)
        return len(attempts), len(accepted) == len(rows) == FAN_OUT_BATCH

    # -- sending ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            self._send_wake.clear()
            room = self._max_concurrency * PREFETCH_FACTOR - len(self._inflight)
            jobs: list[_Job] = []
            if room > 0:
                busy = [u for u, n in self._per_url.items() if n >= _PER_URL_CLAIMS]
                try:
                    jobs = await self._db.tx(self._claim, room, busy)
                except Exception:
                    log.exception("webhooks.claim_failed")
            for job in jobs:
                self._per_url[job.url] = self._per_url.get(job.url, 0) + 1
                task = asyncio.create_task(self._deliver(job))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if not jobs or len(jobs) == room:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._send_wake.wait(), POLL_SECONDS)
            await asyncio.sleep(COALESCE_SECONDS)

    def _claim(self, conn: Connection, room: int, busy: list[str]) -> list[_Job]:
        d = webhook_deliveries.c
        now = utcnow()
        query = (
            select(d.id, d.delivery_url, webhooks.c.timeout_seconds)
            .join(webhooks, webhooks.c.id == d.webhook_id)
            .where(
                d.status == "pending",
                d.next_attempt_at <= now,
                or_(d.lease_expires_at.is_(None), d.lease_expires_at < now),
                webhooks.c.enabled.is_(True),
            )
            .order_by(d.next_attempt_at)
            .limit(room * 2)
        )
        if busy:
            query = query.where(d.delivery_url.not_in(busy))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=webhook_deliveries)
        counts = dict(self._per_url)
        picked: dict[int, list[str]] = {}
        taken = 0
        for row in conn.execute(query):
            if taken >= room or counts.get(row.delivery_url, 0) >= _PER_URL_CLAIMS:
                continue
            counts[row.delivery_url] = counts.get(row.delivery_url, 0) + 1
            picked.setdefault(row.timeout_seconds, []).append(row.id)
            taken += 1
        for timeout, ids in picked.items():
            conn.execute(
                update(webhook_deliveries)
                .where(d.id.in_(ids))
                .values(
                    lease_owner=self._owner,
                    lease_expires_at=now
                    + timedelta(seconds=timeout * PREFETCH_FACTOR + LEASE_MARGIN_SECONDS),
                )
            )
        ids = [i for group in picked.values() for i in group]
        if not ids:
            return []
        hook = webhooks.c
        columns: list[Any] = [
            webhook_deliveries, hook.url, hook.secret, hook.api_key, hook.timeout_seconds,
            hook.data_filters,
        ]  # fmt: skip
        joined = webhook_deliveries.join(webhooks, webhooks.c.id == d.webhook_id)
        if self._tracing.enabled:
            columns.append(threads.c.traceparent)
            joined = joined.outerjoin(threads, threads.c.id == d.thread_id)
        rows = conn.execute(select(*columns).select_from(joined).where(d.id.in_(ids)))
        return [
            _Job(
                id=r.id,
                webhook_id=r.webhook_id,
                event_id=r.event_id,
                event_type=r.event_type,
                attempt=r.attempt,
                manual=bool(r.manual),
                payload=r.event_payload,
                thread_id=r.thread_id,
                run_id=r.run_id,
                url=r.url,
                secret=r.secret,
                api_key=r.api_key,
                timeout=float(r.timeout_seconds),
                download_urls=bool((r.data_filters or {}).get("include_download_urls")),
                traceparent=getattr(r, "traceparent", None),
            )
            for r in rows
        ]

    async def _deliver(self, job: _Job) -> None:
        slot = self._url_slots.get(job.url)
        if slot is None:
            slot = self._url_slots[job.url] = asyncio.Semaphore(PER_ENDPOINT_CONCURRENCY)
        try:
            async with slot, self._slots:
                if self._tracing.enabled:
                    outcome = await self._traced_attempt(job)
                else:
                    outcome = await self._attempt(job)
        finally:
            left = self._per_url.get(job.url, 1) - 1
            if left > 0:
                self._per_url[job.url] = left
            else:
                self._per_url.pop(job.url, None)
                self._url_slots.pop(job.url, None)
            self._send_wake.set()
        status = "success" if outcome.ok else "failed"
        duration = None if outcome.duration_ms is None else outcome.duration_ms / 1000
        self._metrics.record_webhook_delivery(job.webhook_id, status, duration)
        self._outcomes.append(outcome)
        self._flush_wake.set()

    def _new_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self._max_concurrency, max_keepalive_connections=self._max_concurrency
        )
        # trust_env=False: a proxy from the environment would bypass the vetted address.
        return httpx.AsyncClient(follow_redirects=False, trust_env=False, limits=limits)

    async def _client_for(self, target: Target) -> httpx.AsyncClient:
        if target.scheme == "http":
            assert self._http is not None
            return self._http
        # TLS connections are pooled by address, so one client per host name keeps a
        # connection made for one SNI name from serving another.
        client = self._tls.get(target.host)
        if client is None:
            if len(self._tls) >= MAX_TLS_CLIENTS:
                _, oldest = self._tls.popitem()
                await oldest.aclose()
            client = self._tls[target.host] = self._new_client()
        return client

    async def _with_download_urls(self, job: _Job) -> dict[str, Any]:
        if not job.download_urls or self._presign is None:
            return job.payload
        payload = copy.deepcopy(job.payload)
        items = list(payload.get("artifacts") or [])
        if isinstance(payload.get("artifact"), dict):
            items.append(payload["artifact"])
        for item in items:
            if item.get("file_ref"):
                try:
                    item["download_url"] = await self._presign(
                        str(item["file_ref"]), DOWNLOAD_URL_EXPIRES_SECONDS
                    )
                except Exception:  # a deleted file just gets no URL
                    log.debug("webhooks.presign_failed", exc_info=True)
        return payload

    async def _traced_attempt(self, job: _Job) -> _Outcome:
        """One attempt as a client span of the thread's trace; the request carries it."""
        attributes: dict[str, str | int] = {
            "task_framework.webhook_id": job.webhook_id,
            "task_framework.delivery_id": job.id,
            "task_framework.event_type": job.event_type,
            "task_framework.attempt": job.attempt,
            "http.request.method": "POST",
        }
        with self._tracing.span(
            "webhook.deliver", parent=job.traceparent, kind="client", attributes=attributes
        ) as span:
            outcome = await self._attempt(job, traceparent=span.traceparent)
            if outcome.status_code is not None:
                span.set_attribute("http.response.status_code", outcome.status_code)
            if not outcome.ok:
                span.set_error(outcome.error or "failed")
            log.debug(
                "webhooks.delivered",
                extra={"delivery_id": job.id, "status_code": outcome.status_code},
            )
        return outcome

    async def _attempt(self, job: _Job, *, traceparent: str | None = None) -> _Outcome:
        started = utcnow()
        try:
            secret = self._secrets.unseal(job.secret)
            api_key = self._secrets.unseal(job.api_key) if job.api_key else None
        except DecryptionFailed as exc:
            return _Outcome(job, job.payload, started, None, None, exc.message, None)
        try:
            target = await self._guard.target(job.url)
        except BlockedAddress:
            return _Outcome(job, job.payload, started, None, None, "blocked address", None)
        except (OSError, TimeoutError, ValueError) as exc:
            problem = f"DNS resolution failed: {exc}"
            return _Outcome(job, job.payload, started, None, None, problem, None)
        payload = await self._with_download_urls(job)
        body = dumps(payload)
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "X-Task-Event-Type": job.event_type,
            "X-Task-Webhook-ID": job.webhook_id,
            "X-Task-Delivery-ID": job.id,
            **signature_headers(secret, job.event_id, body, int(time.time())),
        }
        if api_key:
            headers["X-API-Key"] = api_key
        if traceparent is not None:
            headers[TRACEPARENT_HEADER] = traceparent
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        timeout = httpx.Timeout(job.timeout, connect=min(CONNECT_TIMEOUT_SECONDS, job.timeout))
        clock = time.monotonic()
        status_code: int | None = None
        chunks: list[bytes] = []
        error: str | None = None
        try:
            client = await self._client_for(target)
            async with asyncio.timeout(job.timeout):
                request = client.build_request(
                    "POST", target.connect_url, content=body, headers=headers,
                    timeout=timeout, extensions=extensions,
                )  # fmt: skip
                response = await client.send(request, stream=True)
                try:
                    status_code = response.status_code
                    size = 0
                    async for chunk in response.aiter_raw():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= MAX_RESPONSE_READ_BYTES:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            error = "Request timeout"
        except httpx.TimeoutException:
            error = "Request timeout"
        except httpx.HTTPError as exc:
            error = f"Connection error: {type(exc).__name__}: {exc}"
        duration_ms = int((time.monotonic() - clock) * 1000)
        if status_code is not None and error is None and not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
        text_body = b"".join(chunks)[:MAX_STORED_TEXT_BYTES].decode(errors="replace") or None
        return _Outcome(job, payload, started, status_code, duration_ms, error, text_body)

    # -- recording outcomes -----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wake.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._flush_wake.clear()
            try:
                await self._flush()
            except Exception:
                log.exception("webhooks.record_failed")
                await asyncio.sleep(POLL_SECONDS)

    async def _flush(self) -> None:
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        try:
            retries = await self._db.tx(self._record, batch)
        except Exception:
            self._outcomes = batch + self._outcomes
            raise
        if retries:
            self._send_wake.set()

    def _record(self, conn: Connection, batch: list[_Outcome]) -> int:
        """Store a batch of outcomes; returns how many retries were queued."""
        d = webhook_deliveries.c
        now = utcnow()
        fenced = (
            update(webhook_deliveries)
            .where(
                d.id == bindparam("b_id"),
                d.lease_owner == self._owner,
                d.status == "pending",
            )
            .values(
                status=bindparam("b_status"),
                status_code=bindparam("b_code"),
                response_time_ms=bindparam("b_ms"),
                error=bindparam("b_error"),
                response_body=bindparam("b_body"),
                timestamp=bindparam("b_started"),
                delivery_url=bindparam("b_url"),
                event_payload=bindparam("b_payload", type_=webhook_deliveries.c.event_payload.type),
                next_attempt_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )

        def params(outcome: _Outcome) -> dict[str, Any]:
            return {
                "b_id": outcome.job.id,
                "b_status": "success" if outcome.ok else "failed",
                "b_code": outcome.status_code,
                "b_ms": outcome.duration_ms,
                "b_error": _clip(outcome.error),
                "b_body": _clip(outcome.body),
                "b_started": outcome.started,
                "b_url": outcome.job.url,
                "b_payload": outcome.payload,
            }

        # Successes need no follow-up beyond clearing the failure window: one statement.
        successes = [o for o in batch if o.ok]
        if successes:
            conn.execute(fenced, [params(o) for o in successes])
            conn.execute(
                update(webhooks)
                .where(
                    webhooks.c.id.in_({o.job.webhook_id for o in successes}),
                    webhooks.c.first_failure_at.is_not(None),
                )
                .values(first_failure_at=None)
            )
        retries = 0
        for outcome in batch:
            if outcome.ok:
                continue
            if conn.execute(fenced, params(outcome)).rowcount == 0:
                continue  # lease lost or webhook deleted meanwhile
            hook = conn.execute(
                select(webhooks).where(webhooks.c.id == outcome.job.webhook_id)
            ).first()
            if hook is not None:
                retries += self._after_attempt(conn, hook, outcome, now)
        return retries

    def _after_attempt(self, conn: Connection, hook: Any, outcome: _Outcome, now: datetime) -> int:
        job = outcome.job
        hooks = update(webhooks).where(webhooks.c.id == hook.id)
        if outcome.status_code == 410:
            conn.execute(hooks.values(enabled=False, disabled_reason="gone", updated_at=now))
            webhooks_changed(conn)
            cancel_pending(conn, hook.id)
            log.warning("webhooks.disabled", extra={"webhook_id": hook.id, "reason": "gone"})
            return 0
        first = hook.first_failure_at or outcome.started
        if now - first >= self._disable_after:
            conn.execute(hooks.values(enabled=False, disabled_reason="failing", updated_at=now))
            webhooks_changed(conn)
            cancel_pending(conn, hook.id)
            log.warning("webhooks.disabled", extra={"webhook_id": hook.id, "reason": "failing"})
            return 0
        if hook.first_failure_at is None:
            conn.execute(hooks.values(first_failure_at=first))
        if job.manual or job.attempt > len(self._retry) or not hook.enabled:
            return 0
        delay = self._retry[job.attempt - 1] * _rng.uniform(1 - JITTER, 1 + JITTER)
        due = now + timedelta(seconds=delay)
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(webhook_deliveries).values(
                        id=new_id("delivery"),
                        webhook_id=hook.id,
                        event_id=job.event_id,
                        event_type=job.event_type,
                        event_payload=job.payload,
                        thread_id=job.thread_id,
                        run_id=job.run_id,
                        attempt=job.attempt + 1,
                        timestamp=due,
                        status="pending",
                        delivery_url=hook.url,
                        manual=False,
                        next_attempt_at=due,
                    )
                )
        except IntegrityError:
            return 0  # that attempt (a redelivery's number) already exists
        return 1


def _init_cursor(conn: Connection) -> None:
    """Create the fan-out cursor at the newest event: webhooks start from now."""
    found = conn.execute(
        select(settings_kv.c.key).where(settings_kv.c.key == FAN_OUT_CURSOR_KEY)
    ).first()
    if found is not None:
        return
    top = conn.execute(select(events.c.seq).order_by(events.c.seq.desc()).limit(1)).scalar()
    try:
        with conn.begin_nested():
            conn.execute(
                insert(settings_kv).values(
                    key=FAN_OUT_CURSOR_KEY, value={"seq": int(top or 0)}, updated_at=utcnow()
                )
            )
    except IntegrityError:
        pass  # another replica created it first


__all__ = ["PER_ENDPOINT_CONCURRENCY", "Dispatcher"]
