"""ProcessRunner with real environments (uv + PyPI) and real worker processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from procs import PROCESS_ID, host_pid, live_processes, process_alive
from task_framework.errors import ArtifactValidationError, NotFound
from task_framework.runner.base import LogRecord, Outcome, RunRequest, TaskEnv, TaskSpec
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.runner.pool import ProcessRunner
from task_framework.utils.artifact_validation import service_rule_error
from task_framework.utils.schema_matching import match_any

pytestmark = pytest.mark.slow

GRACE_SECONDS = 0.5
KILL_AFTER_SECONDS = 0.5
GONE_WITHIN_SECONDS = 2.0
UPLOAD_BYTES = 3 * 1024 * 1024 + 12345

TASKS = """
import asyncio, logging, os, subprocess, sys, tempfile, time
from task_framework import ArtifactValidationError, TaskContext
from task_framework.models.artifact import Artifact

UPLOAD_BYTES = {upload_bytes}


def payload():
    return (bytes(range(256)) * (UPLOAD_BYTES // 256 + 1))[:UPLOAD_BYTES]


def config_report(context):
    out = {{"thread_id": [context.thread_id, context.get_thread_id()],
           "metadata": context.get_metadata(), "params": context.get_params(),
           "same_attrs": context.metadata is context.get_metadata(),
           "get": [context.get("both"), context.get("plain"), context.get("missing", "dflt")],
           "has": [context.has("both"), context.has("plain"), context.has("missing")],
           "get_env": [context.get_env("both"), context.get_env("secret_only")],
           "get_secret": [context.get_secret("both"), context.get_secret("nope", "d")],
           "has_secret": [context.has_secret("both"), context.has_secret("plain")],
           "all_env": context.get_all_env(), "cancelled": context.is_cancelled(),
           "logger": type(context.logger).__name__, "is_context": isinstance(context, TaskContext)}}
    try:
        context.get_secret("missing")
    except KeyError as exc:
        out["secret_error"] = exc.args[0]
    return out


BAD = {{"kind": "json", "ref": "bad", "value": {{"n": "not a number"}}}}


def surface_sync(context):
    print("print one")
    context.logger.info("logger two")
    context.logger.debug("hidden debug")
    logging.getLogger("other").warning("logging three")
    print("stderr four", file=sys.stderr)
    report = config_report(context)
    inputs = context.get_input_artifacts_sync()
    report["inputs"] = [[a.ref, a.direction] for a in inputs]
    report["inputs_async"] = [a.ref for a in asyncio.run(context.get_input_artifacts())]
    try:
        context.publish_output_artifacts_sync([BAD])
    except ArtifactValidationError as exc:
        report["invalid"] = str(exc)
    first = context.upload_file_sync(payload(), filename="p.bin", media_type="application/x-p")
    path = os.path.join(tempfile.mkdtemp(), "from-path.bin")
    with open(path, "wb") as handle:
        handle.write(payload())
    second = context.upload_file_sync(path)
    with open(path, "rb") as handle:
        third = asyncio.run(context.upload_file(handle))
    report["uploads"] = [
        first["file_ref"], second["file_ref"], third["file_ref"], second.get("filename")]
    report["roundtrip"] = context.download_file_sync(first["file_ref"]) == payload()
    report["roundtrip_async"] = asyncio.run(context.download_file(third["file_ref"])) == payload()
    target = path + ".copy"
    context.download_file_to_sync(second["file_ref"], target)
    with open(target, "rb") as handle:
        report["roundtrip_to"] = handle.read() == payload()
    try:
        context.download_file_sync("file_missing")
    except FileNotFoundError as exc:
        report["missing"] = str(exc)
    context.signal_problem_sync(ValueError("careful"), {{"k": 1}})
    asyncio.run(context.signal_problem("from asyncio.run"))
    stored = context.publish_output_artifacts_sync(
        [Artifact(kind="file", ref="blob", file_ref=first["file_ref"]),
         {{"kind": "json", "ref": "report", "value": report}}])
    assert all(isinstance(a, Artifact) and a.id for a in stored), stored
    print("after publish")


async def surface_async(context):
    print("print one")
    context.logger.info("logger two")
    context.logger.debug("hidden debug")
    logging.getLogger("other").warning("logging three")
    print("stderr four", file=sys.stderr)
    report = config_report(context)
    inputs = await context.get_input_artifacts()
    report["inputs"] = [[a.ref, a.direction] for a in inputs]
    report["inputs_async"] = [a.ref for a in context.get_input_artifacts_sync()]
    try:
        await context.publish_output_artifacts([BAD])
    except ArtifactValidationError as exc:
        report["invalid"] = str(exc)
    first = await context.upload_file(payload(), filename="p.bin", media_type="application/x-p")
    path = os.path.join(tempfile.mkdtemp(), "from-path.bin")
    with open(path, "wb") as handle:
        handle.write(payload())
    second = await context.upload_file(path)
    with open(path, "rb") as handle:
        third = context.upload_file_sync(handle)
    report["uploads"] = [
        first["file_ref"], second["file_ref"], third["file_ref"], second.get("filename")]
    report["roundtrip"] = (await context.download_file(first["file_ref"])) == payload()
    chunks = [chunk async for chunk in context.iter_file(third["file_ref"])]
    report["roundtrip_async"] = b"".join(chunks) == payload() and len(chunks) > 1
    target = path + ".copy"
    await context.download_file_to(second["file_ref"], target)
    with open(target, "rb") as handle:
        report["roundtrip_to"] = handle.read() == payload()
    try:
        await context.download_file("file_missing")
    except FileNotFoundError as exc:
        report["missing"] = str(exc)
    await context.signal_problem(ValueError("careful"), {{"k": 1}})
    context.signal_problem_sync("from asyncio.run")
    stored = await context.publish_output_artifacts(
        [Artifact(kind="file", ref="blob", file_ref=first["file_ref"]),
         {{"kind": "json", "ref": "report", "value": report}}])
    assert all(isinstance(a, Artifact) and a.id for a in stored), stored
    print("after publish")


PROCESS_TOKEN = os.urandom(8).hex()
{process_id}

def publish_pid(context, **extra):
    # process_id() finds the worker from the host; the token tells workers apart.
    where = process_id().rpartition("/")[0]
    pids = {{"pid": os.getpid(), **extra}}
    value = {{key: f"{{where}}/{{pid}}#{{PROCESS_TOKEN}}" for key, pid in pids.items()}}
    context.publish_output_artifacts_sync([{{"kind": "json", "ref": "pid", "value": value}}])


def pid(context):
    publish_pid(context)


def noop(context):
    pass


def exit_task(context):
    print("before exit")
    sys.exit(3)


def os_exit_task(context):
    os._exit(7)


def raise_task(context):
    raise ValueError("boom")


def spin(context):
    while True:
        pass


async def spin_async(context):
    while True:
        pass


def sleep_forever(context):
    time.sleep(1000)


def cooperative(context):
    while not context.is_cancelled():
        time.sleep(0.01)
    print("cleaned up")


def fork_child(context):
    child = subprocess.Popen(["sleep", "1000"])
    publish_pid(context, child=child.pid)


def fork_and_hang(context):
    child = subprocess.Popen(["sleep", "1000"])
    publish_pid(context, child=child.pid)
    time.sleep(1000)


def hog(context):
    blocks = []
    for _ in range(200):
        blocks.append(b"x" * (10 * 1024 * 1024))
        time.sleep(0.02)


def shell_output(context):
    os.system("echo from-the-shell")
    time.sleep(0.3)


def square(n):
    return n * n


def ordinary_tools(context):
    # What tasks do without asking: a process pool, temp files, their own package files,
    # a subprocess, files in the working directory.
    import multiprocessing, pathlib
    with multiprocessing.get_context("fork").Pool(2) as pool:
        squares = pool.map(square, [1, 2, 3])
    with tempfile.NamedTemporaryFile("w+", suffix=".txt") as handle:
        handle.write("temp")
        handle.flush()
        temp_ok = open(handle.name).read() == "temp"
    own = "def ordinary_tools" in pathlib.Path(__file__).read_text()
    echoed = subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip()
    pathlib.Path("out.txt").write_text("local")
    context.publish_output_artifacts_sync([{{"kind": "json", "ref": "tools", "value": {{
        "squares": squares, "temp": temp_ok, "own": own, "echo": echoed,
        "local": pathlib.Path("out.txt").read_text(), "cwd": os.getcwd(),
        "tmpdir": tempfile.gettempdir()}}}}])


def uses_fastapi(context):
    import fastapi  # noqa: F401


def slow(context):
    time.sleep(0.4)
"""

SIX_TASK = """
import six

def main(context):
    context.publish_output_artifacts_sync(
        [{"kind": "json", "ref": "six", "value": six.__version__}])
"""

KILL_PARENT_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from task_framework.runner.base import RunRequest, TaskEnv, TaskSpec
from task_framework.runner.pool import ProcessRunner

class Host:
    async def publish_outputs(self, thread_id, artifacts):
        print(json.dumps(artifacts[0]["value"]), flush=True)
        return artifacts
    async def signal_problem(self, thread_id, problem): pass
    async def write_logs(self, thread_id, records): pass

async def main():
    sdk_root, env_key, env_path, code_dir = sys.argv[1:5]
    runner = ProcessRunner(sdk_root=Path(sdk_root), max_workers=1)
    env = TaskEnv(env_key, Path(env_path))
    spec = TaskSpec("t", "1", "tasks:fork_and_hang", Path(code_dir), env)
    await runner.run(spec, RunRequest("thread_1", []), Host())

asyncio.run(main())
"""

OUTPUT_SCHEMAS: list[dict[str, Any]] = [
    {"kind": "json", "json_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    {"kind": "file"},
]


class MemoryHost:
    """A TaskHost keeping everything in memory, validating like the server does."""

    def __init__(self, output_schemas: list[dict[str, Any]] | None = None) -> None:
        self.output_schemas = output_schemas or []
        self.outputs: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.logs: list[LogRecord] = []
        self.files: dict[str, bytes] = {}
        self.upload_meta: dict[str, dict[str, Any]] = {}

    async def publish_outputs(
        self, thread_id: str, artifacts: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        for artifact in artifacts:
            problem = service_rule_error(artifact["kind"], artifact) or match_any(
                artifact, self.output_schemas
            )
            if artifact.get("file_ref") and artifact["file_ref"] not in self.files:
                problem = f"File {artifact['file_ref']} does not exist"
            if problem:
                raise ArtifactValidationError(problem)
        stored = [{**a, "id": f"artifact_{uuid.uuid4().hex}"} for a in artifacts]
        self.outputs.extend(stored)
        return stored

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
        data = b"".join([chunk async for chunk in chunks])
        ref = f"file_{uuid.uuid4().hex}"
        self.files[ref] = data
        self.upload_meta[ref] = {"filename": filename, "media_type": media_type}
        return {
            "file_ref": ref,
            "size": len(data),
            "filename": filename,
            "sha256": hashlib.sha256(data).hexdigest(),
            "media_type": media_type,
        }

    def download_file(self, thread_id: str, file_ref: str) -> AsyncIterator[bytes]:
        if file_ref not in self.files:
            raise NotFound(f"File {file_ref} does not exist", code="FILE_NOT_FOUND")
        data = self.files[file_ref]

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 700_000):
                yield data[start : start + 700_000]

        return chunks()

    def value(self, ref: str) -> Any:
        return next(a["value"] for a in self.outputs if a.get("ref") == ref)


class Envs:
    def __init__(
        self, root: Path, tasks_dir: Path, base: TaskEnv, six: dict[str, tuple[Path, TaskEnv]]
    ):
        self.root = root
        self.tasks_dir = tasks_dir
        self.base = base
        self.six = six

    def spec(self, function: str, *, task_id: str = "demo") -> TaskSpec:
        return TaskSpec(task_id, "1.0.0", f"tasks:{function}", self.tasks_dir, self.base)


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> Envs:
    root = tmp_path_factory.mktemp("runner")
    tasks_dir = root / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "tasks.py").write_text(
        TASKS.format(upload_bytes=UPLOAD_BYTES, process_id=PROCESS_ID)
    )
    (tasks_dir / "broken.py").write_text("import fastapi\n\ndef main(context):\n    pass\n")
    builder = EnvironmentBuilder(root / "envs")

    async def build() -> tuple[TaskEnv, dict[str, tuple[Path, TaskEnv]]]:
        six: dict[str, tuple[Path, TaskEnv]] = {}
        for version in ("1.16.0", "1.15.0"):
            source = root / f"six-{version}"
            source.mkdir()
            (source / "requirements.txt").write_text(f"six=={version}\n")
            (source / "task.py").write_text(SIX_TASK)
            six[version] = (source, await builder.ensure(source))
        return await builder.ensure(tasks_dir), six

    base, six = asyncio.run(build())
    return Envs(root, tasks_dir, base, six)


@pytest.fixture
async def runner(envs: Envs) -> AsyncIterator[ProcessRunner]:
    runner = ProcessRunner(
        sdk_root=envs.root,
        max_workers=4,
        stop_grace_seconds=GRACE_SECONDS,
        kill_after_seconds=KILL_AFTER_SECONDS,
    )
    yield runner
    await runner.close()
    assert runner.counts() == (0, 0)


async def run(
    runner: ProcessRunner, spec: TaskSpec, host: MemoryHost | None = None, **request: Any
) -> tuple[Outcome, MemoryHost]:
    host = host or MemoryHost()
    outcome = await runner.run(
        spec, RunRequest(f"thread_{uuid.uuid4().hex}", **{"inputs": [], **request}), host
    )
    return outcome, host


def messages(host: MemoryHost) -> Iterator[tuple[str, str]]:
    for record in host.logs:
        yield record.stream, record.message


@pytest.mark.parametrize("function", ["surface_sync", "surface_async"])
async def test_every_context_member(runner: ProcessRunner, envs: Envs, function: str) -> None:
    host = MemoryHost(OUTPUT_SCHEMAS)
    inputs = [
        {"kind": "text", "ref": "in-1", "text": "a", "direction": "input"},
        {"kind": "json", "ref": "in-2", "value": {"n": 2}, "direction": "input"},
    ]
    outcome, _ = await run(
        runner,
        envs.spec(function),
        host,
        inputs=inputs,
        params={"p": 1},
        metadata={"user_id": "u1", "custom": "c"},
        config={"both": "plain-value", "plain": "p"},
        secrets={"both": "secret-value", "secret_only": "s"},
    )
    assert outcome == Outcome("succeeded"), outcome
    report = host.value("report")
    thread_id = host.outputs[0]["thread_id"]
    assert report["thread_id"] == [thread_id, thread_id]
    assert report["metadata"] == {"user_id": "u1", "custom": "c"}
    assert report["params"] == {"p": 1}
    assert report["same_attrs"] is True
    assert report["get"] == ["secret-value", "p", "dflt"]
    assert report["has"] == [True, True, False]
    assert report["get_env"] == ["plain-value", None]
    assert report["get_secret"] == ["secret-value", "d"]
    assert report["has_secret"] == [True, False]
    assert report["all_env"] == {"both": "plain-value", "plain": "p"}
    assert report["cancelled"] is False
    assert report["logger"] == "Logger"
    assert report["is_context"] is True
    assert report["secret_error"].startswith("Secret 'missing' not found.")
    assert report["inputs"] == [["in-1", "input"], ["in-2", "input"]]
    assert report["inputs_async"] == ["in-1", "in-2"]
    assert report["invalid"].startswith("Output artifact validation failed: ")
    assert "JSON Schema validation failed" in report["invalid"]
    assert report["roundtrip"]
    assert report["roundtrip_async"]
    assert report["roundtrip_to"]
    assert report["missing"] == "File file_missing does not exist"
    # The rejected publish persisted nothing; the later one stored both artifacts.
    assert [a["ref"] for a in host.outputs] == ["blob", "report"]
    assert all(a["direction"] == "output" and a["created_at"] for a in host.outputs)
    first, second, third, filename = report["uploads"]
    expected = hashlib.sha256(host.files[first]).hexdigest()
    assert len(host.files[first]) == UPLOAD_BYTES
    assert host.files[second] == host.files[third] == host.files[first]
    assert hashlib.sha256(host.files[second]).hexdigest() == expected
    assert host.upload_meta[first] == {"filename": "p.bin", "media_type": "application/x-p"}
    assert filename == "from-path.bin"
    assert host.problems == [
        {"message": "careful", "exception_type": "ValueError", "details": {"k": 1}},
        {"message": "from asyncio.run", "details": None},
    ]
    logged = [m for m in messages(host) if m[1] != "hidden debug"]
    assert logged == [
        ("stdout", "print one"),
        ("log", "logger two"),
        ("log", "logging three"),
        ("stderr", "stderr four"),
        ("stdout", "after publish"),
    ]
    assert [r.level for r in host.logs if r.stream == "log"] == ["INFO", "WARNING"]
    assert [r.logger for r in host.logs if r.stream == "log"] == ["task", "other"]


async def test_warm_reuse_and_recycle_after_crash(runner: ProcessRunner, envs: Envs) -> None:
    _, first = await run(runner, envs.spec("pid"))
    _, second = await run(runner, envs.spec("pid"))
    assert first.value("pid")["pid"] == second.value("pid")["pid"]
    assert runner.counts() == (0, 1)
    crashed, _ = await run(runner, envs.spec("os_exit_task"))
    assert crashed.status == "failed"
    _, third = await run(runner, envs.spec("pid"))
    assert third.value("pid")["pid"] != first.value("pid")["pid"]
    assert not process_alive(first.value("pid")["pid"])


async def test_recycled_after_max_runs(envs: Envs) -> None:
    runner = ProcessRunner(sdk_root=envs.root, max_workers=1, max_runs_per_worker=2)
    try:
        pids = []
        for _ in range(3):
            _, host = await run(runner, envs.spec("pid"))
            pids.append(host.value("pid")["pid"])
        assert pids[0] == pids[1] != pids[2]
    finally:
        await runner.close()


async def test_successor_is_started_before_a_recycle_even_at_the_limit(envs: Envs) -> None:
    runner = ProcessRunner(sdk_root=envs.root, max_workers=1, max_runs_per_worker=2)
    try:
        _, first = await run(runner, envs.spec("pid"))
        deadline = time.monotonic() + 30
        while runner.counts() != (0, 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert runner.counts() == (0, 2)  # the used-up worker and its started successor
        _, second = await run(runner, envs.spec("pid"))  # the old worker's last run
        assert second.value("pid")["pid"] == first.value("pid")["pid"]
        assert runner.counts() == (0, 1)
        _, third = await run(runner, envs.spec("pid"))
        assert third.value("pid")["pid"] != first.value("pid")["pid"]
        assert not process_alive(first.value("pid")["pid"])
    finally:
        await runner.close()


async def test_idle_workers_time_out(envs: Envs) -> None:
    runner = ProcessRunner(sdk_root=envs.root, max_workers=2, idle_seconds=0.2)
    try:
        _, host = await run(runner, envs.spec("pid"))
        assert runner.counts() == (0, 1)
        await asyncio.sleep(0.8)
        assert runner.counts() == (0, 0)
        assert not process_alive(host.value("pid")["pid"])
    finally:
        await runner.close()


async def test_per_task_concurrency_limit(envs: Envs) -> None:
    runner = ProcessRunner(sdk_root=envs.root, max_workers=3, max_workers_per_task=1)
    try:
        await run(runner, envs.spec("noop"))  # warm one worker
        started = time.monotonic()
        results = await asyncio.gather(*(run(runner, envs.spec("slow")) for _ in range(2)))
        assert time.monotonic() - started >= 0.8  # serialised, not parallel
        assert all(outcome.status == "succeeded" for outcome, _ in results)
        # Another task is not held back by the first one's limit.
        started = time.monotonic()
        await asyncio.gather(
            run(runner, envs.spec("slow")), run(runner, envs.spec("slow", task_id="other"))
        )
        assert time.monotonic() - started < 0.8 + 1.0
    finally:
        await runner.close()


async def test_exception(runner: ProcessRunner, envs: Envs) -> None:
    outcome, _ = await run(runner, envs.spec("raise_task"))
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.message, outcome.error.exception_type) == (
        "TASK_EXCEPTION",
        "boom",
        "ValueError",
    )
    assert outcome.error.stack_trace is not None
    assert "raise_task" in outcome.error.stack_trace
    assert "child.py" not in outcome.error.stack_trace
    _, _host = await run(runner, envs.spec("pid"))  # the worker survives a task exception
    assert runner.counts() == (0, 1)


async def test_sys_exit_crashes_only_its_thread(runner: ProcessRunner, envs: Envs) -> None:
    outcome, host = await run(runner, envs.spec("exit_task"))
    assert outcome.error is not None
    assert (outcome.status, outcome.error.code, outcome.error.message) == (
        "failed",
        "TASK_CRASHED",
        "Task process exited with code 3",
    )
    assert outcome.error.exception_type == "WorkerCrashed"
    assert ("stdout", "before exit") in list(messages(host))
    assert runner.counts() == (0, 0)
    assert (await run(runner, envs.spec("noop")))[0].status == "succeeded"


async def test_os_exit(runner: ProcessRunner, envs: Envs) -> None:
    outcome, _ = await run(runner, envs.spec("os_exit_task"))
    assert outcome.error is not None
    assert (outcome.status, outcome.error.code, outcome.error.message) == (
        "failed",
        "TASK_CRASHED",
        "Task process exited with code 7",
    )
    assert runner.counts() == (0, 0)


@pytest.mark.parametrize("function", ["spin", "spin_async"])
async def test_timeout_kills_a_busy_loop(runner: ProcessRunner, envs: Envs, function: str) -> None:
    started = time.monotonic()
    outcome, _ = await run(runner, envs.spec(function), timeout_seconds=0.5)
    elapsed = time.monotonic() - started
    assert outcome.status == "timeout"
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.message, outcome.error.exception_type) == (
        "TASK_TIMEOUT",
        "Task execution timed out",
        "TimeoutError",
    )
    assert 0.5 + GRACE_SECONDS <= elapsed < 0.5 + GRACE_SECONDS + KILL_AFTER_SECONDS + 1.0
    assert runner.counts() == (0, 0)


async def test_stop_of_a_sleeping_task(runner: ProcessRunner, envs: Envs) -> None:
    thread_id = "thread_sleeper"
    running = asyncio.create_task(
        runner.run(envs.spec("sleep_forever"), RunRequest(thread_id, []), MemoryHost())
    )
    while runner.counts()[0] == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    assert await runner.stop(thread_id) is True
    outcome = await running
    elapsed = time.monotonic() - started
    assert outcome == Outcome("stopped")
    assert GRACE_SECONDS <= elapsed < GRACE_SECONDS + 0.5
    assert await runner.stop(thread_id) is False
    assert runner.counts() == (0, 0)


async def test_cooperative_stop_sees_is_cancelled(runner: ProcessRunner, envs: Envs) -> None:
    host = MemoryHost()
    running = asyncio.create_task(
        runner.run(envs.spec("cooperative"), RunRequest("thread_coop", []), host)
    )
    while runner.counts()[0] == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await runner.stop("thread_coop")
    assert await running == Outcome("stopped")
    assert time.monotonic() - started < GRACE_SECONDS
    assert ("stdout", "cleaned up") in list(messages(host))


async def test_forked_child_does_not_survive(runner: ProcessRunner, envs: Envs) -> None:
    outcome, host = await run(runner, envs.spec("fork_child"))
    assert outcome.status == "succeeded"
    info = host.value("pid")
    assert live_processes(info["pid"]) == []
    assert not process_alive(info["child"])
    assert runner.counts() == (0, 0)  # a worker that left children behind is not reused


async def test_memory_limit(envs: Envs) -> None:
    runner = ProcessRunner(sdk_root=envs.root, max_workers=1, max_memory_mb=150)
    try:
        outcome, _ = await run(runner, envs.spec("hog"), timeout_seconds=30)
        assert outcome.error is not None
        assert (outcome.status, outcome.error.code, outcome.error.message) == (
            "failed",
            "TASK_CRASHED",
            "Task process exceeded the memory limit of 150 MiB",
        )
        assert runner.counts() == (0, 0)
    finally:
        await runner.close()


async def test_ordinary_tools_work_in_the_sandbox(runner: ProcessRunner, envs: Envs) -> None:
    outcome, host = await run(runner, envs.spec("ordinary_tools"))
    assert outcome == Outcome("succeeded"), outcome
    tools = host.value("tools")
    assert {k: tools[k] for k in ("squares", "temp", "own", "echo", "local")} == {
        "squares": [1, 4, 9],
        "temp": True,
        "own": True,
        "echo": "hi",
        "local": "local",
    }
    # Each thread works in an empty scratch directory; what it leaves there is removed
    # when it ends.
    assert tools["cwd"] == tools["tmpdir"]
    workdir = Path(tools["cwd"])
    assert not workdir.exists() or not any(workdir.iterdir())


async def test_output_of_subprocesses_is_captured(runner: ProcessRunner, envs: Envs) -> None:
    outcome, host = await run(runner, envs.spec("shell_output"))
    assert outcome.status == "succeeded"
    assert ("stdout", "from-the-shell") in list(messages(host))


async def test_two_versions_of_six_side_by_side(runner: ProcessRunner, envs: Envs) -> None:
    specs = [
        TaskSpec(f"six-{version}", "1", "task:main", source, env)
        for version, (source, env) in envs.six.items()
    ]
    results = await asyncio.gather(*(run(runner, spec) for spec in specs))
    assert [host.value("six") for _, host in results] == ["1.16.0", "1.15.0"]


async def test_undeclared_dependency_is_missing(runner: ProcessRunner, envs: Envs) -> None:
    outcome, _ = await run(runner, envs.spec("uses_fastapi"))
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.exception_type) == (
        "TASK_EXCEPTION",
        "ModuleNotFoundError",
    )
    assert "fastapi" in outcome.error.message
    broken = TaskSpec("broken", "1", "broken:main", envs.tasks_dir, envs.base)
    outcome, _ = await run(runner, broken)
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.exception_type) == (
        "TASK_LOAD_FAILED",
        "ModuleNotFoundError",
    )


