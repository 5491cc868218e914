"""Alembic migrations, applied programmatically at ``serve`` start or by ``migrate``.

Replicas starting together on one PostgreSQL database take an advisory lock, so exactly
one of them migrates and the others find the schema current.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x7466_6D67  # pg_advisory_lock key held while migrating


def alembic_config(engine: Engine, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    # Alembic narrates every plugin it loads at INFO; only problems are worth a log line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), revision)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            command.upgrade(alembic_config(engine, conn), revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
