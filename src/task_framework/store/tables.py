"""The relational schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Alembic migrations under ``store/migrations`` create exactly this schema; a test compares
the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both dialects (SQLite stores naive ISO text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
ID = String(160)
Name = String(255)


def _when(condition: str) -> dict[str, Any]:
    """A partial index: rows outside ``condition`` cost no index write at all."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


threads = Table(
    "threads",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", Text),
    Column("state", String(16), nullable=False),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("task_id", Name),
    Column("task_version", Name),
    Column("metadata", JSONType, nullable=False),
    Column("params", JSONType, nullable=False),
    Column("error", JSONType),
    Column("problems", JSONType, nullable=False),
    Column("schedule_id", ID),
    Column("run_id", ID),
    Column("attempt", Integer),
    Column("timeout_seconds", Integer),
    Column("created_by_admin", Boolean, nullable=False, default=False),
    Column("adhoc_webhooks", JSONType),
    Column("idempotency_scope", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # Queue lease: who runs it, until when, and a fencing token bumped on every claim.
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    Column("lease_token", BigInteger, nullable=False, default=0),
    Column("stop_requested", Boolean, nullable=False, default=False),
    # W3C traceparent of the span that created the thread (tracing on); never served.
    Column("traceparent", String(64)),
    Index("ix_threads_created", "created_at", "id"),
    Index("ix_threads_owner_created", "app_id", "user_id", "created_at", "id"),
    Index("ix_threads_state_created", "state", "created_at", "id"),
    Index("ix_threads_task_created", "task_id", "created_at", "id"),
    Index("ix_threads_schedule", "schedule_id", **_when("schedule_id IS NOT NULL")),
    Index("ix_threads_run", "run_id", **_when("run_id IS NOT NULL")),
    Index("ix_threads_lease", "lease_expires_at", **_when("state = 'running'")),
    Index(
        "uq_threads_idempotency_scope",
        "idempotency_scope",
        unique=True,
        **_when("idempotency_scope IS NOT NULL"),
    ),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("thread_id", ID),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("task_id", Name),
    Column("task_version", Name),
    Column("direction", String(8)),
    Column("seq", Integer, nullable=False, default=0),
    Column("kind", String(64), nullable=False),
    Column("media_type", Name),
    Column("explain", Text),
    Column("ref", String(255)),
    Column("size", BigInteger),
    Column("sha256", String(64)),
    Column("file_ref", ID),
    Column("url", Text),
    Column("value", JSONType),
    Column("text", Text),
    Column("labels", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("archived", Boolean, nullable=False, default=False),
    Column("archived_at", UTCDateTime),
    Index("ix_artifacts_thread_seq", "thread_id", "seq"),
    Index("ix_artifacts_created", "created_at", "id"),
    Index("ix_artifacts_owner_created", "app_id", "user_id", "created_at", "id"),
    Index("ix_artifacts_file_ref", "file_ref", **_when("file_ref IS NOT NULL")),
    Index("uq_artifacts_thread_ref", "thread_id", "ref", unique=True, **_when("ref IS NOT NULL")),
)

# A thread's inputs in request order: its own new inputs and references to artifacts of
# other threads.
thread_inputs = Table(
    "thread_inputs",
    metadata,
    Column("thread_id", ID, primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("artifact_id", ID, nullable=False),
    Index("ix_thread_inputs_artifact", "artifact_id"),
)

thread_logs = Table(
    "thread_logs",
    metadata,
    Column("thread_id", ID, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("stream", String(8), nullable=False),
    Column("level", String(16)),
    Column("logger", Name),
    Column("message", Text, nullable=False),
)

# The outbox: every event, written in the transaction of the change that caused it.
events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("thread_id", ID),
    Column("schedule_id", ID),
    Column("run_id", ID),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("data", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_events_thread_seq", "thread_id", "seq"),
)

files = Table(
    "files",
    metadata,
    Column("file_ref", ID, primary_key=True),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("filename", Text),
    Column("media_type", Name, nullable=False),
    Column("size", BigInteger),
    Column("declared_size", BigInteger),
    Column("sha256", String(64)),
    Column("complete", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_files_created", "created_at", "file_ref"),
    Index("ix_files_owner_created", "app_id", "user_id", "created_at", "file_ref"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(8), nullable=False),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("source", String(16), nullable=False, default="managed"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Index("ix_api_keys_created", "created_at", "id"),
)

# Cluster-wide key/value settings (max_concurrent_threads, the sealed URL signing key, ...).
settings_kv = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Name),
)

# Task deployments: stored packages (shared by every replica), the deployed versions and
# the deployment history (API.md §10.1, §14).
task_packages = Table(
    "task_packages",
    metadata,
    Column("zip_hash", String(80), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

task_versions = Table(
    "task_versions",
    metadata,
    Column("task_id", Name, primary_key=True),
    Column("version", Name, primary_key=True),
    Column("zip_hash", String(80), nullable=False),
    Column("metadata", JSONType, nullable=False),
    Column("source", String(16), nullable=False),
    Column("deployed_at", UTCDateTime, nullable=False),
)

task_deployments = Table(
    "task_deployments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", Name, nullable=False),
    Column("version", Name, nullable=False),
    Column("zip_hash", String(80)),
    Column("zip_path", Text),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("deployed_at", UTCDateTime, nullable=False),
    Index("ix_task_deployments_deployed", "deployed_at", "id"),
)

# -- credentials and task configuration --
# Values are Fernet tokens (services/crypto.py); names, tags and dates stay readable.
credentials = Table(
    "credentials",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("tags", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
)

# One task version's configuration map, encrypted as a whole (direct values included).
task_configs = Table(
    "task_configs",
    metadata,
    Column("task_id", Name, primary_key=True),
    Column("version", Name, primary_key=True),
    Column("config_values", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# -- webhooks --
# Manual, ad-hoc (source="thread") and schedule webhooks. The secret signs every
# delivery, so it cannot be hashed: it and the api_key are Fernet tokens of the vault key
# (services/crypto.py SecretBox), like threads.adhoc_webhooks[*].api_key. thread_id /
# schedule_id name the parent whose deletion deletes an ad-hoc or schedule webhook.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", String(16)),
    Column("events", JSONType),
    Column("data_filters", JSONType),
    Column("scope", JSONType),
    Column("timeout_seconds", Integer, nullable=False),
    Column("api_key", Text),
    Column("task_id", Name),
    Column("task_version", Name),
    Column("source", String(16), nullable=False),
    Column("thread_id", ID),
    Column("schedule_id", ID),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("created_by", Name),
    Column("metadata", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("first_failure_at", UTCDateTime),
    Index("ix_webhooks_created", "created_at", "id"),
    Index("ix_webhooks_owner_created", "app_id", "user_id", "created_at", "id"),
    Index("ix_webhooks_thread", "thread_id"),
    Index("ix_webhooks_schedule", "schedule_id"),
)

# One row per delivery attempt. A pending row is the durable outbox entry of the next
# attempt: claimed with a lease, due at next_attempt_at. (webhook, event, attempt) is
# unique, so a fan-out or a retry can never queue the same attempt twice.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("webhook_id", ID, nullable=False),
    Column("event_id", ID, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("event_payload", JSONType, nullable=False),
    Column("thread_id", ID),
    Column("run_id", ID),
    Column("attempt", Integer, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_code", Integer),
    Column("response_time_ms", Integer),
    Column("error", Text),
    Column("response_body", Text),
    Column("delivery_url", Text, nullable=False),
    Column("manual", Boolean, nullable=False, default=False),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    UniqueConstraint("webhook_id", "event_id", "attempt", name="uq_webhook_deliveries_attempt"),
    Index("ix_webhook_deliveries_webhook_ts", "webhook_id", "timestamp", "id"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)

# -- schedules --
# A schedule and its runs (API.md §6). next_run_at is the watermark of the next nominal
# fire not yet processed; (schedule_id, scheduled_for_utc) is unique, so however many
# replicas see a fire, exactly one run is recorded for it.
schedules = Table(
    "schedules",
    metadata,
    Column("id", ID, primary_key=True),
    Column("cron", String(255), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("task_id", Name, nullable=False),
    Column("task_version", Name, nullable=False),
    Column("inputs_template", JSONType, nullable=False),
    Column("params", JSONType, nullable=False),
    Column("metadata", JSONType, nullable=False),
    Column("webhooks", JSONType),
    Column("concurrency_policy", String(16), nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("misfire_policy", String(16), nullable=False),
    Column("next_run_at", UTCDateTime),
    Column("last_run_at", UTCDateTime),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("created_by_admin", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_schedules_created", "created_at", "id"),
    Index("ix_schedules_owner_created", "app_id", "user_id", "created_at", "id"),
    Index("ix_schedules_state_next", "state", "next_run_at"),
)

schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("run_id", String(255), primary_key=True),
    Column("schedule_id", ID, nullable=False),
    Column("scheduled_for_utc", UTCDateTime, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("threads", JSONType, nullable=False),
    # The thread of the current attempt, and when the next attempt is due (back-off).
    Column("current_thread_id", ID),
    Column("next_retry_at", UTCDateTime),
    Column("labels", JSONType, nullable=False),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    UniqueConstraint("schedule_id", "scheduled_for_utc", name="uq_schedule_runs_fire"),
    Index("ix_schedule_runs_schedule_time", "schedule_id", "scheduled_for_utc", "run_id"),
    Index("ix_schedule_runs_state", "state"),
)

# -- web UI sessions --
# A signed-in browser (ui/sessions.py). The id is the SHA-256 of the cookie token and the
# key is kept only as its SHA-256, so a database read reveals neither.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False),
    Column("key_id", ID),
    Column("key_name", String(100)),
    Column("is_admin", Boolean, nullable=False),
    Column("app_id", Name),
    Column("user_id", Name),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Index("ix_ui_sessions_expires", "expires_at"),
)
