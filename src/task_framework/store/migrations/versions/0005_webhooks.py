"""webhooks and webhook deliveries

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import task_framework.store.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _ts(name: str, *, nullable: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, task_framework.store.tables.UTCDateTime(timezone=True), nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=16), nullable=True),
        sa.Column("events", _JSON, nullable=True),
        sa.Column("data_filters", _JSON, nullable=True),
        sa.Column("scope", _JSON, nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=True),
        sa.Column("task_id", sa.String(length=255), nullable=True),
        sa.Column("task_version", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("thread_id", sa.String(length=160), nullable=True),
        sa.Column("schedule_id", sa.String(length=160), nullable=True),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("metadata", _JSON, nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("first_failure_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.create_index("ix_webhooks_created", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_webhooks_owner_created", ["app_id", "user_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_webhooks_thread", ["thread_id"], unique=False)
        batch_op.create_index("ix_webhooks_schedule", ["schedule_id"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("webhook_id", sa.String(length=160), nullable=False),
        sa.Column("event_id", sa.String(length=160), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_payload", _JSON, nullable=False),
        sa.Column("thread_id", sa.String(length=160), nullable=True),
        sa.Column("run_id", sa.String(length=160), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _ts("timestamp", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_time_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("delivery_url", sa.Text(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        _ts("lease_expires_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "webhook_id", "event_id", "attempt", name="uq_webhook_deliveries_attempt"
        ),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_webhook_ts", ["webhook_id", "timestamp", "id"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
