"""Contract of :class:`task_framework.store.credentials.VaultStore`, over SQLite and
PostgreSQL. Values are opaque strings here: sealing them is the services' business."""

from __future__ import annotations

from datetime import timedelta

import pytest

from task_framework.models._time import utcnow
from task_framework.store.credentials import (
    CredentialChange,
    CredentialRecord,
    TaskConfigRecord,
    VaultStore,
)
from task_framework.store.database import Database
from task_framework.store.errors import RecordNotFound, UniqueViolation
from task_framework.store.sql import SqlVaultStore


@pytest.fixture
def store(store_db: Database) -> VaultStore:
    return SqlVaultStore(store_db)


def _credential(name: str, **fields: object) -> CredentialRecord:
    now = utcnow()
    values: dict[str, object] = {
        "name": name,
        "value": f"sealed-{name}",
        "description": "",
        "tags": (),
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    return CredentialRecord(**values)  # type: ignore[arg-type]


def _refs(token: str) -> list[str]:
    """Test configurations are ``refs:a,b``: the credential names they refer to."""
    return [name for name in token.removeprefix("refs:").split(",") if name]


async def test_add_get_and_list_credentials(store: VaultStore) -> None:
    expires = utcnow() + timedelta(days=1)
    b = _credential("b", description="bee", tags=("x", "y"), expires_at=expires)
    assert await store.add_credential(b) == b
    a = await store.add_credential(_credential("a"))
    assert await store.get_credential("b") == b
    assert await store.list_credentials() == [a, b]
    with pytest.raises(RecordNotFound):
        await store.get_credential("c")


async def test_a_duplicate_name_is_a_unique_violation(store: VaultStore) -> None:
    await store.add_credential(_credential("a"))
    with pytest.raises(UniqueViolation):
        await store.add_credential(_credential("a", value="other"))
    assert (await store.get_credential("a")).value == "sealed-a"


async def test_update_changes_only_what_it_names(store: VaultStore) -> None:
    stored = await store.add_credential(_credential("a", description="d", tags=("t",)))
    at = stored.updated_at + timedelta(minutes=1)
    touched = await store.update_credential("a", CredentialChange(), at)
    assert touched == CredentialRecord(
        "a", "sealed-a", "d", ("t",), stored.created_at, at, stored.expires_at
    )
    expires = at + timedelta(days=1)
    changed = await store.update_credential(
        "a", CredentialChange(value="new", description="e", tags=(), expires_at=expires), at
    )
    assert (changed.value, changed.description, changed.tags, changed.expires_at) == (
        "new",
        "e",
        (),
        expires,
    )
    assert await store.get_credential("a") == changed
    with pytest.raises(RecordNotFound):
        await store.update_credential("b", CredentialChange(value="v"), at)
    assert [c.name for c in await store.list_credentials()] == ["a"]


async def test_delete_credential(store: VaultStore) -> None:
    await store.add_credential(_credential("a"))
    await store.delete_credential("a")
    with pytest.raises(RecordNotFound):
        await store.get_credential("a")
    with pytest.raises(RecordNotFound):
        await store.delete_credential("a")


async def test_put_config_creates_replaces_and_returns_the_referenced_credentials(
    store: VaultStore,
) -> None:
    a = await store.add_credential(_credential("a"))
    b = await store.add_credential(_credential("b"))
    first = TaskConfigRecord("t", "1.0", "refs:a", utcnow())
    assert await store.put_config(first, references=["a"]) == {"a": a}
    assert await store.config("t", "1.0", references=_refs) == (first, {"a": a})
    second = TaskConfigRecord("t", "1.0", "refs:a,b", utcnow() + timedelta(1))
    assert await store.put_config(second, references={"a", "b"}) == {"a": a, "b": b}
    assert await store.config("t", "1.0", references=_refs) == (second, {"a": a, "b": b})
    assert await store.config("t", "2.0", references=_refs) == (None, {})


async def test_put_config_with_missing_credentials_writes_nothing(store: VaultStore) -> None:
    await store.add_credential(_credential("a"))
    with pytest.raises(RecordNotFound) as caught:
        await store.put_config(
            TaskConfigRecord("t", "1.0", "refs:z,a,m", utcnow()), references=["z", "a", "m"]
        )
    assert caught.value.missing == ("m", "z")
    assert await store.config("t", "1.0", references=_refs) == (None, {})


async def test_config_returns_only_credentials_that_exist(store: VaultStore) -> None:
    a = await store.add_credential(_credential("a"))
    await store.add_credential(_credential("b"))
    await store.put_config(TaskConfigRecord("t", "1", "refs:a,b", utcnow()), references=["a", "b"])
    await store.delete_credential("b")  # configurations may outlive their credentials
    config, found = await store.config("t", "1", references=_refs)
    assert config is not None
    assert found == {"a": a}


async def test_what_references_raises_propagates(store: VaultStore) -> None:
    await store.put_config(TaskConfigRecord("t", "1", "refs:", utcnow()), references=[])

    def undecodable(token: str) -> list[str]:
        raise ValueError(token)

    with pytest.raises(ValueError, match="refs:"):
        await store.config("t", "1", references=undecodable)


async def test_credential_and_configs(store: VaultStore) -> None:
    a = await store.add_credential(_credential("a"))
    one = TaskConfigRecord("t", "1", "refs:a", utcnow())
    two = TaskConfigRecord("s", "2", "refs:", utcnow())
    await store.put_config(one, references=["a"])
    await store.put_config(two, references=[])
    found, configs = await store.credential_and_configs("a")
    assert found == a
    assert sorted(configs, key=lambda c: c.task_id) == [two, one]
    with pytest.raises(RecordNotFound):
        await store.credential_and_configs("b")


async def test_delete_config(store: VaultStore) -> None:
    await store.put_config(TaskConfigRecord("t", "1", "refs:", utcnow()), references=[])
    await store.delete_config("t", "1")
    assert await store.config("t", "1", references=_refs) == (None, {})
    with pytest.raises(RecordNotFound):
        await store.delete_config("t", "1")
