"""Pre-signed file URLs for local storage (API.md §8.3).

``signature`` = hex HMAC-SHA256 over ``"<METHOD>\\n<file_ref>\\n<expires>"``
(``storage/signing.py``, which local storage imports). Keys come from
``TASK_FRAMEWORK_URL_SIGNING_KEY`` (comma-separated: the first signs, all verify, so a
secret can be rotated without breaking issued URLs) or, when unset, from one key generated
once and stored in the ``settings`` table, sealed with the vault key, shared by every
replica. Signed URLs carry an
optional ``kid`` (key id) naming the key that signed them; URLs without it are checked
against every key. All comparisons are constant-time.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time

from task_framework.errors import AuthForbidden, ServiceUnavailable
from task_framework.models._time import utcnow
from task_framework.services.crypto import DecryptionFailed, SecretBox
from task_framework.storage.signing import SignedParams, key_id, signature_for
from task_framework.store.settings import SettingRecord, SettingsStore

SIGNING_KEY_SETTING = "url_signing_key"
GENERATED_KEY_BYTES = 32
MAX_EXPIRES_DIGITS = 12


class UrlSigner:
    """Signs and verifies method-bound, expiring file URLs."""

    def __init__(
        self,
        store: SettingsStore | None = None,
        *,
        configured_keys: list[str] | None = None,
        secret_box: SecretBox | None = None,
    ) -> None:
        """``store`` keeps the generated key and ``secret_box`` seals it: both are needed
        only without configured keys."""
        self._store = store
        self._configured = [k.encode() for k in (configured_keys or []) if k]
        self._secrets = secret_box
        self._keys: list[tuple[str, bytes]] | None = None
        self._lock = asyncio.Lock()

    async def _load(self) -> list[tuple[str, bytes]]:
        if self._keys is not None:
            return self._keys
        async with self._lock:
            if self._keys is None:
                secrets_ = self._configured or [await self._stored_key()]
                self._keys = [(key_id(s), s) for s in secrets_]
        return self._keys

    async def _stored_key(self) -> bytes:
        box, store = self._secrets, self._store
        if box is None or store is None:
            raise RuntimeError("a stored URL-signing key needs the settings store and SecretBox")
        record = await store.get(SIGNING_KEY_SETTING)
        found = None if record is None else str(record.value)
        if found is None:
            sealed = box.seal(secrets.token_hex(GENERATED_KEY_BYTES))
            # Another replica may have stored its key first: then everyone uses that one.
            found = str(
                await store.setdefault(SettingRecord(SIGNING_KEY_SETTING, sealed, utcnow()))
            )
        try:
            return box.unseal(found).encode()
        except DecryptionFailed as exc:
            raise ServiceUnavailable(
                "The stored URL-signing key cannot be decrypted with the configured "
                "ENCRYPTION_KEY (list the previous key too, or set URL_SIGNING_KEY)"
            ) from exc

    async def sign(self, method: str, file_ref: str, *, expires_in: int) -> SignedParams:
        kid, secret = (await self._load())[0]
        expires = int(time.time()) + expires_in
        return SignedParams(expires, signature_for(secret, method, file_ref, expires), kid)

    async def verify(
        self,
        method: str,
        file_ref: str,
        *,
        expires: str | None,
        signature: str,
        kid: str | None = None,
    ) -> None:
        """Return when the URL grants ``method`` on ``file_ref`` now; 403 otherwise.

        A forged or mismatched signature is reported before expiry, so an attacker learns
        nothing from tampering with ``expires``. HEAD is granted by a GET signature.
        """
        signed_method = "GET" if method == "HEAD" else method
        invalid = AuthForbidden("The pre-signed URL signature is invalid", code="SIGNATURE_INVALID")
        if (
            expires is None
            or not (expires.isascii() and expires.isdigit())
            or len(expires) > MAX_EXPIRES_DIGITS
        ):
            raise invalid
        # compare_digest refuses non-ASCII text; such values can never be valid anyway.
        if not (signature.isascii() and (kid is None or kid.isascii())):
            raise invalid
        candidates = [
            secret for k, secret in await self._load() if kid is None or hmac.compare_digest(k, kid)
        ]
        ok = False
        for secret in candidates:
            expected = signature_for(secret, signed_method, file_ref, int(expires))
            ok |= hmac.compare_digest(expected, signature.lower())
        if not ok:
            raise invalid
        if int(expires) < time.time():
            code = "FILE_UPLOAD_EXPIRED" if signed_method == "PUT" else "FILE_DOWNLOAD_EXPIRED"
            raise AuthForbidden("The pre-signed URL has expired", code=code)


__all__ = [
    "GENERATED_KEY_BYTES",
    "SIGNING_KEY_SETTING",
    "SignedParams",
    "UrlSigner",
    "key_id",
    "signature_for",
]
