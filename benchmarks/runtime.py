"""Runtime benchmarks: environment builds, cold worker start, warm round trip.

Run ``uv run python benchmarks/runtime.py`` (add ``--write docs/benchmarks.md`` to record
the table in that file's "## Runtime" section).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

from task_framework.runner.base import LogRecord, RunRequest, TaskSpec
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.runner.pool import ProcessRunner
from task_framework.runner.process import WorkerProcess
from task_framework.runner.sandbox import Sandbox, SandboxMode
from task_framework.runner.sdk import sdk_dir

BUILDS = 3
COLD_STARTS = 10
ROUND_TRIPS = 1000
ROUNDS = 3
TASK = "def noop(context):\n    pass\n"
MODES: tuple[SandboxMode, ...] = ("off", "auto")


class NoopHost:
    async def publish_outputs(
        self, thread_id: str, artifacts: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return artifacts

    async def signal_problem(self, thread_id: str, problem: dict[str, Any]) -> None:
        return None

    async def write_logs(self, thread_id: str, records: list[LogRecord]) -> None:
        return None

    async def upload_file(
        self,
        thread_id: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str | None,
        media_type: str | None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def download_file(self, thread_id: str, file_ref: str) -> AsyncIterator[bytes]:
        raise NotImplementedError


def source(root: Path, name: str, requirements: str | None) -> Path:
    path = root / name
    path.mkdir()
    (path / "task.py").write_text(TASK)
    if requirements is not None:
        (path / "requirements.txt").write_text(requirements)
    return path


async def build_seconds(root: Path, src: Path, runs: int) -> float:
    """Median time of ``runs`` builds, each into a fresh root (a real build every time)."""
    times = []
    for index in range(runs):
        builder = EnvironmentBuilder(root / f"envs-{src.name}-{index}")
        started = time.perf_counter()
        await builder.ensure(src)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def measure(root: Path) -> dict[str, str]:
    plain = source(root, "plain", None)
    with_six = source(root, "six", "six==1.16.0\n")
    await build_seconds(root, with_six, 1)  # warm uv's cache for six and pydantic
    results = {
        "Environment build, no dependencies": f"{await build_seconds(root, plain, BUILDS):.2f} s",
        "Environment build, `six` (uv cache warm)": (
            f"{await build_seconds(root, with_six, BUILDS):.2f} s"
        ),
    }
    env = await EnvironmentBuilder(root / "envs").ensure(plain)
    spec = TaskSpec("bench", "1", "task:noop", plain, env)
    sdk = sdk_dir(root)
    sandboxes = {mode: Sandbox(mode, data_dir=root / f"data-{mode}") for mode in MODES}
    starts: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(COLD_STARTS):
        for mode, sandbox in sandboxes.items():  # interleaved: the same noise for both
            sandbox.detect()
            limits = sandbox.policy.resolve(spec.resources)
            launch = sandbox.prepare(code_dir=plain, env_path=env.path, sdk_path=sdk, limits=limits)
            worker = WorkerProcess(spec, log_flush_seconds=0.1, launch=launch)
            started = time.perf_counter()
            await worker.start(sdk)
            starts[mode].append(time.perf_counter() - started)
            await worker.kill()
    runners = {
        mode: ProcessRunner(sdk_root=root, max_workers=1, sandbox=sandbox)
        for mode, sandbox in sandboxes.items()
    }
    host = NoopHost()
    p50s: dict[str, list[float]] = {mode: [] for mode in MODES}
    p99s: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for runner in runners.values():
            await runner.run(spec, RunRequest("warmup", []), host)
        for _ in range(ROUNDS):
            for mode, runner in runners.items():
                times = []
                for index in range(ROUND_TRIPS):
                    started = time.perf_counter()
                    await runner.run(spec, RunRequest(f"thread_{index}", []), host)
                    times.append(time.perf_counter() - started)
                times.sort()
                p50s[mode].append(times[len(times) // 2])
                p99s[mode].append(times[int(len(times) * 0.99)])
    finally:
        for runner in runners.values():
            await runner.close()
    layers = ", ".join(sandboxes["auto"].layers.in_force())
    for mode, label in (("off", "unconfined"), ("auto", "every layer")):
        results[f"Cold worker start, {label} (spawn to hello, median of {COLD_STARTS})"] = (
            f"{statistics.median(starts[mode]) * 1000:.0f} ms"
        )
    for mode, label in (("off", "unconfined"), ("auto", "every layer")):
        results[f"Warm round trip, trivial task, {label}, p50"] = (
            f"{statistics.median(p50s[mode]) * 1000:.2f} ms"
        )
        results[f"Warm round trip, trivial task, {label}, p99"] = (
            f"{statistics.median(p99s[mode]) * 1000:.2f} ms"
        )
    cold = statistics.median(starts["auto"]) - statistics.median(starts["off"])
    warm = statistics.median(p50s["auto"]) - statistics.median(p50s["off"])
    results["Sandbox cost: cold start / warm p50"] = (
        f"{cold * 1000:+.0f} ms / {warm * 1000:+.3f} ms"
    )
    results["Layers in force"] = layers or "none"
    return results


def table(results: dict[str, str]) -> str:
    lines = ["| Measurement | Result |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in results.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="markdown file whose Runtime section to set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        results = asyncio.run(measure(Path(tmp)))
    body = (
        f"Measured by `benchmarks/runtime.py`. {machine_summary()}\n\n{table(results)}\n\n"
        "Builds go into fresh directories (real builds); the warm round trip is "
        f"`ProcessRunner.run` of a no-op task with a no-op host, {ROUND_TRIPS} runs, "
        f"median of {ROUNDS} rounds. Unconfined (`TASK_FRAMEWORK_SANDBOX=off`) and confined "
        "(the default, every layer the host offers) are measured interleaved in one run."
    )
    print(body)
    if args.write is not None:
        replace_section(args.write, "Runtime", body)


if __name__ == "__main__":
    main()
