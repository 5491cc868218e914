"""a thread's trace context, so that whoever claims it continues its trace

``threads.traceparent`` holds the W3C ``traceparent`` of the span that created the thread
(NULL with tracing off). It is never part of the API's thread representation.

Revision ID: 0008_traceparent
Revises: 0007_secrets
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_traceparent"
down_revision = "0007_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("traceparent")
