"""The vault key over the SQLite settings store: the per-installation salt."""

from __future__ import annotations

from pathlib import Path

from task_framework.services.crypto import (
    SALT_SETTING,
    encryptor_on,
    installation_salt,
    load_encryptor,
)
from task_framework.store.base import Tx
from task_framework.store.database import Database
from task_framework.store.sql import SqlSettingsStore


async def test_the_salt_is_created_once_and_kept(sqlite_db: Database) -> None:
    store = SqlSettingsStore(sqlite_db)
    assert await store.get(SALT_SETTING) is None
    salt = await installation_salt(store)
    assert len(salt) == 16
    assert await installation_salt(store) == salt


async def test_a_passphrase_gives_the_same_key_at_startup_and_in_a_migration(
    sqlite_db: Database, tmp_path: Path
) -> None:
    store = SqlSettingsStore(sqlite_db)
    started = await load_encryptor(
        store, sqlite=True, encryption_key="a passphrase", data_dir=tmp_path
    )

    def in_migration(tx: Tx) -> str:
        box = encryptor_on(tx, store, sqlite=True, encryption_key="a passphrase", data_dir=tmp_path)
        return box.decrypt(started.encrypt("secret"))

    assert await sqlite_db.tx(in_migration) == "secret"


async def test_without_a_key_sqlite_uses_the_key_file(sqlite_db: Database, tmp_path: Path) -> None:
    store = SqlSettingsStore(sqlite_db)
    first = await load_encryptor(store, sqlite=True, encryption_key=None, data_dir=tmp_path)
    again = await load_encryptor(store, sqlite=True, encryption_key=None, data_dir=tmp_path)
    assert again.decrypt(first.encrypt("x")) == "x"
    assert await store.get(SALT_SETTING) is None  # no passphrase: no salt
