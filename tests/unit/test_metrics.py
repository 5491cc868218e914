"""The Prometheus vocabulary of API.md §13, as exposed by ``Metrics.render()``."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from task_framework.observability.metrics import CONTENT_TYPE, Metrics

# (exposed family name, type, label names), straight from the API.md §13 table.
API_TABLE = [
    ("task_framework_threads_total", "counter", {"state"}),
    ("task_framework_threads_current", "gauge", {"state"}),
    ("task_framework_thread_execution_duration_seconds", "histogram", set()),
    ("task_framework_api_requests_total", "counter", {"method", "endpoint", "status"}),
    ("task_framework_api_request_duration_seconds", "histogram", {"method", "endpoint", "status"}),
    ("task_framework_artifacts_created_total", "counter", {"kind"}),
    ("task_framework_artifacts_deleted_total", "counter", set()),
    ("task_framework_artifacts_archived_total", "counter", set()),
    ("task_framework_file_uploads_total", "counter", set()),
    ("task_framework_file_downloads_total", "counter", set()),
    ("task_framework_file_upload_duration_seconds", "histogram", set()),
    ("task_framework_file_download_duration_seconds", "histogram", set()),
    ("task_framework_files_total", "gauge", set()),
    ("task_framework_files_total_bytes", "gauge", set()),
    ("task_framework_schedule_runs_total", "counter", {"schedule_id", "state"}),
    ("task_framework_schedules_active", "gauge", set()),
    ("task_framework_webhook_deliveries_total", "counter", {"webhook_id", "status"}),
    ("task_framework_webhook_delivery_duration_seconds", "histogram", set()),
    ("task_framework_webhook_deliveries_pending", "gauge", set()),
    ("task_framework_workers_active", "gauge", set()),
    ("task_framework_workers_idle", "gauge", set()),
    ("task_framework_metadata_requests_total", "counter", {"status"}),
    ("task_framework_metadata_response_duration_seconds", "histogram", set()),
    ("task_framework_library_initializations_total", "counter", set()),
    ("task_framework_task_function_registrations_total", "counter", set()),
]
EXTRAS = [
    ("task_framework_queue_depth", "gauge", set()),
    ("task_framework_queue_oldest_age_seconds", "gauge", set()),
    ("task_framework_thread_duration_by_task_seconds", "histogram", {"task_id", "state"}),
    ("task_framework_threads_finished_total", "counter", {"task_id", "state"}),
    ("task_framework_worker_starts_total", "counter", set()),
    ("task_framework_worker_crashes_total", "counter", set()),
    ("task_framework_env_builds_total", "counter", {"outcome"}),
    ("task_framework_env_build_duration_seconds", "histogram", set()),
]


def _record_everything(metrics: Metrics) -> None:
    metrics.record_thread_state("queued")
    metrics.record_thread_finished("echo", "succeeded", 2.0)
    metrics.record_request("GET", "/threads/{thread_id}", 200, 0.02, timed=True)
    metrics.record_metadata_request(200, 0.004)
    metrics.set_cluster_gauges(
        {"queued": 3, "running": 1},
        queue_depth=3,
        oldest_age_s=12.5,
        files=7,
        file_bytes=2048,
        schedules_active=2,
        deliveries_pending=4,
    )
    metrics.set_workers(active=2, idle=1)
    metrics.record_worker_start()
    metrics.record_worker_crash()
    metrics.record_env_build("built", 42.0)
    metrics.record_artifact_created("text")
    metrics.record_artifacts_deleted()
    metrics.record_artifacts_archived(2)
    metrics.record_file_upload(3.0)
    metrics.record_file_download(0.3)
    metrics.record_schedule_run("schedule_abc", "succeeded")
    metrics.record_webhook_delivery("webhook_abc", "success", 0.2)
    metrics.record_library_initialization()
    metrics.record_task_function_registration()


def _families(metrics: Metrics) -> dict[str, tuple[str, set[str], set[str]]]:
    """Exposed name -> (type, label names, sample names)."""
    body, _ = metrics.render()
    out: dict[str, tuple[str, set[str], set[str]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {key for s in family.samples for key in s.labels if key != "le"}
        out[name] = (family.type, labels, {s.name for s in family.samples})
    return out


@pytest.mark.parametrize(("name", "kind", "labels"), API_TABLE + EXTRAS)
def test_every_collector_is_exposed_with_its_type_and_labels(
    name: str, kind: str, labels: set[str]
) -> None:
    metrics = Metrics()
    _record_everything(metrics)

    families = _families(metrics)

    assert name in families
    assert families[name][0] == kind
    assert families[name][1] == labels


def test_counters_expose_exactly_the_listed_names() -> None:
    metrics = Metrics()
    _record_everything(metrics)
    body = metrics.render()[0].decode()

    sample_names = {
        line.split("{")[0].split(" ")[0] for line in body.splitlines() if line[:1] != "#"
    }

    assert "task_framework_threads_total" in sample_names
    assert "task_framework_threads_total_total" not in sample_names
    assert not [name for name in sample_names if name.endswith("_created")]


def test_render_returns_prometheus_text_content_type() -> None:
    body, content_type = Metrics().render()

    assert content_type == "text/plain; version=0.0.4; charset=utf-8" == CONTENT_TYPE
    assert isinstance(body, bytes)


def test_label_values_and_counts() -> None:
    metrics = Metrics()
    metrics.record_request("POST", "/threads", 201, 0.01, timed=True)
    metrics.record_request("POST", "/threads", 201, 0.01, timed=True)
    metrics.record_request("GET", "/health", 200, 0.01, timed=False)
    metrics.record_artifact_created("file")
    get = metrics.registry.get_sample_value

    assert (
        get(
            "task_framework_api_requests_total",
            {"method": "POST", "endpoint": "/threads", "status": "201"},
        )
        == 2
    )
    assert (
        get(
            "task_framework_api_request_duration_seconds_count",
            {"method": "POST", "endpoint": "/threads", "status": "201"},
        )
        == 2
    )
    assert (
        get(
            "task_framework_api_requests_total",
            {"method": "GET", "endpoint": "/health", "status": "200"},
        )
        == 1
    )
    assert (
        get(
            "task_framework_api_request_duration_seconds_count",
            {"method": "GET", "endpoint": "/health", "status": "200"},
        )
        is None
    )
    assert get("task_framework_artifacts_created_total", {"kind": "file"}) == 1


def test_histogram_buckets_match_the_contract() -> None:
    metrics = Metrics()
    metrics.record_thread_finished("echo", "failed", 0.2)
    metrics.record_request("GET", "/x", 200, 0.2, timed=True)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render()[0].decode())}

    def bounds(name: str) -> list[float]:
        return [
            float(s.labels["le"])
            for s in families[name].samples
            if s.name.endswith("_bucket") and s.labels.get("state", "failed") == "failed"
        ]

    assert bounds("task_framework_thread_execution_duration_seconds") == [
        0.1,
        0.5,
        1,
        5,
        10,
        30,
        60,
        300,
        600,
        1800,
        float("inf"),
    ]
    assert bounds("task_framework_thread_duration_by_task_seconds") == bounds(
        "task_framework_thread_execution_duration_seconds"
    )
    assert bounds("task_framework_api_request_duration_seconds") == [
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        float("inf"),
    ]


def test_thread_finished_without_duration_only_counts() -> None:
    metrics = Metrics()
    metrics.record_thread_finished("echo", "stopped", None)
    get = metrics.registry.get_sample_value

    assert (
        get("task_framework_threads_finished_total", {"task_id": "echo", "state": "stopped"}) == 1
    )
    assert get("task_framework_thread_execution_duration_seconds_count") == 0


def test_cluster_gauges_reset_states_that_disappeared() -> None:
    metrics = Metrics()
    for states in ({"queued": 3, "running": 1}, {"running": 2}):
        metrics.set_cluster_gauges(
            states,
            queue_depth=0,
            oldest_age_s=0.0,
            files=0,
            file_bytes=0,
            schedules_active=0,
            deliveries_pending=0,
        )
    get = metrics.registry.get_sample_value

    assert get("task_framework_threads_current", {"state": "queued"}) == 0
    assert get("task_framework_threads_current", {"state": "running"}) == 2


def test_instances_have_separate_registries_and_leave_the_global_one_alone() -> None:
    first, second = Metrics(), Metrics()
    first.record_worker_start()

    assert first.registry.get_sample_value("task_framework_worker_starts_total") == 1
    assert second.registry.get_sample_value("task_framework_worker_starts_total") == 0
    assert prometheus_client.REGISTRY.get_sample_value("task_framework_worker_starts_total") is None
