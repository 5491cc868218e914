"""Build the app's :class:`~task_framework.observability.tracing.Tracing` from settings.

Kept apart from ``tracing`` so that the interface does not import its implementation:
``otel`` (the ``otel`` extra) implements ``tracing``'s interface and is imported here
only when tracing is enabled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from task_framework.observability.tracing import (
    NO_TRACING,
    Tracing,
    TracingUnavailable,
    install_log_ids,
)

__all__ = ["build_tracing"]


def _env_true(name: str, environ: Mapping[str, str]) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def build_tracing(enabled: bool, *, environ: Mapping[str, str] | None = None) -> Tracing:
    """:data:`NO_TRACING` unless ``enabled`` (and not ``OTEL_SDK_DISABLED=true`` nor
    ``OTEL_TRACES_EXPORTER=none``); else an SDK tracer exporting as the standard
    ``OTEL_*`` variables say. Raises :class:`TracingUnavailable` when the ``otel`` extra
    is missing or the variables ask for something it cannot do."""
    env = os.environ if environ is None else environ
    if not enabled or _env_true("OTEL_SDK_DISABLED", env):
        return NO_TRACING
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return NO_TRACING
    try:
        from task_framework.observability import otel
    except ImportError as exc:
        raise TracingUnavailable(
            "TASK_FRAMEWORK_OTEL_ENABLED is true but OpenTelemetry is not installed: "
            "install the extra, e.g. pip install 'task-framework-py[otel]' "
            f"({exc})"
        ) from exc
    tracing = otel.OtelTracing.from_environment(env)
    install_log_ids(otel.current_ids)
    return tracing
