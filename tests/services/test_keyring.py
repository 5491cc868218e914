"""KeyRing over the SQLite key store: managed keys from creation to revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from task_framework.errors import AuthForbidden, AuthInvalid, NotFound
from task_framework.models._time import utcnow
from task_framework.services.auth import KeyRing, hash_key
from task_framework.store.database import Database
from task_framework.store.keys import KeyFilter
from task_framework.store.pages import PageRequest
from task_framework.store.sql import SqlKeyStore


@pytest.fixture
def ring(sqlite_db: Database) -> KeyRing:
    return KeyRing(SqlKeyStore(sqlite_db), api_keys=[], admin_api_keys=[])


async def test_a_created_key_authenticates_until_revoked(ring: KeyRing) -> None:
    created = await ring.create_key(name="ci", role="user", app_id="a", user_id="u")
    assert created["prefix"] == created["key"][:12]
    who = await ring.authenticate(api_key=created["key"], admin_key=None, app_id=None, user_id=None)
    assert (who.app_id, who.user_id, who.key_id, who.is_admin) == ("a", "u", created["id"], False)
    with pytest.raises(AuthForbidden):
        await ring.authenticate(api_key=created["key"], admin_key=None, app_id="b", user_id=None)
    await ring.revoke_key(created["id"])
    assert not await ring.is_active(created["key"])
    with pytest.raises(AuthInvalid):
        await ring.authenticate(api_key=created["key"], admin_key=None, app_id=None, user_id=None)
    with pytest.raises(NotFound) as unknown:
        await ring.revoke_key("apikey_unknown")
    assert unknown.value.code == "API_KEY_NOT_FOUND"


async def test_expired_keys_and_admin_counts(ring: KeyRing) -> None:
    expired = await ring.create_key(name="old", role="admin", expires_at=utcnow())
    assert not await ring.is_active(expired["key"])
    assert await ring.count_active_admin_keys() == 0
    admin = await ring.create_key(
        name="admin", role="admin", expires_at=utcnow() + timedelta(hours=1)
    )
    assert await ring.count_active_admin_keys() == 1
    who = await ring.authenticate(
        api_key=None, admin_key=admin["key"], app_id=None, user_id=None, admin_only=True
    )
    assert who.is_admin


async def test_use_is_recorded_and_listing_hides_revoked_keys(
    sqlite_db: Database, ring: KeyRing
) -> None:
    kept = await ring.create_key(name="kept", role="user", app_id="a", user_id="u")
    gone = await ring.create_key(name="gone", role="user", app_id="a", user_id="u")
    await ring.revoke_key(gone["id"])
    assert await ring.is_active(kept["key"])
    stored = await SqlKeyStore(sqlite_db).find_by_hash(hash_key(kept["key"]))
    assert stored is not None
    assert stored.last_used_at is not None
    page, items = await ring.list_keys(
        role=None, app_id=None, user_id=None, include_revoked=False, page=PageRequest()
    )
    assert [i["name"] for i in items] == ["kept"]
    assert page.total == 1
    assert "key" not in items[0]
    listed = await SqlKeyStore(sqlite_db).list(KeyFilter(include_revoked=True), PageRequest())
    assert {r.name for r in listed.rows} == {"kept", "gone"}
