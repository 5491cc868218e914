"""Schedule benchmark against a real server (``task-framework serve``, a no-op task).

With 1,000 active schedules:
* idle CPU: none of them fires during the window; the server's CPU time over the
  window (``/proc/<pid>/stat`` utime + stime) as a percentage of one core;
* fire lag: every schedule is then patched to fire once a minute, spread over the
  seconds of the minute (about 17 fires per second); for each fire, the lag from the
  nominal fire time to the run's start (run created, thread queued) and to the thread's
  start (a worker picked it up), p50 and p99.

To finish in minutes, the server runs with the test-only seconds granularity
(``TASK_FRAMEWORK_SCHEDULER_TEST_SECONDS``): ``S * * * *`` fires at second S of every
minute. Scheduling work per fire is the same as with minute granularity.

Run: ``uv run python benchmarks/schedules.py [--write docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

USER_KEY = "tfk_bench_user_" + uuid.uuid4().hex
ADMIN_KEY = "tfk_bench_admin_" + uuid.uuid4().hex
HEADERS = {"X-API-Key": USER_KEY, "X-App-Id": "bench", "X-User-Id": "bench"}
DORMANT_CRON = "0 0 1 1 *"  # 1 January, 00:00:00: never during the benchmark
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LAG_QUERY = """
SELECT r.scheduled_for_utc AS nominal, r.started_at AS run_started, t.started_at AS began
FROM schedule_runs r JOIN threads t ON t.id = r.current_thread_id
WHERE r.scheduled_for_utc >= :since AND t.started_at IS NOT NULL
"""


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


class Server:
    def __init__(self, data_dir: Path, task: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{data_dir / 'task_framework.db'}"
        env = {
            **os.environ,
            "TASK_FRAMEWORK_API_KEYS": USER_KEY,
            "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
            "TASK_FRAMEWORK_DATABASE_URL": self.database_url,
            "TASK_FRAMEWORK_SCHEDULER_TEST_SECONDS": "true",
            "TASK_FRAMEWORK_LOG_LEVEL": "WARNING",
        }
        if database_url:
            env.setdefault("TASK_FRAMEWORK_ENCRYPTION_KEY", "benchmark-passphrase")
        cmd = [sys.executable, "-m", "task_framework", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(data_dir), "--dev-task", str(task)]
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

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / CLOCK_TICKS

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ts(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def run(
    count: int, idle_seconds: float, lag_seconds: float, database_url: str | None
) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="tf-bench-schedules-"))
    server = Server(root / "data", _noop_task(root), database_url)
    results: dict[str, float] = {"load_before": os.getloadavg()[0]}
    try:
        with httpx.Client(base_url=server.base, headers=HEADERS, timeout=30) as client:
            body = {
                "cron": DORMANT_CRON,
                "timezone": "UTC",
                "inputs_template": [{"kind": "json", "value": {}}],
            }
            ids = []
            for _ in range(count):
                response = client.post("/schedules", json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])
            time.sleep(5.0)  # every replica loop has seen them; start from a quiet server
            before, started = server.cpu_seconds(), time.monotonic()
            time.sleep(idle_seconds)
            elapsed = time.monotonic() - started
            results["idle_cpu_pct"] = 100 * (server.cpu_seconds() - before) / elapsed

            for i, schedule_id in enumerate(ids):
                response = client.patch(
                    f"/schedules/{schedule_id}", json={"cron": f"{i % 60} * * * *"}
                )
                response.raise_for_status()
            since = datetime.now(UTC)
            time.sleep(lag_seconds)
        engine = create_engine(
            server.database_url.replace("postgresql://", "postgresql+psycopg://")
        )
        with engine.connect() as conn:
            rows = list(
                conn.execute(
                    text(LAG_QUERY),
                    {
                        "since": since.replace(tzinfo=None)
                        if server.database_url.startswith("sqlite")
                        else since
                    },
                )
            )
        engine.dispose()
        fire_lag = [(_ts(r.run_started) - _ts(r.nominal)).total_seconds() for r in rows]
        start_lag = [(_ts(r.began) - _ts(r.nominal)).total_seconds() for r in rows]
        results.update(
            fires=len(rows),
            fire_p50=_pct(fire_lag, 0.5),
            fire_p99=_pct(fire_lag, 0.99),
            start_p50=_pct(start_lag, 0.5),
            start_p99=_pct(start_lag, 0.99),
            start_max=max(start_lag),
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


def render(results: dict[str, float], args: argparse.Namespace) -> str:
    backend = "PostgreSQL" if args.database_url else "SQLite"
    rows = [
        (
            "Idle CPU of the server process, % of one core",
            f"{results['idle_cpu_pct']:.2f} %",
            "≤ 5 %",
        ),
        ("Fire → thread start lag, p50", f"{results['start_p50'] * 1000:.0f} ms", ""),
        ("Fire → thread start lag, p99", f"{results['start_p99'] * 1000:.0f} ms", "≤ 1 s"),
        ("Fire → thread start lag, max", f"{results['start_max'] * 1000:.0f} ms", ""),
        (
            "Fire → run created (thread queued), p50 / p99",
            f"{results['fire_p50'] * 1000:.0f} / {results['fire_p99'] * 1000:.0f} ms",
            "",
        ),
    ]
    table = "| Measurement | Result | Target |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows
    )
    return (
        f"Measured by `benchmarks/schedules.py` ({backend}, one replica, no-op task). "
        f"{machine_summary()}\n\n{table}\n\n"
        f"{args.count:,} active schedules. Idle: none fires during a {args.idle_seconds:.0f} s "
        f"window. Lag: each schedule fires once a minute, spread over the seconds of the "
        f"minute (about {args.count / 60:.0f} fires per second), {int(results['fires'])} fires "
        f"measured over {args.lag_seconds:.0f} s; the thread start is its `started_at` (a worker "
        "claimed it). The server runs with the test-only seconds granularity so that the "
        "benchmark takes minutes; the work per fire is the same. The thread start lag "
        "includes waiting for a free worker slot (`TASK_FRAMEWORK_WORKER_CONCURRENCY`, "
        "default CPU count); the scheduler's own share is the run-created lag. Load average "
        f"when the run started: {results['load_before']:.1f} (other jobs on the machine "
        "compete for the same CPUs)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--lag-seconds", type=float, default=75.0)
    parser.add_argument("--database-url", default=None, help="postgresql://... (default SQLite)")
    parser.add_argument("--write", type=Path, help="markdown file to update (## Schedules)")
    args = parser.parse_args()
    results = run(args.count, args.idle_seconds, args.lag_seconds, args.database_url)
    text_out = render(results, args)
    print(text_out)
    if args.write:
        replace_section(args.write, "Schedules", text_out)


if __name__ == "__main__":
    main()
