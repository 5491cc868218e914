"""``task-framework run``: create a thread, sync or async (with --follow / --wait)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import TaskID

from task_framework.cli.commands._common import (
    EXIT_OK,
    Conn,
    err,
    fail,
    handled,
    out,
    print_json,
    print_thread,
    remote,
    show_progress,
    state_style,
    thread_exit_code,
    transfer_progress,
)
from task_framework.client import Client, ServerEvent, Thread


def parse_json_input(text: str) -> dict[str, Any]:
    """``-i`` values: an artifact object (has ``kind``) or any JSON value (a json artifact)."""
    try:
        value = json.loads(text)
    except ValueError:
        fail(f"--input is not valid JSON: {text!r}")
    if isinstance(value, dict) and "kind" in value:
        return value
    return {"kind": "json", "value": value}


def parse_params(pairs: list[str], params_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except ValueError:
            fail("--params must be a JSON object")
        if not isinstance(loaded, dict):
            fail("--params must be a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def upload_inputs(client: Client, paths: list[Path], json_mode: bool) -> list[dict[str, Any]]:
    """Upload ``--file`` inputs and return file artifacts naming them."""
    artifacts = []
    with transfer_progress(show_progress(json_mode)) as progress:
        for path in paths:
            if not path.is_file():
                fail(f"{path} is not a file")
            task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)

            def advance(done: int, _total: int | None, bar: TaskID = task) -> None:
                progress.update(bar, completed=done)

            uploaded = client.upload_file(path, progress=advance)
            artifacts.append(
                {
                    "kind": "file",
                    "ref": path.name,
                    "file_ref": uploaded.file_ref,
                    "media_type": uploaded.media_type,
                }
            )
    return artifacts


def print_event(event: ServerEvent) -> None:
    """One live event, for people."""
    data = event.data
    if event.is_log:
        level = data.get("level") or data.get("stream")
        out.print(f"[dim]{level:>7}[/dim] {escape(str(data.get('message', '')))}", highlight=False)
        return
    state = (data.get("thread") or {}).get("state", "")
    extra = ""
    if event.event == "artifact.created":
        artifact = data.get("artifact") or {}
        extra = f" {artifact.get('ref') or artifact.get('id')} [{artifact.get('kind')}]"
    elif event.event == "thread.problem":
        extra = f" {(data.get('problem') or {}).get('message', '')}"
    style = state_style(state)
    out.print(
        f"[bold]{event.event}[/bold] [{style}]{state}[/{style}]{escape(extra)}", highlight=False
    )


def follow_thread(client: Client, thread_id: str, json_mode: bool) -> Thread:
    """Stream the thread's events until it is final (resuming if the stream drops)."""
    last: str | None = None
    for _attempt in range(3):
        for event in client.stream_events(thread_id, after=last):
            last = event.id or last
            if not json_mode:  # scripts get only the final thread
                print_event(event)
        thread = client.get_thread(thread_id)
        if thread.is_terminal:
            return thread
    return client.wait(thread_id)


def wait_thread(client: Client, thread_id: str, json_mode: bool) -> Thread:
    with transfer_progress(show_progress(json_mode)) as progress:
        task = progress.add_task(f"waiting for {thread_id}", total=None)
        return client.wait(
            thread_id,
            on_update=lambda t: progress.update(task, description=f"{thread_id} {t.state}"),
        )


@remote
def run(
    conn: Conn,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", metavar="JSON", help="Input: JSON value, or an artifact object"
        ),
    ] = None,
    texts: Annotated[
        list[str] | None, typer.Option("--text", metavar="TEXT", help="A text input")
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", metavar="PATH", help="Upload a file as an input"),
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--task", "-t", metavar="TASK_ID", help="Task id")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", metavar="VERSION", help="Task version")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A parameter KEY=VALUE"),
    ] = None,
    params_json: Annotated[
        str | None, typer.Option("--params", metavar="JSON", help="Params as JSON")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="Thread name")] = None,
    timeout: Annotated[
        int | None,
        typer.Option("--timeout", min=1, metavar="SECONDS", help="Thread timeout in seconds"),
    ] = None,
    run_async: Annotated[
        bool, typer.Option("--async", metavar="", help="Queue the thread and return its id at once")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", metavar="", help="With --async: stream events and logs until done"
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", metavar="", help="With --async: wait (with a spinner) until done"),
    ] = False,
) -> None:
    """Run a task. Exit code 1 when the thread does not succeed."""
    if (follow or wait) and not run_async:
        run_async = True
    artifacts = [parse_json_input(text) for text in inputs or []]
    artifacts += [{"kind": "text", "text": text} for text in texts or []]
    params = parse_params(param or [], params_json)
    with handled(conn) as client:
        artifacts += upload_inputs(client, files or [], conn.json)
        if not artifacts:
            artifacts = [{"kind": "json", "value": {}}]
        fields: dict[str, Any] = {
            "task_id": task_id,
            "version": version,
            "params": params or None,
            "name": name,
            "timeout_seconds": timeout,
        }
        if not run_async:
            thread = client.run(artifacts, **fields)
        else:
            thread = client.start(artifacts, **fields)
            if follow:
                thread = follow_thread(client, thread.id, conn.json)
            elif wait:
                thread = wait_thread(client, thread.id, conn.json)
            else:
                if conn.json:
                    print_json(thread)
                else:
                    out.print(thread.id)
                    err.print(f"follow it with: task-framework threads logs {thread.id} --follow")
                raise typer.Exit(EXIT_OK)
        if conn.json:
            print_json(thread)
        else:
            print_thread(thread)
        raise typer.Exit(thread_exit_code(thread))
