"""``task-framework threads …`` and ``task-framework artifacts …``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from task_framework.cli.commands._common import (
    EXIT_OK,
    AllOpt,
    Column,
    Conn,
    LimitOpt,
    collect,
    details,
    emit,
    fail,
    handled,
    ident,
    out,
    print_items,
    print_json,
    print_thread,
    remote,
    remote_list,
    show_progress,
    thread_exit_code,
    transfer_progress,
)
from task_framework.cli.commands.run import print_event

threads_app = typer.Typer(
    help="List, inspect, stop, retry and delete threads.", no_args_is_help=True
)
artifacts_app = typer.Typer(
    help="List, inspect, download and delete artifacts.", no_args_is_help=True
)

ThreadArg = Annotated[str, typer.Argument(metavar="THREAD_ID", help="Thread id")]
ArtifactArg = Annotated[str, typer.Argument(metavar="ARTIFACT_ID", help="Artifact id")]


@threads_app.command("list")
@remote_list
def list_threads(
    conn: Conn,
    state: Annotated[str | None, typer.Option(metavar="STATE", help="Only this state")] = None,
    task_id: Annotated[
        str | None, typer.Option("--task", metavar="TASK_ID", help="Only this task")
    ] = None,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Name, or prefix*")] = None,
    schedule_id: Annotated[
        str | None, typer.Option("--schedule", metavar="SCHEDULE_ID", help="Only this schedule")
    ] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List threads, newest first."""
    with handled(conn) as client:
        filters = {"state": state, "task_id": task_id, "name": name, "schedule_id": schedule_id}
        pages = client.iter_threads(page_size=min(limit, 1000), **filters)
        items = collect(pages, limit, every)
    print_items(
        conn,
        items,
        [
            ident("id", lambda t: t.id),
            Column("state", lambda t: t.state),
            Column(
                "task", lambda t: f"{t.metadata.get('task_id')}:{t.metadata.get('task_version')}"
            ),
            Column("name", lambda t: t.name),
            Column("created", lambda t: t.created_at.isoformat() if t.created_at else None),
        ],
    )


@threads_app.command("show")
@remote
def show_thread(
    conn: Conn,
    thread_id: ThreadArg,
) -> None:
    """Show a thread with its outputs."""
    with handled(conn) as client:
        thread = client.get_thread(thread_id)
    emit(conn, thread, lambda: print_thread(thread))


@threads_app.command("stop")
@remote
def stop_thread(
    conn: Conn,
    thread_id: ThreadArg,
) -> None:
    """Stop a queued or running thread."""
    with handled(conn) as client:
        thread = client.stop_thread(thread_id)
    emit(conn, thread, lambda: print_thread(thread))


@threads_app.command("retry")
@remote
def retry_thread(
    conn: Conn,
    thread_id: ThreadArg,
    run_async: Annotated[
        bool, typer.Option("--async", metavar="", help="Do not wait for the result")
    ] = False,
    preserve_run_id: Annotated[
        bool, typer.Option(metavar="", help="Keep schedule_id/run_id")
    ] = False,
) -> None:
    """Re-run a failed, stopped or timed-out thread as a new thread."""
    with handled(conn) as client:
        mode = "async" if run_async else "sync"
        thread = client.retry_thread(thread_id, mode=mode, preserve_run_id=preserve_run_id)
    emit(conn, thread, lambda: print_thread(thread))
    raise typer.Exit(EXIT_OK if run_async else thread_exit_code(thread))


@threads_app.command("delete")
@remote
def delete_thread(
    conn: Conn,
    thread_id: ThreadArg,
) -> None:
    """Delete a finished thread, its artifacts, logs and events."""
    with handled(conn) as client:
        client.delete_thread(thread_id)
    emit(conn, {"deleted": thread_id}, lambda: out.print(f"deleted {thread_id}"))


