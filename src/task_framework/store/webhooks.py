"""The webhook store: webhooks, their delivery log and the delivery outbox (API.md §7,
§12.1, §12.5, §12.6).

Secrets and API keys cross this boundary sealed. The outbox is two durable steps, both
rows: the fan-out turns events after a cursor into pending attempts and advances the
cursor in one transaction (exactly once, whatever the number of replicas); the sender
claims due attempts with a lease and records each outcome on its row. How rows are
locked and how in-flight event numbers are waited for differ per dialect and stay behind
this interface. What to deliver to whom, retry delays and when to give up are the
caller's decisions, passed in as callables run inside the store's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from task_framework.ids import new_id
from task_framework.models.webhooks import DEFAULT_WEBHOOK_TIMEOUT_SECONDS, generate_secret
from task_framework.store.base import Tx
from task_framework.store.pages import Page, PageRequest

__all__ = [
    "ClaimedDelivery",
    "DeliveryFilter",
    "DeliveryOutcome",
    "DeliveryRecord",
    "EventRecord",
    "FailurePlan",
    "NewDelivery",
    "WebhookChange",
    "WebhookFilter",
    "WebhookRecord",
    "WebhookStore",
]


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: str
    url: str
    secret: str
    enabled: bool
    disabled_reason: str | None
    events: dict[str, Any] | None
    data_filters: dict[str, Any] | None
    scope: dict[str, Any] | None
    timeout_seconds: int
    api_key: str | None
    task_id: str | None
    task_version: str | None
    source: str
    thread_id: str | None
    schedule_id: str | None
    app_id: str | None
    user_id: str | None
    created_by: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    first_failure_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WebhookChange:
    """A change to a webhook; ``None`` keeps the stored field. ``enabled=True`` also
    clears the disabled reason and the failure window; ``enabled=False`` stores
    ``disabled_reason`` and cancels the webhook's pending attempts."""

    updated_at: datetime
    url: str | None = None
    secret: str | None = None
    events: dict[str, Any] | None = None
    data_filters: dict[str, Any] | None = None
    scope: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    task_id: str | None = None
    task_version: str | None = None
    api_key: str | None = None
    clear_api_key: bool = False
    enabled: bool | None = None
    disabled_reason: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    """``match_app``/``match_user`` restrict to rows whose ``app_id``/``user_id`` equal
    the given ones (``None`` matching ownerless rows); the other fields match when set."""

    app_id: str | None = None
    user_id: str | None = None
    match_app: bool = True
    match_user: bool = True
    enabled: bool | None = None
    task_id: str | None = None
    task_version: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    event_payload: dict[str, Any]
    thread_id: str | None
    run_id: str | None
    attempt: int
    timestamp: datetime
    status: str
    status_code: int | None
    response_time_ms: int | None
    error: str | None
    response_body: str | None
    delivery_url: str
    manual: bool


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    status: str | None = None
    thread_id: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An outbox event, as the fan-out matches and renders it."""

    seq: int
    id: str
    event_type: str
    thread_id: str | None
    schedule_id: str | None
    run_id: str | None
    app_id: str | None
    user_id: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A pending first attempt the fan-out queues for ``webhook`` and ``event``."""

    id: str
    webhook: WebhookRecord
    event: EventRecord
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A due attempt leased to one sender, with what sending it needs of its webhook;
    ``traceparent`` is the thread's trace when the claim asked for it."""

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
    data_filters: dict[str, Any] | None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one attempt got; ``payload`` is what was sent (download URLs included)."""

    delivery: ClaimedDelivery
    payload: dict[str, Any]
    started: datetime
    status_code: int | None
    duration_ms: int | None
    error: str | None
    body: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class FailurePlan:
    """What follows a failed attempt: ``disable`` (a reason) disables the webhook and
    cancels its pending attempts; otherwise the failure window starts at
    ``first_failure_at`` if none is open, and the next attempt is due at ``retry_at``."""

    disable: str | None = None
    first_failure_at: datetime | None = None
    retry_at: datetime | None = None


Visible = Callable[[WebhookRecord], bool]
"""Whether the caller may see a webhook; one it may not is reported as not found."""

Plan = Callable[[Sequence[EventRecord], Sequence[WebhookRecord]], list[NewDelivery]]
"""The attempts to queue for a batch of events and the enabled webhooks that may want
them (only called when there is such a webhook)."""


class WebhookStore(Protocol):
    # -- webhooks ---------------------------------------------------------------------------

    async def add(self, record: WebhookRecord) -> WebhookRecord:
        """Store a new webhook; the webhook as stored."""
        ...

    def add_source_webhooks_in(self, tx: Tx, records: Sequence[WebhookRecord]) -> None:
        """Store ad-hoc or schedule webhooks inside the caller's transaction."""
        ...

    async def get(self, webhook_id: str, *, visible: Visible) -> WebhookRecord:
        """:class:`~task_framework.store.errors.RecordNotFound` when absent or not
        ``visible``."""
        ...

    async def list_webhooks(self, where: WebhookFilter, page: PageRequest) -> Page:
        """Newest first; ``rows`` are :class:`WebhookRecord`."""
        ...

    async def update(
        self, webhook_id: str, change: WebhookChange, *, visible: Visible
    ) -> WebhookRecord:
        """Apply ``change``; the webhook as stored after. RecordNotFound when absent or
        not ``visible`` (nothing is written)."""
        ...

    async def delete(self, webhook_id: str, *, visible: Visible) -> None:
        """Delete a webhook with its pending attempts and delivery log. RecordNotFound
        when absent or not ``visible``."""
        ...

    def delete_source_webhooks_in(self, tx: Tx, source: str, parent_id: str) -> None:
        """Inside the caller's transaction, delete the ``source`` ("thread" or
        "schedule") webhooks of that thread or schedule, with their deliveries."""
        ...

    def thread_deleted_in(self, tx: Tx, thread_id: str) -> None:
        """Inside a thread deletion, after its events are gone: drop its ad-hoc webhooks
        (and keep the fan-out cursor below event numbers that may be handed out again)."""
        ...

    # -- the delivery log -------------------------------------------------------------------

    async def list_deliveries(
        self, webhook_id: str, where: DeliveryFilter, page: PageRequest, *, visible: Visible
    ) -> Page:
        """A webhook's attempts, newest first; ``rows`` are :class:`DeliveryRecord`.
        RecordNotFound (``missing=(webhook_id,)``) when the webhook is absent or not
        ``visible``."""
        ...

    async def get_delivery(
        self, webhook_id: str, delivery_id: str, *, visible: Visible
    ) -> DeliveryRecord:
        """RecordNotFound with ``missing`` naming the webhook or the delivery."""
        ...

    async def redeliver(
        self,
        webhook_id: str,
        delivery_id: str,
        *,
        visible: Visible,
        admit: Callable[[WebhookRecord], None],
        new_id: str,
        at: datetime,
    ) -> DeliveryRecord:
        """Queue a manual attempt (numbered after the event's last one, due ``at``) of a
        delivery's event to the webhook's current URL. RecordNotFound as for
        :meth:`get_delivery`; then ``admit(webhook)`` may refuse by raising.
        :class:`~task_framework.store.errors.UniqueViolation` when a concurrent attempt
        took the number (nothing is written)."""
        ...

    # -- the outbox -------------------------------------------------------------------------

    async def start_fan_out(self, at: datetime) -> None:
        """Create the fan-out cursor at the newest event, unless it exists already."""
        ...

    async def any_enabled(self) -> bool: ...

    async def advance_idle(self, upto: int | None, at: datetime) -> int | None:
        """With no webhook enabled, move the cursor up to ``upto``; the newest event now
        (the next call's ``upto``), or None when an enabled webhook exists."""
        ...

    async def fan_out(self, plan: Plan, *, limit: int, at: datetime) -> tuple[int, bool]:
        """Queue the attempts ``plan`` makes for the next (at most ``limit``) events in
        order, and move the cursor past them, in one transaction. Events whose numbers
        may still be filled by running transactions are held back. Returns (attempts
        queued, whether more events may be waiting)."""
        ...

    async def claim(
        self,
        owner: str,
        *,
        scan: int,
        exclude_urls: Sequence[str],
        take: Callable[[str], bool],
        lease: Callable[[float], timedelta],
        traceparent: bool,
        at: datetime,
    ) -> list[ClaimedDelivery]:
        """Lease due pending attempts of enabled webhooks to ``owner``, oldest due first,
        skipping attempts leased to others and URLs in ``exclude_urls``: of at most
        ``scan`` candidates, those ``take(url)`` accepts, each for ``lease(timeout)``.
        Concurrent claims never lease the same attempt."""
        ...

    async def record(
        self,
        owner: str,
        outcomes: Sequence[DeliveryOutcome],
        *,
        after_failure: Callable[[WebhookRecord, DeliveryOutcome], FailurePlan],
        at: datetime,
    ) -> int:
        """Store outcomes on attempts still leased to ``owner`` (others are skipped); a
        success closes the webhook's failure window, a failure follows
        ``after_failure``. Returns how many retries were queued."""
        ...

    def watch_commits(
        self, *, webhooks_written: Callable[[], None], events_written: Callable[[], None]
    ) -> Callable[[], None]:
        """Call back after each commit that changed webhooks or wrote events (on the
        committing thread); returns the function that stops watching."""
        ...


