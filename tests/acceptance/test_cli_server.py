"""The real ``task-framework serve`` in a subprocess, driven over loopback HTTP."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import HELLO_TASK
from procs import TERMINAL, USER, Process, processes_in_group, write_task

pytestmark = pytest.mark.slow


@pytest.fixture
def servers() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for server in started:
        server.stop()


def test_quick_start_sync_and_async(tmp_path: Path, servers: list[Process]) -> None:
    server = Process(tmp_path / "data", [HELLO_TASK])
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


def test_kill_9_loses_no_thread(tmp_path: Path, servers: list[Process]) -> None:
    """20 async threads queued or running, the server killed with SIGKILL, restarted:
    every thread reaches a terminal state, none is lost, no task process survives."""
    data_dir = tmp_path / "data"
    task = write_task(
        tmp_path,
        "sleepy",
        "import time\n"
        "from task_framework.models.artifact import Artifact\n\n"
        "def run(context):\n"
        "    time.sleep(1.5)\n"
        "    context.publish_output_artifacts_sync([Artifact(kind='json', value={'slept': 1})])\n",
    )
    env = {"TASK_FRAMEWORK_WORKER_CONCURRENCY": "2", "TASK_FRAMEWORK_THREAD_LEASE_SECONDS": "2"}
    first = Process(data_dir, [task], env=env)
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
        survivors = processes_in_group(pgid)
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in survivors
        ]
        assert survivors == [], f"a task process outlived the killed server: {commands}"

    second = Process(data_dir, [task], env=env)
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


def _banner_command(server: Process) -> str:
    """The shell command the banner printed after "try", joined from its lines."""
    text = server.log_path.read_text(errors="replace")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("try"))
    command = []
    for line in lines[start + 1 :]:
        command.append(line.strip().removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return " ".join(command)


GENERATED_KEYS = {"TASK_FRAMEWORK_API_KEYS": "", "TASK_FRAMEWORK_ADMIN_API_KEYS": ""}


def test_printed_try_command_works_with_several_tasks(
    tmp_path: Path, servers: list[Process]
) -> None:
    other = write_task(
        tmp_path,
        "other",
        "from task_framework.models.artifact import Artifact\n\n"
        "def run(context):\n"
        "    context.publish_output_artifacts_sync([Artifact(kind='json', value={'x': 1})])\n",
    )
    server = Process(tmp_path / "data", [HELLO_TASK, other], env=GENERATED_KEYS)
    servers.append(server)
    command = _banner_command(server)
    assert "task_id=" in command  # two tasks: the command names one
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    thread = json.loads(result.stdout)
    assert thread["state"] == "succeeded", thread


def test_server_without_tasks_says_how_to_deploy(tmp_path: Path, servers: list[Process]) -> None:
    server = Process(tmp_path / "data", [], env=GENERATED_KEYS)
    servers.append(server)
    text = server.log_path.read_text(errors="replace")
    assert "no task is deployed yet" in text
    assert "task-framework deploy PACKAGE.zip" in text
    keys = json.loads((tmp_path / "data" / "generated-api-keys.json").read_text())
    answer = httpx.post(
        f"{server.base}/threads",
        json={"mode": "sync", "inputs": [{"kind": "json", "value": {}}]},
        headers={"X-API-Key": keys["api_key"], "X-User-Id": "u", "X-App-Id": "a"},
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"]["code"] == "TASK_NOT_FOUND"
    assert "No task is deployed" in answer.json()["detail"]["detail"]
