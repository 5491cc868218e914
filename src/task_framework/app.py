"""The application factory: ``create_app(settings)`` builds every adapter and service.

Nothing is created at import time. The lifespan migrates the database, loads tasks,
bootstraps API keys when none exist, and starts this replica's workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from task_framework._version import __version__
from task_framework.api.errors import error_response, install_error_handlers
from task_framework.api.middleware import RequestContextMiddleware
from task_framework.api.routes import admin, system, threads
from task_framework.observability.metrics import Metrics
from task_framework.runner.base import Runner
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.services.auth import KeyRing
from task_framework.services.executor import Executor
from task_framework.services.settings import SettingsService
from task_framework.services.tasks import TaskRegistry, load_dev_task
from task_framework.services.threads import ArtifactService, ThreadService
from task_framework.settings import Settings
from task_framework.store.database import Database

log = logging.getLogger("task_framework.app")

GENERATED_KEYS_FILE = "generated-api-keys.json"


@dataclass
class Services:
    """Everything the routes use, built once per app."""

    settings: Settings
    db: Database
    metrics: Metrics
    keys: KeyRing
    registry: TaskRegistry
    builder: EnvironmentBuilder
    runner: Runner
    executor: Executor
    threads: ThreadService
    artifacts: ArtifactService
    settings_service: SettingsService
    files: Any = None
    generated_keys: dict[str, str] = field(default_factory=dict)

    async def delete_files(self, refs: list[str]) -> None:
        if self.files is not None and refs:
            await self.files.delete_refs(refs)

    def scheduler_running(self) -> bool:
        return False


def _build_runner(settings: Settings) -> Runner:
    from task_framework.runner.pool import ProcessRunner

    return ProcessRunner(
        sdk_root=settings.data_dir.resolve(),
        max_workers=settings.worker_concurrency,
        idle_seconds=settings.worker_idle_seconds,
        max_runs_per_worker=settings.worker_max_runs,
        stop_grace_seconds=settings.stop_grace_seconds,
        max_memory_mb=settings.worker_max_memory_mb,
    )


def build_services(settings: Settings, *, runner: Runner | None = None) -> Services:
    db = Database(settings.resolved_database_url)
    metrics = Metrics()
    registry = TaskRegistry()
    builder = EnvironmentBuilder(settings.resolved_venvs_dir, uv_cache_dir=settings.uv_cache_dir)
    runner = runner or _build_runner(settings)
    settings_service = SettingsService(db, default_max_concurrent=settings.max_concurrent_threads)
    executor = Executor(
        db=db,
        runner=runner,
        registry=registry,
        builder=builder,
        settings=settings_service,
        capacity=settings.worker_concurrency,
        lease_seconds=settings.thread_lease_seconds,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        log_level=settings.log_level,
        max_log_bytes=settings.max_log_bytes_per_thread,
        on_state=metrics.record_thread_state,
        on_finished=metrics.record_thread_finished,
    )
    return Services(
        settings=settings,
        db=db,
        metrics=metrics,
        keys=KeyRing(db, api_keys=settings.api_keys, admin_api_keys=settings.admin_api_keys),
        registry=registry,
        builder=builder,
        runner=runner,
        executor=executor,
        threads=ThreadService(db, registry, executor),
        artifacts=ArtifactService(db),
        settings_service=settings_service,
    )


async def _bootstrap_keys(svc: Services) -> dict[str, str]:
    """With no admin key anywhere, generate an admin and a regular key (printed by serve).

    Their hashes are stored as managed keys; the secrets are kept in a 0600 file in the
    data directory so the quick start can show them again at the next start.
    """
    path = svc.settings.data_dir.resolve() / GENERATED_KEYS_FILE
    if svc.keys.has_configured_admin:
        return {}
    if await svc.keys.count_active_admin_keys():
        with contextlib.suppress(OSError, ValueError):
            saved: dict[str, str] = json.loads(path.read_text())
            return saved
        return {}
    admin_key = await svc.keys.create_key(name="generated-admin", role="admin")
    user_key = await svc.keys.create_key(name="generated-user", role="user")
    keys = {"admin_api_key": admin_key["key"], "api_key": user_key["key"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle)
    return keys


async def _load_dev_tasks(svc: Services, folders: list[Path]) -> None:
    for folder in folders:
        task = load_dev_task(folder)
        task.env = await svc.builder.ensure(task.deps_dir)
        svc.registry.add(task)
        svc.metrics.record_task_function_registration()


class _JsonBodyLimit:
    """413 for JSON bodies over the limit, counted while streaming (no header trust)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if content_type.startswith("multipart/") or scope["path"].startswith("/files/"):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0
        limit = self.limit

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request

        response = error_response(
            Request(scope),
            status=413,
            code="FILE_SIZE_EXCEEDED",
            detail=f"Request body exceeds the limit of {self.limit} bytes",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(
    settings: Settings | None = None,
    *,
    runner: Runner | None = None,
    on_ready: Callable[[Services], None] | None = None,
) -> FastAPI:
    """Build the ASGI application of one replica."""
    settings = settings or Settings()
    svc = build_services(settings, runner=runner)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(svc.db.migrate)
        await svc.db.tx(svc.settings_service.record_first_start)
        svc.generated_keys = await _bootstrap_keys(svc)
        await _load_dev_tasks(svc, settings.dev_tasks)
        await svc.executor.start()
        svc.metrics.record_library_initialization()
        if on_ready is not None:
            on_ready(svc)
        try:
            yield
        finally:
            await svc.executor.close()
            await svc.runner.close()
            await svc.db.close()

    app = FastAPI(
        title="Task Framework API",
        version=__version__,
        description=(
            "Run isolated task definitions as threads with artifacts, files, schedules "
            "and webhooks."
        ),
        license_info={"name": "MIT", "identifier": "MIT"},
        lifespan=lifespan,
    )
    app.state.services = svc
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(threads.router)
    app.include_router(admin.router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    app.add_middleware(_JsonBodyLimit, limit=settings.max_json_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=svc.metrics)
    return app


__all__ = ["Services", "create_app"]
