"""schedules and schedule runs

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import task_framework.store.tables

revision = "0004"
down_revision = "0003"  # the credentials migration
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TS = task_framework.store.tables.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("cron", sa.String(length=255), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("task_version", sa.String(length=255), nullable=False),
        sa.Column("inputs_template", _JSON, nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("webhooks", _JSON, nullable=True),
        sa.Column("concurrency_policy", sa.String(length=16), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("misfire_policy", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", _TS, nullable=True),
        sa.Column("last_run_at", _TS, nullable=True),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("created_by_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_created", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_schedules_owner_created", ["app_id", "user_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_schedules_state_next", ["state", "next_run_at"], unique=False)

    op.create_table(
        "schedule_runs",
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("schedule_id", sa.String(length=160), nullable=False),
        sa.Column("scheduled_for_utc", _TS, nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("threads", _JSON, nullable=False),
        sa.Column("current_thread_id", sa.String(length=160), nullable=True),
        sa.Column("next_retry_at", _TS, nullable=True),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint("schedule_id", "scheduled_for_utc", name=op.f("uq_schedule_runs_fire")),
    )
    with op.batch_alter_table("schedule_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedule_runs_schedule_time",
            ["schedule_id", "scheduled_for_utc", "run_id"],
            unique=False,
        )
        batch_op.create_index("ix_schedule_runs_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("schedule_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_runs_state")
        batch_op.drop_index("ix_schedule_runs_schedule_time")
    op.drop_table("schedule_runs")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_state_next")
        batch_op.drop_index("ix_schedules_owner_created")
        batch_op.drop_index("ix_schedules_created")
    op.drop_table("schedules")
