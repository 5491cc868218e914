"""Alembic environment: runs against the engine handed over by ``store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from task_framework.store.tables import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("run migrations through task_framework.store.migrate")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
