"""API keys and caller identity (API.md §1.5, §11.2).

Every key, configured or managed, is held only as its SHA-256 and compared in constant
time. Managed-key lookups are cached for at most :data:`KEY_CACHE_SECONDS`, so a
revocation reaches every replica within that time. Callers authenticate through
:meth:`KeyRing.authenticate_from`, which holds failed attempts to the limits of
:mod:`task_framework.services.auth_throttle`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from task_framework.errors import (
    AuthForbidden,
    AuthInvalid,
    AuthRateLimited,
    AuthRequired,
    MetadataRequired,
    NotFound,
)
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.services.auth_throttle import AuthThrottle
from task_framework.store.errors import RecordNotFound
from task_framework.store.keys import ApiKeyRecord, KeyFilter, KeyStore
from task_framework.store.pages import Page, PageRequest

KEY_PREFIX = "tfk_"
KEY_CACHE_SECONDS = 1.0
LAST_USED_REFRESH = timedelta(minutes=1)
DISPLAY_PREFIX_CHARS = 12


def generate_key() -> str:
    """``tfk_`` + 43 base64url characters (32 random bytes)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    is_admin: bool
    app_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    key_name: str | None = None

    def owns(self, app_id: str | None, user_id: str | None) -> bool:
        return self.is_admin or (app_id == self.app_id and user_id == self.user_id)

    @property
    def display_name(self) -> str:
        return self.key_name or ("admin" if self.is_admin else "user")


@dataclass(frozen=True, slots=True)
class _KeyRecord:
    key_hash: str
    role: str
    key_id: str | None = None
    name: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    expires_at: datetime | None = None
    revoked: bool = False
    last_used_at: datetime | None = None


def api_key_dict(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "app_id": record.app_id,
        "user_id": record.user_id,
        "prefix": record.prefix,
        "created_at": format_ts(record.created_at),
        "expires_at": format_ts(record.expires_at),
        "last_used_at": format_ts(record.last_used_at),
        "revoked_at": format_ts(record.revoked_at),
    }


