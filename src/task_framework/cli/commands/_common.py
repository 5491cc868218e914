"""What every remote command shares: connection options, output, errors and exit codes.

Exit codes: 0 ok, 1 the task (thread) failed, 2 usage or a rejected request (4xx),
3 the server could not be reached, refused the key (401/403) or failed (5xx).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from task_framework.client import ApiError, Client, ClientError, ServerUnreachable, WaitTimeout
from task_framework.client.models import ApiModel, Thread

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVER = 3

T = TypeVar("T")

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="TASK_FRAMEWORK_URL", help="Server base URL", show_default=False),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="TASK_FRAMEWORK_API_KEY", help="API key", show_default=False),
]
AppOpt = Annotated[
    str | None,
    typer.Option("--app-id", envvar="TASK_FRAMEWORK_APP_ID", help="Caller app_id"),
]
UserOpt = Annotated[
    str | None,
    typer.Option("--user-id", envvar="TASK_FRAMEWORK_USER_ID", help="Caller user_id"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Items to show")]
AllOpt = Annotated[bool, typer.Option("--all", help="Follow the cursor through every page")]

out = Console(soft_wrap=True)
err = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Conn:
    """Connection options of one command invocation."""

    url: str | None
    api_key: str | None
    app_id: str | None
    user_id: str | None
    json: bool

    def client(self) -> Client:
        return Client(self.url, self.api_key, app_id=self.app_id, user_id=self.user_id)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def exit_code_for(error: ClientError) -> int:
    if isinstance(error, ApiError):
        if error.status in (401, 403) or error.status >= 500:
            return EXIT_SERVER
        return EXIT_USAGE
    if isinstance(error, WaitTimeout):
        return EXIT_TASK_FAILED
    return EXIT_SERVER


@contextmanager
def handled(conn: Conn) -> Iterator[Client]:
    """A client for the command; client errors become a message and an exit code."""
    try:
        with conn.client() as client:
            yield client
    except ApiError as exc:
        if conn.json:
            print(
                json.dumps(
                    {"error": {"status": exc.status, "code": exc.code, "detail": exc.detail}}
                )
            )
        fail(f"{exc.code} ({exc.status}): {exc.detail}", exit_code_for(exc))
    except (ServerUnreachable, WaitTimeout) as exc:
        fail(str(exc), exit_code_for(exc))


def jsonable(value: Any) -> Any:
    if isinstance(value, ApiModel):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    print(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def short(value: Any, width: int = 60) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False)
    text = str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(
    rows: Sequence[Any], columns: Sequence[tuple[str, Callable[[Any], Any]]], *, title: str = ""
) -> None:
    """Print items as a table; ``columns`` are (header, getter) pairs."""
    grid = Table(title=title or None, show_lines=False, header_style="bold")
    for header, _ in columns:
        grid.add_column(header, overflow="fold")
    for row in rows:
        grid.add_row(*(short(getter(row)) for _, getter in columns))
    out.print(grid)


def details(item: ApiModel, fields: Sequence[str] | None = None) -> None:
    """Print one object as ``field: value`` lines."""
    data = item.to_json()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name in fields or list(data):
        value = data.get(name)
        grid.add_row(name, short(value, 200) if not isinstance(value, str) else value)
    out.print(grid)


def emit(conn: Conn, value: Any, human: Callable[[], None]) -> None:
    """JSON with ``--json``, else the human rendering."""
    if conn.json:
        print_json(value)
    else:
        human()


def collect(pages: Iterator[T], limit: int, every: bool) -> list[T]:
    """Items of an iterator: the first ``limit``, or all of them with ``--all``."""
    items: list[T] = []
    for item in pages:
        items.append(item)
        if not every and len(items) >= limit:
            break
    return items


def transfer_progress(enabled: bool) -> Progress:
    """A progress bar for bytes moving (shown on stderr, hidden when disabled)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )


def show_progress(json_mode: bool) -> bool:
    """Progress bars only for people: not with --json, not when stderr is not a terminal."""
    return not json_mode and sys.stderr.isatty()


def state_style(state: str) -> str:
    return {
        "succeeded": "green",
        "failed": "red",
        "timeout": "red",
        "stopped": "yellow",
        "running": "cyan",
    }.get(state, "white")


def thread_exit_code(thread: Thread) -> int:
    return EXIT_OK if thread.state == "succeeded" else EXIT_TASK_FAILED


def print_thread(thread: Thread) -> None:
    style = state_style(thread.state)
    task = f"{thread.metadata.get('task_id')}:{thread.metadata.get('task_version')}"
    out.print(f"[bold]{thread.id}[/bold]  [{style}]{thread.state}[/{style}]  {task}")
    if thread.error is not None:
        out.print(f"  [red]{thread.error.code}[/red]: {thread.error.message}", highlight=False)
    for problem in thread.problems:
        out.print(f"  [yellow]problem[/yellow]: {problem.message}", highlight=False)
    for artifact in thread.outputs:
        content = artifact.text if artifact.text is not None else artifact.value
        if artifact.file_ref:
            content = f"file {artifact.file_ref} ({artifact.size} bytes)"
        label = artifact.ref or artifact.id
        out.print(f"  → {label} [{artifact.kind}]: {short(content, 100)}", highlight=False)
