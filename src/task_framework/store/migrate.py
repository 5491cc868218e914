"""Alembic migrations, applied programmatically at ``serve`` start or by ``migrate``.

Replicas starting together on one PostgreSQL database take an advisory lock, so exactly
one of them migrates and the others find the schema current.

A migration that rewrites secrets (``0007_secrets`` seals them with the vault key) needs
the key: callers pass a ``cipher`` factory, which such a migration calls with its own
connection only when there is something to rewrite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x7466_6D67  # pg_advisory_lock key held while migrating
CIPHER_ATTRIBUTE = "cipher"


class Cipher(Protocol):
    """What a migration needs of the vault key (``services.crypto.Encryptor``)."""

    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, token: str) -> str: ...


CipherFactory = Callable[[Connection], Cipher]


class CipherRequired(RuntimeError):
    """A migration must rewrite secrets, and no encryption key was given to it."""


def alembic_config(
    engine: Engine, connection: Connection | None = None, *, cipher: CipherFactory | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    config.attributes["connection"] = connection
    config.attributes[CIPHER_ATTRIBUTE] = cipher
    return config


def cipher_for(config: Config, conn: Connection) -> Cipher:
    """Inside a migration: the vault key's cipher, or :class:`CipherRequired`."""
    factory: CipherFactory | None = config.attributes.get(CIPHER_ATTRIBUTE)
    if factory is None:
        raise CipherRequired(
            "this migration encrypts stored secrets and needs the encryption key: run "
            "`task-framework migrate` or `serve` with the server's settings"
        )
    return factory(conn)


def upgrade(engine: Engine, revision: str = "head", *, cipher: CipherFactory | None = None) -> None:
    # Alembic narrates every plugin it loads at INFO; only problems are worth a log line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine, cipher=cipher), revision)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            command.upgrade(alembic_config(engine, conn, cipher=cipher), revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
