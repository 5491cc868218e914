"""``task-framework files …``: upload, download, list and remove files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    AllOpt,
    Column,
    Conn,
    LimitOpt,
    collect,
    emit,
    fail,
    handled,
    ident,
    out,
    print_items,
    remote,
    remote_list,
    show_progress,
    transfer_progress,
)

files_app = typer.Typer(help="Upload, download, list and remove files.", no_args_is_help=True)

RefArg = Annotated[str, typer.Argument(metavar="FILE_REF", help="File ref (file_…)")]


@files_app.command("upload")
@remote
def upload(
    conn: Conn,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="File to upload")],
    media_type: Annotated[
        str | None, typer.Option(metavar="TYPE", help="Media type (default: guessed)")
    ] = None,
    filename: Annotated[
        str | None, typer.Option(metavar="NAME", help="Stored name (default: the file's)")
    ] = None,
) -> None:
    """Upload a file (streamed, with a progress bar); prints its file ref."""
    if not path.is_file():
        fail(f"{path} is not a file")
    with handled(conn) as client, transfer_progress(show_progress(conn.json)) as progress:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        uploaded = client.upload_file(
            path,
            filename=filename,
            media_type=media_type,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    emit(conn, uploaded, lambda: out.print(uploaded.file_ref))


@files_app.command("download")
@remote
def download(
    conn: Conn,
    file_ref: RefArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="PATH", help="File or folder")
    ] = Path("."),
) -> None:
    """Download a file (streamed, with a progress bar); prints where it was saved."""
    with handled(conn) as client, transfer_progress(show_progress(conn.json)) as progress:
        task = progress.add_task(f"downloading {file_ref}", total=None)
        saved = client.download_file(
            file_ref,
            output,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    emit(conn, {"file_ref": file_ref, "path": str(saved)}, lambda: out.print(str(saved)))


@files_app.command("ls")
@remote_list
def list_files(
    conn: Conn,
    media_type: Annotated[
        str | None, typer.Option(metavar="TYPE", help="Only this media type")
    ] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List files, newest first."""
    with handled(conn) as client:
        pages = client.iter_files(page_size=min(limit, 1000), media_type=media_type)
        items = collect(pages, limit, every)
    print_items(
        conn,
        items,
        [
            ident("file_ref", lambda f: f.file_ref),
            Column("filename", lambda f: f.filename),
            Column("media_type", lambda f: f.media_type),
            Column("size", lambda f: f.size),
            Column("created", lambda f: f.created_at.isoformat() if f.created_at else None),
        ],
    )


@files_app.command("rm")
@remote
def remove(
    conn: Conn,
    file_ref: RefArg,
) -> None:
    """Delete a file."""
    with handled(conn) as client:
        client.delete_file(file_ref)
    emit(conn, {"deleted": file_ref}, lambda: out.print(f"deleted {file_ref}"))
