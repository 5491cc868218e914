"""CredentialService over the SQLite vault store: sealing, previews and the PUT rules."""

from __future__ import annotations

from datetime import datetime

import pytest
from cryptography.fernet import Fernet

from task_framework.errors import NotFound, ValidationFailed
from task_framework.services.credentials import CredentialService, CredentialUpdate
from task_framework.services.crypto import Encryptor
from task_framework.store.credentials import CredentialChange, CredentialRecord
from task_framework.store.database import Database
from task_framework.store.sql import SqlVaultStore


@pytest.fixture
def vault(sqlite_db: Database) -> SqlVaultStore:
    return SqlVaultStore(sqlite_db)


@pytest.fixture
def service(vault: SqlVaultStore) -> CredentialService:
    credentials = CredentialService(vault)
    credentials.encryptor = Encryptor([Fernet.generate_key()])
    return credentials


async def test_values_are_sealed_and_only_revealed_on_request(
    vault: SqlVaultStore, service: CredentialService
) -> None:
    shown = await service.put("token", CredentialUpdate(value="s3cret-value", tags=["x"]))
    assert (shown["has_value"], shown["value_preview"], shown["tags"]) == (True, "••••alue", ["x"])
    stored = await vault.get_credential("token")
    assert "s3cret" not in stored.value
    assert (await service.reveal("token", revealed_by="admin"))["value"] == "s3cret-value"


async def test_put_updates_and_keeps_what_it_does_not_name(service: CredentialService) -> None:
    with pytest.raises(ValidationFailed, match="required for new credentials"):
        await service.put("token", CredentialUpdate(description="no value"))
    await service.put("token", CredentialUpdate(value="one", description="first", tags=["a"]))
    shown = await service.put("token", CredentialUpdate(description=""))
    assert (shown["description"], shown["tags"]) == ("first", ["a"])
    await service.delete("token")
    with pytest.raises(NotFound) as gone:
        await service.get("token")
    assert gone.value.code == "CREDENTIAL_NOT_FOUND"


class _LosesTheRace(SqlVaultStore):
    """A vault where another PUT creates the credential just after this one looked."""

    async def update_credential(
        self, name: str, change: CredentialChange, at: datetime
    ) -> CredentialRecord:
        if not [c for c in await self.list_credentials() if c.name == name]:
            assert change.value is not None
            await self.add_credential(CredentialRecord(name, change.value, "theirs", (), at, at))
            return await super().update_credential("absent-" + name, change, at)
        return await super().update_credential(name, change, at)


async def test_a_put_that_loses_a_create_race_becomes_an_update(sqlite_db: Database) -> None:
    service = CredentialService(_LosesTheRace(sqlite_db))
    service.encryptor = Encryptor([Fernet.generate_key()])
    shown = await service.put("token", CredentialUpdate(value="mine", description="mine"))
    assert shown["description"] == "mine"
    assert (await service.reveal("token", revealed_by="admin"))["value"] == "mine"
