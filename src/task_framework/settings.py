"""Settings, read from ``TASK_FRAMEWORK_*`` variables first, then the legacy names.

Only the app factory and the CLI build a :class:`Settings`; nothing reads the environment
at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR", "DATA_DIR"))
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    api_keys: list[str] = Field(default_factory=list, validation_alias=_env("API_KEYS", "API_KEYS"))
    admin_api_keys: list[str] = Field(
        default_factory=list, validation_alias=_env("ADMIN_API_KEYS", "ADMIN_API_KEYS")
    )
    host: str = Field(DEFAULT_HOST, validation_alias=_env("HOST"))
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, validation_alias=_env("PORT", "PORT"))
    public_base_url: str | None = Field(None, validation_alias=_env("PUBLIC_BASE_URL"))
    task_definitions_dir: Path | None = Field(
        None, validation_alias=_env("TASK_DEFINITIONS_DIR", "TASK_DEFINITIONS_DIR")
    )
    file_storage_type: Literal["local", "s3"] = Field(
        "local", validation_alias=_env("FILE_STORAGE_TYPE", "FILE_STORAGE_TYPE")
    )
    max_concurrent_threads: int = Field(
        0, ge=0, validation_alias=_env("MAX_CONCURRENT_THREADS", "MAX_CONCURRENT_THREADS")
    )
    worker_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        validation_alias=_env("WORKER_CONCURRENCY"),
    )
    worker_idle_seconds: float = Field(300.0, gt=0, validation_alias=_env("WORKER_IDLE_SECONDS"))
    worker_max_runs: int = Field(1000, ge=1, validation_alias=_env("WORKER_MAX_RUNS"))
    worker_max_memory_mb: int = Field(0, ge=0, validation_alias=_env("WORKER_MAX_MEMORY_MB"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL", "LOG_LEVEL"))
    url_signing_key: str | None = Field(None, validation_alias=_env("URL_SIGNING_KEY"))
    max_upload_bytes: int = Field(5 * GiB, ge=1, validation_alias=_env("MAX_UPLOAD_BYTES"))
    max_json_body_bytes: int = Field(32 * MiB, ge=1, validation_alias=_env("MAX_JSON_BODY_BYTES"))
    stop_grace_seconds: float = Field(5.0, ge=0, validation_alias=_env("STOP_GRACE_SECONDS"))
    thread_lease_seconds: float = Field(30.0, gt=0, validation_alias=_env("THREAD_LEASE_SECONDS"))
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, validation_alias=_env("SHUTDOWN_GRACE_SECONDS")
    )
    max_log_bytes_per_thread: int = Field(
        10 * MiB, ge=0, validation_alias=_env("MAX_LOG_BYTES_PER_THREAD")
    )
    storage_type: str | None = Field(None, validation_alias=AliasChoices("STORAGE_TYPE"))
    venvs_dir: Path | None = Field(None, validation_alias=_env("VENVS_DIR"))
    dev_tasks: list[Path] = Field(default_factory=list, validation_alias=_env("DEV_TASKS"))
    uv_cache_dir: Path | None = Field(None, validation_alias=_env("UV_CACHE_DIR"))

    _split_keys = field_validator("api_keys", "admin_api_keys", mode="before")(_split_csv)

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
