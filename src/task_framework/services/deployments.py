"""Deploying task packages (API.md §10.1, §14): validate, build, load-check, then publish.

A deploy becomes visible only once the package is extracted, its environment built and
its entry point imported in a fresh worker; then one transaction stores the package
(shared storage = the records store), the version and the history record. Every replica
reconciles its registry with the deployed versions (:meth:`DeploymentService.refresh`),
so deploys and undeploys made on one replica reach the others, and survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from task_framework.errors import (
    Conflict,
    DeploymentFailed,
    EnvironmentBuildError,
    InvalidState,
    NotFound,
    TaskFrameworkError,
)
from task_framework.ids import new_id
from task_framework.models._time import format_ts, utcnow
from task_framework.observability.metrics import Metrics
from task_framework.runner.base import Runner
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.runner.sandbox import parse_resources
from task_framework.services.auth import Principal
from task_framework.services.packages import (
    ExtractedPackage,
    PackageLimits,
    extract_package,
    hash_hex,
    remove_tree,
)
from task_framework.services.tasks import (
    DEFAULT_TASK_LOG_LEVEL,
    TaskDefinition,
    TaskRegistry,
    version_order_key,
)
from task_framework.services.threads import ThreadService
from task_framework.store.deployments import (
    DeploymentRecord,
    DeploymentStore,
    VersionChanged,
    VersionRecord,
)
from task_framework.store.errors import UniqueViolation

log = logging.getLogger("task_framework.deployments")

REFRESH_SECONDS = 5.0
"""How often a replica reconciles its registry with the deployed versions in the database."""


@dataclass(slots=True)
class _Doomed:
    """Files of a removed version, deleted once no thread of it runs here any more."""

    task_id: str
    version: str
    code_dir: Path
    env_key: str | None


def zip_path(task_id: str, version: str) -> str:
    return f"packages/{task_id}/{version}.zip"


def base_path(task_id: str, version: str) -> str:
    return f"tasks/{task_id}/{version}"


def _definition(
    meta: dict[str, Any], root: Path, zip_hash: str, deployed_at: Any
) -> TaskDefinition:
    sdk_version = meta.get("sdk_version")
    return TaskDefinition(
        task_id=str(meta["task_id"]),
        version=str(meta["version"]),
        entry_point=str(meta["entry_point"]),
        name=str(meta["task_id"]),
        description=str(meta.get("description") or ""),
        input_schemas=list(meta.get("input_schemas") or []),
        output_schemas=list(meta.get("output_schemas") or []),
        requirements=list(meta.get("requirements") or []),
        sdk_version=None if sdk_version is None else str(sdk_version),
        code_dir=root,
        deps_dir=root,
        zip_hash=zip_hash,
        deployed_at=deployed_at,
        resources=parse_resources(meta),
        log_level=str(meta.get("log_level") or DEFAULT_TASK_LOG_LEVEL),
    )


def _version_info(task: TaskDefinition) -> dict[str, Any]:
    stored = task.zip_hash is not None
    return {
        "task_id": task.task_id,
        "version": task.version,
        "name": task.name,
        "description": task.description,
        "entry_point": task.entry_point,
        "deployed_at": format_ts(task.deployed_at),
        "zip_path": zip_path(task.task_id, task.version) if stored else None,
        "base_path": base_path(task.task_id, task.version) if stored else None,
        "zip_hash": task.zip_hash,
        "input_schemas": task.input_schemas,
        "output_schemas": task.output_schemas,
        "requirements": task.requirements,
        "sdk_version": task.sdk_version,
    }


def _history_of(task: TaskDefinition, status: str, error: str | None) -> DeploymentRecord:
    return DeploymentRecord(
        id=new_id("deployment"),
        task_id=task.task_id,
        version=task.version,
        status=status,
        deployed_at=utcnow(),
        zip_hash=task.zip_hash,
        zip_path=zip_path(task.task_id, task.version),
        error=error,
    )


def _history_dict(row: DeploymentRecord) -> dict[str, Any]:
    return {
        "zip_path": row.zip_path,
        "zip_hash": row.zip_hash,
        "task_id": row.task_id,
        "version": row.version,
        "deployed_at": format_ts(row.deployed_at),
        "status": row.status,
        "error": row.error,
    }


class DeploymentService:
    """Deploy, list, download and undeploy task versions on this replica and the cluster."""

    def __init__(
        self,
        *,
        store: DeploymentStore,
        registry: TaskRegistry,
        builder: EnvironmentBuilder,
        runner: Runner,
        threads: ThreadService,
        data_dir: Path,
        discovery_dir: Path,
        limits: PackageLimits,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._builder = builder
        self._runner = runner
        self._threads = threads
        self.tmp_dir = data_dir.resolve() / "tmp"
        self.tasks_dir = data_dir.resolve() / "tasks"
        self._discovery_dir = discovery_dir
        self._limits = limits
        self._metrics = metrics
        self._locks: dict[str, asyncio.Lock] = {}
        self._doomed: list[_Doomed] = []
        self._loop: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load the deployed versions, deploy the discovery folder, start reconciling."""
        await self.refresh()
        await self.discover()
        self._loop = asyncio.create_task(self._refresh_loop(), name="deployments-refresh")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:
                log.exception("deployment refresh failed")

    async def discover(self) -> None:
        """Deploy every ``*.zip`` of the discovery folder, without force (API.md §14.5)."""
        folder = self._discovery_dir
        zips = sorted(p for p in folder.glob("*.zip") if p.is_file()) if folder.is_dir() else []
        for path in zips:
            try:
                result, _ = await self.deploy(path, source="discovery")
                log.info("discovered %s: %s", path.name, result["message"])
            except TaskFrameworkError as exc:
                log.warning("skipped discovered package %s: %s", path.name, exc.message)

    # -- deploy -----------------------------------------------------------------------

    async def deploy(
        self, upload: Path, *, force: bool = False, source: str = "api"
    ) -> tuple[dict[str, Any], bool]:
        """Deploy the zip at ``upload``; returns (TaskDeploymentResponse, was_new)."""
        package = await asyncio.to_thread(
            extract_package,
            upload,
            tmp_dir=self.tmp_dir,
            tasks_dir=self.tasks_dir,
            limits=self._limits,
        )
        task_id, version = package.metadata["task_id"], package.metadata["version"]
        full = f"{task_id}:{version}"
        async with self._lock(full):
            if not package.root.is_dir():
                # A concurrent rejected deploy of the same content removed it meanwhile.
                package = await asyncio.to_thread(
                    extract_package,
                    upload,
                    tmp_dir=self.tmp_dir,
                    tasks_dir=self.tasks_dir,
                    limits=self._limits,
                )
            stored = await self._store.version(task_id, version)
            current = None if stored is None else stored.zip_hash
            if current == package.zip_hash:
                await self._ensure_registered(task_id, version)
                return self._response(task_id, version, False), False
            if current is not None and not force:
                self._forget_dir(package.root)
                raise Conflict(
                    f"Task {full} is already deployed with different content; "
                    "deploy with force=true to replace it",
                    code="TASK_ALREADY_EXISTS",
                )
            task = _definition(package.metadata, package.root, package.zip_hash, utcnow())
            await self._build_and_check(task, package)
            data = await asyncio.to_thread(upload.read_bytes)
            published = VersionRecord(
                task_id=task.task_id,
                version=task.version,
                zip_hash=package.zip_hash,
                deployed_at=task.deployed_at,
                source=source,
                metadata=package.metadata,
            )
            history = _history_of(task, "deployed", None)
            try:
                await self._store.publish(published, data, history, expected=current, at=utcnow())
            except (UniqueViolation, VersionChanged) as exc:
                self._forget_dir(package.root)
                raise Conflict(
                    f"Task {full} was deployed concurrently; retry with force=true to replace it",
                    code="TASK_ALREADY_EXISTS",
                ) from exc
            self._replace(task)
            if self._metrics is not None:
                self._metrics.record_task_function_registration()
        return self._response(task_id, version, True), True

    def _lock(self, full_id: str) -> asyncio.Lock:
        return self._locks.setdefault(full_id, asyncio.Lock())

    @staticmethod
    def _response(task_id: str, version: str, was_new: bool) -> dict[str, Any]:
        message = (
            f"Task {task_id}:{version} deployed successfully"
            if was_new
            else f"Task {task_id}:{version} already deployed (skipped)"
        )
        return {"task_id": task_id, "version": version, "was_new": was_new, "message": message}

    async def _build_and_check(self, task: TaskDefinition, package: ExtractedPackage) -> None:
        """Build the environment and import the entry point; record a failure in history."""
        started = time.monotonic()
        try:
            built_before = self._builder.is_built(self._builder.key_for(package.root))
            task.env = await self._builder.ensure(package.root)
            if self._metrics is not None:
                outcome = "cached" if built_before else "built"
                self._metrics.record_env_build(outcome, time.monotonic() - started)
            error = await self._runner.check_entry_point(task.spec())
            if error is not None:
                raise DeploymentFailed(
                    f"Deployment of task {task.full_id} failed: the entry point "
                    f"'{task.entry_point}' does not load: {error.message}"
                )
        except EnvironmentBuildError as exc:
            if self._metrics is not None:
                self._metrics.record_env_build("failed", time.monotonic() - started)
            await self._fail(task, f"Deployment of task {task.full_id} failed: {exc.message}", exc)
        except DeploymentFailed as exc:
            await self._fail(task, exc.message, exc)

    async def _fail(self, task: TaskDefinition, message: str, cause: Exception) -> None:
        await self._store.record(_history_of(task, "failed", message))
        self._forget_dir(task.code_dir)
        raise DeploymentFailed(message) from cause

    def _forget_dir(self, root: Path) -> None:
        """Drop an extracted package no registered version uses (a rejected deploy)."""
        if not any(t.code_dir == root for t in self._registry.all()):
            remove_tree(root)

    def _replace(self, task: TaskDefinition) -> None:
        previous = self._registry.get(task.task_id, task.version)
        self._registry.add(task)
        if previous is not None and previous.code_dir != task.code_dir:
            self._doom(previous)

    async def _ensure_registered(self, task_id: str, version: str) -> None:
        """Identical redeploy: make sure this replica has it (another replica deployed it)."""
        if self._registry.get(task_id, version) is None:
            row = await self._store.version(task_id, version)
            if row is not None:
                self._registry.add(await self._materialize(row))

    # -- reconcile --------------------------------------------------------------------

    async def refresh(self) -> None:
        """Make the registry match the deployed versions (deploys/undeploys of other
        replicas)."""
        rows = {(r.task_id, r.version): r for r in await self._store.versions()}
        for task in self._registry.all():
            if not task.dev and (task.task_id, task.version) not in rows:
                async with self._lock(task.full_id):
                    # Re-read under the lock: a deploy here may have just published it.
                    if await self._store.version(task.task_id, task.version) is None:
                        for removed in self._registry.remove(task.task_id, task.version):
                            self._doom(removed)
        for (task_id, version), row in rows.items():
            current = self._registry.get(task_id, version)
            if current is not None and (current.dev or current.zip_hash == row.zip_hash):
                continue
            async with self._lock(f"{task_id}:{version}"):
                fresh = await self._store.version(task_id, version)
                current = self._registry.get(task_id, version)
                if fresh is None or (current is not None and current.zip_hash == fresh.zip_hash):
                    continue
                try:
                    self._replace(await self._materialize(fresh))
                except TaskFrameworkError as exc:
                    log.warning("cannot load task %s:%s: %s", task_id, version, exc.message)
        await self._collect()

    async def _materialize(self, row: VersionRecord) -> TaskDefinition:
        """A deployed version from its record: extracted from the stored package if needed."""
        root = self.tasks_dir / hash_hex(row.zip_hash)
        if not root.is_dir():
            data = await self._store.package(row.zip_hash)
            if data is None:
                raise NotFound(f"Package of task {row.task_id}:{row.version} is missing")
            await asyncio.to_thread(self._extract_bytes, data)
        task = _definition(row.metadata, root, row.zip_hash, row.deployed_at)
        # A valid environment is reused as is; a missing one is built before the first
        # thread of this version (the executor does it), not here at start-up.
        if self._builder.is_built(self._builder.key_for(root)):
            task.env = await self._builder.ensure(root)
        return task

    def _extract_bytes(self, data: bytes) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="stored-", suffix=".zip", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            extract_package(
                Path(name), tmp_dir=self.tmp_dir, tasks_dir=self.tasks_dir, limits=self._limits
            )
        finally:
            os.unlink(name)

    def _doom(self, task: TaskDefinition) -> None:
        if task.dev:
            return
        key = task.env.key if task.env is not None else None
        self._doomed.append(_Doomed(task.task_id, task.version, task.code_dir, key))

    async def _collect(self) -> None:
        """Delete files of removed versions whose threads here have all finished."""
        if not self._doomed:
            return
        pending = [(d.task_id, d.version) for d in self._doomed]
        busy = await self._store.running_versions(pending)
        keep: list[_Doomed] = []
        in_use = self._registry.all()
        for doomed in self._doomed:
            if (doomed.task_id, doomed.version) in busy:
                keep.append(doomed)
                continue
            if not any(t.code_dir == doomed.code_dir for t in in_use):
                await asyncio.to_thread(remove_tree, doomed.code_dir)
            key = doomed.env_key
            if key is not None and not any(t.env is not None and t.env.key == key for t in in_use):
                await asyncio.to_thread(self._builder.remove, key)
        self._doomed = keep

    # -- queries ----------------------------------------------------------------------

    async def _known(self, task_id: str | None = None) -> list[TaskDefinition]:
        """Deployed versions from the database plus this replica's dev tasks."""
        rows = await self._store.versions(task_id)
        found = {
            (r.task_id, r.version): _definition(
                r.metadata, self.tasks_dir / hash_hex(r.zip_hash), r.zip_hash, r.deployed_at
            )
            for r in rows
        }
        for task in self._registry.all():
            if task.dev and (task_id is None or task.task_id == task_id):
                found.setdefault((task.task_id, task.version), task)
        return list(found.values())

    async def _versions_of(self, task_id: str) -> list[TaskDefinition]:
        tasks = {t.version: t for t in await self._known(task_id)}
        if not tasks:
            raise NotFound(f"Task '{task_id}' not found", code="TASK_NOT_FOUND")
        return [tasks[v] for v in version_order_key(list(tasks))]

    @staticmethod
    def _summary(versions: list[TaskDefinition]) -> dict[str, Any]:
        latest = versions[0]
        return {
            "task_id": latest.task_id,
            "name": latest.name,
            "description": latest.description,
            "versions": [t.version for t in versions],
            "latest_version": latest.version,
            "total_versions": len(versions),
            "entry_point": latest.entry_point,
            "deployed_at": format_ts(latest.deployed_at),
            "sdk_version": latest.sdk_version,
        }

    async def list_tasks(self) -> dict[str, Any]:
        by_task: dict[str, dict[str, TaskDefinition]] = {}
        for task in await self._known():
            by_task.setdefault(task.task_id, {})[task.version] = task
        summaries = [
            self._summary([versions[v] for v in version_order_key(list(versions))])
            for _, versions in sorted(by_task.items())
        ]
        return {
            "tasks": summaries,
            "total": len(summaries),
            "total_versions": sum(s["total_versions"] for s in summaries),
        }

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return self._summary(await self._versions_of(task_id))

    async def versions(self, task_id: str) -> list[dict[str, Any]]:
        return [_version_info(t) for t in await self._versions_of(task_id)]

    async def version(self, task_id: str, version: str) -> dict[str, Any]:
        for task in await self._versions_of(task_id):
            if task.version == version:
                return _version_info(task)
        raise NotFound(f"Task '{task_id}' version '{version}' not found", code="TASK_NOT_FOUND")

    async def history(self) -> list[dict[str, Any]]:
        return [_history_dict(r) for r in await self._store.history()]

    async def package(self, task_id: str, version: str | None) -> tuple[str, bytes]:
        """(download filename, zip bytes) of a deployed version (latest when None)."""
        if version is None:
            version = (await self._versions_of(task_id))[0].version
        row = await self._store.version(task_id, version)
        data = None if row is None else await self._store.package(row.zip_hash)
        if data is None:
            await self._versions_of(task_id)  # 404 for an unknown task id first
            raise NotFound(f"Task '{task_id}' version '{version}' not found", code="TASK_NOT_FOUND")
        return f"{task_id}-{version}.zip", data

    # -- undeploy ---------------------------------------------------------------------

    async def undeploy(
        self, task_id: str, version: str | None = None, *, stop_running: bool = False
    ) -> dict[str, Any]:
        """Remove one version (or all of a task) everywhere; running threads finish
        unless ``stop_running``; queued ones fail TASK_UNAVAILABLE when claimed."""
        versions = [t.version for t in await self._versions_of(task_id)]
        if version is not None:
            if version not in versions:
                raise NotFound(
                    f"Task '{task_id}' version '{version}' not found", code="TASK_NOT_FOUND"
                )
            versions = [version]
        await self._store.delete_versions(task_id, versions)
        for v in versions:
            async with self._lock(f"{task_id}:{v}"):
                for task in self._registry.remove(task_id, v):
                    self._doom(task)
        if stop_running:
            await self._stop_running(task_id, versions)
        await self._collect()
        undeployed = [f"{task_id}:{v}" for v in versions]
        message = (
            f"Undeployed task '{task_id}' version '{version}'"
            if version is not None
            else f"Undeployed {len(versions)} version(s) of task '{task_id}'"
        )
        return {"undeployed": undeployed, "message": message}

    async def _stop_running(self, task_id: str, versions: list[str]) -> None:
        busy = await self._store.running_threads(task_id, versions)
        admin = Principal(is_admin=True)
        for thread_id in busy:
            with contextlib.suppress(InvalidState, NotFound):
                await self._threads.stop(admin, thread_id)


__all__ = ["REFRESH_SECONDS", "DeploymentService", "base_path", "zip_path"]