class KeyRing:
    """Verifies keys and resolves the caller's identity."""

    def __init__(
        self,
        store: KeyStore,
        *,
        api_keys: list[str],
        admin_api_keys: list[str],
        throttle: AuthThrottle | None = None,
        on_failure: Callable[[str, str], None] = lambda surface, outcome: None,
    ) -> None:
        self._store = store
        self._throttle = throttle if throttle is not None else AuthThrottle(max_failures=0)
        self._on_failure = on_failure
        self._configured: dict[str, _KeyRecord] = {}
        for key in api_keys:
            self._configured[hash_key(key)] = _KeyRecord(hash_key(key), "user")
        for key in admin_api_keys:  # admin wins when a key is listed twice
            self._configured[hash_key(key)] = _KeyRecord(hash_key(key), "admin")
        self._cache: dict[str, tuple[float, _KeyRecord | None]] = {}

    @property
    def has_configured_admin(self) -> bool:
        return any(r.role == "admin" for r in self._configured.values())

    async def _lookup(self, key: str) -> _KeyRecord | None:
        return await self._lookup_digest(hash_key(key))

    async def _lookup_digest(self, digest: str) -> _KeyRecord | None:
        record = self._configured.get(digest)
        if record is not None:
            return record if hmac.compare_digest(record.key_hash, digest) else None
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        stored = await self._store.find_by_hash(digest)
        found = None
        if stored is not None and hmac.compare_digest(stored.key_hash, digest):
            found = _KeyRecord(
                key_hash=stored.key_hash,
                role=stored.role,
                key_id=stored.id,
                name=stored.name,
                app_id=stored.app_id,
                user_id=stored.user_id,
                expires_at=stored.expires_at,
                revoked=stored.revoked_at is not None,
                last_used_at=stored.last_used_at,
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, found)
        return found

    async def _valid(self, key: str) -> _KeyRecord | None:
        return await self._valid_digest(hash_key(key))

    async def _valid_digest(self, digest: str) -> _KeyRecord | None:
        record = await self._lookup_digest(digest)
        if record is None or record.revoked:
            return None
        now = utcnow()
        if record.expires_at is not None and record.expires_at <= now:
            return None
        if record.key_id is not None and (
            record.last_used_at is None or now - record.last_used_at > LAST_USED_REFRESH
        ):
            await self._store.mark_used(record.key_id, now)
            self._cache.pop(record.key_hash, None)
        return record

    async def is_active(self, key: str) -> bool:
        """Whether ``key`` is known, not revoked and not expired."""
        return await self._valid(key) is not None

    async def authenticate(
        self,
        *,
        api_key: str | None,
        admin_key: str | None,
        app_id: str | None,
        user_id: str | None,
        admin_only: bool = False,
    ) -> Principal:
        """The caller for a K route (``admin_only=False``) or an A route."""
        if admin_only:
            key = admin_key or api_key
            if not key:
                raise AuthRequired("Missing admin API key")
            record = await self._valid(key)
            if record is None:
                raise AuthInvalid("Invalid admin API key")
            if record.role != "admin":
                raise AuthForbidden("This route needs an admin API key")
            return Principal(True, app_id, user_id, record.key_id, record.name)
        if not api_key:
            raise AuthRequired("Missing API key")
        record = await self._valid(api_key)
        if record is None:
            raise AuthInvalid("Invalid API key")
        if record.role == "admin":
            return Principal(True, app_id, user_id, record.key_id, record.name)
        for bound, given in ((record.app_id, app_id), (record.user_id, user_id)):
            if bound is not None and given is not None and given != bound:
                raise AuthForbidden("This API key is bound to a different app_id/user_id")
        app_id = app_id if app_id is not None else record.app_id
        user_id = user_id if user_id is not None else record.user_id
        if not app_id or not user_id:
            raise MetadataRequired("user_id and app_id are required (X-User-Id and X-App-Id)")
        return Principal(False, app_id, user_id, record.key_id, record.name)

    async def principal_for_hash(
        self, key_hash: str, *, is_admin: bool, app_id: str | None, user_id: str | None
    ) -> Principal | None:
        """Re-check a key known only by its hash (web UI sessions): the caller it stood
        for when still valid with the same role, else None (revoked, expired, changed)."""
        record = await self._valid_digest(key_hash)
        if record is None or (record.role == "admin") != is_admin:
            return None
        return Principal(is_admin, app_id, user_id, record.key_id, record.name)

    async def authenticate_from(
        self,
        address: str | None,
        *,
        surface: str,
        api_key: str | None,
        admin_key: str | None,
        app_id: str | None,
        user_id: str | None,
        admin_only: bool = False,
    ) -> Principal:
        """:meth:`authenticate` for a caller at client ``address``, through the limits on
        failed attempts: 429 while the address or the key's prefix is limited (checked
        before the key, so a correct key gets 429 too), and an unknown, revoked or expired
        key counts against both. ``surface`` (``api``, ``admin``, ``ui``) labels the metric.
        """
        presented = (admin_key or api_key) if admin_only else api_key
        try:
            self._throttle.check(address, presented)
        except AuthRateLimited:
            self._on_failure(surface, "limited")
            raise
        try:
            return await self.authenticate(
                api_key=api_key,
                admin_key=admin_key,
                app_id=app_id,
                user_id=user_id,
                admin_only=admin_only,
            )
        except AuthInvalid:
            self._throttle.failed(address, presented)
            self._on_failure(surface, "invalid")
            raise

    # -- managed keys -------------------------------------------------------------------

    async def create_key(
        self,
        *,
        name: str,
        role: str,
        app_id: str | None = None,
        user_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> dict[str, Any]:
        key = generate_key()
        stored = await self._store.add(
            ApiKeyRecord(
                id=new_id("apikey"),
                name=name,
                role=role,
                app_id=app_id,
                user_id=user_id,
                key_hash=hash_key(key),
                prefix=key[:DISPLAY_PREFIX_CHARS],
                created_at=utcnow(),
                expires_at=expires_at,
            )
        )
        return {**api_key_dict(stored), "key": key}

    async def list_keys(
        self,
        *,
        role: str | None,
        app_id: str | None,
        user_id: str | None,
        include_revoked: bool,
        page: PageRequest,
    ) -> tuple[Page, list[dict[str, Any]]]:
        result = await self._store.list(
            KeyFilter(role=role, app_id=app_id, user_id=user_id, include_revoked=include_revoked),
            page,
        )
        return result, [api_key_dict(r) for r in result.rows]

    async def get_key(self, key_id: str) -> dict[str, Any]:
        """A managed key as the API shows it (never its secret); 404 when unknown."""
        record = await self._store.get(key_id)
        if record is None:
            raise NotFound(f"API key {key_id} not found", code="API_KEY_NOT_FOUND")
        return api_key_dict(record)

    async def revoke_key(self, key_id: str) -> None:
        try:
            await self._store.revoke(key_id, utcnow())
        except RecordNotFound as exc:
            raise NotFound(f"API key {key_id} not found", code="API_KEY_NOT_FOUND") from exc
        self._cache.clear()

    async def count_active_admin_keys(self) -> int:
        return await self._store.count_active_admins(utcnow())
