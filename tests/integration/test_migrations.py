"""The Alembic migrations build exactly the schema that ``store/tables.py`` declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from task_framework.store.database import Database
from task_framework.store.tables import metadata


def test_migrations_match_the_declared_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        db.migrate()  # idempotent: a second start finds the schema current
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []
    finally:
        db.engine.dispose()
