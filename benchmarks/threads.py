"""Thread API benchmark against a real server (uvicorn, SQLite, a trivial task).

Measures, with an empty store and again with 100,000 threads stored:
* sequential sync ``POST /threads`` round trips (p50/p99, one connection),
* sync threads per second with 8 concurrent connections for a fixed time,
* ``GET /threads?limit=50`` p50,
* the server's resident memory.

The sync requests are sent by ``wrk`` (Debian package ``wrk``): a C load generator costs
the 2-core machine far less CPU than a Python client, so the figures describe the server.
Run: ``uv run python benchmarks/threads.py [--write docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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
    def __init__(self, data_dir: Path, task: Path, venvs: Path, concurrency: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            "TASK_FRAMEWORK_WORKER_CONCURRENCY": str(concurrency),
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


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_script(root: Path) -> Path:
    """A wrk script that posts the sync thread request with our headers."""
    lines = ['wrk.method = "POST"', f"wrk.body = '{json.dumps(BODY)}'"]
    headers = {**HEADERS, "Content-Type": "application/json"}
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    script = root / "post.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def _wrk(server: Server, script: Path, *, connections: int, seconds: float) -> dict[str, float]:
    """Run wrk (a C load generator, so the client costs little CPU) and parse it."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    command += ["-s", str(script), server.base + "/threads"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures: dict[str, float] = {}
    for line in out.splitlines():
        match = re.match(r"\s+(50|99)%\s+([\d.]+)(us|ms|s)$", line)
        if match:
            figures[f"p{match[1]}_ms"] = float(match[2]) * WRK_UNITS[match[3]]
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(line.split()[1])
        if "Non-2xx" in line:
            raise RuntimeError(f"wrk saw errors: {line.strip()}")
    return figures


async def measure(
    server: Server, *, requests: int, seconds: float, clients: int, root: Path
) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=server.base, headers=HEADERS, timeout=60) as client:
        for _ in range(200):  # warm the worker pool, caches and the connection
            response = await client.post("/threads", json=BODY)
            assert response.status_code == 201, response.text
            assert response.json()["state"] == "succeeded", response.text
        script = _wrk_script(root)
        _wrk(server, script, connections=clients, seconds=3)  # start every task process
        # One connection for ``requests`` requests' worth of time at ~200/s (at least
        # 5 s), then ``clients`` connections for ``seconds``.
        single = _wrk(server, script, connections=1, seconds=max(5.0, requests / 200))
        many = _wrk(server, script, connections=clients, seconds=seconds)
        listing = []
        for _ in range(100):
            started = time.perf_counter()
            (await client.get("/threads", params={"limit": 50})).raise_for_status()
            listing.append(time.perf_counter() - started)
    return {
        "sync_p50_ms": single["p50_ms"],
        "sync_p99_ms": single["p99_ms"],
        "throughput": many["rps"],
        "many_p99_ms": many["p99_ms"],
        "list_p50_ms": statistics.median(listing) * 1000,
        "rss_mib": server.rss_mib(),
    }


def run(
    stored: int,
    *,
    requests: int,
    seconds: float,
    clients: int,
    root: Path,
    concurrency: int,
) -> dict[str, float]:
    data_dir = root / f"data-{stored}"
    data_dir.mkdir(parents=True)
    if stored:
        seed(f"sqlite:///{data_dir / 'task_framework.db'}", stored)
    server = Server(data_dir, _noop_task(root), root / "venvs", concurrency)
    try:
        return asyncio.run(
            measure(server, requests=requests, seconds=seconds, clients=clients, root=root)
        )
    finally:
        server.stop()


def render(results: dict[int, dict[str, float]], args: argparse.Namespace) -> str:
    empty, full = results[0], results[args.stored]
    lines = [
        "Real server (`task-framework serve`, uvicorn + uvloop + httptools), SQLite, "
        f"trivial task, `TASK_FRAMEWORK_WORKER_CONCURRENCY={args.worker_concurrency}`; "
        "wrk and the server on the same machine. One connection for "
        f"{max(5.0, args.requests / 200):g} s, then {args.clients} connections for "
        f"{args.seconds:g} s; 100 list requests (httpx).",
        "",
        f"| measure | empty store | {args.stored:,} threads stored | ratio | target |",
        "|---|---|---|---|---|",
    ]
    rows = [
        ("sync round trip p50", "sync_p50_ms", "ms", "≤ 5 ms"),
        ("sync round trip p99", "sync_p99_ms", "ms", ""),
        (f"p99 with {args.clients} clients", "many_p99_ms", "ms", ""),
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
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=8,
        help="task processes per replica (default 8; the server's own default is the CPU count)",
    )
    parser.add_argument("--write", type=Path, help="markdown file to update (## Threads section)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is needed to send the load: apt-get install wrk")
    root = Path(tempfile.mkdtemp(prefix="tf-bench-threads-"))
    try:
        results = {
            n: run(
                n,
                requests=args.requests,
                seconds=args.seconds,
                clients=args.clients,
                root=root,
                concurrency=args.worker_concurrency,
            )
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
