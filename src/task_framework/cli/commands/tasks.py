"""``task-framework tasks …``: deployed task definitions (admin key)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    AppOpt,
    Conn,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    UserOpt,
    details,
    emit,
    handled,
    out,
    show_progress,
    table,
    transfer_progress,
)

tasks_app = typer.Typer(
    help="Deployed tasks: list, show, versions, delete, download (admin key).",
    no_args_is_help=True,
)

TaskArg = Annotated[str, typer.Argument(help="Task id")]
VersionOpt = Annotated[
    str | None, typer.Option("--version", help="One version (default: all/latest)")
]


@tasks_app.command("list")
def list_tasks(
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List deployed tasks and their versions."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        listing = client.list_tasks()
    emit(
        conn,
        listing,
        lambda: table(
            listing.tasks,
            [
                ("task", lambda t: t.task_id),
                ("latest", lambda t: t.latest_version),
                ("versions", lambda t: ", ".join(t.versions)),
                ("description", lambda t: t.description),
            ],
        ),
    )


@tasks_app.command("show")
def show_task(
    task_id: TaskArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one task."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        summary = client.get_task(task_id)
    emit(conn, summary, lambda: details(summary))


@tasks_app.command("versions")
def versions(
    task_id: TaskArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List a task's versions, newest first."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        items = client.task_versions(task_id)
    emit(
        conn,
        items,
        lambda: table(
            items,
            [
                ("version", lambda v: v.version),
                ("deployed", lambda v: v.deployed_at.isoformat() if v.deployed_at else None),
                ("entry point", lambda v: v.entry_point),
                ("hash", lambda v: v.zip_hash),
            ],
        ),
    )


@tasks_app.command("delete")
def delete_task(
    task_id: TaskArg,
    version: VersionOpt = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Undeploy a task version, or every version of the task."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        result = client.delete_task(task_id, version)
    emit(conn, result, lambda: out.print(result.message))


@tasks_app.command("download")
def download_task(
    task_id: TaskArg,
    version: VersionOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder")] = Path("."),
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Download a deployed package zip (the latest version unless --version)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client, transfer_progress(show_progress(json_out)) as progress:
        bar = progress.add_task(f"downloading {task_id}", total=None)
        saved = client.download_task(
            task_id,
            output,
            version=version,
            progress=lambda done, total: progress.update(bar, completed=done, total=total),
        )
    emit(conn, {"task_id": task_id, "path": str(saved)}, lambda: out.print(str(saved)))


@tasks_app.command("history")
def history(
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deployment history, newest first (failed attempts included)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        records = client.deployment_history()
    emit(
        conn,
        records,
        lambda: table(
            records,
            [
                ("task", lambda r: f"{r.task_id}:{r.version}"),
                ("status", lambda r: r.status),
                ("deployed", lambda r: r.deployed_at.isoformat() if r.deployed_at else None),
                ("error", lambda r: r.error),
            ],
        ),
    )
