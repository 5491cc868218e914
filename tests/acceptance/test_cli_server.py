"""The real ``task-framework serve`` in a subprocess, driven over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import HELLO_TASK

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_SECONDS = 60.0
ADMIN_KEY = "tfk_acceptance_admin_key_0000000000000000000000"
USER_KEY = "tfk_acceptance_user_key_00000000000000000000000"
USER = {"X-API-Key": USER_KEY, "X-App-Id": "app1", "X-User-Id": "user1"}
TERMINAL = {"succeeded", "failed", "stopped", "timeout", "expired"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "task-framework"
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_framework"]


class ServerProcess:
    def __init__(self, data_dir: Path, tasks: list[Path], **env: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [*_cli(), "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        for task in tasks:
            args += ["--dev-task", str(task)]
        environment = {
            **os.environ,
            "TASK_FRAMEWORK_API_KEYS": USER_KEY,
            "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
            **env,
        }
        self.log = (data_dir.parent / f"server-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            args, env=environment, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise AssertionError(f"server exited early with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
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
        self.log.close()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _sleepy_task(root: Path, seconds: float) -> Path:
    folder = root / "sleepy"
    folder.mkdir()
    (folder / "task_metadata.json").write_text(
        json.dumps({"name": "sleepy", "version": "1.0.0", "entry_point": "task:run"})
    )
    (folder / "task.py").write_text(
        "import time\n"
        "from task_framework.models.artifact import Artifact\n\n"
        "def run(context):\n"
        f"    time.sleep({seconds})\n"
        "    done = Artifact(kind='json', value={'slept': True})\n"
        "    context.publish_output_artifacts_sync([done])\n"
    )
    return folder


def _processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # A zombie is dead already; only its reaping depends on this machine's init.
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_quick_start_sync_and_async(tmp_path: Path, servers: list[ServerProcess]) -> None:
    server = ServerProcess(tmp_path / "data", [HELLO_TASK])
    servers.append(server)
    with httpx.Client(base_url=server.base, headers=USER, timeout=30) as client:
        sync = client.post(
            "/threads",
            json={"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "CLI"}}]},
        )
        assert sync.status_code == 201, sync.text
        assert sync.json()["outputs"][0]["value"] == {"greeting": "Hello, CLI!"}
        queued = client.post(
            "/threads", json={"mode": "async", "inputs": [{"kind": "json", "value": {}}]}
        )
        assert queued.status_code == 202
        thread_id = queued.json()["id"]
        for _ in range(100):
            state = client.get(f"/threads/{thread_id}").json()["state"]
            if state in TERMINAL:
                break
            time.sleep(0.1)
        assert state == "succeeded"
        assert client.get("/threads").json()["pagination"]["total"] == 2
        docs = client.get("/openapi.json").json()
        assert docs["info"]["title"] == "Task Framework API"
        assert httpx.get(f"{server.base}/metrics").headers["content-type"].startswith("text/plain")


def test_kill_9_loses_no_thread(tmp_path: Path, servers: list[ServerProcess]) -> None:
    """20 async threads queued or running, the server killed with SIGKILL, restarted:
    every thread reaches a terminal state, none is lost, no task process survives."""
    data_dir = tmp_path / "data"
    task = _sleepy_task(tmp_path, 1.5)
    env = {"TASK_FRAMEWORK_WORKER_CONCURRENCY": "2", "TASK_FRAMEWORK_THREAD_LEASE_SECONDS": "2"}
    first = ServerProcess(data_dir, [task], **env)
    servers.append(first)
    with httpx.Client(base_url=first.base, headers=USER, timeout=30) as client:
        ids = [
            client.post(
                "/threads", json={"mode": "async", "inputs": [{"kind": "json", "value": {}}]}
            ).json()["id"]
            for _ in range(20)
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = client.get("/threads", params={"state": "running"}).json()["pagination"][
                "total"
            ]
            if running == 2:
                break
            time.sleep(0.1)
        assert running == 2
    worker_groups = [
        int(line.split()[0])
        for line in subprocess.run(
            ["ps", "-eo", "pid,ppid"], capture_output=True, text=True
        ).stdout.splitlines()[1:]
        if int(line.split()[1]) == first.proc.pid
    ]
    first.kill9()
    time.sleep(2)
    for pgid in worker_groups:
        survivors = _processes_in_group(pgid)
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in survivors
        ]
        assert survivors == [], f"a task process outlived the killed server: {commands}"

    second = ServerProcess(data_dir, [task], **env)
    servers.append(second)
    with httpx.Client(base_url=second.base, headers=USER, timeout=30) as client:
        deadline = time.monotonic() + 90
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {tid: client.get(f"/threads/{tid}").json()["state"] for tid in ids}
            if all(state in TERMINAL for state in states.values()):
                break
            time.sleep(0.5)
        assert len(states) == 20
        assert all(state in TERMINAL for state in states.values()), states
        lost = [tid for tid, state in states.items() if state == "failed"]
        for tid in lost:
            assert client.get(f"/threads/{tid}").json()["error"]["code"] == "WORKER_LOST"
        assert len(lost) <= 2  # only the two that were running when the server died
        assert list(states.values()).count("succeeded") >= 18
        assert client.get("/threads").json()["pagination"]["total"] == 20
