"""The application factory: ``create_app(settings)`` builds every adapter and service.

Nothing is created at import time. The lifespan migrates the database, loads tasks,
bootstraps API keys when none exist, and starts this replica's workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from sqlalchemy import Connection
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from task_framework._version import __version__
from task_framework.api.docs import install_docs
from task_framework.api.errors import error_response, install_error_handlers
from task_framework.api.middleware import RequestContextMiddleware
from task_framework.api.routes import admin, streams, system, threads
from task_framework.api.routes import credentials as credential_routes
from task_framework.api.routes import files as file_routes
from task_framework.api.routes import schedules as schedule_routes
from task_framework.api.routes import tasks as task_routes
from task_framework.api.routes import webhooks as webhook_routes
from task_framework.hardening import open_private, private_dir, private_file
from task_framework.observability.metrics import Metrics
from task_framework.observability.tracing import NO_TRACING, Tracing
from task_framework.observability.tracing_setup import build_tracing
from task_framework.runner.base import Runner
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.runner.sandbox import LimitPolicy, Sandbox
from task_framework.services.auth import KeyRing
from task_framework.services.auth_throttle import AuthThrottle
from task_framework.services.cluster_stats import refresh_forever
from task_framework.services.credentials import CredentialService, TaskConfigService
from task_framework.services.crypto import (
    Encryptor,
    SecretBox,
    encryptor_on,
    load_encryptor,
    require_key,
)
from task_framework.services.delivery import Dispatcher
from task_framework.services.deployments import DeploymentService
from task_framework.services.executor import Executor
from task_framework.services.files import FileService
from task_framework.services.packages import PackageLimits
from task_framework.services.schedule_runs import RunEngine
from task_framework.services.scheduler import Scheduler
from task_framework.services.schedules import ScheduleService
from task_framework.services.settings import SettingsService
from task_framework.services.tasks import TaskRegistry, load_dev_task
from task_framework.services.threads import ArtifactService, ThreadService
from task_framework.services.url_signing import UrlSigner
from task_framework.services.urlguard import UrlGuard
from task_framework.services.webhooks import WebhookService
from task_framework.settings import Settings
from task_framework.storage import build_storage
from task_framework.store import notify
from task_framework.store.database import Database
from task_framework.store.notify import Listener
from task_framework.store.sessions import UiSessionStore
from task_framework.store.settings import SettingsStore
from task_framework.store.sql import (
    SqlKeyStore,
    SqlScheduleStore,
    SqlSettingsStore,
    SqlStatsStore,
    SqlUiSessionStore,
    SqlVaultStore,
)
from task_framework.store.sql.deployments import SqlDeploymentStore
from task_framework.store.sql.files import SqlFileStore
from task_framework.store.sql.webhooks import SqlWebhookStore
from task_framework.store.stats import StatsStore
from task_framework.ui.routes import create_ui_app

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
    credentials: CredentialService
    task_configs: TaskConfigService
    deployments: DeploymentService
    webhooks: WebhookService
    dispatcher: Dispatcher
    schedules: ScheduleService
    scheduler: Scheduler
    secret_box: SecretBox
    settings_store: SettingsStore
    stats: StatsStore
    ui_sessions: UiSessionStore
    files: Any = None
    sandbox: Sandbox | None = None
    """The runner's sandbox (None when the runner is not the process pool)."""
    tracing: Tracing = NO_TRACING
    generated_keys: dict[str, str] = field(default_factory=dict)

    async def delete_files(self, refs: list[str]) -> None:
        if self.files is not None and refs:
            await self.files.delete_refs(refs)

    def on_notification(self, channel: str, payload: str) -> None:
        """Another process changed something (PostgreSQL NOTIFY, see store/notify.py)."""
        if channel == notify.EVENTS:
            self.dispatcher.wake()
        else:
            self.executor.handle_notification(channel, payload)

    def scheduler_running(self) -> bool:
        return self.scheduler.running


