"""Thread API benchmark against a real server (uvicorn, SQLite, a trivial task).

Measures, with an empty store and again with 100,000 threads stored:
* sequential sync ``POST /threads`` round trips (p50/p99 over N requests),
* sync threads per second with 8 concurrent clients for a fixed time,
* ``GET /threads?limit=50`` p50,
* the server's resident memory.

Run: ``uv run python benchmarks/threads.py [--write docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

from task_framework.store.database import Database
from task_framework.store.tables import artifacts, thread_inputs, threads

ADMIN_KEY = "tfk_bench_admin_" + uuid.uuid4().hex
USER_KEY = "tfk_bench_user_" + uuid.uuid4().hex
HEADERS = {"X-API-Key": USER_KEY, "X-App-Id": "bench", "X-User-Id": "bench"}
BODY = {"mode": "sync", "inputs": [{"kind": "json", "value": {"n": 1}}]}
SEED_BATCH = 5_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _noop_task(root: Path) -> Path:
    folder = root / "noop"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task_metadata.json").write_text(
        json.dumps({"name": "noop", "version": "1.0.0", "entry_point": "task:run"})
    )
    (folder / "task.py").write_text("def run(context):\n    return None\n")
    return folder


def seed(database_url: str, count: int) -> None:
    """Insert ``count`` finished threads (with one input each) straight into the store."""
    db = Database(database_url)
    db.migrate()
    start = datetime.now(UTC) - timedelta(days=30)
    for offset in range(0, count, SEED_BATCH):
        size = min(SEED_BATCH, count - offset)
        rows: list[dict[str, Any]] = []
        arts: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for i in range(offset, offset + size):
            tid, aid = f"thread_{uuid.uuid4().hex}", f"artifact_{uuid.uuid4().hex}"
            at = start + timedelta(seconds=i)
            owner = ("bench", "bench") if i % 10 == 0 else (f"app{i % 7}", f"user{i % 13}")
            rows.append(
                {
                    "id": tid,
                    "name": None,
                    "state": "succeeded",
                    "app_id": owner[0],
                    "user_id": owner[1],
                    "task_id": "noop",
                    "task_version": "1.0.0",
                    "metadata": {
                        "app_id": owner[0],
                        "user_id": owner[1],
                        "task_id": "noop",
                        "task_version": "1.0.0",
                    },
                    "params": {},
                    "error": None,
                    "problems": [],
                    "created_at": at,
                    "started_at": at,
                    "finished_at": at,
                    "lease_token": 1,
                    "stop_requested": False,
                    "created_by_admin": False,
                }
            )
            arts.append(
                {
                    "id": aid,
                    "thread_id": tid,
                    "app_id": owner[0],
                    "user_id": owner[1],
                    "task_id": "noop",
                    "task_version": "1.0.0",
                    "direction": "input",
                    "seq": 0,
                    "kind": "json",
                    "value": {"n": i},
                    "labels": {},
                    "created_at": at,
                    "archived": False,
                }
            )
            links.append({"thread_id": tid, "position": 0, "artifact_id": aid})

        def _insert(conn: Any, rows: Any = rows, arts: Any = arts, links: Any = links) -> None:
            conn.execute(insert(threads), rows)
            conn.execute(insert(artifacts), arts)
            conn.execute(insert(thread_inputs), links)

        db.tx_blocking(_insert)
    db.engine.dispose()


class Server:
    def __init__(self, data_dir: Path, task: Path, venvs: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TASK_FRAMEWORK_API_KEYS": USER_KEY,
            "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
            "TASK_FRAMEWORK_VENVS_DIR": str(venvs),
            "TASK_FRAMEWORK_LOG_LEVEL": "WARNING",
        }
        cmd = [
            sys.executable,
            "-m",
            "task_framework",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--dev-task",
            str(task),
        ]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    server: Server, *, requests: int, seconds: float, clients: int
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(
        base_url=server.base, headers=HEADERS, limits=limits, timeout=60
    ) as client:
        for _ in range(20):  # warm the worker pool and the connection
            (await client.post("/threads", json=BODY)).raise_for_status()
        sequential = []
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.post("/threads", json=BODY)
            sequential.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text
            assert response.json()["state"] == "succeeded", response.text
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                response = await client.post("/threads", json=BODY)
                assert response.status_code == 201
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        throughput = done / (time.perf_counter() - began)
        listing = []
        for _ in range(100):
            started = time.perf_counter()
            (await client.get("/threads", params={"limit": 50})).raise_for_status()
            listing.append(time.perf_counter() - started)
    return {
        "sync_p50_ms": statistics.median(sequential) * 1000,
        "sync_p99_ms": _pct(sequential, 0.99) * 1000,
        "throughput": throughput,
        "list_p50_ms": statistics.median(listing) * 1000,
        "rss_mib": server.rss_mib(),
    }


def run(
    stored: int, *, requests: int, seconds: float, clients: int, root: Path
) -> dict[str, float]:
    data_dir = root / f"data-{stored}"
    data_dir.mkdir(parents=True)
    if stored:
        seed(f"sqlite:///{data_dir / 'task_framework.db'}", stored)
    server = Server(data_dir, _noop_task(root), root / "venvs")
    try:
        return asyncio.run(measure(server, requests=requests, seconds=seconds, clients=clients))
    finally:
        server.stop()


def render(results: dict[int, dict[str, float]], args: argparse.Namespace) -> str:
    empty, full = results[0], results[args.stored]
    lines = [
        "Real server (`task-framework serve`, uvicorn + uvloop + httptools), SQLite, "
        "trivial task, "
        f"client and server on the same machine. {args.requests} sequential sync requests, "
        f"{args.clients} concurrent clients for {args.seconds:g} s, 100 list requests.",
        "",
        f"| measure | empty store | {args.stored:,} threads stored | ratio | target |",
        "|---|---|---|---|---|",
    ]
    rows = [
        ("sync round trip p50", "sync_p50_ms", "ms", "≤ 5 ms"),
        ("sync round trip p99", "sync_p99_ms", "ms", ""),
        (f"sync threads/s, {args.clients} clients", "throughput", "/s", "≥ 400/s"),
        ("`GET /threads?limit=50` p50", "list_p50_ms", "ms", "≤ 20 ms"),
        ("server RSS after the run", "rss_mib", "MiB", ""),
    ]
    for label, key, unit, target in rows:
        ratio = full[key] / empty[key] if empty[key] else float("nan")
        lines.append(
            f"| {label} | {empty[key]:.2f} {unit} | {full[key]:.2f} {unit} "
            f"| {ratio:.2f}× | {target} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--write", type=Path, help="markdown file to update (## Threads section)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tf-bench-threads-"))
    try:
        results = {
            n: run(n, requests=args.requests, seconds=args.seconds, clients=args.clients, root=root)
            for n in (0, args.stored)
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = render(results, args)
    print(table)
    if args.write:
        replace_section(args.write, "Threads", machine_summary() + "\n\n" + table)


if __name__ == "__main__":
    main()
