"""Scale-out benchmark: API replicas and workers on one PostgreSQL database.

For 1 and 3 API replicas (``serve --no-worker``) and 1 and 2 workers
(``task-framework worker``), all on this machine, it submits N async threads of a
trivial task and reports:
* async throughput (threads/s from the first submission to the last success),
* claim-to-start latency (``created_at`` → ``started_at``, p50/p99),
* database transactions per thread (``pg_stat_database`` commits and rollbacks),
* CPU seconds per thread, summed over every process (replicas, workers, task processes).

Run: ``uv run python benchmarks/scale.py [--threads 1000] [--write docs/benchmarks.md]``.
Needs ``TASK_FRAMEWORK_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from machine import machine_summary, replace_section  # noqa: E402

from procs import USER, Process, write_task  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TRIVIAL_TASK = "def run(context):\n    return None\n"


def _cpu_seconds(pid: int) -> float:
    """CPU of a process and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _cluster_cpu(processes: list[Process]) -> float:
    return sum(_cpu_seconds(pid) for p in processes for pid in _tree(p.proc.pid))


def _transactions(url: str, database: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


async def _submit(bases: list[str], count: int) -> None:
    limits = httpx.Limits(max_connections=16, keepalive_expiry=2)
    clients = [
        httpx.AsyncClient(base_url=base, headers=USER, timeout=120, limits=limits) for base in bases
    ]
    body = {"mode": "async", "inputs": [{"kind": "json", "value": {}}]}
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with semaphore:
            response = await clients[i % len(clients)].post("/threads", json=body)
            response.raise_for_status()

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()


def run_config(
    server_url: str, replicas: int, workers: int, count: int, root: Path
) -> dict[str, float]:
    database = f"tf_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = server_url.rsplit("/", 1)[0] + "/" + database
    task = write_task(root / database, "noop", TRIVIAL_TASK)
    env = {
        "TASK_FRAMEWORK_DATABASE_URL": url,
        "TASK_FRAMEWORK_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "TASK_FRAMEWORK_WORKER_CONCURRENCY": "2",
        "TASK_FRAMEWORK_VENVS_DIR": str(root / "venvs"),
    }
    processes: list[Process] = []
    try:
        for i in range(replicas):
            processes.append(
                Process(root / database / f"api{i}", [task], extra_args=["--no-worker"], env=env)
            )
        for i in range(workers):
            processes.append(Process(root / database / f"worker{i}", [task], worker=True, env=env))
        time.sleep(3)  # workers settle (migrations done by the first replica)
        asyncio.run(_submit([p.base for p in processes[:replicas]], 20))  # warm-up
        deadline = time.monotonic() + 60
        while _count(url, "succeeded") < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        cpu0, tx0 = _cluster_cpu(processes), _transactions(server_url, database)
        started = time.perf_counter()
        asyncio.run(_submit([p.base for p in processes[:replicas]], count))
        deadline = time.monotonic() + 600
        while _count(url, "succeeded") < count + 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        cpu1, tx1 = _cluster_cpu(processes), _transactions(server_url, database)
        latencies = _start_latencies(url)
    finally:
        for process in processes:
            process.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "throughput": count / elapsed,
        "latency_p50_ms": statistics.median(latencies) * 1000,
        "latency_p99_ms": sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000,
        "tx_per_thread": (tx1 - tx0) / count,
        "cpu_ms_per_thread": (cpu1 - cpu0) / count * 1000,
    }


def _count(url: str, state: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM threads WHERE state = %s", (state,)).fetchone()
    return int(row[0]) if row else 0


def _start_latencies(url: str) -> list[float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) FROM threads "
            "WHERE started_at IS NOT NULL ORDER BY created_at OFFSET 20"
        ).fetchall()
    return [float(row[0]) for row in rows]


def render(results: dict[tuple[int, int], dict[str, float]], count: int) -> str:
    lines = [
        f"{count} async threads of a trivial task per configuration; every process on this "
        "machine (2 cores: clients, replicas, workers, task processes and PostgreSQL share "
        "them, so absolute figures are bound by the machine; the per-thread costs predict "
        "larger ones). Workers run 2 task processes each. The N threads are submitted as fast "
        "as the clients can, faster than the workers drain them, so claim-to-start latency is "
        "mostly time spent queued behind earlier threads; on an idle queue a NOTIFY wakes a "
        "worker at once. Transactions and CPU are totals over every process (background loops "
        "included) divided by N.",
        "",
        "| API replicas | workers | threads/s | claim-to-start p50 | p99 | DB transactions "
        "per thread | CPU per thread |",
        "|---|---|---|---|---|---|---|",
    ]
    for (replicas, workers), r in results.items():
        lines.append(
            f"| {replicas} | {workers} | {r['throughput']:.0f} | {r['latency_p50_ms']:.0f} ms "
            f"| {r['latency_p99_ms']:.0f} ms | {r['tx_per_thread']:.1f} "
            f"| {r['cpu_ms_per_thread']:.1f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--write", type=Path, help="markdown file to update (## Scale-out)")
    args = parser.parse_args()
    server_url = os.environ.get(
        "TASK_FRAMEWORK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    results: dict[tuple[int, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tf-bench-scale-") as tmp:
        for replicas, workers in ((1, 1), (1, 2), (3, 1), (3, 2)):
            results[(replicas, workers)] = run_config(
                server_url, replicas, workers, args.threads, Path(tmp)
            )
            print(replicas, workers, results[(replicas, workers)], flush=True)
    table = render(results, args.threads)
    print(table)
    if args.write:
        replace_section(args.write, "Scale-out", machine_summary() + "\n\n" + table)


if __name__ == "__main__":
    main()
