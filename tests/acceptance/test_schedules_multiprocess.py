"""Three real ``task-framework serve`` replicas on one PostgreSQL database share a schedule:
every fire yields exactly one run and one thread, and fires go on after one replica is
killed. The test-only seconds granularity makes the schedule fire every two seconds.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import HELLO_TASK

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STARTUP_TIMEOUT_SECONDS = 90.0
FIRE_EVERY_SECONDS = 2
FIRES_PER_PHASE = 5
ADMIN_KEY = "tfk_schedules_admin_key_000000000000000000000"
USER_KEY = "tfk_schedules_user_key_0000000000000000000000"
USER = {"X-API-Key": USER_KEY, "X-App-Id": "app1", "X-User-Id": "user1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "task-framework"
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_framework"]


class Replica:
    """One ``serve`` process with its own port and data directory."""

    def __init__(self, root: Path, index: int, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        data_dir = root / f"replica{index}"
        args = [
            *_cli(),
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--dev-task",
            str(HELLO_TASK),
        ]
        self.log_path = root / f"replica{index}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"replica exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                health = httpx.get(f"{self.base}/health", timeout=1)
                if health.status_code == 200 and health.json()["scheduler"] == "running":
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("replica did not become healthy")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def runs_started(self, schedule_id: str) -> float:
        """This replica's count of runs it moved to ``running`` (its own metrics)."""
        text = httpx.get(f"{self.base}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("task_framework_schedule_runs_total{") and (
                f'schedule_id="{schedule_id}"' in line and 'state="running"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[Replica]]:
    env = {
        "TASK_FRAMEWORK_DATABASE_URL": postgres_url,
        "TASK_FRAMEWORK_API_KEYS": USER_KEY,
        "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
        "TASK_FRAMEWORK_ENCRYPTION_KEY": "schedules-acceptance-passphrase",
        "TASK_FRAMEWORK_SCHEDULER_TEST_SECONDS": "true",
        "TASK_FRAMEWORK_WORKER_CONCURRENCY": "2",
        "TASK_FRAMEWORK_THREAD_LEASE_SECONDS": "5",
        "TASK_FRAMEWORK_VENVS_DIR": str(tmp_path / "venvs"),
        "TASK_FRAMEWORK_LOG_LEVEL": "WARNING",
    }
    started: list[Replica] = []
    try:
        # The first replica migrates the fresh database and builds the task environment;
        # the other two then start together.
        started.append(Replica(tmp_path, 0, env))
        started[0].wait_healthy()
        started += [Replica(tmp_path, i, env) for i in (1, 2)]
        for replica in started[1:]:
            replica.wait_healthy()
        yield started
    finally:
        for replica in started:
            replica.stop()


def _runs(base: str, schedule_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/schedules/{schedule_id}/runs", params={"limit": 1000}, headers=USER, timeout=10
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return sorted(items, key=lambda r: r["scheduled_for_utc"])


def _threads(base: str, schedule_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/threads",
        params={"schedule_id": schedule_id, "limit": 1000},
        headers=USER,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _wait_for_fires(base: str, schedule_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + FIRE_EVERY_SECONDS * count + 30
    while time.monotonic() < deadline:
        runs = _runs(base, schedule_id)
        if len(runs) >= count:
            return runs
        time.sleep(0.5)
    raise AssertionError(f"expected {count} runs, got {len(_runs(base, schedule_id))}")


def _check_one_run_and_one_thread_per_fire(base: str, schedule_id: str) -> list[datetime]:
    runs = _runs(base, schedule_id)
    times = [datetime.fromisoformat(r["scheduled_for_utc"]) for r in runs]
    assert len(set(times)) == len(times)
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps <= {timedelta(seconds=FIRE_EVERY_SECONDS)}, f"missed or extra fires: {gaps}"
    for run in runs:
        assert run["state"] in ("running", "succeeded", "failed"), run
        assert len(run["threads"]) == run["attempt"] == 1, run
    threads = _threads(base, schedule_id)
    by_run: dict[str, list[str]] = {}
    for thread in threads:
        by_run.setdefault(thread["run_id"], []).append(thread["id"])
    assert {r["run_id"]: r["threads"] for r in runs} == by_run
    return times


def test_three_replicas_one_run_per_fire_and_fires_survive_a_kill(
    replicas: list[Replica],
) -> None:
    first = replicas[0]
    created = httpx.post(
        f"{first.base}/schedules",
        json={
            "cron": f"*/{FIRE_EVERY_SECONDS} * * * *",
            "timezone": "UTC",
            "inputs_template": [{"kind": "json", "value": {"name": "Ada"}}],
        },
        headers=USER,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]

    _wait_for_fires(first.base, sid, FIRES_PER_PHASE)
    time.sleep(1.0)  # let the latest fire finish on whichever replica took it
    before_kill = _check_one_run_and_one_thread_per_fire(first.base, sid)
    assert len(before_kill) >= FIRES_PER_PHASE
    # Every replica counts the runs it started; together they started each run once.
    # Fires go on meanwhile, so the count is bracketed by two listings.
    listed_before = len(_runs(first.base, sid))
    time.sleep(0.3)  # a replica counts a run right after committing it
    started = [r.runs_started(sid) for r in replicas]
    listed_after = len(_runs(first.base, sid))
    assert listed_before <= sum(started) <= listed_after, (listed_before, started, listed_after)

    replicas[1].kill9()
    survivor = replicas[2]
    _wait_for_fires(survivor.base, sid, len(before_kill) + FIRES_PER_PHASE)
    time.sleep(1.0)
    after_kill = _check_one_run_and_one_thread_per_fire(survivor.base, sid)
    assert len(after_kill) >= len(before_kill) + FIRES_PER_PHASE
    succeeded = [r for r in _runs(survivor.base, sid) if r["state"] == "succeeded"]
    assert len(succeeded) >= len(after_kill) - 2  # the kill may cost at most an in-flight run
