"""The deployments store: task packages, deployed versions and the deploy history
(API.md §10.1, §14). A package's zip is kept here, by hash, so every replica can load
the versions deployed on another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from task_framework.errors import Conflict
from task_framework.store.errors import StoreError

__all__ = ["DeploymentRecord", "DeploymentStore", "VersionChanged", "VersionRecord"]


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A deployed task version; ``metadata`` is the package's ``task.yaml`` as parsed."""

    task_id: str
    version: str
    zip_hash: str
    deployed_at: datetime
    source: str = "api"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """One entry of the deploy history: a deploy that succeeded or failed."""

    id: str
    task_id: str
    version: str
    status: str
    deployed_at: datetime
    zip_hash: str | None = None
    zip_path: str | None = None
    error: str | None = None


class VersionChanged(StoreError, Conflict):
    """The version's row is not the one the publisher expected (another replica changed
    it meanwhile); nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=Conflict.code)


class DeploymentStore(Protocol):
    async def version(self, task_id: str, version: str) -> VersionRecord | None:
        """The deployed version, or None."""
        ...

    async def versions(self, task_id: str | None = None) -> list[VersionRecord]:
        """Every deployed version (of ``task_id`` when given), in no particular order."""
        ...

    async def package(self, zip_hash: str) -> bytes | None:
        """The stored zip with this hash, or None."""
        ...

    async def publish(
        self,
        version: VersionRecord,
        data: bytes,
        history: DeploymentRecord,
        *,
        expected: str | None,
        at: datetime,
    ) -> None:
        """In one transaction: check that the version's stored hash is still
        ``expected`` (None: not deployed), store the package ``data`` under
        ``version.zip_hash`` unless stored (created ``at``), create or replace the
        version, drop the package it replaced if no version uses it any more, and add
        ``history``. :class:`VersionChanged` when the check fails,
        :class:`~task_framework.store.errors.UniqueViolation` when a concurrent publish
        won the race; nothing is written then."""
        ...

    async def record(self, history: DeploymentRecord) -> None:
        """Add a history entry (a failed deploy)."""
        ...

    async def history(self) -> list[DeploymentRecord]:
        """The deploy history, newest first."""
        ...

    async def delete_versions(self, task_id: str, versions: Sequence[str]) -> None:
        """Remove these versions of ``task_id`` and, in the same transaction, the packages
        no remaining version uses; unknown versions are ignored."""
        ...

    async def running_threads(self, task_id: str, versions: Sequence[str]) -> list[str]:
        """Ids of the running threads of these versions of ``task_id``."""
        ...

    async def running_versions(self, versions: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(task_id, version)`` pairs have running threads; may include pairs
        outside ``versions`` of the same task ids."""
        ...
