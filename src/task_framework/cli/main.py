"""The ``task-framework`` command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from task_framework._version import __version__
from task_framework.cli.commands import register as register_remote_commands
from task_framework.cli.local import cipher_for, settings_from

app = typer.Typer(
    name="task-framework",
    help="Host task definitions and run them as threads over a REST API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _check_tracing(settings: Any) -> None:
    """Enabled tracing without the ``otel`` extra: a clear message, not a traceback."""
    if not settings.otel_enabled:
        return
    from task_framework.observability.tracing import TracingUnavailable
    from task_framework.observability.tracing_setup import build_tracing

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


HostOpt = Annotated[
    str | None, typer.Option(metavar="ADDRESS", help="Address to bind (default 127.0.0.1)")
]
PortOpt = Annotated[int | None, typer.Option(metavar="PORT", help="Port (default 3000)")]
DataDirOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Data directory (default ./data)")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="sqlite:///... or postgresql://... (default: SQLite in the data directory)",
    ),
]
LogLevelOpt = Annotated[
    str | None, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
]


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    dev_task: Annotated[
        list[Path] | None,
        typer.Option(
            "--dev-task", metavar="DIR", help="Load a task from a source folder (repeatable)"
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    log_level: LogLevelOpt = None,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", metavar="", help="Serve HTTP only; run no threads here"),
    ] = False,
) -> None:
    """Run one replica: the API, its workers and background jobs."""
    _keep_secrets()
    import uvicorn

    from task_framework.app import create_app
    from task_framework.observability.logging import configure_logging

    settings = settings_from(
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
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    concurrency: Annotated[
        int | None,
        typer.Option(metavar="N", help="Threads run at once here (default: CPU count)"),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(metavar="IDS", help="Only run these task ids (comma-separated)"),
    ] = None,
    dev_task: Annotated[
        list[Path] | None,
        typer.Option(
            "--dev-task", metavar="DIR", help="Also load a task from a source folder (repeatable)"
        ),
    ] = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Claim and run threads (and webhook deliveries) without serving HTTP."""
    _keep_secrets()
    from task_framework.observability.logging import configure_logging
    from task_framework.worker import run_worker

    settings = settings_from(
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
def migrate(database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply database migrations and exit."""
    from task_framework.store.database import Database

    settings = settings_from(database_url=database_url, data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate(cipher=cipher_for(settings, db))
    typer.echo("database is up to date")


@app.command()
def package(
    task_dir: Annotated[Path | None, typer.Argument(metavar="DIR", help="Task folder")] = None,
    task_dir_opt: Annotated[
        Path | None,
        typer.Option("--task-dir", "-t", metavar="DIR", help="Task folder (old spelling)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="ZIP", help="Output zip")
    ] = None,
    validate_only: Annotated[
        bool,
        typer.Option("--validate-only", metavar="", help="Only check the folder; write no zip"),
    ] = False,
    show_metadata: Annotated[
        bool,
        typer.Option(
            "--show-metadata", metavar="", help="Print the package metadata as JSON on stdout"
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", metavar="", help="Accepted for compatibility; has no effect"
        ),
    ] = False,
) -> None:
    """Build (or only validate) a task package zip from a task folder."""
    from task_framework.cli.package import run

    folder = task_dir_opt or task_dir
    if folder is None:
        typer.echo("error: a task folder is required (DIR or -t DIR)", err=True)
        raise typer.Exit(2)
    code = run(folder, output, validate_only=validate_only, show_metadata=show_metadata)
    raise typer.Exit(code)


# Client-based commands: deploy, run, threads, artifacts, files, tasks, schedules, …
register_remote_commands(app)


def _plain_labels(command: Any) -> None:
    """Help without Python types. typer labels its own ``--help`` flag ``<bool>`` (a flag
    takes no value, so nothing is shown; our flags say so with ``metavar=""``), and shows
    an argument's type (``<str>``) beside its metavar, which already names it."""
    ctx = command.context_class(command)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        help_option.metavar = ""
    for param in command.params:
        if param.param_type_name == "argument" and param.metavar:
            param.display_type_rich = lambda ctx: None
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            _plain_labels(command.get_command(ctx, name))


def cli_command() -> Any:
    """The click command of :data:`app`, as ``task-framework`` runs it."""
    command = typer.main.get_command(app)
    _plain_labels(command)
    return command


def main() -> None:
    cli_command()(prog_name="task-framework")


if __name__ == "__main__":
    main()