def limit_policy(settings: Settings) -> LimitPolicy:
    return LimitPolicy(
        memory_mb=settings.worker_max_memory_mb,
        max_memory_mb=settings.task_max_memory_mb,
        cpu_seconds=settings.task_cpu_seconds,
        max_cpu_seconds=settings.task_max_cpu_seconds,
        processes=settings.task_processes,
        max_processes=settings.task_max_processes,
        timeout_seconds=settings.task_timeout_seconds,
        max_timeout_seconds=settings.task_max_timeout_seconds,
        network=settings.task_network,
        allow_outbound=settings.task_allow_outbound,
    )


def _build_runner(settings: Settings, metrics: Metrics, sandbox: Sandbox) -> Runner:
    from task_framework.runner.pool import ProcessRunner

    return ProcessRunner(
        sdk_root=settings.data_dir.resolve(),
        max_workers=settings.worker_concurrency,
        idle_seconds=settings.worker_idle_seconds,
        max_runs_per_worker=settings.worker_max_runs,
        stop_grace_seconds=settings.stop_grace_seconds,
        on_worker_start=metrics.record_worker_start,
        sandbox=sandbox,
        reuse=settings.worker_reuse,
    )


def build_services(settings: Settings, *, runner: Runner | None = None) -> Services:
    # First: enabled without the otel extra refuses to start before anything is built.
    tracing = build_tracing(settings.otel_enabled)
    db = Database(settings.resolved_database_url)
    metrics = Metrics()
    registry = TaskRegistry()
    builder = EnvironmentBuilder(settings.resolved_venvs_dir, uv_cache_dir=settings.uv_cache_dir)
    sandbox = Sandbox(
        settings.sandbox,
        data_dir=settings.data_dir,
        policy=limit_policy(settings),
        uid_base=settings.sandbox_uid_base,
    )
    runner = runner or _build_runner(settings, metrics, sandbox)
    settings_store = SqlSettingsStore(db)
    settings_service = SettingsService(
        settings_store, default_max_concurrent=settings.max_concurrent_threads
    )
    vault = SqlVaultStore(db)
    credentials = CredentialService(vault)
    task_configs = TaskConfigService(vault, registry, credentials)
    executor = Executor(
        db=db,
        runner=runner,
        registry=registry,
        builder=builder,
        settings=settings_service,
        capacity=settings.worker_concurrency if settings.run_worker else 0,
        task_filter=frozenset(settings.worker_tasks) if settings.worker_tasks else None,
        lease_seconds=settings.thread_lease_seconds,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        max_log_bytes=settings.max_log_bytes_per_thread,
        on_state=metrics.record_thread_state,
        on_finished=metrics.record_thread_finished,
        on_crash=metrics.record_worker_crash,
        on_artifact=metrics.record_artifact_created,
        config=task_configs,
        limits=sandbox.policy,
        tracing=tracing,
    )
    secret_box = SecretBox()
    thread_service = ThreadService(db, registry, executor, secret_box=secret_box)
    thread_service.tracing = tracing
    deployments = DeploymentService(
        store=SqlDeploymentStore(db),
        registry=registry,
        builder=builder,
        runner=runner,
        threads=thread_service,
        data_dir=settings.data_dir,
        discovery_dir=settings.resolved_task_definitions_dir,
        limits=PackageLimits(
            max_uncompressed_bytes=settings.max_package_uncompressed_bytes,
            max_entries=settings.max_package_entries,
            max_ratio=settings.max_package_ratio,
        ),
        metrics=metrics,
    )
    signer = UrlSigner(
        settings_store, configured_keys=settings.url_signing_keys, secret_box=secret_box
    )
    file_service = FileService(
        SqlFileStore(db),
        build_storage(settings, signer=signer),
        signer,
        metrics,
        max_upload_bytes=settings.max_upload_bytes,
        public_base_url=settings.public_base_url,
        s3_default_expiry_seconds=settings.s3_presigned_url_expiration,
    )
    executor.files = file_service
    url_guard = UrlGuard(
        allow_private=settings.webhook_allow_private_networks,
        allowed_networks=settings.webhook_allowed_networks,
    )

    async def presign(file_ref: str, expires_in: int) -> str:
        signed = await file_service.download_url(
            file_ref, expires_in=expires_in, base_url=settings.public_base_url
        )
        return str(signed["download_url"])

    webhook_store = SqlWebhookStore(db)
    dispatcher = Dispatcher(
        webhook_store,
        url_guard,
        metrics,
        retry_schedule=settings.webhook_retry_schedule,
        disable_after_seconds=settings.webhook_disable_after_seconds,
        max_concurrency=settings.webhook_max_concurrency,
        user_agent=f"task-framework/{__version__}",
        secret_box=secret_box,
        presign=presign,
        tracing=tracing,
    )
    thread_service.url_guard = url_guard
    schedule_store = SqlScheduleStore(db)
    run_engine = RunEngine(
        registry,
        schedule_store,
        misfire_grace_seconds=settings.scheduler_misfire_grace_seconds,
        seconds_field=settings.scheduler_test_seconds,
    )
    run_engine.tracing = tracing
    schedule_service = ScheduleService(
        schedule_store,
        registry,
        executor,
        run_engine,
        metrics,
        webhooks=webhook_store,
        secret_box=secret_box,
    )
    schedule_service.url_guard = url_guard
    scheduler = Scheduler(store=schedule_store, engine=run_engine, apply=schedule_service.apply)
    schedule_service.on_change = scheduler.changed
    executor.add_settle_listener(scheduler.thread_settled)
    return Services(
        sandbox=getattr(runner, "sandbox", None),
        tracing=tracing,
        settings=settings,
        db=db,
        metrics=metrics,
        keys=KeyRing(
            SqlKeyStore(db),
            api_keys=settings.api_keys,
            admin_api_keys=settings.admin_api_keys,
            throttle=AuthThrottle(
                max_failures=settings.auth_max_failures,
                window_seconds=settings.auth_failure_window_seconds,
                max_entries=settings.auth_limiter_max_entries,
            ),
            on_failure=metrics.record_auth_failure,
        ),
        registry=registry,
        builder=builder,
        runner=runner,
        executor=executor,
        threads=thread_service,
        deployments=deployments,
        artifacts=ArtifactService(db),
        settings_service=settings_service,
        files=file_service,
        credentials=credentials,
        task_configs=task_configs,
        webhooks=WebhookService(
            webhook_store, url_guard, secret_box=secret_box, wake=dispatcher.wake
        ),
        dispatcher=dispatcher,
        schedules=schedule_service,
        scheduler=scheduler,
        secret_box=secret_box,
        settings_store=settings_store,
        stats=SqlStatsStore(db),
        ui_sessions=SqlUiSessionStore(db),
    )