def webhook_values(record: WebhookRecord) -> Mapping[str, Any]:
    """A record's fields by name (the implementations' row values)."""
    return {name: getattr(record, name) for name in WebhookRecord.__dataclass_fields__}


def source_webhook_records(
    hooks: Sequence[Mapping[str, Any]],
    *,
    seal: Callable[[str], str],
    source: str,
    owner: tuple[str | None, str | None],
    now: datetime,
    thread_id: str | None = None,
    schedule_id: str | None = None,
) -> list[WebhookRecord]:
    """The records of AdHocWebhook dicts (``callback_url``, ``events``, ``api_key``) scoped
    to their thread or schedule. URLs must have been checked already and each ``api_key``
    sealed (``services.webhooks.seal_api_keys``); ``seal`` seals the new secrets."""
    scope = {"thread_id": thread_id} if thread_id else {"schedule_id": schedule_id}
    return [
        WebhookRecord(
            id=new_id("webhook"),
            url=hook["callback_url"],
            secret=seal(generate_secret()),
            enabled=True,
            disabled_reason=None,
            events={"include": list(hook.get("events") or [])},
            data_filters=None,
            scope=scope,
            timeout_seconds=DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
            api_key=hook.get("api_key") or None,
            task_id=None,
            task_version=None,
            source=source,
            thread_id=thread_id,
            schedule_id=schedule_id,
            app_id=owner[0],
            user_id=owner[1],
            created_by=owner[1] or owner[0],
            metadata={},
            created_at=now,
            updated_at=now,
        )
        for hook in hooks
    ]
