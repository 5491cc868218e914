"""``task-framework deploy``: upload a package to a server, showing upload and build progress."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    Conn,
    emit,
    fail,
    handled,
    out,
    remote,
    show_progress,
    transfer_progress,
)
from task_framework.client.models import TaskDeployment

BUILDING = "installing dependencies and checking the entry point"
HINTS = {
    "TASK_ALREADY_EXISTS": (
        "this version is deployed with other content: bump the version in "
        "task_metadata.json, or deploy again with --force to replace it"
    ),
}


def _print_result(result: TaskDeployment) -> None:
    full = f"{result.task_id}:{result.version}"
    if result.was_new:
        out.print(f"deployed {full}", highlight=False)
    else:
        out.print(f"{full} is already deployed with the same content", highlight=False)


@remote
def deploy(
    conn: Conn,
    package_zip: Annotated[Path, typer.Argument(metavar="ZIP", help="Package zip to deploy")],
    force: Annotated[
        bool,
        typer.Option(
            "--force/--no-force",
            metavar="",
            help="Replace a version deployed with other content",
        ),
    ] = False,
    admin_key: Annotated[
        str | None,
        typer.Option(
            "--admin-key",
            envvar="TASK_FRAMEWORK_ADMIN_KEY",
            metavar="KEY",
            show_default=False,
            help="Older spelling: an admin key, sent as X-Admin-API-Key (--api-key is enough)",
        ),
    ] = None,
) -> None:
    """Upload a package to a server (admin key), with upload and build progress."""
    if not package_zip.is_file():
        fail(f"{package_zip} is not a file")
    conn = dataclasses.replace(conn, admin_key=admin_key)
    size = package_zip.stat().st_size
    with (
        handled(conn, hints=HINTS) as client,
        transfer_progress(show_progress(conn.json)) as progress,
    ):
        bar = progress.add_task(f"uploading {package_zip.name}", total=size)

        def advance(done: int, _total: int | None) -> None:
            progress.update(bar, completed=min(done, size))
            if done >= size:
                progress.update(bar, description=BUILDING)

        result = client.deploy_task(package_zip, force=force, progress=advance)
    emit(conn, result, lambda: _print_result(result))
