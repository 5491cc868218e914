"""The ``task-framework`` command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from task_framework._version import __version__
from task_framework.cli.commands import register as register_remote_commands

app = typer.Typer(
    name="task-framework",
    help="Host task definitions and run them as threads over a REST API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(
    help="Manage API keys (stored hashed in the database).", no_args_is_help=True
)
app.add_typer(keys_app, name="api-key")


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from task_framework.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None and v != []}
    try:
        return Settings(**values)
    except (ValidationError, SettingsError) as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def _check_tracing(settings: Any) -> None:
    """Enabled tracing without the ``otel`` extra: a clear message, not a traceback."""
    if not settings.otel_enabled:
        return
    from task_framework.observability.tracing import TracingUnavailable, build_tracing

    try:
        build_tracing(True).shutdown()
    except TracingUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _keep_secrets() -> None:
    """Before anything else: no other process of this user may read our environment or
    memory through /proc (the keys and the vault key are in there)."""
    from task_framework.hardening import make_non_dumpable

    if not make_non_dumpable() and sys.platform.startswith("linux"):
        typer.echo("warning: could not mark the process non-dumpable", err=True)


KEEP_ALIVE_SECONDS = 75
_EXAMPLE_BODY = '{"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "world"}}]}'


def _banner(svc: Any) -> None:
    settings = svc.settings
    base = f"http://{settings.host}:{settings.port}"
    lines = [f"task-framework {__version__} serving on {base}  (docs: {base}/docs)"]
    task_ids = svc.registry.task_ids()
    tasks = svc.registry.all()
    if tasks:
        lines.append("tasks: " + ", ".join(t.full_id for t in tasks))
    keys = svc.generated_keys
    if "admin_api_key" in keys:
        lines.append(
            f"generated API keys (kept in {settings.data_dir}/generated-api-keys.json, mode 0600):"
        )
        lines.append(f"  admin key:   {keys['admin_api_key']}")
    if "api_key" in keys:
        lines.append(f"  regular key: {keys['api_key']}")
    lines += _first_steps(base, task_ids, keys)
    print("\n".join(lines), file=sys.stderr, flush=True)


def _first_steps(base: str, task_ids: list[str], keys: dict[str, str]) -> list[str]:
    """A command that works for what is loaded: run the task, or deploy a first one."""
    if not task_ids:
        admin = keys.get("admin_api_key", "$TASK_FRAMEWORK_API_KEY")
        return [
            "no task is deployed yet; deploy one (see docs/tutorial.md):",
            f"  task-framework deploy PACKAGE.zip --url {base} --api-key {admin}",
            "  or serve a task folder with --dev-task DIR",
        ]
    if "api_key" not in keys:
        return []
    query = "" if len(task_ids) == 1 else f"?task_id={task_ids[0]}"
    return [
        f"try (task {task_ids[0]}):",
        f"  curl -s -X POST '{base}/threads{query}' -H 'X-API-Key: {keys['api_key']}' \\",
        "       -H 'X-User-Id: user1' -H 'X-App-Id: app1' \\",
        "       -H 'Content-Type: application/json' \\",
        "       -d '" + _EXAMPLE_BODY + "'",
    ]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 3000)")] = None,
    dev_task: Annotated[
        list[Path] | None,
        typer.Option("--dev-task", help="Load a task from a source folder (repeatable)"),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default ./data)")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="sqlite:///... or postgresql://...")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve HTTP only; run no threads here")
    ] = False,
) -> None:
    """Run one replica: the API, its workers and background jobs."""
    _keep_secrets()
    import uvicorn

    from task_framework.app import create_app
    from task_framework.observability.logging import configure_logging

    settings = _settings(
        host=host,
        port=port,
        dev_tasks=dev_task,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
        run_worker=False if no_worker else None,
    )
    configure_logging(settings.log_level, log_format=settings.log_format)
    _check_tracing(settings)
    application = create_app(settings, on_ready=_banner)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
        # Longer than load balancers' idle timeouts, so they close idle connections first.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


@app.command()
def worker(
    database_url: Annotated[str | None, typer.Option(help="postgresql://... (shared)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default ./data)")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Threads run at once here (default: CPU count)")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Only run these task ids (comma-separated)")
    ] = None,
    dev_task: Annotated[
        list[Path] | None,
        typer.Option("--dev-task", help="Also load a task from a source folder (repeatable)"),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = None,
) -> None:
    """Claim and run threads (and webhook deliveries) without serving HTTP."""
    _keep_secrets()
    from task_framework.observability.logging import configure_logging
    from task_framework.worker import run_worker

    settings = _settings(
        database_url=database_url,
        data_dir=data_dir,
        worker_concurrency=concurrency,
        worker_tasks=tasks,
        dev_tasks=dev_task,
        log_level=log_level,
    )
    configure_logging(settings.log_level, log_format=settings.log_format)
    _check_tracing(settings)
    try:
        import uvloop

        uvloop.run(run_worker(settings))
    except ImportError:  # pragma: no cover - uvloop is installed on Linux and macOS
        asyncio.run(run_worker(settings))


@app.command()
def migrate(
    database_url: Annotated[
        str | None, typer.Option(help="sqlite:///... or postgresql://...")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Apply database migrations and exit."""
    from task_framework.store.database import Database

    settings = _settings(database_url=database_url, data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate(cipher=_cipher(settings))
    typer.echo("database is up to date")


def _cipher(settings: Any) -> Any:
    """The vault key for a migration that seals stored secrets (built only if one does)."""
    from task_framework.services.crypto import encryptor_on

    def build(conn: Any) -> Any:
        return encryptor_on(
            conn, encryption_key=settings.encryption_key, data_dir=settings.data_dir.resolve()
        )

    return build


def _with_keyring(fn: Any, database_url: str | None, data_dir: Path | None) -> Any:
    from task_framework.services.auth import KeyRing
    from task_framework.store.database import Database

    settings = _settings(database_url=database_url, data_dir=data_dir)

    async def _run() -> Any:
        db = Database(settings.resolved_database_url)
        await asyncio.to_thread(lambda: db.migrate(cipher=_cipher(settings)))
        try:
            return await fn(KeyRing(db, api_keys=[], admin_api_keys=[]))
        finally:
            await db.close()

    return asyncio.run(_run())


DbOption = Annotated[
    str | None, typer.Option("--database-url", help="sqlite:///... or postgresql://...")
]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir")]


@keys_app.command("create")
def key_create(
    name: Annotated[str, typer.Option(help="A name for the key")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin key")] = False,
    app_id: Annotated[str | None, typer.Option(help="Bind the key to this app_id")] = None,
    user_id: Annotated[str | None, typer.Option(help="Bind the key to this user_id")] = None,
    database_url: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a key; its secret is printed once."""
    if admin and (app_id or user_id):
        typer.echo("error: admin keys cannot be bound to an app_id/user_id", err=True)
        raise typer.Exit(2)

    async def _create(keys: Any) -> Any:
        return await keys.create_key(
            name=name, role="admin" if admin else "user", app_id=app_id, user_id=user_id
        )

    created = _with_keyring(_create, database_url, data_dir)
    typer.echo(f"{created['id']}  {created['role']}  {created['name']}")
    typer.echo(created["key"])


@keys_app.command("list")
def key_list(database_url: DbOption = None, data_dir: DataDirOption = None) -> None:
    """List managed keys (never their secrets)."""
    from task_framework.store.paging import PageRequest

    async def _list(keys: Any) -> Any:
        return await keys.list_keys(
            role=None, app_id=None, user_id=None, include_revoked=True, page=PageRequest(limit=1000)
        )

    _, items = _with_keyring(_list, database_url, data_dir)
    for item in items:
        state = "revoked" if item["revoked_at"] else "active"
        bound = ",".join(f"{k}={item[k]}" for k in ("app_id", "user_id") if item[k])
        typer.echo(
            f"{item['id']}  {item['role']:5}  {state:7}  {item['prefix']}…  {item['name']}  {bound}"
        )


@keys_app.command("revoke")
def key_revoke(key_id: str, database_url: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Revoke a managed key."""
    from task_framework.errors import NotFound

    async def _revoke(keys: Any) -> None:
        await keys.revoke_key(key_id)

    try:
        _with_keyring(_revoke, database_url, data_dir)
    except NotFound as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked {key_id}")


@app.command()
def package(
    task_dir: Annotated[Path | None, typer.Argument(help="Task folder")] = None,
    task_dir_opt: Annotated[
        Path | None, typer.Option("--task-dir", "-t", help="Task folder (old spelling)")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output zip")] = None,
    validate_only: Annotated[bool, typer.Option("--validate-only")] = False,
    show_metadata: Annotated[bool, typer.Option("--show-metadata")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Build (or only validate) a task package zip from a task folder."""
    from task_framework.cli.package import run

    folder = task_dir_opt or task_dir
    if folder is None:
        typer.echo("error: a task folder is required (DIR or -t DIR)", err=True)
        raise typer.Exit(2)
    code = run(folder, output, validate_only=validate_only, show_metadata=show_metadata)
    raise typer.Exit(code)


@app.command()
def deploy(
    package_zip: Annotated[Path, typer.Argument(help="Package zip to deploy")],
    url: Annotated[str, typer.Option(help="Server base URL")] = "http://127.0.0.1:3000",
    admin_key: Annotated[
        str | None, typer.Option(envvar="TASK_FRAMEWORK_ADMIN_KEY", help="Admin API key")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a version deployed with other content")] = (
        False
    ),
) -> None:
    """Upload a package to a server, with upload and build progress."""
    from task_framework.cli.deploy import upload

    if not admin_key:
        typer.echo("error: --admin-key (or TASK_FRAMEWORK_ADMIN_KEY) is required", err=True)
        raise typer.Exit(2)
    raise typer.Exit(upload(package_zip, url=url, admin_key=admin_key, force=force))


# Client-based commands: run, threads, artifacts, files, tasks, schedules, webhooks, keys, …
register_remote_commands(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
