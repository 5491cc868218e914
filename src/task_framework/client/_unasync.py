"""Generate ``sync.py`` (``Client``) from ``aio.py`` (``AsyncClient``).

Run ``python -m task_framework.client._unasync`` after editing ``aio.py``; a test checks
that ``sync.py`` is current.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "aio.py"
TARGET = HERE / "sync.py"

_REPLACEMENTS = (
    (r'"""``AsyncClient``: the asyncio client', '"""``Client``: the blocking client'),
    (
        r"``sync.py`` is generated from this module \(``python -m "
        r"task_framework.client._unasync``\);\nedit this file and regenerate.",
        "Generated from ``aio.py`` by ``python -m task_framework.client._unasync``: edit\n"
        "``aio.py`` and regenerate, never this file.",
    ),
    (r"^import asyncio\n", ""),
    (
        r"from collections.abc import AsyncIterator, Callable, Iterable, Mapping",
        "from collections.abc import Callable, Iterable, Iterator, Mapping",
    ),
    (r"  # noqa: ASYNC109[^\n]*", ""),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bhttpx\.AsyncBaseTransport\b", "httpx.BaseTransport"),
    (r"\bhttpx\.AsyncClient\b", "httpx.Client"),
    (r"\bAsyncClient\b", "Client"),
    (r"\basync def __aenter__", "def __enter__"),
    (r"\basync def __aexit__", "def __exit__"),
    (r"\basync def aclose\b", "def close"),
    (r"\.aclose\(\)", ".close()"),
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\.aiter_lines\(", ".iter_lines("),
    (r"\.aiter_bytes\(", ".iter_bytes("),
    (r"\.aread\(\)", ".read()"),
    (r"for (\w+) in ([^\n]+):\n\s+yield \1\n", r"yield from \2\n"),
)


def render() -> str:
    """The text ``sync.py`` must have: the rewritten source, formatted by ruff."""
    text = SOURCE.read_text()
    for pattern, replacement in _REPLACEMENTS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    ruff = shutil.which("ruff") or "ruff"
    formatted = subprocess.run(
        [ruff, "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return formatted.stdout


def main() -> int:
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
