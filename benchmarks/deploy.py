"""Deploy benchmarks: ``POST /admin/tasks`` until the version is runnable.

Three cases: a package without dependencies deployed for the first time (environment
built), the same dependencies with new code (environment reused), and a package
requiring one small PyPI package with uv's cache warm. The app runs in-process, the
upload goes through HTTP (ASGI); each first-time run uses a fresh environment root.

Run ``uv run python benchmarks/deploy.py`` (add ``--write docs/benchmarks.md`` to record
the table in that file's "## Deploy" section).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import secrets
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

from task_framework.app import create_app
from task_framework.settings import Settings

FIRST_RUNS = 3
REDEPLOY_RUNS = 5
DEPENDENCY = "six==1.16.0"
TARGETS = {"first": 3.0, "redeploy": 1.0, "dependency": 5.0}
TASK = "MARKER = {marker!r}\n\ndef run(context):\n    pass\n"
ADMIN_KEY = "tfk_bench_" + secrets.token_hex(8)


def package(name: str, version: str, marker: str, requirements: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        meta = {"name": name, "version": version, "entry_point": "task:run"}
        archive.writestr("task_metadata.json", json.dumps(meta))
        archive.writestr("task.py", TASK.format(marker=marker))
        if requirements is not None:
            archive.writestr("requirements.txt", requirements + "\n")
    return buffer.getvalue()


@asynccontextmanager
async def server(root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh replica: its own data directory and environment root."""
    settings = Settings(
        data_dir=root / "data",
        venvs_dir=root / "venvs",
        admin_api_keys=[ADMIN_KEY],
        api_keys=[],
        dev_tasks=[],
        worker_concurrency=2,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=300
        ) as client:
            yield client


async def deploy_seconds(client: httpx.AsyncClient, data: bytes) -> float:
    started = time.perf_counter()
    response = await client.post(
        "/admin/tasks",
        files={"file": ("package.zip", data, "application/zip")},
        headers={"X-Admin-API-Key": ADMIN_KEY},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise SystemExit(f"deploy failed: {response.status_code} {response.text}")
    return elapsed


async def measure(tmp: Path) -> dict[str, float]:
    first: list[float] = []
    redeploy: list[float] = []
    dependency: list[float] = []
    for run in range(FIRST_RUNS):
        async with server(tmp / f"first-{run}") as client:
            first.append(await deploy_seconds(client, package("bench", "1.0.0", f"f{run}")))
            for again in range(REDEPLOY_RUNS if run == 0 else 0):
                data = package("bench", f"1.0.{again + 1}", f"r{again}")
                redeploy.append(await deploy_seconds(client, data))
    # Warm uv's cache with the dependency once, then time fresh environment builds.
    async with server(tmp / "warm") as client:
        await deploy_seconds(client, package("dep", "1.0.0", "warm", DEPENDENCY))
    for run in range(FIRST_RUNS):
        async with server(tmp / f"dep-{run}") as client:
            data = package("dep", "1.0.0", f"d{run}", DEPENDENCY)
            dependency.append(await deploy_seconds(client, data))
    return {
        "first": statistics.median(first),
        "redeploy": statistics.median(redeploy),
        "dependency": statistics.median(dependency),
    }


def table(results: dict[str, float]) -> str:
    labels = {
        "first": f"No-dependency package, first deploy (median of {FIRST_RUNS})",
        "redeploy": f"New code, same dependencies (median of {REDEPLOY_RUNS})",
        "dependency": f"One PyPI dependency (`{DEPENDENCY}`), uv cache warm "
        f"(median of {FIRST_RUNS})",
    }
    lines = ["| Deploy | Time | Target |", "|---|---|---|"]
    lines += [
        f"| {labels[key]} | {value:.2f} s | ≤ {TARGETS[key]:.0f} s |"
        for key, value in results.items()
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="markdown file whose Deploy section to set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf-bench-deploy-") as tmp:
        results = asyncio.run(measure(Path(tmp)))
    body = (
        f"Measured by `benchmarks/deploy.py`. {machine_summary()}\n\n{table(results)}\n\n"
        "Time from the start of `POST /admin/tasks` (in-process app, upload over ASGI) to "
        "its 201: validation, extraction, environment build or reuse, the entry point "
        "import check in a fresh worker, and the commit. First deploys use a fresh "
        "environment root each run."
    )
    print(body)
    if args.write is not None:
        replace_section(args.write, "Deploy", body)


if __name__ == "__main__":
    main()
