"""What every remote command shares: connection options, output, errors and exit codes.

Exit codes: 0 ok, 1 the task (thread) failed, 2 usage or a rejected request (4xx),
3 the server could not be reached, refused the key (401/403) or failed (5xx).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
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
    typer.Option(
        "--url",
        envvar="TASK_FRAMEWORK_URL",
        metavar="URL",
        help="Server base URL (default http://127.0.0.1:3000)",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="TASK_FRAMEWORK_API_KEY",
        metavar="KEY",
        help="API key (an admin key for admin commands)",
        show_default=False,
    ),
]
AppOpt = Annotated[
    str | None,
    typer.Option("--app-id", envvar="TASK_FRAMEWORK_APP_ID", metavar="ID", help="Caller app_id"),
]
UserOpt = Annotated[
    str | None,
    typer.Option("--user-id", envvar="TASK_FRAMEWORK_USER_ID", metavar="ID", help="Caller user_id"),
]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Machine-readable JSON output")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", metavar="", help="Print only ids, one per line")
]
LimitOpt = Annotated[
    int, typer.Option("--limit", min=1, max=1000, metavar="N", help="Items to show")
]
AllOpt = Annotated[
    bool, typer.Option("--all", metavar="", help="Follow the cursor through every page")
]

out = Console(soft_wrap=True)
err = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Conn:
    """Connection and output options of one command invocation."""

    url: str | None
    api_key: str | None
    app_id: str | None
    user_id: str | None
    json: bool
    quiet: bool = False
    admin_key: str | None = None
    """Sent as ``X-Admin-API-Key`` (admin routes check it before ``X-API-Key``)."""

    def client(self) -> Client:
        headers = {"X-Admin-API-Key": self.admin_key} if self.admin_key else None
        return Client(
            self.url, self.api_key, app_id=self.app_id, user_id=self.user_id, headers=headers
        )


_SHARED: tuple[tuple[str, Any, Any], ...] = (
    ("url", UrlOpt, None),
    ("api_key", KeyOpt, None),
    ("app_id", AppOpt, None),
    ("user_id", UserOpt, None),
    ("json_out", JsonOpt, False),
)
_QUIET = ("quiet", QuietOpt, False)


def _with_connection(
    fn: Callable[..., None], shared: Sequence[tuple[str, Any, Any]]
) -> Callable[..., None]:
    signature = inspect.signature(fn, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "conn"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)
        for name, hint, default in shared
    ]
    names = [name for name, _, _ in shared]

    @functools.wraps(fn)
    def command(**values: Any) -> None:
        options = {name: values.pop(name) for name in names}
        conn = Conn(
            options["url"],
            options["api_key"],
            options["app_id"],
            options["user_id"],
            options["json_out"],
            quiet=options.get("quiet", False),
        )
        fn(conn, **values)

    # typer reads the options from the signature: the command's own, then the shared ones
    # (so they are accepted after the subcommand, as options always are).
    new_signature = signature.replace(parameters=[*own, *added])
    command.__signature__ = new_signature  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in new_signature.parameters.values()}
    return command


def remote(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared connection options (``--url``, ``--api-key``,
    ``--app-id``, ``--user-id``, ``--json``); it receives them as its first argument, a
    :class:`Conn`."""
    return _with_connection(fn, _SHARED)


def remote_list(fn: Callable[..., None]) -> Callable[..., None]:
    """:func:`remote`, plus ``-q/--quiet`` for a command that lists items."""
    return _with_connection(fn, (*_SHARED, _QUIET))


