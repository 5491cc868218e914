"""UrlSigner over the SQLite settings store: the generated key, sealed and shared."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from task_framework.errors import AuthForbidden, ServiceUnavailable
from task_framework.services.crypto import Encryptor, SecretBox
from task_framework.services.url_signing import SIGNING_KEY_SETTING, UrlSigner
from task_framework.store.database import Database
from task_framework.store.sql import SqlSettingsStore


def _box(key: bytes) -> SecretBox:
    box = SecretBox()
    box.open(Encryptor([key]))
    return box


async def test_the_generated_key_is_stored_sealed_and_shared(sqlite_db: Database) -> None:
    store, key = SqlSettingsStore(sqlite_db), Fernet.generate_key()
    first = UrlSigner(store, secret_box=_box(key))
    signed = await first.sign("GET", "file_1", expires_in=60)
    stored = await store.get(SIGNING_KEY_SETTING)
    assert stored is not None
    assert len(_box(key).unseal(str(stored.value))) == 64  # hex of 32 bytes, sealed
    # Another replica on the same records verifies what the first signed.
    second = UrlSigner(store, secret_box=_box(key))
    await second.verify(
        "GET", "file_1", expires=str(signed.expires), signature=signed.signature, kid=signed.kid
    )
    with pytest.raises(AuthForbidden):
        await second.verify(
            "PUT", "file_1", expires=str(signed.expires), signature=signed.signature
        )


async def test_a_stored_key_under_another_vault_key_is_unavailable(sqlite_db: Database) -> None:
    store = SqlSettingsStore(sqlite_db)
    await UrlSigner(store, secret_box=_box(Fernet.generate_key())).sign("GET", "f", expires_in=1)
    other = UrlSigner(store, secret_box=_box(Fernet.generate_key()))
    with pytest.raises(ServiceUnavailable):
        await other.sign("GET", "f", expires_in=1)


async def test_configured_keys_need_no_store() -> None:
    signer = UrlSigner(configured_keys=["k1"])
    signed = await signer.sign("GET", "f", expires_in=60)
    rotated = UrlSigner(configured_keys=["k2", "k1"])
    await rotated.verify("GET", "f", expires=str(signed.expires), signature=signed.signature)
