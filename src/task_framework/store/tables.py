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
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
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
    Column("idempotency_scope", Text, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # Queue lease: who runs it, until when, and a fencing token bumped on every claim.
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    Column("lease_token", BigInteger, nullable=False, default=0),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Index("ix_threads_created", "created_at", "id"),
    Index("ix_threads_owner_created", "app_id", "user_id", "created_at", "id"),
    Index("ix_threads_state_created", "state", "created_at", "id"),
    Index("ix_threads_task_created", "task_id", "created_at", "id"),
    Index("ix_threads_schedule", "schedule_id"),
    Index("ix_threads_run", "run_id"),
    Index("ix_threads_lease", "state", "lease_expires_at"),
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
    Index("ix_artifacts_file_ref", "file_ref"),
    UniqueConstraint("thread_id", "ref", name="uq_artifacts_thread_ref"),
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

# Cluster-wide key/value settings (max_concurrent_threads, URL signing key, ...).
settings_kv = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Name),
)
