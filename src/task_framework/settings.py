"""Settings, read from ``TASK_FRAMEWORK_*`` variables first, then the legacy names.

Only the app factory and the CLI build a :class:`Settings`; nothing reads the environment
at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from task_framework.services.auth_throttle import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_FAILURES,
    DEFAULT_WINDOW_SECONDS,
)

MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_PORT = 3000
DEFAULT_HOST = "127.0.0.1"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _env(name: str, *legacy: str) -> AliasChoices:
    return AliasChoices(f"TASK_FRAMEWORK_{name}", *legacy)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of one replica (API.md §16.2)."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    data_dir: Path = Field(
        Path("data"),
        validation_alias=_env("DATA_DIR", "DATA_DIR"),
        description=(
            "Root of local state: the SQLite database, local files, task "
            "environments, generated keys."
        ),
    )
    database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_URL"),
        description=(
            "`sqlite:///PATH` or `postgresql://USER@HOST/DB` (`postgres://` also "
            "works). Unset: SQLite at `<DATA_DIR>/task_framework.db`."
        ),
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("API_KEYS", "API_KEYS"),
        description=(
            "Regular API keys accepted in `X-API-Key`; kept in memory only as SHA-256 hashes."
        ),
    )
    admin_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("ADMIN_API_KEYS", "ADMIN_API_KEYS"),
        description=(
            "Admin API keys. With none configured and no managed admin key "
            "stored, `serve` generates an admin and a regular key at first start."
        ),
    )
    host: str = Field(
        DEFAULT_HOST,
        validation_alias=_env("HOST"),
        description=(
            "Address `serve` binds. Set `0.0.0.0` only when other machines must reach the port."
        ),
    )
    port: int = Field(
        DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=_env("PORT", "PORT"),
        description="Port `serve` listens on.",
    )
    public_base_url: str | None = Field(
        None,
        validation_alias=_env("PUBLIC_BASE_URL"),
        description=(
            "Base of pre-signed file URLs, e.g. `https://tasks.example.com`. "
            "Unset: the host of the request."
        ),
    )
    task_definitions_dir: Path | None = Field(
        None,
        validation_alias=_env("TASK_DEFINITIONS_DIR", "TASK_DEFINITIONS_DIR"),
        description=(
            "Every `*.zip` directly in this folder is deployed at startup "
            "(without force). Unset: `<DATA_DIR>/task_definitions`."
        ),
    )
    file_storage_type: Literal["local", "s3"] = Field(
        "local",
        validation_alias=_env("FILE_STORAGE_TYPE", "FILE_STORAGE_TYPE"),
        description="Where file bytes live: `local` (`<DATA_DIR>/storage/files`) or `s3`.",
    )
    s3_bucket: str | None = Field(
        None,
        validation_alias=_env("S3_BUCKET", "S3_BUCKET"),
        description=(
            "Bucket of `s3` storage (required then). Credentials come from the "
            "standard AWS variables or credential chain."
        ),
    )
    s3_region: str = Field(
        "us-east-1",
        validation_alias=_env("S3_REGION", "S3_REGION"),
        description="Region of the S3 bucket.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=_env("S3_ENDPOINT_URL", "S3_ENDPOINT_URL"),
        description="Endpoint of an S3-compatible store (MinIO and the like). Unset: AWS.",
    )
    s3_path_prefix: str = Field(
        "",
        validation_alias=_env("S3_PATH_PREFIX", "S3_PATH_PREFIX"),
        description="Prefix of every object key in the bucket.",
    )
    s3_presigned_url_expiration: int = Field(
        3600,
        ge=1,
        le=604_800,
        validation_alias=_env("S3_PRESIGNED_URL_EXPIRATION", "S3_PRESIGNED_URL_EXPIRATION"),
        description="Lifetime in seconds of S3 upload URLs when the request names none.",
    )
    max_concurrent_threads: int = Field(
        0,
        ge=0,
        validation_alias=_env("MAX_CONCURRENT_THREADS", "MAX_CONCURRENT_THREADS"),
        description=(
            "Initial cluster-wide limit of running threads (0 = unlimited). A "
            "value stored with `PUT /admin/settings` replaces it."
        ),
    )
    worker_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        validation_alias=_env("WORKER_CONCURRENCY"),
        json_schema_extra={"doc_default": "CPU count"},
        description="Threads that run at once on this replica, each in its own worker process.",
    )
    run_worker: bool = Field(
        True,
        validation_alias=_env("RUN_WORKER"),
        description="Run threads in this process (serve --no-worker sets false)",
    )
    worker_tasks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("WORKER_TASKS"),
        description="Only claim threads of these task ids (comma-separated; empty: all)",
    )
    worker_idle_seconds: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("WORKER_IDLE_SECONDS"),
        description="An idle worker process is stopped after this long without work.",
    )
    worker_max_runs: int = Field(
        1000,
        ge=1,
        validation_alias=_env("WORKER_MAX_RUNS"),
        description="A worker process is replaced after running this many threads.",
    )
    worker_max_memory_mb: int = Field(
        2048,
        ge=0,
        validation_alias=_env("WORKER_MAX_MEMORY_MB"),
        description=(
            "Default memory limit of a task, in MiB, for its worker and everything it "
            "starts (a cgroup where the host allows, else resident memory and address "
            "space); over it the thread fails with `TASK_CRASHED`. `resources.memory_mb` "
            "in `task_metadata.json` overrides it. 0 = no limit."
        ),
    )
    task_max_memory_mb: int = Field(
        0,
        ge=0,
        validation_alias=_env("TASK_MAX_MEMORY_MB"),
        description="Ceiling for `resources.memory_mb` of any task, in MiB (0 = none).",
    )
    task_cpu_seconds: int = Field(
        3600,
        ge=0,
        validation_alias=_env("TASK_CPU_SECONDS"),
        description=(
            "Default CPU time limit of one thread (its worker and all its processes), in "
            "seconds; over it the thread fails with `TASK_CRASHED`. 0 = no limit."
        ),
    )
    task_max_cpu_seconds: int = Field(
        0,
        ge=0,
        validation_alias=_env("TASK_MAX_CPU_SECONDS"),
        description="Ceiling for `resources.cpu_seconds` of any task (0 = none).",
    )
    task_processes: int = Field(
        256,
        ge=0,
        validation_alias=_env("TASK_PROCESSES"),
        description=(
            "Default limit on the processes and threads a worker may have at once "
            "(a fork bomb stops there). 0 = no limit."
        ),
    )
    task_max_processes: int = Field(
        0,
        ge=0,
        validation_alias=_env("TASK_MAX_PROCESSES"),
        description="Ceiling for `resources.max_processes` of any task (0 = none).",
    )
    task_timeout_seconds: int = Field(
        3600,
        ge=0,
        validation_alias=_env("TASK_TIMEOUT_SECONDS"),
        description=(
            "Wall-time limit of a thread that sets no `timeout_seconds`, unless its task's "
            "`resources.timeout_seconds` says otherwise. 0 = no limit."
        ),
    )
    task_max_timeout_seconds: int = Field(
        0,
        ge=0,
        validation_alias=_env("TASK_MAX_TIMEOUT_SECONDS"),
        description=(
            "Ceiling for any thread's wall time (`timeout_seconds` of the request or of the "
            "task), in seconds (0 = none)."
        ),
    )
    task_network: Literal["none", "outbound"] = Field(
        "outbound",
        validation_alias=_env("TASK_NETWORK"),
        description=(
            "Network of tasks whose metadata sets no `network`: `outbound` (the host's "
            "network) or `none` (an empty network namespace)."
        ),
    )
    task_allow_outbound: bool = Field(
        True,
        validation_alias=_env("TASK_ALLOW_OUTBOUND"),
        description="false: every task runs with `network: none`, whatever its metadata says.",
    )
    sandbox: Literal["auto", "strict", "off"] = Field(
        "auto",
        validation_alias=_env("SANDBOX"),
        description=(
            "`auto`: confine task processes with every layer the host offers and report "
            "the missing ones; `strict`: refuse to start unless all are available; "
            "`off`: run task code unconfined (debugging only)."
        ),
    )
    sandbox_uid_base: int = Field(
        200000,
        ge=1,
        validation_alias=_env("SANDBOX_UID_BASE"),
        description=(
            "When the server runs as root, each worker runs as its own uid and gid "
            "from this number up (no account needs to exist)."
        ),
    )
    worker_reuse: Literal["owner", "task", "never"] = Field(
        "owner",
        validation_alias=_env("WORKER_REUSE"),
        description=(
            "Which threads a warm worker may run after its first: `owner` (same task "
            "version and same `(app_id, user_id)`), `task` (same task version, any owner) "
            "or `never` (a fresh worker per thread)."
        ),
    )
    log_level: str = Field(
        "INFO",
        validation_alias=_env("LOG_LEVEL", "LOG_LEVEL"),
        description=(
            "`DEBUG`, `INFO`, `WARN`/`WARNING` or `ERROR` (anything else means "
            "`INFO`): the server's own logs. A task's records follow `log_level` in its "
            "`task_metadata.json` (INFO by default)."
        ),
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        validation_alias=_env("LOG_FORMAT", "LOG_FORMAT"),
        description=(
            "`json`: one JSON object per line; `console`: readable, coloured lines; "
            "`auto`: console when standard output is a terminal, else JSON."
        ),
    )
    otel_enabled: bool = Field(
        False,
        validation_alias=_env("OTEL_ENABLED"),
        description=(
            "Send an OpenTelemetry trace per thread (needs the `otel` extra: "
            "`pip install 'task-framework-py[otel]'`; the server refuses to start "
            "without it). The standard `OTEL_*` variables configure the export: "
            "`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP "
            "over HTTP), `OTEL_SERVICE_NAME` (default `task-framework`), "
            "`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`; "
            "`OTEL_TRACES_EXPORTER` `otlp` (default), `console` or `none`; "
            "`OTEL_SDK_DISABLED=true` turns tracing off again. See docs/how-to/traces.md."
        ),
    )
    url_signing_key: str | None = Field(
        None,
        validation_alias=_env("URL_SIGNING_KEY"),
        description=(
            "Secrets signing pre-signed local file URLs, comma-separated: the "
            "first signs, all verify. Unset: a key generated once and stored in "
            "the database."
        ),
    )
    encryption_key: str | None = Field(
        None,
        repr=False,
        validation_alias=_env("ENCRYPTION_KEY", "ENCRYPTION_KEY"),
        description=(
            "Keys encrypting credentials and task configuration: Fernet keys or "
            "passphrases, comma-separated (the first encrypts, all decrypt). "
            "Required with PostgreSQL; with SQLite, unset means a generated "
            "`<DATA_DIR>/secret.key`."
        ),
    )
    max_upload_bytes: int = Field(
        5 * GiB,
        ge=1,
        validation_alias=_env("MAX_UPLOAD_BYTES"),
        description="Largest file upload; larger ones get 413 `FILE_SIZE_EXCEEDED`.",
    )
    max_json_body_bytes: int = Field(
        32 * MiB,
        ge=1,
        validation_alias=_env("MAX_JSON_BODY_BYTES"),
        description="Largest JSON request body; larger ones get 413 `FILE_SIZE_EXCEEDED`.",
    )
    stop_grace_seconds: float = Field(
        5.0,
        ge=0,
        validation_alias=_env("STOP_GRACE_SECONDS"),
        description=(
            "After a stop or timeout, how long the task may clean up "
            "(`is_cancelled()` is true) before its process group gets SIGTERM, "
            "then SIGKILL 2 s later."
        ),
    )
    thread_lease_seconds: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("THREAD_LEASE_SECONDS"),
        description=(
            "Lease of a running thread, renewed every third of it. A thread whose"
            " lease expires is failed with `WORKER_LOST`."
        ),
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        validation_alias=_env("SHUTDOWN_GRACE_SECONDS"),
        description=(
            "On shutdown, how long running threads may finish before they are "
            "failed with `WORKER_LOST`."
        ),
    )
    max_log_bytes_per_thread: int = Field(
        10 * MiB,
        ge=0,
        validation_alias=_env("MAX_LOG_BYTES_PER_THREAD"),
        description=(
            "Log bytes kept per thread; past it a final `[log truncated]` record "
            "is written and the rest is dropped."
        ),
    )
    max_package_bytes: int = Field(
        100 * MiB,
        ge=1,
        validation_alias=_env("MAX_PACKAGE_BYTES"),
        description="Largest task package upload (413 `FILE_SIZE_EXCEEDED` over it).",
    )
    max_package_uncompressed_bytes: int = Field(
        500 * MiB,
        ge=1,
        validation_alias=_env("MAX_PACKAGE_UNCOMPRESSED_BYTES"),
        description=(
            "Largest total uncompressed size of a task package, counted while extracting."
        ),
    )
    max_package_entries: int = Field(
        10_000,
        ge=1,
        validation_alias=_env("MAX_PACKAGE_ENTRIES"),
        description="Most entries a task package zip may hold.",
    )
    max_package_ratio: int = Field(
        200,
        ge=1,
        validation_alias=_env("MAX_PACKAGE_RATIO"),
        description=(
            "Highest compression ratio of one package entry (checked for entries over 1 MiB)."
        ),
    )
    storage_type: str | None = Field(
        None,
        validation_alias=AliasChoices("STORAGE_TYPE"),
        description=(
            "Legacy setting: `file` is accepted and ignored; any other value "
            "stops startup with an explanation."
        ),
    )
    venvs_dir: Path | None = Field(
        None,
        validation_alias=_env("VENVS_DIR"),
        description="Where task environments are built. Unset: `<DATA_DIR>/venvs`.",
    )
    dev_tasks: list[Path] = Field(
        default_factory=list,
        validation_alias=_env("DEV_TASKS"),
        description=(
            "Task folders served from source, like `serve --dev-task` (a JSON "
            "array in the environment)."
        ),
    )
    uv_cache_dir: Path | None = Field(
        None,
        validation_alias=_env("UV_CACHE_DIR"),
        description=(
            "uv cache for environment builds. Unset: uv's own default "
            "(`UV_CACHE_DIR`, else `~/.cache/uv`)."
        ),
    )
    # Schedules (API.md §6.2): a fire not processed within the grace is a misfire.
    scheduler_misfire_grace_seconds: float = Field(
        60.0,
        ge=0,
        validation_alias=_env("SCHEDULER_MISFIRE_GRACE_SECONDS"),
        description="Schedules: a fire that cannot start within this time counts as missed.",
    )
    # Test-only: read the first cron field as seconds, so tests need not wait minutes.
    scheduler_test_seconds: bool = Field(
        False,
        validation_alias=_env("SCHEDULER_TEST_SECONDS"),
        description="For tests only: read the first cron field as seconds.",
    )
    # Webhooks (API.md §12.6, §12.7): seconds between attempts, then give up.
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        validation_alias=_env("WEBHOOK_RETRY_SCHEDULE"),
        description=(
            "Seconds to wait before each retry of a failed webhook delivery; "
            "after the last one the delivery fails."
        ),
    )
    webhook_disable_after_seconds: float = Field(
        432_000,
        gt=0,
        validation_alias=_env("WEBHOOK_DISABLE_AFTER_SECONDS"),
        description="A webhook whose deliveries fail continuously for this long is disabled.",
    )
    webhook_max_concurrency: int = Field(
        20,
        ge=1,
        validation_alias=_env("WEBHOOK_MAX_CONCURRENCY"),
        description="Webhook deliveries in flight at once on this replica.",
    )
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("WEBHOOK_ALLOWED_NETWORKS"),
        description=(
            "Networks (CIDR, comma-separated) webhook URLs may reach even when they are private."
        ),
    )
    webhook_allow_private_networks: bool = Field(
        False,
        validation_alias=_env("WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
        description=(
            "Allow webhook URLs that resolve to private, loopback, link-local or "
            "metadata addresses."
        ),
    )

    # Failed authentication (services/auth_throttle.py): per address and per key prefix.
    auth_max_failures: int = Field(
        DEFAULT_MAX_FAILURES,
        ge=0,
        le=1_000_000,
        validation_alias=_env("AUTH_MAX_FAILURES"),
        description=(
            "Failed authentications (unknown, revoked or expired key; API, admin routes "
            "and UI sign-in) one client address, or one key prefix, may make per "
            "`AUTH_FAILURE_WINDOW_SECONDS`; past it the address or prefix gets 429 "
            "`AUTH_RATE_LIMITED` with `Retry-After`, correct keys too. 0 = no limit."
        ),
    )
    auth_failure_window_seconds: float = Field(
        DEFAULT_WINDOW_SECONDS,
        gt=0,
        le=86_400,
        validation_alias=_env("AUTH_FAILURE_WINDOW_SECONDS"),
        description=(
            "The window of `AUTH_MAX_FAILURES`: failures are forgiven at "
            "`AUTH_MAX_FAILURES` per window (a token bucket), per replica."
        ),
    )
    auth_limiter_max_entries: int = Field(
        DEFAULT_MAX_ENTRIES,
        ge=1,
        le=10_000_000,
        validation_alias=_env("AUTH_LIMITER_MAX_ENTRIES"),
        description=(
            "Addresses and key prefixes with recent failures kept in memory; the least "
            "recently failing one is forgotten first."
        ),
    )

    _split_keys = field_validator(
        "api_keys",
        "admin_api_keys",
        "webhook_retry_schedule",
        "webhook_allowed_networks",
        "worker_tasks",
        mode="before",
    )(_split_csv)

    @field_validator("log_level", mode="before")
    @classmethod
    def _normalise_level(cls, value: Any) -> str:
        level = str(value or "INFO").upper()
        if level == "WARN":
            level = "WARNING"
        return level if level in LOG_LEVELS else "INFO"

    @model_validator(mode="after")
    def _check_storage_type(self) -> Settings:
        if self.storage_type not in (None, "", "file"):
            raise ValueError(
                f"STORAGE_TYPE={self.storage_type!r} is not supported: records are kept in "
                "SQLite or PostgreSQL (set TASK_FRAMEWORK_DATABASE_URL); remove STORAGE_TYPE"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'task_framework.db').resolve()}"

    @property
    def resolved_task_definitions_dir(self) -> Path:
        return self.task_definitions_dir or self.data_dir / "task_definitions"

    @property
    def resolved_venvs_dir(self) -> Path:
        return (self.venvs_dir or self.data_dir / "venvs").resolve()

    @property
    def resolved_files_dir(self) -> Path:
        """Local file storage: ``<DATA_DIR>/storage/files``."""
        return (self.data_dir / "storage" / "files").resolve()

    @property
    def url_signing_keys(self) -> list[str]:
        """Configured URL signing keys; the first signs, all verify (rotation)."""
        return [k.strip() for k in (self.url_signing_key or "").split(",") if k.strip()]
