"""Several real replicas and workers on one PostgreSQL database, under faults.

Every process loads the same dev task folder, so each can run its threads. The tasks
record each execution by appending the thread id to a shared file (one short ``write``
with ``O_APPEND`` is atomic), which is how "executed exactly once" is checked.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet

from procs import TERMINAL, USER, Process, processes_in_group, write_task

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEASE_SECONDS = 3
RECORDING_TASK = """
import os, time
from task_framework.models.artifact import Artifact

def run(context):
    time.sleep(float(context.params.get("sleep", 0)))
    fd = os.open(context.params["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (context.thread_id + "\\n").encode())
    finally:
        os.close(fd)
    if context.params.get("publish"):
        context.publish_output_artifacts_sync([Artifact(kind="json", value={"late": True})])
"""


@pytest.fixture
def cluster(postgres_url: str) -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


def _env(postgres_url: str, key: str, **extra: str) -> dict[str, str]:
    return {
        "TASK_FRAMEWORK_DATABASE_URL": postgres_url,
        "TASK_FRAMEWORK_ENCRYPTION_KEY": key,
        "TASK_FRAMEWORK_THREAD_LEASE_SECONDS": str(LEASE_SECONDS),
        "TASK_FRAMEWORK_SHUTDOWN_GRACE_SECONDS": "2",
        # The recording task writes a ledger outside any sandbox on purpose: it is how
        # these tests see, from outside, which threads ran and how often. The sandbox
        # would (rightly) refuse that write; tests/security covers the sandbox.
        "TASK_FRAMEWORK_SANDBOX": "off",
        **extra,
    }


async def _submit(bases: list[str], count: int, params: dict[str, Any]) -> list[str]:
    limits = httpx.Limits(max_connections=32, keepalive_expiry=2)
    clients = [
        httpx.AsyncClient(base_url=b, headers=USER, timeout=60, limits=limits) for b in bases
    ]
    body = {"mode": "async", "params": params, "inputs": [{"kind": "json", "value": {}}]}
    ids: list[str] = []
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with semaphore:
            response = await clients[i % len(clients)].post("/threads", json=body)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()
    return ids


def _states(postgres_url: str) -> Counter[str]:
    with psycopg.connect(postgres_url) as conn:
        return Counter(
            dict(conn.execute("SELECT state, count(*) FROM threads GROUP BY state").fetchall())
        )


def _wait(predicate: Any, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def _terminal_events(postgres_url: str) -> Counter[str]:
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT thread_id FROM events WHERE event_type IN "
            "('thread.succeeded','thread.failed','thread.timeout','thread.stopped')"
        ).fetchall()
    return Counter(row[0] for row in rows)


def test_three_replicas_two_workers_run_5000_threads_once(
    tmp_path: Path, postgres_url: str, cluster: list[Process]
) -> None:
    key = Fernet.generate_key().decode()
    task = write_task(tmp_path, "record", RECORDING_TASK)
    ledger = tmp_path / "ledger.txt"
    env = _env(postgres_url, key, TASK_FRAMEWORK_WORKER_CONCURRENCY="2")
    for i in range(3):
        cluster.append(Process(tmp_path / f"replica{i}", [task], env=env))
    for i in range(2):
        cluster.append(Process(tmp_path / f"worker{i}", [task], worker=True, env=env))
    bases = [p.base for p in cluster[:3]]
    ids = asyncio.run(_submit(bases, 5000, {"ledger": str(ledger)}))
    assert len(set(ids)) == 5000
    _wait(lambda: _states(postgres_url).get("succeeded", 0) == 5000, timeout=600, interval=2)
    executions = Counter(ledger.read_text().split())
    assert set(executions) == set(ids), "a thread was lost"
    assert max(executions.values()) == 1, "a thread was executed twice"
    events = _terminal_events(postgres_url)
    assert set(events) == set(ids)
    assert max(events.values()) == 1


def test_killed_worker_threads_are_recovered_once(
    tmp_path: Path, postgres_url: str, cluster: list[Process]
) -> None:
    key = Fernet.generate_key().decode()
    task = write_task(tmp_path, "record", RECORDING_TASK)
    ledger = tmp_path / "ledger.txt"
    env = _env(postgres_url, key)
    api = Process(tmp_path / "api", [task], extra_args=["--no-worker"], env=env)
    cluster.append(api)
    worker = Process(
        tmp_path / "worker",
        [task],
        worker=True,
        env={**env, "TASK_FRAMEWORK_WORKER_CONCURRENCY": "50"},
    )
    cluster.append(worker)
    ids = asyncio.run(_submit([api.base], 50, {"ledger": str(ledger), "sleep": 30}))
    _wait(lambda: _states(postgres_url).get("running", 0) == 50, timeout=120)
    groups = worker.children()
    killed_at = time.monotonic()
    worker.kill9()
    _wait(lambda: _states(postgres_url).get("failed", 0) == 50, timeout=LEASE_SECONDS * 4 + 10)
    recovered_after = time.monotonic() - killed_at
    assert recovered_after < LEASE_SECONDS * 4 + 10
    with psycopg.connect(postgres_url) as conn:
        codes = conn.execute("SELECT DISTINCT error->>'code' FROM threads").fetchall()
    assert codes == [("WORKER_LOST",)]
    events = _terminal_events(postgres_url)
    assert set(events) == set(ids)
    assert max(events.values()) == 1
    assert not ledger.exists(), "a killed worker's task went on running"
    for pgid in groups:
        assert processes_in_group(pgid) == []


def test_paused_worker_late_result_is_refused(
    tmp_path: Path, postgres_url: str, cluster: list[Process]
) -> None:
    key = Fernet.generate_key().decode()
    task = write_task(tmp_path, "record", RECORDING_TASK)
    ledger = tmp_path / "ledger.txt"
    env = _env(postgres_url, key)
    api = Process(tmp_path / "api", [task], extra_args=["--no-worker"], env=env)
    cluster.append(api)
    worker = Process(
        tmp_path / "worker",
        [task],
        worker=True,
        env={**env, "TASK_FRAMEWORK_WORKER_CONCURRENCY": "1"},
    )
    cluster.append(worker)
    [thread_id] = asyncio.run(
        _submit([api.base], 1, {"ledger": str(ledger), "sleep": 2, "publish": True})
    )
    _wait(lambda: _states(postgres_url).get("running", 0) == 1, timeout=60, interval=0.2)
    worker.signal(signal.SIGSTOP)
    try:
        _wait(lambda: _states(postgres_url).get("failed", 0) == 1, timeout=LEASE_SECONDS * 4 + 10)
        time.sleep(3)  # the task itself finishes meanwhile; its parent is frozen
    finally:
        worker.signal(signal.SIGCONT)
    time.sleep(4)  # the revived worker tries to settle the thread and publish
    thread = httpx.get(f"{api.base}/threads/{thread_id}", headers=USER).json()
    assert thread["state"] == "failed"
    assert thread["error"]["code"] == "WORKER_LOST"
    assert thread["outputs"] == []
    assert _terminal_events(postgres_url)[thread_id] == 1


def test_dropped_database_connections_recover(
    tmp_path: Path, postgres_url: str, cluster: list[Process]
) -> None:
    key = Fernet.generate_key().decode()
    task = write_task(tmp_path, "record", RECORDING_TASK)
    ledger = tmp_path / "ledger.txt"
    env = _env(postgres_url, key, TASK_FRAMEWORK_WORKER_CONCURRENCY="2")
    cluster.append(Process(tmp_path / "replica", [task], env=env))
    cluster.append(Process(tmp_path / "worker", [task], worker=True, env=env))
    database = postgres_url.rsplit("/", 1)[1]
    server = postgres_url.rsplit("/", 1)[0] + "/postgres"
    deadline = time.monotonic() + 10
    with psycopg.connect(server, autocommit=True) as admin:
        while time.monotonic() < deadline:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            time.sleep(0.2)
    ids = asyncio.run(_submit([cluster[0].base], 20, {"ledger": str(ledger)}))
    _wait(lambda: _states(postgres_url).get("succeeded", 0) == 20, timeout=120)
    assert sorted(ledger.read_text().split()) == sorted(ids)
    for process in cluster:
        assert process.proc.poll() is None, "a process died instead of reconnecting"
    assert all(s in TERMINAL for s in _states(postgres_url))
