"""Fenced code blocks of the Markdown docs, and what the docs test does with each.

A block's fence tag decides its kind: ``bash``, ``sh``, ``shell`` and ``console`` blocks
are commands (written without prompts or output), ``python`` blocks are scripts, every
other tag (``json``, ``text``, ``ini``, none, ...) is not run. An HTML comment on the
last non-blank line before the fence changes that, visibly, for one block:

``<!-- docs-test: skip (why) -->``
    Not run. The reason is required.
``<!-- docs-test: background -->``
    A command that keeps running (a server the page starts "in a terminal"): started,
    waited for until the page's server answers ``/health``, stopped after the page.
``<!-- docs-test: file PATH -->``
    The page asks the reader to create PATH with this content: the block is written
    there (relative to the current folder of the page), whatever its tag.
``<!-- docs-test: fragment -->``
    A Python excerpt of a task function (``await context...``): compiled as the body of
    an ``async def`` with a ``context`` argument, so its syntax is checked, never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_TAGS = frozenset({"bash", "sh", "shell", "console"})
PYTHON_TAGS = frozenset({"python"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*docs-test")


class MarkerError(ValueError):
    """A ``docs-test`` marker that is malformed or stands where no block follows."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its tag, its text and what to do with it."""

    path: Path
    line: int  # 1-based line of the opening fence
    tag: str
    text: str
    action: str  # "shell", "python", "background", "file", "fragment", "skip" or "show"
    argument: str = ""  # the file's path for "file", the reason for "skip"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _parse_marker(body: str, where: str) -> tuple[str, str]:
    word, _, rest = body.partition(" ")
    rest = rest.strip()
    if word == "skip":
        reason = rest.removeprefix("(").removesuffix(")").strip()
        if not (rest.startswith("(") and rest.endswith(")")) or not reason:
            raise MarkerError(f"{where}: a skip needs a reason: <!-- docs-test: skip (why) -->")
        return "skip", reason
    if word == "file":
        if not rest:
            raise MarkerError(f"{where}: <!-- docs-test: file PATH --> needs a path")
        return "file", rest
    if word in {"background", "fragment"} and not rest:
        return word, ""
    raise MarkerError(f"{where}: unknown marker <!-- docs-test: {body} -->")


def parse(path: Path, text: str) -> list[Block]:
    """Every fenced block of one Markdown page, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None  # a marker waiting for its block
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        marker = _MARKER.match(line)
        if marker:
            if pending is not None:
                raise MarkerError(f"{path}:{pending[2]}: marker not followed by a block")
            action, argument = _parse_marker(marker["body"], f"{path}:{index + 1}")
            pending = (action, argument, index + 1)
        elif _ANY_MARKER.search(line) and not fence:
            raise MarkerError(f"{path}:{index + 1}: malformed docs-test marker: {line.strip()}")
        elif fence:
            indent, opening = fence["indent"], fence["fence"]
            tag = fence["info"].strip().split(" ")[0].lower()
            body: list[str] = []
            index += 1
            while index < len(lines) and not re.match(
                rf"^[ \t]*{re.escape(opening[0])}{{{len(opening)},}}\s*$", lines[index]
            ):
                body.append(lines[index].removeprefix(indent))
                index += 1
            start = index - len(body)
            if pending is not None:
                action, argument = pending[0], pending[1]
                if action in {"background", "fragment"} and tag not in (
                    SHELL_TAGS if action == "background" else PYTHON_TAGS
                ):
                    raise MarkerError(f"{path}:{start}: '{action}' does not apply to '{tag}'")
            elif tag in SHELL_TAGS:
                action, argument = "shell", ""
            elif tag in PYTHON_TAGS:
                action, argument = "python", ""
            else:
                action, argument = "show", ""
            blocks.append(Block(path, start, tag, "\n".join(body) + "\n", action, argument))
            pending = None
        elif line.strip() and pending is not None:
            raise MarkerError(f"{path}:{pending[2]}: marker not followed by a block")
        index += 1
    if pending is not None:
        raise MarkerError(f"{path}:{pending[2]}: marker not followed by a block")
    return blocks


def doc_pages(root: Path) -> list[Path]:
    """README.md and every page under docs/, relative to ``root``."""
    pages = [Path("README.md"), *sorted(p.relative_to(root) for p in (root / "docs").rglob("*.md"))]
    return [page for page in pages if (root / page).exists()]
