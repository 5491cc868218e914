"""How the docs test reads fenced blocks and their markers (``tests/docs_blocks.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from docs_blocks import MarkerError, parse

PAGE = Path("page.md")


def test_tags_decide_what_runs() -> None:
    text = "```bash\necho hi\n```\n\n```python\nprint(1)\n```\n\n```json\n{}\n```\n```\nx\n```\n"
    assert [(b.action, b.line, b.text) for b in parse(PAGE, text)] == [
        ("shell", 1, "echo hi\n"),
        ("python", 5, "print(1)\n"),
        ("show", 9, "{}\n"),
        ("show", 12, "x\n"),
    ]


def test_markers_apply_to_the_next_block_only() -> None:
    text = (
        "<!-- docs-test: skip (needs PostgreSQL) -->\n```bash\nmigrate\n```\n"
        "<!-- docs-test: file shout/task.py -->\n\n```python\ndef run(c): ...\n```\n"
        "<!-- docs-test: background -->\n```sh\nserve\n```\n```bash\nnext\n```\n"
    )
    assert [(b.action, b.argument) for b in parse(PAGE, text)] == [
        ("skip", "needs PostgreSQL"),
        ("file", "shout/task.py"),
        ("background", ""),
        ("shell", ""),
    ]


def test_indented_blocks_lose_their_indentation() -> None:
    text = "1. Step:\n\n   ```bash\n   export A=1\n     echo $A\n   ```\n"
    (block,) = parse(PAGE, text)
    assert block.text == "export A=1\n  echo $A\n"


@pytest.mark.parametrize(
    "text",
    [
        "<!-- docs-test: skip -->\n```bash\nx\n```\n",
        "<!-- docs-test: skip () -->\n```bash\nx\n```\n",
        "<!-- docs-test: run-twice -->\n```bash\nx\n```\n",
        "<!-- docs-test: background -->\n```json\n{}\n```\n",
        "<!-- docs-test: fragment -->\nsome prose\n```python\nx\n```\n",
        "<!-- docs-test: file -->\n```python\nx\n```\n",
        "<!-- docs-test: skip (dangling) -->\n",
        "<!-- docs-test skip (no colon) -->\n```bash\nx\n```\n",
    ],
)
def test_bad_markers_are_errors(text: str) -> None:
    with pytest.raises(MarkerError):
        parse(PAGE, text)