def fail(message: str, code: int = EXIT_USAGE, *, hint: str | None = None) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    if hint:
        err.print(f"hint: {hint}", highlight=False, markup=False)
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
def handled(conn: Conn, *, hints: Mapping[str, str] | None = None) -> Iterator[Client]:
    """A client for the command; client errors become a message and an exit code.

    ``hints`` maps API error codes to a line telling the user what to do about them.
    """
    try:
        with conn.client() as client:
            yield client
    except ApiError as exc:
        hint = (hints or {}).get(exc.code)
        if conn.json:
            error: dict[str, Any] = {"status": exc.status, "code": exc.code, "detail": exc.detail}
            if hint:
                error["hint"] = hint
            print(json.dumps({"error": error}))
        fail(f"{exc.code} ({exc.status}): {exc.detail}", exit_code_for(exc), hint=hint)
    except (ServerUnreachable, WaitTimeout) as exc:
        if conn.json:
            code = "WAIT_TIMEOUT" if isinstance(exc, WaitTimeout) else "SERVER_UNREACHABLE"
            print(json.dumps({"error": {"status": None, "code": code, "detail": str(exc)}}))
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


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table. An ``ident`` column (ids, hashes) is never cut or wrapped;
    the first one is what ``--quiet`` prints."""

    header: str
    get: Callable[[Any], Any]
    ident: bool = False


def ident(header: str, get: Callable[[Any], Any]) -> Column:
    return Column(header, get, ident=True)


TABLE_MIN_COLUMN_CHARS = 6
"""Below this many characters per other column, a table is printed as one block per item."""
TABLE_GAP_CHARS = 2
"""Between two columns (no vertical lines: ids copy and paste cleanly)."""


def _text(column: Column, row: Any) -> str:
    value = column.get(row)
    if column.ident:
        return "" if value is None else str(value)
    return short(value)


def table(rows: Sequence[Any], columns: Sequence[Column], *, title: str = "") -> None:
    """Print items as a table. Ident columns keep their whole values; the others fold.
    When the ident columns leave too little room, each item is printed as a block."""
    cells = [[_text(column, row) for column in columns] for row in rows]
    widths = [
        max([len(column.header)] + [len(line[i]) for line in cells]) if column.ident else 0
        for i, column in enumerate(columns)
    ]
    others = sum(1 for column in columns if not column.ident)
    gaps = TABLE_GAP_CHARS * (len(columns) - 1)
    if sum(widths) + gaps + others * TABLE_MIN_COLUMN_CHARS > out.width:
        _blocks(cells, columns)
        return
    grid = Table(
        title=title or None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, TABLE_GAP_CHARS // 2),
        header_style="bold",
    )
    for column, width in zip(columns, widths, strict=True):
        if column.ident:
            grid.add_column(column.header, no_wrap=True, min_width=width)
        else:
            grid.add_column(column.header, overflow="fold")
    for line in cells:
        grid.add_row(*(escape(text) for text in line))
    out.print(grid)


def _blocks(cells: Sequence[Sequence[str]], columns: Sequence[Column]) -> None:
    """The narrow-terminal layout: the first ident on its own line, the rest under it."""
    first = next((i for i, column in enumerate(columns) if column.ident), 0)
    for line in cells:
        out.print(f"[bold]{escape(line[first])}[/bold]", highlight=False)
        for i, column in enumerate(columns):
            if i != first and line[i]:
                out.print(f"  {column.header}: {escape(line[i])}", highlight=False)


def print_items(
    conn: Conn, items: Sequence[Any], columns: Sequence[Column], *, json_value: Any = None
) -> None:
    """A list command's output: JSON with ``--json`` (``items``, or ``json_value`` when the
    route answers more than the items), ids with ``--quiet``, else a table."""
    if conn.json:
        print_json(items if json_value is None else json_value)
    elif conn.quiet:
        key = next(column for column in columns if column.ident)
        for item in items:
            print(key.get(item))
    else:
        table(items, columns)


def details(item: ApiModel, fields: Sequence[str] | None = None) -> None:
    """Print one object as ``field: value`` lines (values whole: the terminal wraps them)."""
    data = item.to_json()
    names = list(fields or data)
    width = max((len(name) for name in names), default=0)
    for name in names:
        value = data.get(name)
        text = value if isinstance(value, str) else short(value, 200)
        out.print(f"[bold]{name:<{width}}[/bold]  {escape(text)}", highlight=False)


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
    out.print(f"[bold]{thread.id}[/bold]  [{style}]{thread.state}[/{style}]  {escape(task)}")
    if thread.error is not None:
        message = escape(thread.error.message)
        out.print(f"  [red]{thread.error.code}[/red]: {message}", highlight=False)
    for problem in thread.problems:
        out.print(f"  [yellow]problem[/yellow]: {escape(problem.message)}", highlight=False)
    for artifact in thread.outputs:
        content = artifact.text if artifact.text is not None else artifact.value
        if artifact.file_ref:
            content = f"file {artifact.file_ref} ({artifact.size} bytes)"
        label = artifact.ref or artifact.id
        line = f"  → {label} [{artifact.kind}]: {short(content, 100)}"
        out.print(escape(line), highlight=False)
