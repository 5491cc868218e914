"""The vault store: credentials and task configuration (API.md §5.8, §10.2, §10.3).

Values cross this boundary sealed: ``CredentialRecord.value`` and
``TaskConfigRecord.config_values`` are the Fernet tokens the services make and read; the
store never sees a secret in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["CredentialChange", "CredentialRecord", "TaskConfigRecord", "VaultStore"]


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    name: str
    value: str
    description: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """A change to a stored credential; ``None`` keeps the stored field."""

    value: str | None = None
    description: str | None = None
    tags: tuple[str, ...] | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskConfigRecord:
    task_id: str
    version: str
    config_values: str
    updated_at: datetime


References = Callable[[str], Collection[str]]
"""The credential names a sealed configuration map refers to."""


class VaultStore(Protocol):
    async def list_credentials(self) -> list[CredentialRecord]:
        """Every credential, by name."""
        ...

    async def get_credential(self, name: str) -> CredentialRecord:
        """Raises :class:`~task_framework.store.errors.RecordNotFound` when absent."""
        ...

    async def add_credential(self, record: CredentialRecord) -> CredentialRecord:
        """Store a new credential; :class:`~task_framework.store.errors.UniqueViolation`
        when the name is taken."""
        ...

    async def update_credential(
        self, name: str, change: CredentialChange, at: datetime
    ) -> CredentialRecord:
        """Apply ``change`` and set ``updated_at``; the credential as stored after.
        :class:`~task_framework.store.errors.RecordNotFound` when absent."""
        ...

    async def delete_credential(self, name: str) -> None:
        """:class:`~task_framework.store.errors.RecordNotFound` when absent."""
        ...

    async def credential_and_configs(
        self, name: str
    ) -> tuple[CredentialRecord, list[TaskConfigRecord]]:
        """The credential and every stored configuration, in one transaction (what refers
        to it is only known after unsealing). RecordNotFound when the credential is absent.
        """
        ...

    async def config(
        self, task_id: str, version: str, *, references: References
    ) -> tuple[TaskConfigRecord | None, dict[str, CredentialRecord]]:
        """A task version's configuration (None when absent) and, read in the same
        transaction, the existing credentials among ``references(config_values)``, by
        name. What ``references`` raises propagates."""
        ...

    async def put_config(
        self, record: TaskConfigRecord, *, references: Collection[str]
    ) -> dict[str, CredentialRecord]:
        """Create or replace a configuration, checking in the same transaction that the
        credentials it refers to exist; those credentials, by name.
        :class:`~task_framework.store.errors.RecordNotFound` (``missing`` sorted) when one
        does not, and nothing is written."""
        ...

    async def delete_config(self, task_id: str, version: str) -> None:
        """:class:`~task_framework.store.errors.RecordNotFound` when absent."""
        ...
