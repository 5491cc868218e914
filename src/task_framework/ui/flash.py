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

from sqlalchemy import Connection, delete, insert

from task_framework.models._time import utcnow
from task_framework.services.crypto import DecryptionFailed, SecretBox
from task_framework.store.database import Database
from task_framework.store.tables import settings_kv

FLASH_TTL = timedelta(minutes=5)
"""A result not picked up this long after the form is dropped."""
KEY_PREFIX = "ui_flash:"


def _key(session_id: str, kind: str) -> str:
    digest = hashlib.sha256(f"{kind}\0{session_id}".encode()).hexdigest()
    return KEY_PREFIX + digest[:48]  # the key column holds 64 characters


class FlashStore:
    """Results waiting for one page view, keyed by (session id, kind)."""

    def __init__(self, db: Database, box: SecretBox, *, ttl: timedelta = FLASH_TTL) -> None:
        self._db = db
        self._box = box
        self._ttl = ttl

    async def put(self, session_id: str, kind: str, value: dict[str, Any]) -> None:
        key = _key(session_id, kind)
        sealed = self._box.seal(json.dumps(value))

        def _put(conn: Connection) -> None:
            self._prune(conn)
            conn.execute(delete(settings_kv).where(settings_kv.c.key == key))
            conn.execute(
                insert(settings_kv).values(
                    key=key, value={"sealed": sealed}, updated_at=utcnow(), updated_by=None
                )
            )

        await self._db.tx(_put)

    def _prune(self, conn: Connection) -> None:
        """Drop the results nobody came back for."""
        conn.execute(
            delete(settings_kv).where(
                settings_kv.c.key.startswith(KEY_PREFIX, autoescape=True),
                settings_kv.c.updated_at < utcnow() - self._ttl,
            )
        )

    async def pop(self, session_id: str, kind: str) -> dict[str, Any] | None:
        """The result left for this session, once; None when there is none (any more)."""
        key = _key(session_id, kind)

        def _pop(conn: Connection) -> Any:
            self._prune(conn)
            return conn.execute(
                delete(settings_kv)
                .where(settings_kv.c.key == key)
                .returning(settings_kv.c.value, settings_kv.c.updated_at)
            ).first()

        row = await self._db.tx(_pop)
        if row is None or row.updated_at < utcnow() - self._ttl:
            return None
        try:
            found: dict[str, Any] = json.loads(self._box.unseal(row.value["sealed"]))
        except DecryptionFailed:  # sealed under a key rotated away meanwhile
            return None
        return found


__all__ = ["FLASH_TTL", "FlashStore"]
