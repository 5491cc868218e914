"""task deployments: packages, deployed versions, deployment history

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import task_framework.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_packages",
        sa.Column("zip_hash", sa.String(length=80), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("zip_hash", name=op.f("pk_task_packages")),
    )
    op.create_table(
        "task_versions",
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=False),
        sa.Column("zip_hash", sa.String(length=80), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column(
            "deployed_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("task_id", "version", name=op.f("pk_task_versions")),
    )
    op.create_table(
        "task_deployments",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=False),
        sa.Column("zip_hash", sa.String(length=80), nullable=True),
        sa.Column("zip_path", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "deployed_at", task_framework.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_deployments")),
    )
    with op.batch_alter_table("task_deployments", schema=None) as batch_op:
        batch_op.create_index("ix_task_deployments_deployed", ["deployed_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_task_deployments_deployed")
    op.drop_table("task_deployments")
    op.drop_table("task_versions")
    op.drop_table("task_packages")
