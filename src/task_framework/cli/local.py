"""What the commands that open the database themselves share (``serve``, ``worker``,
``migrate``, ``keys --local``): the settings ``serve`` reads, and the vault key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from task_framework.services.auth import KeyRing
    from task_framework.settings import Settings
    from task_framework.store.database import Database

T = TypeVar("T")

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def settings_from(**overrides: Any) -> Settings:
    """``Settings`` from the environment, with the options given on the command line."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from task_framework.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None and v != []}
    try:
        return Settings(**values)
    except (ValidationError, SettingsError) as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc


def cipher_for(settings: Settings, db: Database) -> Any:
    """The vault key for a migration that seals stored secrets (built only if one does)."""
    from task_framework.services.crypto import encryptor_on
    from task_framework.store.sql import SqlSettingsStore

    store = SqlSettingsStore(db)

    def build(conn: Any) -> Any:
        return encryptor_on(
            conn,
            store,
            sqlite=db.is_sqlite,
            encryption_key=settings.encryption_key,
            data_dir=settings.data_dir.resolve(),
        )

    return build


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def existing_database(settings: Settings) -> str:
    """The database URL of ``settings``; refuses (exit 2) a SQLite file that does not exist,
    so that a wrong data directory is not answered from a new, empty database."""
    url = settings.resolved_database_url
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        typer.echo(
            f"error: no database at {path}; nothing was created. Point at the server's "
            "data with --data-dir DIR (the folder given to `serve --data-dir`) or "
            "--database-url URL, or set TASK_FRAMEWORK_DATA_DIR / TASK_FRAMEWORK_DATABASE_URL "
            "as for `serve`.",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    return url


def with_keyring(settings: Settings, fn: Callable[[KeyRing], Awaitable[T]]) -> T:
    """Run ``fn`` with a key ring on the existing database of ``settings``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from task_framework.services.auth import KeyRing
    from task_framework.store.database import Database
    from task_framework.store.sql import SqlKeyStore

    url = existing_database(settings)

    async def _run() -> T:
        db = Database(url)
        try:
            await asyncio.to_thread(lambda: db.migrate(cipher=cipher_for(settings, db)))
            return await fn(KeyRing(SqlKeyStore(db), api_keys=[], admin_api_keys=[]))
        finally:
            await db.close()

    try:
        return asyncio.run(_run())
    except OperationalError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        typer.echo(f"error: cannot use the database {shown}: {exc.orig}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from exc
