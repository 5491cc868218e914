"""credentials (vault) and task configuration

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import task_framework.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_credentials")),
    )
    op.create_table(
        "task_configs",
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=False),
        sa.Column("config_values", sa.Text(), nullable=False),
        sa.Column(
            "updated_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("task_id", "version", name=op.f("pk_task_configs")),
    )


def downgrade() -> None:
    op.drop_table("task_configs")
    op.drop_table("credentials")
