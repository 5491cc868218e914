"""Webhook durability: receiver down, server ``kill -9``ed and restarted, nothing lost.

The real ``task-framework serve`` runs in a subprocess on loopback (private addresses
allowed by its settings) with a shortened retry schedule.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import HELLO_TASK
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow

ADMIN_KEY = "tfk_durability_admin_key_000000000000000000000"
USER_KEY = "tfk_durability_user_key_0000000000000000000000"
USER = {"X-API-Key": USER_KEY, "X-App-Id": "app1", "X-User-Id": "user1"}
EVENTS_PER_PHASE = 100
STARTUP_TIMEOUT_SECONDS = 60.0
DELIVERY_TIMEOUT_SECONDS = 40.0
# Retries every second for well over a minute: the receiver is down for ~20-30 s.
RETRY_SCHEDULE = ",".join(["0.5"] + ["1"] * 90)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "task-framework"
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_framework"]


class Serve:
    """One ``task-framework serve`` process."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TASK_FRAMEWORK_API_KEYS": USER_KEY,
            "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
            "TASK_FRAMEWORK_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "TASK_FRAMEWORK_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
            "TASK_FRAMEWORK_WORKER_CONCURRENCY": "2",
        }
        args = [*_cli(), "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        args += ["--dev-task", str(HELLO_TASK)]
        self._log = log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "server exited early"
                try:
                    if (await client.get(f"{self.base}/health", timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("server did not become healthy")

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
        self._log.close()


async def _create_threads(base: str, count: int) -> list[str]:
    body = {"mode": "async", "inputs": [{"kind": "json", "value": {"name": "x"}}]}
    async with httpx.AsyncClient(base_url=base, headers=USER, timeout=30) as client:
        ids = []
        for _ in range(count):
            response = await client.post("/threads", json=body)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        return ids


async def _failed_attempts(base: str, hook_id: str) -> int:
    async with httpx.AsyncClient(base_url=base, headers=USER, timeout=10) as client:
        response = await client.get(f"/webhooks/{hook_id}/deliveries", params={"status": "failed"})
        total: int = response.json()["pagination"]["total"]
        return total


async def test_no_event_lost_across_kill9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    receiver_port = _free_port()  # nothing listens there yet: connection refused
    first = Serve(data_dir, log)
    second: Serve | None = None
    receiver = Receiver()
    try:
        await first.ready()
        async with httpx.AsyncClient(base_url=first.base, headers=USER) as client:
            created = await client.post(
                "/webhooks",
                json={
                    "url": f"http://127.0.0.1:{receiver_port}/hook",
                    "events": {"include": ["thread.created"]},
                    "timeout_seconds": 2,
                },
            )
        assert created.status_code == 201, created.text
        hook: dict[str, Any] = created.json()
        thread_ids = await _create_threads(first.base, EVENTS_PER_PHASE)
        deadline = time.monotonic() + 20
        while await _failed_attempts(first.base, hook["id"]) < 10:
            assert time.monotonic() < deadline, "no failed attempt recorded"
            await asyncio.sleep(0.2)
        first.kill9()

        second = Serve(data_dir, log)
        await second.ready()
        thread_ids += await _create_threads(second.base, EVENTS_PER_PHASE)
        await receiver.start(receiver_port)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
        while len({r.headers["webhook-id"] for r in receiver.requests}) < len(thread_ids):
            assert time.monotonic() < deadline, (
                f"{len({r.headers['webhook-id'] for r in receiver.requests})} of "
                f"{len(thread_ids)} events delivered"
            )
            await asyncio.sleep(0.2)
        event_ids = {r.headers["webhook-id"] for r in receiver.requests}
        payloads = {r.headers["webhook-id"]: json.loads(r.body) for r in receiver.requests}
        assert len(event_ids) == 2 * EVENTS_PER_PHASE
        assert {p["thread_id"] for p in payloads.values()} == set(thread_ids)
        assert all(p["event_type"] == "thread.created" for p in payloads.values())
        assert all(event_id == p["event_id"] for event_id, p in payloads.items())
    finally:
        await receiver.stop()
        first.stop()
        if second is not None:
            second.stop()
