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

The rows, their locking and that waiting are the webhook store's
(:class:`~task_framework.store.webhooks.WebhookStore`); what is delivered to whom, the
retry schedule and when to give up on a webhook are decided here.
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
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx

from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.observability.metrics import Metrics
from task_framework.observability.tracing import NO_TRACING, TRACEPARENT_HEADER, Tracing
from task_framework.services.crypto import DecryptionFailed, SecretBox
from task_framework.services.urlguard import BlockedAddress, Target, UrlGuard
from task_framework.services.webhook_payloads import dumps, render_payload, select_receivers
from task_framework.services.webhook_signing import signature_headers
from task_framework.store.webhooks import (
    ClaimedDelivery,
    DeliveryOutcome,
    EventRecord,
    FailurePlan,
    NewDelivery,
    WebhookRecord,
    WebhookStore,
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
JITTER = 0.1  # retry delays vary by ±10 %
CLOSE_GRACE_SECONDS = 5.0
MAX_TLS_CLIENTS = 64
DOWNLOAD_URL_EXPIRES_SECONDS = 3600
_PER_URL_CLAIMS = PER_ENDPOINT_CONCURRENCY * PREFETCH_FACTOR
_rng = secrets.SystemRandom()

# A pre-signed download URL for a file ref (expiring after the given seconds).
Presigner = Callable[[str, int], Awaitable[str]]


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    raw = value.encode()
    if len(raw) <= MAX_STORED_TEXT_BYTES:
        return value
    return raw[:MAX_STORED_TEXT_BYTES].decode(errors="ignore")


class Dispatcher:
    """Fans events out to webhooks and sends the attempts, on this replica."""

    def __init__(
        self,
        store: WebhookStore,
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
        self._store = store
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
        self._outcomes: list[DeliveryOutcome] = []
        self._stop_watching: Callable[[], None] | None = None
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
        await self._store.start_fan_out(utcnow())
        self._stop_watching = self._store.watch_commits(
            webhooks_written=self._on_webhooks_written, events_written=self._on_events_written
        )
        self._http = self._new_client()
        self._tasks = [
            asyncio.create_task(self._fan_out_loop(), name="webhooks-fan-out"),
            asyncio.create_task(self._send_loop(), name="webhooks-send"),
            asyncio.create_task(self._flush_loop(), name="webhooks-flush"),
        ]

    async def close(self) -> None:
        self._closing = True
        if self._stop_watching is not None:
            with contextlib.suppress(Exception):
                self._stop_watching()
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

    def _on_webhooks_written(self) -> None:
        # A webhook was created or changed: stop trusting "none enabled" at once.
        self._hooks_checked_at = float("-inf")

    def _on_events_written(self) -> None:
        if self._loop is not None:
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
                    queued, more = await self._store.fan_out(
                        self._plan, limit=FAN_OUT_BATCH, at=utcnow()
                    )
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
            self._hooks_exist = await self._store.any_enabled()
            self._hooks_checked_at = now
        return self._hooks_exist

    async def _advance_idle(self) -> None:
        now = time.monotonic()
        if now - self._idle_advanced_at < IDLE_ADVANCE_SECONDS:
            return
        self._idle_advanced_at = now
        self._idle_mark = await self._store.advance_idle(self._idle_mark, utcnow())

    @staticmethod
    def _plan(events: Sequence[EventRecord], hooks: Sequence[WebhookRecord]) -> list[NewDelivery]:
        """The first attempts for a batch of events: each to its receivers (one per URL)."""
        return [
            NewDelivery(new_id("delivery"), hook, ev, render_payload(ev, hook.data_filters))
            for ev in events
            for hook in select_receivers(hooks, ev)
        ]

    # -- sending ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            self._send_wake.clear()
            room = self._max_concurrency * PREFETCH_FACTOR - len(self._inflight)
            jobs: list[ClaimedDelivery] = []
            if room > 0:
                busy = [u for u, n in self._per_url.items() if n >= _PER_URL_CLAIMS]
                try:
                    jobs = await self._claim(room, busy)
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

    async def _claim(self, room: int, busy: list[str]) -> list[ClaimedDelivery]:
        counts = dict(self._per_url)
        taken = 0

        def take(url: str) -> bool:
            nonlocal taken
            if taken >= room or counts.get(url, 0) >= _PER_URL_CLAIMS:
                return False
            counts[url] = counts.get(url, 0) + 1
            taken += 1
            return True

        def lease(timeout: float) -> timedelta:
            return timedelta(seconds=timeout * PREFETCH_FACTOR + LEASE_MARGIN_SECONDS)

        return await self._store.claim(
            self._owner, scan=room * 2, exclude_urls=busy, take=take, lease=lease,
            traceparent=self._tracing.enabled, at=utcnow(),
        )  # fmt: skip

    async def _deliver(self, job: ClaimedDelivery) -> None:
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
        # Stored texts are clipped; the span saw the whole error.
        self._outcomes.append(
            replace(outcome, error=_clip(outcome.error), body=_clip(outcome.body))
        )
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

    async def _with_download_urls(self, job: ClaimedDelivery) -> dict[str, Any]:
        download_urls = bool((job.data_filters or {}).get("include_download_urls"))
        if not download_urls or self._presign is None:
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

    async def _traced_attempt(self, job: ClaimedDelivery) -> DeliveryOutcome:
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

    async def _attempt(
        self, job: ClaimedDelivery, *, traceparent: str | None = None
    ) -> DeliveryOutcome:
        started = utcnow()
        try:
            secret = self._secrets.unseal(job.secret)
            api_key = self._secrets.unseal(job.api_key) if job.api_key else None
        except DecryptionFailed as exc:
            return DeliveryOutcome(job, job.payload, started, None, None, exc.message, None)
        try:
            target = await self._guard.target(job.url)
        except BlockedAddress:
            return DeliveryOutcome(job, job.payload, started, None, None, "blocked address", None)
        except (OSError, TimeoutError, ValueError) as exc:
            problem = f"DNS resolution failed: {exc}"
            return DeliveryOutcome(job, job.payload, started, None, None, problem, None)
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
        return DeliveryOutcome(job, payload, started, status_code, duration_ms, error, text_body)

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
            retries = await self._store.record(
                self._owner, batch, after_failure=self._after_failure, at=utcnow()
            )
        except Exception:
            self._outcomes = batch + self._outcomes
            raise
        if retries:
            self._send_wake.set()

    def _after_failure(self, hook: WebhookRecord, outcome: DeliveryOutcome) -> FailurePlan:
        """What follows a failed attempt: 410 Gone disables the webhook at once, and so
        does failing for ``disable_after`` seconds; otherwise the retry schedule."""
        job = outcome.delivery
        now = utcnow()
        if outcome.status_code == 410:
            log.warning("webhooks.disabled", extra={"webhook_id": hook.id, "reason": "gone"})
            return FailurePlan(disable="gone")
        first = hook.first_failure_at or outcome.started
        if now - first >= self._disable_after:
            log.warning("webhooks.disabled", extra={"webhook_id": hook.id, "reason": "failing"})
            return FailurePlan(disable="failing")
        opened = first if hook.first_failure_at is None else None
        if job.manual or job.attempt > len(self._retry) or not hook.enabled:
            return FailurePlan(first_failure_at=opened)
        delay = self._retry[job.attempt - 1] * _rng.uniform(1 - JITTER, 1 + JITTER)
        return FailurePlan(first_failure_at=opened, retry_at=now + timedelta(seconds=delay))


__all__ = ["PER_ENDPOINT_CONCURRENCY", "Dispatcher"]
