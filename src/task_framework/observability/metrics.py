"""Every Prometheus collector of task-framework, in one place (API.md §13).

Each app instance builds its own :class:`Metrics`, which owns a private
:class:`~prometheus_client.CollectorRegistry`; nothing is registered at import time, so
several apps (or tests) can live in one process. Services call the small ``record_*``
helpers instead of touching collectors, so the metric vocabulary stays in this module.

Label values must stay bounded: states, task ids, HTTP methods and route templates, never
thread ids or raw paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric

__all__ = [
    "API_REQUEST_BUCKETS_SECONDS",
    "CONTENT_TYPE",
    "ENV_BUILD_BUCKETS_SECONDS",
    "FILE_DOWNLOAD_BUCKETS_SECONDS",
    "FILE_UPLOAD_BUCKETS_SECONDS",
    "METADATA_RESPONSE_BUCKETS_SECONDS",
    "THREAD_DURATION_BUCKETS_SECONDS",
    "WEBHOOK_DELIVERY_BUCKETS_SECONDS",
    "Metrics",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # "text/plain; version=0.0.4; charset=utf-8"

THREAD_DURATION_BUCKETS_SECONDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0)
API_REQUEST_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FILE_UPLOAD_BUCKETS_SECONDS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FILE_DOWNLOAD_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WEBHOOK_DELIVERY_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METADATA_RESPONSE_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCHEDULE_FIRE_LAG_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 60.0)
ENV_BUILD_BUCKETS_SECONDS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)

AUTH_SURFACES = ("api", "admin", "ui")
AUTH_OUTCOMES = ("invalid", "limited")

_PREFIX = "task_framework_"


class _WithoutCreatedSeries:
    """Registry view that drops the ``*_created`` timestamp series prometheus_client adds.

    They double the number of series, and the text format 0.0.4 has no use for them.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            created = family.name + "_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class Metrics:
    """The collectors of one app instance, and the helpers that record into them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._exposition = _WithoutCreatedSeries(self.registry)
        self._seen_thread_states: set[str] = set()
        self._children: dict[tuple[object, ...], Any] = {}

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            # prometheus_client appends "_total" to the exposed counter name itself.
            return Counter(_PREFIX + name, doc, labelnames=tuple(labels), registry=self.registry)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(_PREFIX + name, doc, labelnames=tuple(labels), registry=self.registry)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: Iterable[str] = ()
        ) -> Histogram:
            return Histogram(
                _PREFIX + name,
                doc,
                labelnames=tuple(labels),
                buckets=buckets,
                registry=self.registry,
            )

        # Threads
        self.threads = counter(
            "threads", "Times a thread entered a state on this replica.", ["state"]
        )
        self.threads_current = gauge(
            "threads_current",
            "Threads per state, cluster-wide (refreshed from the database).",
            ["state"],
        )
        self.thread_execution_duration = histogram(
            "thread_execution_duration_seconds",
            "Wall time of finished thread executions.",
            THREAD_DURATION_BUCKETS_SECONDS,
        )
        self.thread_duration_by_task = histogram(
            "thread_duration_by_task_seconds",
            "Wall time of finished thread executions, per task and final state.",
            THREAD_DURATION_BUCKETS_SECONDS,
            ["task_id", "state"],
        )
        self.threads_finished = counter(
            "threads_finished",
            "Threads that reached a final state, per task.",
            ["task_id", "state"],
        )
        self.queue_depth = gauge("queue_depth", "Queued threads, cluster-wide.")
        self.queue_oldest_age = gauge(
            "queue_oldest_age_seconds", "Age of the oldest queued thread, cluster-wide."
        )

        # API
        self.api_requests = counter(
            "api_requests",
            "HTTP requests, one count per request.",
            ["method", "endpoint", "status"],
        )
        self.api_request_duration = histogram(
            "api_request_duration_seconds",
            "HTTP request duration (excludes /metrics, /health and /ui).",
            API_REQUEST_BUCKETS_SECONDS,
            ["method", "endpoint", "status"],
        )

        # Authentication
        self.auth_failures = counter(
            "auth_failures",
            "Failed authentications: a key refused (invalid) or a request refused unchecked "
            "by the limits on failures (limited), per surface.",
            ["surface", "outcome"],
        )
        for surface in AUTH_SURFACES:  # every series from the start: they are few and fixed
            for outcome in AUTH_OUTCOMES:
                self.auth_failures.labels(surface, outcome)

        # Artifacts
        self.artifacts_created = counter(
            "artifacts_created", "Artifacts created, per kind.", ["kind"]
        )
        self.artifacts_deleted = counter("artifacts_deleted", "Artifacts deleted.")
        self.artifacts_archived = counter("artifacts_archived", "Artifacts archived.")

        # Files
        self.file_uploads = counter("file_uploads", "Completed file uploads.")
        self.file_downloads = counter("file_downloads", "Completed file downloads.")
        self.file_upload_bytes = counter("file_upload_bytes", "Bytes received in file uploads.")
        self.file_download_bytes = counter("file_download_bytes", "Bytes sent in file downloads.")
        self.file_upload_duration = histogram(
            "file_upload_duration_seconds", "File upload duration.", FILE_UPLOAD_BUCKETS_SECONDS
        )
        self.file_download_duration = histogram(
            "file_download_duration_seconds",
            "File download duration.",
            FILE_DOWNLOAD_BUCKETS_SECONDS,
        )
        self.files = gauge("files_total", "Stored files, cluster-wide.")
        self.files_bytes = gauge("files_total_bytes", "Bytes of stored files, cluster-wide.")

        # Schedules
        self.schedule_runs = counter(
            "schedule_runs", "Schedule runs, per schedule and state.", ["schedule_id", "state"]
        )
        self.schedules_active = gauge("schedules_active", "Active schedules, cluster-wide.")
        self.schedule_fire_lag = histogram(
            "schedule_fire_lag_seconds",
            "From a run's nominal fire time to its first thread being created.",
            SCHEDULE_FIRE_LAG_BUCKETS_SECONDS,
        )

        # Webhooks
        self.webhook_deliveries = counter(
            "webhook_deliveries",
            "Webhook delivery attempts, per webhook and outcome.",
            ["webhook_id", "status"],
        )
        self.webhook_delivery_duration = histogram(
            "webhook_delivery_duration_seconds",
            "Webhook delivery attempt duration.",
            WEBHOOK_DELIVERY_BUCKETS_SECONDS,
        )
        self.webhook_deliveries_pending = gauge(
            "webhook_deliveries_pending", "Deliveries waiting to be sent, cluster-wide."
        )

        # Workers and environments
        self.workers_active = gauge("workers_active", "Worker processes running a thread.")
        self.workers_idle = gauge("workers_idle", "Worker processes waiting for work.")
        self.worker_starts = counter("worker_starts", "Worker processes started.")
        self.worker_crashes = counter("worker_crashes", "Worker processes that died unexpectedly.")
        self.sandbox_layer = gauge(
            "sandbox_layer",
            "1 for each confinement layer of task processes in force here, 0 if missing.",
            ["layer"],
        )
        self.env_builds = counter(
            "env_builds", "Task environment builds, per outcome.", ["outcome"]
        )
        self.env_build_duration = histogram(
            "env_build_duration_seconds",
            "Task environment build duration.",
            ENV_BUILD_BUCKETS_SECONDS,
        )

        # Task metadata and library
        self.metadata_requests = counter(
            "metadata_requests", "GET /task/metadata requests, per status.", ["status"]
        )
        self.metadata_response_duration = histogram(
            "metadata_response_duration_seconds",
            "GET /task/metadata response duration.",
            METADATA_RESPONSE_BUCKETS_SECONDS,
        )
        self.library_initializations = counter("library_initializations", "App instances created.")
        self.task_function_registrations = counter(
            "task_function_registrations", "Task versions loaded."
        )

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self._exposition), CONTENT_TYPE

    # -- threads ---------------------------------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: every request records several, and
        resolving label values costs more than recording the value."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def record_thread_state(self, state: str) -> None:
        """A thread entered ``state`` on this replica."""
        self._child(self.threads, state).inc()

    def record_thread_finished(self, task_id: str, state: str, duration_s: float | None) -> None:
        """A thread reached final ``state``; ``duration_s`` is None when it never ran."""
        self._child(self.threads_finished, task_id, state).inc()
        if duration_s is not None:
            self.thread_execution_duration.observe(duration_s)
            self._child(self.thread_duration_by_task, task_id, state).observe(duration_s)

    # -- API -------------------------------------------------------------------------------

    def record_request(
        self, method: str, endpoint: str, status: int | str, duration_s: float, *, timed: bool
    ) -> None:
        """One finished HTTP request; ``timed=False`` counts it without observing duration."""
        self._child(self.api_requests, method, endpoint, str(status)).inc()
        if timed:
            self._child(self.api_request_duration, method, endpoint, str(status)).observe(
                duration_s
            )

    def record_auth_failure(self, surface: str, outcome: str) -> None:
        """A failed authentication on ``surface`` (``api``, ``admin``, ``ui``): ``invalid``
        (the key was refused) or ``limited`` (429 before the key was checked)."""
        self._child(self.auth_failures, surface, outcome).inc()

    def record_metadata_request(self, status: int | str, duration_s: float) -> None:
        self.metadata_requests.labels(status=str(status)).inc()
        self.metadata_response_duration.observe(duration_s)

    # -- cluster gauges --------------------------------------------------------------------

    def set_cluster_gauges(
        self,
        states: Mapping[str, int],
        queue_depth: int,
        oldest_age_s: float,
        files: int,
        file_bytes: int,
        schedules_active: int,
        deliveries_pending: int,
    ) -> None:
        """Refresh the cluster-wide gauges from one database snapshot.

        A state absent from ``states`` but reported earlier is set to 0, so a drained
        state does not keep its last count.
        """
        self._seen_thread_states.update(states)
        for state in self._seen_thread_states:
            self.threads_current.labels(state=state).set(states.get(state, 0))
        self.queue_depth.set(queue_depth)
        self.queue_oldest_age.set(oldest_age_s)
        self.files.set(files)
        self.files_bytes.set(file_bytes)
        self.schedules_active.set(schedules_active)
        self.webhook_deliveries_pending.set(deliveries_pending)

    # -- workers and environments ----------------------------------------------------------

    def set_workers(self, active: int, idle: int) -> None:
        self.workers_active.set(active)
        self.workers_idle.set(idle)

    def record_worker_start(self) -> None:
        self.worker_starts.inc()

    def record_worker_crash(self) -> None:
        self.worker_crashes.inc()

    def set_sandbox_layers(self, in_force: Iterable[str], missing: Iterable[str]) -> None:
        for layer in in_force:
            self.sandbox_layer.labels(layer=layer).set(1)
        for layer in missing:
            self.sandbox_layer.labels(layer=layer).set(0)

    def record_env_build(self, outcome: str, duration_s: float | None) -> None:
        """An environment build ended with ``outcome`` (e.g. ``built``, ``cached``, ``failed``)."""
        self.env_builds.labels(outcome=outcome).inc()
        if duration_s is not None:
            self.env_build_duration.observe(duration_s)

    # -- artifacts and files ---------------------------------------------------------------

    def record_artifact_created(self, kind: str) -> None:
        self.artifacts_created.labels(kind=kind).inc()

    def record_artifacts_deleted(self, count: int = 1) -> None:
        self.artifacts_deleted.inc(count)

    def record_artifacts_archived(self, count: int = 1) -> None:
        self.artifacts_archived.inc(count)

    def record_file_upload(self, duration_s: float, size: int = 0) -> None:
        self.file_uploads.inc()
        self.file_upload_bytes.inc(size)
        self.file_upload_duration.observe(duration_s)

    def record_file_download(self, duration_s: float, size: int = 0) -> None:
        self.file_downloads.inc()
        self.file_download_bytes.inc(size)
        self.file_download_duration.observe(duration_s)

    # -- schedules and webhooks ------------------------------------------------------------

    def record_schedule_fire_lag(self, seconds: float) -> None:
        self.schedule_fire_lag.observe(max(seconds, 0.0))

    def record_schedule_run(self, schedule_id: str, state: str) -> None:
        self.schedule_runs.labels(schedule_id=schedule_id, state=state).inc()

    def record_webhook_delivery(
        self, webhook_id: str, status: str, duration_s: float | None
    ) -> None:
        """One delivery attempt; ``duration_s`` is None when no request was sent."""
        self.webhook_deliveries.labels(webhook_id=webhook_id, status=status).inc()
        if duration_s is not None:
            self.webhook_delivery_duration.observe(duration_s)

    # -- library ---------------------------------------------------------------------------

    def record_library_initialization(self) -> None:
        self.library_initializations.inc()

    def record_task_function_registration(self) -> None:
        self.task_function_registrations.inc()
