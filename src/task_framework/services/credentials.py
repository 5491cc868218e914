"""The credential vault and task configuration (API.md §5.8, §10.2, §10.3, §14.4).

Credential values and whole configuration maps are stored as Fernet tokens. Values leave
this module only through ``reveal`` (audited) and ``resolve`` (the executor hands them to
the task process); everything else shows previews, names and flags.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from task_framework.errors import NotFound, ServiceUnavailable, ValidationFailed
from task_framework.models._time import as_utc, format_ts, utcnow
from task_framework.observability.logging import get_logger
from task_framework.services.crypto import DecryptionFailed, Encryptor
from task_framework.services.tasks import TaskDefinition, TaskRegistry
from task_framework.store.credentials import (
    CredentialChange,
    CredentialRecord,
    TaskConfigRecord,
    VaultStore,
)
from task_framework.store.errors import RecordNotFound, UniqueViolation

log = get_logger("task_framework.credentials")

CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PREVIEW_MASK = "••••"
PREVIEW_TAIL_CHARS = 4
MAX_CONFIG_KEY_CHARS = 255
ConfigMap = dict[str, dict[str, Any]]


def value_preview(value: str) -> str:
    """``""`` when empty, the mask alone for short values, else the mask and the last 4."""
    if not value:
        return ""
    if len(value) <= PREVIEW_TAIL_CHARS:
        return PREVIEW_MASK
    return PREVIEW_MASK + value[-PREVIEW_TAIL_CHARS:]


def _expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now


def _not_found(name: str) -> NotFound:
    return NotFound(f"Credential '{name}' not found", code="CREDENTIAL_NOT_FOUND")


@dataclass(frozen=True, slots=True)
class CredentialUpdate:
    """A PUT body; ``None`` (and an empty description) keeps the stored value."""

    value: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    expires_at: datetime | None = None


def normalise_config(raw: Any) -> ConfigMap:
    """Check a ``config_values`` map (§5.8) and return its canonical form."""
    if not isinstance(raw, dict):
        raise ValidationFailed("Field 'config_values' must be an object")
    result: ConfigMap = {}
    for key, entry in raw.items():
        if not key or len(key) > MAX_CONFIG_KEY_CHARS:
            raise ValidationFailed(f"Invalid configuration key '{key[:MAX_CONFIG_KEY_CHARS]}'")
        if not isinstance(entry, dict):
            raise ValidationFailed(f"Configuration entry '{key}' must be an object")
        is_ref = entry.get("is_vault_ref", False)
        if not isinstance(is_ref, bool):
            raise ValidationFailed(f"Field 'is_vault_ref' of '{key}' must be a boolean")
        if is_ref:
            vault_key = entry.get("vault_key")
            if not isinstance(vault_key, str) or not vault_key:
                raise ValidationFailed(f"Configuration entry '{key}' needs a 'vault_key'")
            result[key] = {"vault_key": vault_key, "is_vault_ref": True}
        else:
            value = entry.get("value")
            if not isinstance(value, str):
                raise ValidationFailed(f"Configuration entry '{key}' needs a string 'value'")
            result[key] = {"value": value, "is_vault_ref": False}
    return result


class CredentialService:
    """CRUD over the vault. ``encryptor`` is set at startup, before any request."""

    def __init__(self, store: VaultStore) -> None:
        self._store = store
        self.encryptor: Encryptor | None = None

    @property
    def box(self) -> Encryptor:
        if self.encryptor is None:
            raise ServiceUnavailable("Encryption is not initialised yet")
        return self.encryptor

    def decode_config(self, token: str) -> ConfigMap:
        result: ConfigMap = json.loads(self.box.decrypt(token))
        return result

    def references(self, token: str) -> set[str]:
        """The credential names a sealed configuration map refers to."""
        return {e["vault_key"] for e in self.decode_config(token).values() if e.get("is_vault_ref")}

    def _info(self, row: CredentialRecord) -> dict[str, Any]:
        try:
            value = self.box.decrypt(row.value)
            has_value, preview = value != "", value_preview(value)
        except DecryptionFailed:
            # Listing must survive a removed key; the value exists but cannot be shown.
            log.warning("credential.undecryptable", name=row.name)
            has_value, preview = True, PREVIEW_MASK
        return {
            "name": row.name,
            "description": row.description,
            "tags": list(row.tags or []),
            "created_at": format_ts(row.created_at),
            "updated_at": format_ts(row.updated_at),
            "expires_at": format_ts(row.expires_at),
            "has_value": has_value,
            "value_preview": preview,
        }

    async def list_all(self) -> list[dict[str, Any]]:
        return [self._info(row) for row in await self._store.list_credentials()]

    async def _record(self, name: str) -> CredentialRecord:
        try:
            return await self._store.get_credential(name)
        except RecordNotFound as exc:
            raise _not_found(name) from exc

    async def get(self, name: str) -> dict[str, Any]:
        return self._info(await self._record(name))

    async def put(self, name: str, change: CredentialUpdate) -> dict[str, Any]:
        if not CREDENTIAL_NAME.fullmatch(name):
            raise ValidationFailed(
                f"Invalid credential name '{name[:128]}': use letters, digits, '.', '_' or '-'"
            )
        sealed = CredentialChange(
            value=None if change.value is None else self.box.encrypt(change.value),
            description=change.description or None,
            tags=None if change.tags is None else tuple(change.tags),
            expires_at=None if change.expires_at is None else as_utc(change.expires_at),
        )
        try:
            return self._info(await self._store.update_credential(name, sealed, utcnow()))
        except RecordNotFound:
            pass
        if sealed.value is None:
            raise ValidationFailed("Field 'value' is required for new credentials")
        now = utcnow()
        new = CredentialRecord(
            name=name,
            value=sealed.value,
            description=sealed.description or "",
            tags=sealed.tags or (),
            created_at=now,
            updated_at=now,
            expires_at=sealed.expires_at,
        )
        try:
            return self._info(await self._store.add_credential(new))
        except UniqueViolation:
            # A concurrent PUT created it first: this one is now an update.
            return self._info(await self._store.update_credential(name, sealed, utcnow()))

    async def delete(self, name: str) -> dict[str, str]:
        try:
            await self._store.delete_credential(name)
        except RecordNotFound as exc:
            raise _not_found(name) from exc
        return {"message": f"Credential '{name}' deleted"}

    async def reveal(self, name: str, *, revealed_by: str) -> dict[str, str]:
        row = await self._record(name)
        value = self.box.decrypt(row.value)
        log.info("credential.revealed", name=name, revealed_by=revealed_by)
        return {"name": name, "value": value}

    async def usage(self, name: str) -> dict[str, Any]:
        try:
            _, configs = await self._store.credential_and_configs(name)
        except RecordNotFound as exc:
            raise _not_found(name) from exc
        used_by: list[dict[str, str]] = []
        for row in configs:
            try:
                config = self.decode_config(row.config_values)
            except DecryptionFailed:
                log.warning("task_config.undecryptable", task_id=row.task_id, version=row.version)
                continue
            used_by.extend(
                {"task_id": row.task_id, "version": row.version, "config_key": key}
                for key, entry in sorted(config.items())
                if entry.get("is_vault_ref") and entry.get("vault_key") == name
            )
        used_by.sort(key=lambda item: (item["task_id"], item["version"], item["config_key"]))
        return {"credential_name": name, "used_by": used_by}


class TaskConfigService:
    """Configuration of one task version; also the executor's ``ConfigSource``."""

    def __init__(
        self, store: VaultStore, registry: TaskRegistry, credential_service: CredentialService
    ) -> None:
        self._store = store
        self._registry = registry
        self._credentials = credential_service

    def _task(self, task_id: str, version: str) -> TaskDefinition:
        task = self._registry.get(task_id, version)
        if task is None:
            raise NotFound(f"Task '{task_id}:{version}' not found", code="TASK_NOT_FOUND")
        return task

    async def _read(
        self, task_id: str, version: str
    ) -> tuple[ConfigMap | None, dict[str, CredentialRecord]]:
        """The stored map (None if absent) and the credentials it references."""
        stored, found = await self._store.config(
            task_id, version, references=self._credentials.references
        )
        if stored is None:
            return None, {}
        return self._credentials.decode_config(stored.config_values), found

    def _status(
        self, task: TaskDefinition, config: ConfigMap, found: dict[str, CredentialRecord]
    ) -> dict[str, Any]:
        now = utcnow()
        requirements: list[dict[str, Any]] = []
        missing: list[str] = []
        for requirement in task.requirements:
            name = str(requirement["name"])
            required = bool(requirement.get("required", True))
            default = requirement.get("default")
            entry = config.get(name)
            is_ref = bool(entry and entry.get("is_vault_ref"))
            vault_key = entry["vault_key"] if entry and is_ref else None
            if entry is None:
                is_set = False
            elif vault_key is not None:
                row = found.get(vault_key)
                is_set = row is not None and not _expired(row.expires_at, now)
            else:
                is_set = True
            if required and not is_set and default is None:
                missing.append(name)
            requirements.append(
                {
                    "name": name,
                    "required": required,
                    "description": str(requirement.get("description") or ""),
                    "default": None if default is None else str(default),
                    "is_vault_ref": is_ref,
                    "vault_key": vault_key,
                    "current_value": entry["value"] if entry and not is_ref else None,
                    "is_set": is_set,
                }
            )
        return {
            "task_id": task.task_id,
            "version": task.version,
            "requirements": requirements,
            "config_values": config,
            "ready": not missing,
            "missing_required": missing,
        }

    async def status(self, task_id: str, version: str) -> dict[str, Any]:
        task = self._task(task_id, version)
        config, found = await self._read(task_id, version)
        return self._status(task, config or {}, found)

    async def put(self, task_id: str, version: str, raw_values: Any) -> dict[str, Any]:
        task = self._task(task_id, version)
        config = normalise_config(raw_values)
        token = self._credentials.box.encrypt(json.dumps(config, sort_keys=True))

        names = {e["vault_key"] for e in config.values() if e["is_vault_ref"]}
        record = TaskConfigRecord(task_id, version, token, utcnow())
        try:
            found = await self._store.put_config(record, references=names)
        except RecordNotFound as exc:
            for key, entry in sorted(config.items()):
                if entry["is_vault_ref"] and entry["vault_key"] in exc.missing:
                    raise ValidationFailed(
                        f"Vault entry '{entry['vault_key']}' not found (referenced by '{key}')"
                    ) from exc
            raise
        return self._status(task, config, found)

    async def delete(self, task_id: str, version: str) -> dict[str, str]:
        try:
            await self._store.delete_config(task_id, version)
        except RecordNotFound as exc:
            # Configuration outlives undeployment, so only an absent one is an error here.
            self._task(task_id, version)
            raise NotFound(f"No configuration found for task '{task_id}:{version}'") from exc
        return {"message": f"Configuration for task '{task_id}:{version}' deleted"}

    async def resolve(self, task_id: str, version: str) -> tuple[dict[str, str], dict[str, str]]:
        """(plain, secret) values stored for a task version; read fresh for every thread."""
        try:
            config, found = await self._read(task_id, version)
        except DecryptionFailed:
            log.warning("task_config.undecryptable", task_id=task_id, version=version)
            return {}, {}
        now = utcnow()
        plain: dict[str, str] = {}
        secret: dict[str, str] = {}
        for key, entry in (config or {}).items():
            if not entry.get("is_vault_ref"):
                plain[key] = str(entry["value"])
                continue
            row = found.get(entry["vault_key"])
            if row is None or _expired(row.expires_at, now):
                continue
            try:
                secret[key] = self._credentials.box.decrypt(row.value)
            except DecryptionFailed:
                log.warning("credential.undecryptable", name=row.name)
        return plain, secret
