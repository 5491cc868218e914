"""``task-framework tasks …``: deployed task definitions (admin key)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    Column,
    Conn,
    details,
    emit,
    handled,
    ident,
    out,
    print_items,
    remote,
    remote_list,
    show_progress,
    transfer_progress,
)

tasks_app = typer.Typer(
    help="Deployed tasks: list, show, versions, delete, download (admin key).",
    no_args_is_help=True,
)

TaskArg = Annotated[str, typer.Argument(metavar="TASK_ID", help="Task id")]
VersionOpt = Annotated[
    str | None,
    typer.Option("--version", metavar="VERSION", help="One version (default: all/latest)"),
]


@tasks_app.command("list")
@remote_list
def list_tasks(
    conn: Conn,
) -> None:
    """List deployed tasks and their versions."""
    with handled(conn) as client:
        found = client.list_tasks()
    print_items(
        conn,
        found.tasks,
        [
            ident("task", lambda t: t.task_id),
            Column("latest", lambda t: t.latest_version),
            Column("versions", lambda t: ", ".join(t.versions)),
            Column("description", lambda t: t.description),
        ],
        json_value=found,
    )


@tasks_app.command("show")
@remote
def show_task(
    conn: Conn,
    task_id: TaskArg,
) -> None:
    """Show one task."""
    with handled(conn) as client:
        summary = client.get_task(task_id)
    emit(conn, summary, lambda: details(summary))


@tasks_app.command("versions")
@remote_list
def versions(
    conn: Conn,
    task_id: TaskArg,
) -> None:
    """List a task's versions, newest first."""
    with handled(conn) as client:
        items = client.task_versions(task_id)
    print_items(
        conn,
        items,
        [
            ident("version", lambda v: v.version),
            Column("deployed", lambda v: v.deployed_at.isoformat() if v.deployed_at else None),
            Column("entry point", lambda v: v.entry_point),
            ident("hash", lambda v: v.zip_hash),
        ],
    )


@tasks_app.command("delete")
@remote
def delete_task(
    conn: Conn,
    task_id: TaskArg,
    version: VersionOpt = None,
) -> None:
    """Undeploy a task version, or every version of the task."""
    with handled(conn) as client:
        result = client.delete_task(task_id, version)
    emit(conn, result, lambda: out.print(result.message))


@tasks_app.command("download")
@remote
def download_task(
    conn: Conn,
    task_id: TaskArg,
    version: VersionOpt = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="PATH", help="File or folder")
    ] = Path("."),
) -> None:
    """Download a deployed package zip (the latest version unless --version)."""
    with handled(conn) as client, transfer_progress(show_progress(conn.json)) as progress:
        bar = progress.add_task(f"downloading {task_id}", total=None)
        saved = client.download_task(
            task_id,
            output,
            version=version,
            progress=lambda done, total: progress.update(bar, completed=done, total=total),
        )
    emit(conn, {"task_id": task_id, "path": str(saved)}, lambda: out.print(str(saved)))


@tasks_app.command("history")
@remote_list
def history(
    conn: Conn,
) -> None:
    """Deployment history, newest first (failed attempts included)."""
    with handled(conn) as client:
        records = client.deployment_history()
    print_items(
        conn,
        records,
        [
            ident("task", lambda r: f"{r.task_id}:{r.version}"),
            Column("status", lambda r: r.status),
            Column("deployed", lambda r: r.deployed_at.isoformat() if r.deployed_at else None),
            Column("error", lambda r: r.error),
        ],
    )
