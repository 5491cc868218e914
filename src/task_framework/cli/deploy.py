"""``task-framework deploy``: upload a package to a server, showing upload and build progress."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

BUILD_TIMEOUT_SECONDS = 1800.0
"""How long to wait for the server to install dependencies and answer."""
CONNECT_TIMEOUT_SECONDS = 10.0


class _CountingReader(io.BufferedReader):
    """A binary file that reports how many bytes have been read from it."""

    def __init__(self, handle: IO[bytes], on_read: Callable[[int], None]) -> None:
        super().__init__(handle)  # type: ignore[arg-type]
        self._on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._on_read(len(data))
        return data


def _describe_error(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        return f"HTTP {response.status_code} {detail.get('code')}: {detail.get('detail')}"
    return f"HTTP {response.status_code}: {body}"


def upload(path: Path, *, url: str, admin_key: str, force: bool = False) -> int:
    """Deploy ``path``; print the server's answer; return the exit code (0 on success)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    if not path.is_file():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 1
    size = path.stat().st_size
    console = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
    )
    try:
        with (
            Progress(*columns, console=console, transient=True) as progress,
            path.open("rb", buffering=0) as fh,
        ):
            task = progress.add_task(f"uploading {path.name}", total=size)
            sent = 0

            def on_read(count: int) -> None:
                nonlocal sent
                sent += count
                progress.update(task, completed=min(sent, size))
                if sent >= size:
                    progress.update(
                        task, description="installing dependencies and checking the entry point"
                    )

            response = httpx.post(
                url.rstrip("/") + "/admin/tasks",
                params={"force": "true"} if force else None,
                headers={"X-Admin-API-Key": admin_key},
                files={"file": (path.name, _CountingReader(fh, on_read), "application/zip")},
                timeout=httpx.Timeout(BUILD_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            )
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code >= 400:
        print(f"error: {_describe_error(response)}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0
