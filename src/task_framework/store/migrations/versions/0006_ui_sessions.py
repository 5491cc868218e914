"""web UI sessions

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import task_framework.store.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, task_framework.store.tables.UTCDateTime(timezone=True), nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=160), nullable=True),
        sa.Column("key_name", sa.String(length=100), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        _ts("created_at", nullable=False),
        _ts("last_seen_at", nullable=False),
        _ts("expires_at", nullable=False),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ui_sessions")),
    )
    with op.batch_alter_table("ui_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_ui_sessions_expires", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("ui_sessions")
