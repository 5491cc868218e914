"""Alembic environment: runs against the engine (or connection) from ``store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from task_framework.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
engine = context.config.attributes.get("engine")
if isinstance(given, Connection):
    _run(given)
elif isinstance(engine, Engine):
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
else:
    raise RuntimeError("run migrations through task_framework.store.migrate")