async def _bootstrap_keys(svc: Services) -> dict[str, str]:
    """With no admin key anywhere, generate an admin and a regular key (printed by serve).

    Their hashes are stored as managed keys; the secrets are kept in a 0600 file in the
    data directory so the quick start can show them again at the next start.
    """
    path = svc.settings.data_dir.resolve() / GENERATED_KEYS_FILE
    if path.exists():
        private_file(path)  # written by a version that did not enforce 0600 on old files
    if svc.keys.has_configured_admin:
        return {}
    if await svc.keys.count_active_admin_keys():
        saved: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(path.read_text())
        # Show generated keys again only while they still work.
        return {name: key for name, key in saved.items() if await svc.keys.is_active(key)}
    admin_key = await svc.keys.create_key(name="generated-admin", role="admin")
    user_key = await svc.keys.create_key(name="generated-user", role="user")
    keys = {"admin_api_key": admin_key["key"], "api_key": user_key["key"]}
    private_dir(path.parent)
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle)
    return keys


async def _load_dev_tasks(svc: Services, folders: list[Path]) -> None:
    for folder in folders:
        task = load_dev_task(folder)
        task.dependencies_changed()  # remember what the environment is built from
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
                    raise _TooLarge(limit)
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


class _NoNulInUrl:
    """400 for a NUL character in the path or query: PostgreSQL text cannot hold one, and
    SQLite must refuse what PostgreSQL refuses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            from starlette.requests import Request

            response = error_response(
                Request(scope),
                status=400,
                code="VALIDATION_FAILED",
                detail="NUL characters are not allowed in the URL",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _TooLarge(StarletteHTTPException):
    """Raised while the body streams in. FastAPI re-raises HTTP exceptions from body
    parsing (others become a 400), so the error handlers answer 413 FILE_SIZE_EXCEEDED."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds the limit of {limit} bytes")


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
        sqlite = svc.db.is_sqlite
        require_key(sqlite=sqlite, encryption_key=settings.encryption_key)
        private_dir(settings.data_dir)
        data_dir = settings.data_dir.resolve()
        built: list[Encryptor] = []

        def cipher(conn: Connection) -> Encryptor:
            built.append(
                encryptor_on(
                    conn,
                    svc.settings_store,
                    sqlite=sqlite,
                    encryption_key=settings.encryption_key,
                    data_dir=data_dir,
                )
            )
            return built[-1]

        await asyncio.to_thread(svc.db.migrate, cipher=cipher)
        await svc.db.tx(svc.settings_service.record_first_start)
        # A migration that sealed secrets built the encryptor already (PBKDF2 is slow).
        encryptor = (
            built[-1]
            if built
            else await load_encryptor(
                svc.settings_store,
                sqlite=sqlite,
                encryption_key=settings.encryption_key,
                data_dir=data_dir,
            )
        )
        svc.credentials.encryptor = encryptor
        svc.secret_box.open(encryptor)
        svc.generated_keys = await _bootstrap_keys(svc)
        if svc.sandbox is not None:
            # Strict mode refuses to start here; otherwise missing layers are logged once.
            layers = await asyncio.to_thread(svc.sandbox.detect)
            svc.metrics.set_sandbox_layers(layers.in_force(), svc.sandbox.health()["missing"])
        await _load_dev_tasks(svc, settings.dev_tasks)
        await svc.deployments.start()
        await svc.executor.start()
        await svc.scheduler.start()
        await svc.dispatcher.start()
        listener = None
        if not svc.db.is_sqlite:
            listener = Listener(svc.db.url, svc.on_notification)
            listener.start()
        svc.metrics.record_library_initialization()
        gauges = asyncio.create_task(refresh_forever(svc.stats, svc.metrics), name="cluster-gauges")
        if on_ready is not None:
            on_ready(svc)
        # Everything built so far lives as long as the app: keep it out of the cyclic
        # collector's full passes, which otherwise stall requests for tens of ms.
        gc.freeze()
        try:
            yield
        finally:
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges
            if listener is not None:
                await listener.close()
            await svc.deployments.close()
            await svc.scheduler.close()
            await svc.executor.close()
            await svc.dispatcher.close()
            await svc.runner.close()
            if svc.files is not None:
                await svc.files.close()
            await svc.db.close()
            # Last: the spans of everything above are exported before the app ends.
            await asyncio.to_thread(svc.tracing.shutdown)

    app = FastAPI(
        title="Task Framework API",
        version=__version__,
        description=(
            "Run isolated task definitions as threads with artifacts, files, schedules "
            "and webhooks."
        ),
        license_info={"name": "MIT", "identifier": "MIT"},
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs
        redoc_url=None,
        # FastAPI's own request spans, through this app's tracer or not at all.
        telemetry=svc.tracing.framework_config(),
    )
    app.state.services = svc
    install_error_handlers(app)
    app.include_router(system.router)
    # Before threads: /threads/{id}/events|logs must win over /threads/{thread_id}.
    app.include_router(streams.router)
    app.include_router(threads.router)
    app.include_router(admin.router)
    app.include_router(task_routes.router)
    app.include_router(credential_routes.router)
    app.include_router(file_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(schedule_routes.router)
    install_docs(app)

    app.mount("/ui", create_ui_app(svc))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.add_middleware(_JsonBodyLimit, limit=settings.max_json_body_bytes)
    app.add_middleware(_NoNulInUrl)
    app.add_middleware(RequestContextMiddleware, metrics=svc.metrics)
    return app


__all__ = ["Services", "create_app"]
