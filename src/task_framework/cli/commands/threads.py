"""``task-framework threads …`` and ``task-framework artifacts …``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    EXIT_OK,
    AllOpt,
    AppOpt,
    Conn,
    JsonOpt,
    KeyOpt,
    LimitOpt,
    UrlOpt,
    UserOpt,
    collect,
    details,
    emit,
    fail,
    handled,
    out,
    print_json,
    print_thread,
    show_progress,
    table,
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

ThreadArg = Annotated[str, typer.Argument(help="Thread id")]
ArtifactArg = Annotated[str, typer.Argument(help="Artifact id")]


@threads_app.command("list")
def list_threads(
    state: Annotated[str | None, typer.Option(help="Only this state")] = None,
    task_id: Annotated[str | None, typer.Option("--task", help="Only this task")] = None,
    name: Annotated[str | None, typer.Option(help="Name, or prefix*")] = None,
    schedule_id: Annotated[
        str | None, typer.Option("--schedule", help="Only this schedule")
    ] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List threads, newest first."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        filters = {"state": state, "task_id": task_id, "name": name, "schedule_id": schedule_id}
        pages = client.iter_threads(page_size=min(limit, 1000), **filters)
        items = collect(pages, limit, every)
    emit(
        conn,
        items,
        lambda: table(
            items,
            [
                ("id", lambda t: t.id),
                ("state", lambda t: t.state),
                ("task", lambda t: f"{t.metadata.get('task_id')}:{t.metadata.get('task_version')}"),
                ("name", lambda t: t.name),
                ("created", lambda t: t.created_at.isoformat() if t.created_at else None),
            ],
        ),
    )


@threads_app.command("show")
def show_thread(
    thread_id: ThreadArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a thread with its outputs."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        thread = client.get_thread(thread_id)
    emit(conn, thread, lambda: print_thread(thread))


@threads_app.command("stop")
def stop_thread(
    thread_id: ThreadArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop a queued or running thread."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        thread = client.stop_thread(thread_id)
    emit(conn, thread, lambda: print_thread(thread))


@threads_app.command("retry")
def retry_thread(
    thread_id: ThreadArg,
    run_async: Annotated[bool, typer.Option("--async", help="Do not wait for the result")] = False,
    preserve_run_id: Annotated[bool, typer.Option(help="Keep schedule_id/run_id")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-run a failed, stopped or timed-out thread as a new thread."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        mode = "async" if run_async else "sync"
        thread = client.retry_thread(thread_id, mode=mode, preserve_run_id=preserve_run_id)
    emit(conn, thread, lambda: print_thread(thread))
    raise typer.Exit(EXIT_OK if run_async else thread_exit_code(thread))


@threads_app.command("delete")
def delete_thread(
    thread_id: ThreadArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete a finished thread, its artifacts, logs and events."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        client.delete_thread(thread_id)
    emit(conn, {"deleted": thread_id}, lambda: out.print(f"deleted {thread_id}"))


@threads_app.command("logs")
def thread_logs(
    thread_id: ThreadArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the end")] = False,
    stream: Annotated[str | None, typer.Option(help="stdout, stderr or log")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a thread's log records (with --follow: as they are written)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        if follow:
            for event in client.follow_logs(thread_id, stream=stream):
                if json_out:
                    print(json.dumps(event.data, ensure_ascii=False), flush=True)
                else:
                    print_event(event)
            return
        records = list(client.iter_thread_logs(thread_id, stream=stream))
    if json_out:
        print_json(records)
        return
    for record in records:
        level = record.level or record.stream
        out.print(
            f"[dim]{record.timestamp:%H:%M:%S}[/dim] {level:>7} {record.message}", highlight=False
        )


@threads_app.command("events")
def thread_events(
    thread_id: ThreadArg,
    after: Annotated[str | None, typer.Option(help="Resume after this event id")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stream a thread's events and log lines until it is final (one JSON line each with --json)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        for event in client.stream_events(thread_id, after=after):
            if json_out:
                line = {"id": event.id, "event": event.event, "data": event.data}
                print(json.dumps(line, ensure_ascii=False), flush=True)
            else:
                print_event(event)


# -- artifacts -------------------------------------------------------------------------------


@artifacts_app.command("list")
def list_artifacts(
    thread_id: Annotated[str | None, typer.Option("--thread", help="Only this thread's")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind")] = None,
    ref: Annotated[str | None, typer.Option(help="Ref, or prefix*")] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List artifacts (a thread's inputs and outputs with --thread)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        size = min(limit, 1000)
        if thread_id:
            pages = client.iter_thread_artifacts(thread_id, page_size=size, kind=kind, ref=ref)
        else:
            pages = client.iter_artifacts(page_size=size, kind=kind, ref=ref)
        items = collect(pages, limit, every)
    emit(
        conn,
        items,
        lambda: table(
            items,
            [
                ("id", lambda a: a.id),
                ("kind", lambda a: a.kind),
                ("ref", lambda a: a.ref),
                ("direction", lambda a: a.direction),
                ("content", lambda a: a.text if a.text is not None else a.value or a.file_ref),
            ],
        ),
    )


@artifacts_app.command("show")
def show_artifact(
    artifact_id: ArtifactArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one artifact."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        artifact = client.get_artifact(artifact_id)
    emit(conn, artifact, lambda: details(artifact))


@artifacts_app.command("download")
def download_artifact(
    artifact_id: ArtifactArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder")] = Path("."),
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Save a file artifact's bytes (streamed, with a progress bar)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        artifact = client.get_artifact(artifact_id)
        if not artifact.file_ref:
            fail(f"artifact {artifact_id} has no file (kind {artifact.kind})")
        with transfer_progress(show_progress(json_out)) as progress:
            task = progress.add_task(f"downloading {artifact.file_ref}", total=artifact.size)
            saved = client.download_file(
                artifact.file_ref,
                output,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    emit(conn, {"artifact_id": artifact_id, "path": str(saved)}, lambda: out.print(str(saved)))


@artifacts_app.command("archive")
def archive_artifact(
    artifact_id: ArtifactArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Archive an artifact (hidden from lists unless asked for)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        artifact = client.archive_artifact(artifact_id)
    emit(conn, artifact, lambda: out.print(f"archived {artifact_id}"))


@artifacts_app.command("delete")
def delete_artifact(
    artifact_id: ArtifactArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete an artifact (and its file when nothing else uses it)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        client.delete_artifact(artifact_id)
    emit(conn, {"deleted": artifact_id}, lambda: out.print(f"deleted {artifact_id}"))