@threads_app.command("logs")
@remote
def thread_logs(
    conn: Conn,
    thread_id: ThreadArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", metavar="", help="Stream until the end")
    ] = False,
    stream: Annotated[
        str | None, typer.Option(metavar="STREAM", help="stdout, stderr or log")
    ] = None,
) -> None:
    """Print a thread's log records (with --follow: as they are written)."""
    with handled(conn) as client:
        if follow:
            for event in client.follow_logs(thread_id, stream=stream):
                if conn.json:
                    print(json.dumps(event.data, ensure_ascii=False), flush=True)
                else:
                    print_event(event)
            return
        records = list(client.iter_thread_logs(thread_id, stream=stream))
    if conn.json:
        print_json(records)
        return
    for record in records:
        level = record.level or record.stream
        out.print(
            f"[dim]{record.timestamp:%H:%M:%S}[/dim] {level:>7} {escape(record.message)}",
            highlight=False,
        )


@threads_app.command("events")
@remote
def thread_events(
    conn: Conn,
    thread_id: ThreadArg,
    after: Annotated[
        str | None, typer.Option(metavar="EVENT_ID", help="Resume after this event id")
    ] = None,
) -> None:
    """Stream a thread's events and log lines until it is final (one JSON line each with --json)."""
    with handled(conn) as client:
        for event in client.stream_events(thread_id, after=after):
            if conn.json:
                line = {"id": event.id, "event": event.event, "data": event.data}
                print(json.dumps(line, ensure_ascii=False), flush=True)
            else:
                print_event(event)


# -- artifacts -------------------------------------------------------------------------------


@artifacts_app.command("list")
@remote_list
def list_artifacts(
    conn: Conn,
    thread_id: Annotated[
        str | None, typer.Option("--thread", metavar="THREAD_ID", help="Only this thread's")
    ] = None,
    kind: Annotated[str | None, typer.Option(metavar="KIND", help="Only this kind")] = None,
    ref: Annotated[str | None, typer.Option(metavar="REF", help="Ref, or prefix*")] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List artifacts (a thread's inputs and outputs with --thread)."""
    with handled(conn) as client:
        size = min(limit, 1000)
        if thread_id:
            pages = client.iter_thread_artifacts(thread_id, page_size=size, kind=kind, ref=ref)
        else:
            pages = client.iter_artifacts(page_size=size, kind=kind, ref=ref)
        items = collect(pages, limit, every)
    print_items(
        conn,
        items,
        [
            ident("id", lambda a: a.id),
            Column("kind", lambda a: a.kind),
            Column("ref", lambda a: a.ref),
            Column("direction", lambda a: a.direction),
            Column("content", lambda a: a.text if a.text is not None else a.value or a.file_ref),
        ],
    )


@artifacts_app.command("show")
@remote
def show_artifact(
    conn: Conn,
    artifact_id: ArtifactArg,
) -> None:
    """Show one artifact."""
    with handled(conn) as client:
        artifact = client.get_artifact(artifact_id)
    emit(conn, artifact, lambda: details(artifact))


@artifacts_app.command("download")
@remote
def download_artifact(
    conn: Conn,
    artifact_id: ArtifactArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="PATH", help="File or folder")
    ] = Path("."),
) -> None:
    """Save a file artifact's bytes (streamed, with a progress bar)."""
    with handled(conn) as client:
        artifact = client.get_artifact(artifact_id)
        if not artifact.file_ref:
            fail(f"artifact {artifact_id} has no file (kind {artifact.kind})")
        with transfer_progress(show_progress(conn.json)) as progress:
            task = progress.add_task(f"downloading {artifact.file_ref}", total=artifact.size)
            saved = client.download_file(
                artifact.file_ref,
                output,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    emit(conn, {"artifact_id": artifact_id, "path": str(saved)}, lambda: out.print(str(saved)))


@artifacts_app.command("archive")
@remote
def archive_artifact(
    conn: Conn,
    artifact_id: ArtifactArg,
) -> None:
    """Archive an artifact (hidden from lists unless asked for)."""
    with handled(conn) as client:
        artifact = client.archive_artifact(artifact_id)
    emit(conn, artifact, lambda: out.print(f"archived {artifact_id}"))


@artifacts_app.command("delete")
@remote
def delete_artifact(
    conn: Conn,
    artifact_id: ArtifactArg,
) -> None:
    """Delete an artifact (and its file when nothing else uses it)."""
    with handled(conn) as client:
        client.delete_artifact(artifact_id)
    emit(conn, {"deleted": artifact_id}, lambda: out.print(f"deleted {artifact_id}"))
