"""InlineRunner: the in-process Runner test double."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from task_framework import TaskContext
from task_framework.errors import ArtifactValidationError, NotFound
from task_framework.runner.base import LogRecord, Outcome, RunRequest, TaskEnv, TaskSpec
from task_framework.runner.inline import InlineRunner

ENV = TaskEnv("k", Path("/nonexistent"))


class Host:
    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.logs: list[LogRecord] = []
        self.files: dict[str, bytes] = {"file_a": b"abc"}

    async def publish_outputs(
        self, thread_id: str, artifacts: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if any(a["kind"] == "text" and not a.get("ref") for a in artifacts):
            raise ArtifactValidationError("text needs a ref here")
        self.outputs.extend(artifacts)
        return artifacts

    async def signal_problem(self, thread_id: str, problem: dict[str, Any]) -> None:
        self.problems.append(problem)

    async def write_logs(self, thread_id: str, records: list[LogRecord]) -> None:
        self.logs.extend(records)

    async def upload_file(
        self,
        thread_id: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]:
        self.files["file_new"] = b"".join([c async for c in chunks])
        return {"file_ref": "file_new", "size": len(self.files["file_new"])}

    def download_file(self, thread_id: str, file_ref: str) -> AsyncIterator[bytes]:
        if file_ref not in self.files:
            raise NotFound(f"File {file_ref} does not exist")

        async def one() -> AsyncIterator[bytes]:
            yield self.files[file_ref]

        return one()


def spec(entry_point: str, code_dir: Path = Path("/nonexistent")) -> TaskSpec:
    return TaskSpec("t", "1", entry_point, code_dir, ENV)


async def full(context: TaskContext) -> None:
    context.logger.info("hello %s", context.params["who"])
    try:
        await context.publish_output_artifacts([{"kind": "text", "text": "x"}])
    except ArtifactValidationError as exc:
        await context.signal_problem(exc)
    ref = (await context.upload_file(b"data"))["file_ref"]
    assert await context.download_file(ref) == b"data"
    assert context.download_file_sync("file_a") == b"abc"
    await context.publish_output_artifacts([{"kind": "file", "ref": "f", "file_ref": ref}])


async def test_runs_a_function_with_the_host_bridged() -> None:
    host = Host()
    runner = InlineRunner({"m:full": full})
    outcome = await runner.run(
        spec("m:full"), RunRequest("thread_1", [], params={"who": "w"}), host
    )
    assert outcome == Outcome("succeeded")
    assert [a["file_ref"] for a in host.outputs] == ["file_new"]
    assert host.problems[0]["message"].startswith("Output artifact validation failed: ")
    assert [r.message for r in host.logs] == ["hello w"]


async def test_imports_entry_points_from_the_code_dir(tmp_path: Path) -> None:
    (tmp_path / "inline_demo_task.py").write_text("def main(context):\n    raise KeyError('k')\n")
    runner = InlineRunner()
    assert await runner.check_entry_point(spec("inline_demo_task:main", tmp_path)) is None
    missing = await runner.check_entry_point(spec("inline_demo_task:nope", tmp_path))
    assert missing is not None
    assert missing.code == "TASK_LOAD_FAILED"
    outcome = await runner.run(spec("inline_demo_task:main", tmp_path), RunRequest("t", []), Host())
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.exception_type) == ("TASK_EXCEPTION", "KeyError")


def cooperative(context: TaskContext) -> None:
    while not context.is_cancelled():
        time.sleep(0.005)


async def test_stop_sets_the_cancel_flag() -> None:
    runner = InlineRunner({"m:c": cooperative}, stop_grace_seconds=1)
    running = asyncio.create_task(runner.run(spec("m:c"), RunRequest("thread_s", []), Host()))
    while runner.counts() == (0, 0):
        await asyncio.sleep(0.005)
    assert await runner.stop("thread_s") is True
    assert await running == Outcome("stopped")
    assert await runner.stop("thread_s") is False


async def test_timeout_returns_a_timeout_outcome() -> None:
    runner = InlineRunner({"m:c": cooperative}, stop_grace_seconds=1)
    request = RunRequest("thread_t", [], timeout_seconds=0.05)
    outcome = await runner.run(spec("m:c"), request, Host())
    assert outcome.status == "timeout"
    assert outcome.error is not None
    assert outcome.error.code == "TASK_TIMEOUT"