async def test_check_entry_point(runner: ProcessRunner, envs: Envs) -> None:
    assert await runner.check_entry_point(envs.spec("noop")) is None
    assert runner.counts() == (0, 1)  # the checked worker stays warm
    missing = await runner.check_entry_point(envs.spec("does_not_exist"))
    assert missing is not None
    assert (missing.code, missing.exception_type) == ("TASK_LOAD_FAILED", "AttributeError")
    broken = await runner.check_entry_point(
        TaskSpec("b", "1", "broken:main", envs.tasks_dir, envs.base)
    )
    assert broken is not None
    assert broken.exception_type == "ModuleNotFoundError"
    assert runner.counts() == (0, 1)


def test_workers_die_with_a_killed_server(envs: Envs, tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(KILL_PARENT_SCRIPT)
    argv = [
        sys.executable,
        str(script),
        str(envs.root),
        envs.base.key,
        str(envs.base.path),
        str(envs.tasks_dir),
    ]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        assert process_alive(info["pid"])
        assert process_alive(info["child"])
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=5)
        deadline = time.monotonic() + GONE_WITHIN_SECONDS
        while (
            process_alive(info["pid"]) or process_alive(info["child"])
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(info["pid"])
        assert not process_alive(info["child"])
        assert live_processes(info["pid"]) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


async def test_worker_environment_has_no_server_secrets(
    runner: ProcessRunner, envs: Envs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASK_FRAMEWORK_DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    _, host = await run(runner, envs.spec("pid"))
    pid = host_pid(host.value("pid")["pid"])
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    assert names <= {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "TASK_FRAMEWORK_WORKER_FD",
        "TASK_FRAMEWORK_SCRATCH",
    }
