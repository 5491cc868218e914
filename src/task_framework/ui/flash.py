"""One-time results of a form, kept server-side for the page the form redirects to.

A create form answers with a redirect (post/redirect/get), so reloading the result page
cannot send the form again. What that page must show once, such as a new API key or a
webhook's signing secret, waits here under the session's id and is handed out by the
first read, which deletes it. It is never in a URL or a cookie: it is a row of the
cluster's key/value table, sealed with the server's secret box like every other stored
secret, so the redirected request may reach any replica.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from task_framework.models._time import utcnow
from task_framework.services.crypto import DecryptionFailed, SecretBox
from task_framework.store.settings import Expiry, SettingRecord, SettingsStore

FLASH_TTL = timedelta(minutes=5)
"""A result not picked up this long after the form is dropped."""
KEY_PREFIX = "ui_flash:"


def _key(session_id: str, kind: str) -> str:
    digest = hashlib.sha256(f"{kind}\0{session_id}".encode()).hexdigest()
    return KEY_PREFIX + digest[:48]  # the key column holds 64 characters


class FlashStore:
    """Results waiting for one page view, keyed by (session id, kind)."""

    def __init__(self, store: SettingsStore, box: SecretBox, *, ttl: timedelta = FLASH_TTL) -> None:
        self._store = store
        self._box = box
        self._ttl = ttl

    def _expiry(self) -> Expiry:
        """The results nobody came back for, dropped on every put and pop."""
        return Expiry(KEY_PREFIX, utcnow() - self._ttl)

    async def put(self, session_id: str, kind: str, value: dict[str, Any]) -> None:
        sealed = self._box.seal(json.dumps(value))
        record = SettingRecord(_key(session_id, kind), {"sealed": sealed}, utcnow())
        await self._store.replace(record, expire=self._expiry())

    async def pop(self, session_id: str, kind: str) -> dict[str, Any] | None:
        """The result left for this session, once; None when there is none (any more)."""
        expiry = self._expiry()
        record = await self._store.take(_key(session_id, kind), expire=expiry)
        if record is None or record.updated_at < expiry.before:
            return None
        try:
            found: dict[str, Any] = json.loads(self._box.unseal(record.value["sealed"]))
        except DecryptionFailed:  # sealed under a key rotated away meanwhile
            return None
        return found


__all__ = ["FLASH_TTL", "FlashStore"]
