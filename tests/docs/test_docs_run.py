"""Every code block of README.md and docs/ that a reader would run is run here, as written.

Each page runs in a fresh copy of the repository (what the reader has after cloning it),
its blocks in page order (markers and kinds: ``docs_blocks``):

* Shell blocks run with ``bash`` (``set -e -o pipefail``) in one environment per page:
  what a block exports and the folder it ends in carry over to the next block, as in
  one terminal session.
* Python blocks run as scripts, ``uv run python SCRIPT``, in the page's current folder
  with the page's environment (the clone's project there; an activated virtual
  environment elsewhere).
* A background block (the server a page starts in a terminal) keeps running until the
  page ends; the next block runs once the page's port answers ``/health``.
* ``uv tool install`` puts commands in a folder of the page's own, first on its PATH
  (the reader's ``~/.local/bin``); this test run's virtual environment is not on it.
* After the page, no thread in the databases its servers wrote may have failed or timed
  out (a sync ``curl`` exits 0 on a failed thread).

Blocks run for real, as root in CI: a block that writes outside the page's folders
(``/var/lib/...``, ``/etc/...``, a system service) must be skipped, with that reason.

One substitution keeps pages from clashing with other servers on the machine: the
page's port 3000 (``127.0.0.1:3000``, ``localhost:3000``, and ``serve`` without
``--port`` through ``TASK_FRAMEWORK_PORT``) becomes a free port. Nothing else is
rewritten: a block that needs a placeholder filled in, or anything this machine cannot
provide, must be changed or visibly skipped with a reason.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from conftest import REPO_ROOT
from docs_blocks import Block, doc_pages, parse
from procs import free_port

pytestmark = pytest.mark.slow

PAGE_TIMEOUT_SECONDS = 900
BLOCK_TIMEOUT_SECONDS = 300
SERVER_START_SECONDS = 180
MAX_SKIPPED_BLOCKS = 12
"""Skips must stay rare: raise this only with a reason no doc change can remove."""

_PORT_SPELLINGS = ("127.0.0.1:3000", "localhost:3000")
_OUTPUT_TAIL_CHARS = 4000
_NOT_INHERITED = frozenset(
    {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "API_KEYS", "ADMIN_API_KEYS", "PORT", "PYTHONPATH"}
)


def _all_blocks() -> dict[Path, list[Block]]:
    return {page: parse(page, (REPO_ROOT / page).read_text()) for page in doc_pages(REPO_ROOT)}


def _runnable_pages() -> list[Path]:
    return [
        page
        for page, blocks in _all_blocks().items()
        if any(b.action not in {"show", "skip"} for b in blocks)
    ]


def _clone(destination: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO_ROOT / os.fsdecode(name)
        if source.is_file():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def _environment(port: int) -> dict[str, str]:
    """The caller's environment without this test run's own virtual environment and
    task-framework settings: a reader's shell, with the page's port."""
    repo_venv = str(REPO_ROOT / ".venv")
    path = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if not entry.startswith(repo_venv) and entry != str(Path(sys.executable).parent)
    ]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TASK_FRAMEWORK_") and name not in _NOT_INHERITED
    }
    env["PATH"] = os.pathsep.join(path)
    env["TASK_FRAMEWORK_PORT"] = str(port)
    return env


def _tail(text: str) -> str:
    return text if len(text) <= _OUTPUT_TAIL_CHARS else "…" + text[-_OUTPUT_TAIL_CHARS:]


class Page:
    """One page's session: working folder, exported variables, background processes."""

    def __init__(self, root: Path, clone: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.env = _environment(port)
        # `uv tool install` puts commands in a folder on the reader's PATH: here, one of
        # the page's own.
        self.env["UV_TOOL_DIR"] = str(root / "uv-tools")
        self.env["UV_TOOL_BIN_DIR"] = str(root / "bin")
        self.env["PATH"] = os.pathsep.join([str(root / "bin"), self.env["PATH"]])
        self.state = root / "state.sh"
        self.state.write_text(f"cd {_quote(clone)}\n")
        names = subprocess.run(
            ["bash", "-c", "compgen -v"], env={}, capture_output=True, text=True, check=True
        ).stdout.split()
        self.baseline = " ".join([*names, "_v", "PWD", "OLDPWD", "SHLVL", "_"])
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.count = 0

    def _script(self, block: Block, command: str, *, keep_state: bool) -> Path:
        self.count += 1
        script = self.root / f"block{self.count}.sh"
        # Like one terminal session: exported and plain variables the blocks set, and
        # the folder, carry over (bash's own variables are left out).
        save = (
            f"\n{{ export -p; for _v in $(compgen -v); do case ' {self.baseline} ' in"
            f' *" $_v "*) ;; *) declare -p "$_v" 2>/dev/null || true;; esac; done;'
            f' printf "cd %q\\n" "$PWD"; }} > {_quote(self.state)}\n'
            if keep_state
            else "\n"
        )
        script.write_text(
            f"set -e -o pipefail\nsource {_quote(self.state)}\n# {block.where}\n{command}{save}"
        )
        return script

    def _text(self, block: Block) -> str:
        text = block.text
        for spelling in _PORT_SPELLINGS:
            text = text.replace(spelling, f"{spelling.split(':')[0]}:{self.port}")
        return text

    def run(self, block: Block) -> None:
        if block.action == "shell":
            self._run(block, self._script(block, self._text(block), keep_state=True))
        elif block.action == "python":
            source = self.root / f"block{self.count + 1}.py"
            source.write_text(self._text(block))
            self._run(
                block, self._script(block, f"uv run python {_quote(source)}", keep_state=False)
            )
        elif block.action == "file":
            target = self.root / "target.txt"
            target.write_text(self._text(block))
            command = (
                f'mkdir -p "$(dirname {_quote(block.argument)})"\n'
                f"cp {_quote(target)} {_quote(block.argument)}"
            )
            self._run(block, self._script(block, command, keep_state=False))
        elif block.action == "fragment":
            body = "".join(f"    {line}\n" for line in block.text.splitlines())
            compile(f"async def _fragment(context):\n{body}", block.where, "exec")
        elif block.action == "background":
            self._start(block)

    def _run(self, block: Block, script: Path) -> None:
        try:
            done = subprocess.run(
                ["bash", str(script)],
                env=self.env,
                capture_output=True,
                timeout=BLOCK_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            partial = (exc.stdout or b"") + (exc.stderr or b"")
            pytest.fail(
                f"{block.where}: still running after {BLOCK_TIMEOUT_SECONDS} s\n"
                f"{_tail(partial.decode(errors='replace'))}"
            )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            pytest.fail(
                f"{block.where} ({block.tag}) exited with {done.returncode}:\n"
                f"{block.text}\n--- output ---\n{_tail(output)}{self._server_logs()}"
            )

    def _start(self, block: Block) -> None:
        script = self._script(block, self._text(block), keep_state=False)
        log = self.root / f"background{self.count}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                ["bash", str(script)],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((process, log))
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{block.where}: exited with {process.returncode}{self._server_logs()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail(f"{block.where}: nothing answered on port {self.port}{self._server_logs()}")

    def _server_logs(self) -> str:
        return "".join(
            f"\n--- {log.name} ---\n{_tail(log.read_text(errors='replace'))}"
            for _, log in self.background
        )

    def stop(self) -> None:
        for process, _ in reversed(self.background):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)


def _quote(path: Path | str) -> str:
    return shlex.quote(str(path))


@pytest.fixture
def page_session(tmp_path: Path) -> Iterator[Page]:
    clone = _clone(tmp_path / "task-framework")
    harness = tmp_path / "harness"
    harness.mkdir()
    page = Page(harness, clone, free_port())
    yield page
    page.stop()


def _failed_threads(root: Path, *, servers: int) -> list[str]:
    """Threads that did not succeed, in every SQLite database the page's servers wrote.
    A sync ``curl`` gets 201 for a failed thread too, so its exit status cannot say."""
    found = []
    databases = list(root.rglob("task_framework.db"))
    assert len(databases) >= servers, f"no database found under {root}"
    for database in databases:
        with closing(sqlite3.connect(database)) as connection:
            rows = connection.execute(
                "SELECT id, state, error FROM threads WHERE state IN ('failed', 'timeout')"
            ).fetchall()
        found += [f"{database}: {row}" for row in rows]
    return found


@pytest.mark.timeout(PAGE_TIMEOUT_SECONDS)
@pytest.mark.parametrize("page", _runnable_pages(), ids=str)
def test_page_runs_as_written(page: Path, page_session: Page, tmp_path: Path) -> None:
    for block in parse(page, (REPO_ROOT / page).read_text()):
        page_session.run(block)
    page_session.stop()
    assert _failed_threads(tmp_path, servers=len(page_session.background)) == []


def test_skips_are_explained_and_few() -> None:
    """Markers parse (a skip without a reason is an error) and skips stay rare."""
    skipped = _skipped_blocks()
    assert all(b.argument for b in skipped)
    assert len(skipped) <= MAX_SKIPPED_BLOCKS, "\n".join(
        f"{b.where}: {b.argument}" for b in skipped
    )


def _skipped_blocks() -> list[Block]:
    return [b for blocks in _all_blocks().values() for b in blocks if b.action == "skip"]


@pytest.mark.parametrize("block", _skipped_blocks(), ids=lambda b: b.where)
def test_skipped_block(block: Block) -> None:
    """One skipped test per block not run, so that the run's summary lists each with its
    reason."""
    pytest.skip(f"{block.where}: {block.argument}")


def test_one_server_per_page() -> None:
    """A page starts at most one long-running process: the harness waits for one port."""
    for page, blocks in _all_blocks().items():
        assert sum(b.action == "background" for b in blocks) <= 1, page


def test_wordcount_example_is_the_guides_task() -> None:
    """examples/wordcount holds exactly the files docs/how-to/write-a-task.md creates."""
    guide = Path("docs/how-to/write-a-task.md")
    written = {
        Path(b.argument).name: b.text
        for b in parse(guide, (REPO_ROOT / guide).read_text())
        if b.action == "file" and b.argument.startswith("wordcount/")
    }
    example = REPO_ROOT / "examples" / "wordcount"
    assert sorted(written) == sorted(p.name for p in example.iterdir() if p.is_file())
    for name, text in written.items():
        assert (example / name).read_text() == text, name
