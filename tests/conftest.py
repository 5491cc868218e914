"""Fixtures shared by every test tier.

PostgreSQL: tests that need it read ``TASK_FRAMEWORK_TEST_POSTGRES_URL`` (a server URL;
each test gets a fresh database on it). Locally they skip when it is unset; with
``TASK_FRAMEWORK_REQUIRE_POSTGRES=1`` (set by CI) they fail instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI

from procs import readable_by_workers
from task_framework.app import Services, create_app
from task_framework.settings import Settings
from task_framework.store.database import Database

REPO_ROOT = Path(__file__).resolve().parent.parent
HELLO_TASK = REPO_ROOT / "examples" / "hello"
POSTGRES_URL_ENV = "TASK_FRAMEWORK_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "TASK_FRAMEWORK_REQUIRE_POSTGRES"


def postgres_server_url() -> str | None:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{POSTGRES_URL_ENV} is required here but not set")
        pytest.skip(f"PostgreSQL not configured ({POSTGRES_URL_ENV} unset)")
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    import psycopg

    server = postgres_server_url()
    assert server is not None
    name = f"tf_test_{uuid.uuid4().hex[:12]}"
    base, _, _ = server.rpartition("/")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store_db(database_url: str) -> AsyncIterator[Database]:
    """A migrated records database of its own, on SQLite and on PostgreSQL (store
    contract suites)."""
    database = Database(database_url)
    await asyncio.to_thread(database.migrate)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite records database of its own (fast service tests)."""
    database = Database(f"sqlite:///{tmp_path / 'records.db'}")
    await asyncio.to_thread(database.migrate)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture(scope="session")
def shared_venvs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One environment root per session: task environments are reused across tests."""
    return tmp_path_factory.mktemp("venvs")


@dataclass
class Server:
    """A running app (lifespan entered) and an HTTP client bound to it."""

    app: FastAPI
    client: httpx.AsyncClient
    admin_key: str
    user_key: str
    settings: Settings
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    def user(self, app_id: str = "app1", user_id: str = "user1") -> dict[str, str]:
        return {"X-API-Key": self.user_key, "X-App-Id": app_id, "X-User-Id": user_id}

    @property
    def admin(self) -> dict[str, str]:
        return {"X-API-Key": self.admin_key}


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(tmp_path: Path, shared_venvs: Path) -> AsyncIterator[ServerFactory]:
    """Build and start apps; every one is shut down at the end of the test."""
    stack: list[tuple[FastAPI, Any, httpx.AsyncClient]] = []

    async def _make(
        *, dev_tasks: list[Path] | None = None, database_url: str | None = None, **overrides: Any
    ) -> Server:
        admin_key, user_key = (
            f"tfk_admin_{secrets.token_hex(8)}",
            f"tfk_user_{secrets.token_hex(8)}",
        )
        data_dir = tmp_path / f"data{len(stack)}"
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "venvs_dir": shared_venvs,
            "database_url": database_url,
            "api_keys": [user_key],
            "admin_api_keys": [admin_key],
            "dev_tasks": [HELLO_TASK] if dev_tasks is None else dev_tasks,
            "worker_concurrency": 4,
            "stop_grace_seconds": 0.5,
            "encryption_key": Fernet.generate_key().decode(),
            **overrides,
        }
        for folder in values["dev_tasks"]:
            readable_by_workers(Path(folder))
        settings = Settings(**values)
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=60
        )
        stack.append((app, lifespan, client))
        return Server(app, client, admin_key, user_key, settings)

    yield _make
    for _app, lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
