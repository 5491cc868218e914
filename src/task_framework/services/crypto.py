"""Encryption at rest for credentials, configuration and the secrets kept in records
(API.md §10.3).

``ENCRYPTION_KEY`` is a comma-separated list. Each item is either a Fernet key or a
passphrase, stretched with PBKDF2-HMAC-SHA256 and a per-installation salt kept in the
``settings`` table. The first item encrypts; every item decrypts (rotation). Without a
key, SQLite installations use a generated key file; PostgreSQL refuses to start, because
every replica must share the same key.

Keys are derived once, at startup: PBKDF2 is deliberately slow.

Besides the vault, the records hold secrets the server must read back in clear (webhook
secrets and API keys, the generated URL-signing key): :class:`SecretBox` seals them with
the same key. Rows written before that were sealed by migration ``0007_secrets``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from task_framework.errors import ServiceUnavailable, TaskFrameworkError
from task_framework.hardening import private_file
from task_framework.models._time import utcnow
from task_framework.observability.logging import get_logger
from task_framework.store.base import Tx
from task_framework.store.settings import SettingRecord, SettingsStore

log = get_logger("task_framework.crypto")

KEY_FILE_NAME = "secret.key"
"""Generated key file in ``DATA_DIR`` (SQLite without ``ENCRYPTION_KEY``)."""
KEY_FILE_MODE = 0o600
SALT_SETTING = "encryption_salt"
SALT_BYTES = 16
PBKDF2_ITERATIONS = 480_000
FERNET_KEY_BYTES = 32


class EncryptionKeyError(TaskFrameworkError):
    """The encryption key configuration is unusable; the server does not start."""


class DecryptionFailed(TaskFrameworkError):
    """A stored value was encrypted with a key that is no longer configured."""


class Encryptor:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise EncryptionKeyError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise DecryptionFailed(
                "A stored value cannot be decrypted with the configured ENCRYPTION_KEY"
            ) from exc


def fernet_key(item: str) -> bytes | None:
    """``item`` as a Fernet key, or None when it is a passphrase."""
    try:
        raw = base64.urlsafe_b64decode(item.encode("ascii"))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    # Canonical encodings only: b64decode silently skips characters outside the alphabet.
    if len(raw) != FERNET_KEY_BYTES or base64.urlsafe_b64encode(raw) != item.encode("ascii"):
        return None
    return item.encode("ascii")


def derive_key(passphrase: str, salt: bytes) -> bytes:
    """A Fernet key stretched from a passphrase (slow on purpose)."""
    raw = hashlib.pbkdf2_hmac(
        "sha256", passphrase.encode("utf-8"), salt, PBKDF2_ITERATIONS, dklen=FERNET_KEY_BYTES
    )
    return base64.urlsafe_b64encode(raw)


def _salt_record() -> SettingRecord:
    return SettingRecord(
        SALT_SETTING, base64.b64encode(os.urandom(SALT_BYTES)).decode("ascii"), utcnow()
    )


def _decoded_salt(stored: object) -> bytes:
    try:
        return base64.b64decode(str(stored), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncryptionKeyError(f"setting '{SALT_SETTING}' is corrupt") from exc


def installation_salt_in(store: SettingsStore, tx: Tx) -> bytes:
    """The per-installation salt, read in ``tx``; created by the first replica that needs
    it (concurrent first starts: whoever stores first wins, the others read its salt)."""
    return _decoded_salt(store.setdefault_in(tx, _salt_record()))


async def installation_salt(store: SettingsStore) -> bytes:
    """:func:`installation_salt_in`, in a transaction of its own."""
    return _decoded_salt(await store.setdefault(_salt_record()))


def key_file_key(path: Path) -> tuple[bytes, bool]:
    """The key in ``path``, generating it (mode 0600) if absent. Returns (key, generated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        private_file(path)  # a key file from before 0600 was enforced on existing files
        key = fernet_key(path.read_text(encoding="ascii", errors="replace").strip())
        if key is None:
            raise EncryptionKeyError(f"{path} does not hold a valid Fernet key") from None
        return key, False
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), KEY_FILE_MODE)  # whatever the umask
        handle.write(key + b"\n")
    return key, True


def _split(encryption_key: str | None) -> list[str]:
    return [item.strip() for item in (encryption_key or "").split(",") if item.strip()]


def require_key(*, sqlite: bool, encryption_key: str | None) -> None:
    """Refuse to start a PostgreSQL replica without a shared key (before touching the DB)."""
    if not sqlite and not _split(encryption_key):
        raise EncryptionKeyError(
            "TASK_FRAMEWORK_ENCRYPTION_KEY (or ENCRYPTION_KEY) is required with PostgreSQL: "
            "every replica must use the same key to read credentials. Set it to a Fernet key "
            "or a passphrase."
        )


def encryptor_on(
    tx: Tx,
    store: SettingsStore,
    *,
    sqlite: bool,
    encryption_key: str | None,
    data_dir: Path,
) -> Encryptor:
    """The same encryptor as :func:`load_encryptor`, built in the transaction ``tx``
    (blocking): for a migration, which runs before the services exist."""
    items = _split(encryption_key)
    if not items:
        if not sqlite:
            raise EncryptionKeyError("TASK_FRAMEWORK_ENCRYPTION_KEY is required with PostgreSQL")
        key, _ = key_file_key(data_dir / KEY_FILE_NAME)
        return Encryptor([key])
    parsed = [(item, fernet_key(item)) for item in items]
    salt = installation_salt_in(store, tx) if any(given is None for _, given in parsed) else b""
    return Encryptor(
        [given if given is not None else derive_key(item, salt) for item, given in parsed]
    )


class SecretBox:
    """Seals the secrets kept in records with the vault key. Opened at startup, before
    any request; reads of rows it did not seal fail (migration ``0007_secrets`` sealed
    the older ones)."""

    def __init__(self) -> None:
        self._encryptor: Encryptor | None = None

    def open(self, encryptor: Encryptor) -> None:
        self._encryptor = encryptor

    def _box(self) -> Encryptor:
        if self._encryptor is None:
            raise ServiceUnavailable("Encryption is not initialised yet")
        return self._encryptor

    def seal(self, plaintext: str) -> str:
        return self._box().encrypt(plaintext)

    def unseal(self, token: str) -> str:
        """The plaintext; raises :class:`DecryptionFailed` under another key."""
        return self._box().decrypt(token)


async def load_encryptor(
    store: SettingsStore, *, sqlite: bool, encryption_key: str | None, data_dir: Path
) -> Encryptor:
    """Build the encryptor of this replica (once, at startup)."""
    require_key(sqlite=sqlite, encryption_key=encryption_key)
    items = _split(encryption_key)
    if not items:
        path = data_dir / KEY_FILE_NAME
        key, generated = await asyncio.to_thread(key_file_key, path)
        log.warning(
            "encryption.key_file",
            path=str(path),
            generated=generated,
            message="ENCRYPTION_KEY is not set; credentials are encrypted with the key in "
            "this file. Back it up, or set ENCRYPTION_KEY to its content.",
        )
        return Encryptor([key])
    parsed = [(item, fernet_key(item)) for item in items]
    salt = b""
    if any(given is None for _, given in parsed):
        salt = await installation_salt(store)
    keys: list[bytes] = []
    for item, given in parsed:
        if given is None:
            given = await asyncio.to_thread(derive_key, item, salt)
        keys.append(given)
    return Encryptor(keys)
