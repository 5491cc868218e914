"""The escape suite: a hostile task, deployed by an admin and run by a regular caller on a
real ``task-framework serve`` with default settings, tries to leave its sandbox.

Each attempt is one test that fails if the attempt succeeds. An attempt that needs a layer
the host lacks (see ``/health``'s ``sandbox``) is skipped with the missing layer named,
never passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs import ADMIN_KEY, TERMINAL, USER_KEY, Process
from task_zips import build_zip

pytestmark = pytest.mark.slow

MARKER_ENV = "TF_ESCAPE_SUITE_SECRET"
MODE = os.environ.get("TF_ESCAPE_SUITE_SANDBOX", "auto")
"""The server's TASK_FRAMEWORK_SANDBOX. ``off`` is for benchmarks/escapes.py, which counts
what gets through an unconfined server: then no case skips (and most fail)."""
LIMITED_MEMORY_MB = 128
LIMITED_CPU_SECONDS = 2
LIMITED_PROCESSES = 48
GONE_WITHIN_SECONDS = 5.0

HOSTILE_TASK = r"""
import json, os, signal, socket, sqlite3, subprocess, sys, time
import task_framework
from task_framework.models.artifact import Artifact

REMEMBERED = []


def _readable(path, limit=1 << 16):
    try:
        if os.path.isdir(path):
            return sorted(os.listdir(path)) or ["<empty>"]
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return None


def _writable(path):
    try:
        with open(path, "w") as handle:
            handle.write("escaped")
        return True
    except OSError:
        return False


def _pids():
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def server_proc(req):
    marker = req["marker"].encode()
    leaks = []
    for pid in {req["server_pid"], *_pids()}:
        for name in ("environ", "cmdline"):
            data = _readable(f"/proc/{pid}/{name}")
            if isinstance(data, bytes) and marker in data:
                leaks.append(f"/proc/{pid}/{name}")
        if pid == os.getpid():
            continue
        maps = _readable(f"/proc/{pid}/maps")
        if isinstance(maps, bytes):
            for line in maps.decode(errors="replace").splitlines():
                start = int(line.split("-", 1)[0], 16)
                try:
                    with open(f"/proc/{pid}/mem", "rb") as mem:
                        mem.seek(start)
                        mem.read(4096)
                    leaks.append(f"/proc/{pid}/mem")
                except (OSError, ValueError, OverflowError):
                    pass
                break
    return leaks


def read_paths(req):
    found = [path for path in req["paths"] if _readable(path) is not None]
    if "dirs" not in req:
        return found
    listings = {}
    for path in req["dirs"]:
        listing = _readable(path)
        if isinstance(listing, list):
            listings[path] = listing
    return {"files": found, "dirs": listings}


def write_paths(req):
    return [path for path in req["paths"] if _writable(path)]


def insert_admin_key(req):
    try:
        db = sqlite3.connect(req["db"], timeout=2)
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        db.execute("create table if not exists escaped (x)")
        db.commit()
        return [f"opened the database for writing: {tables}"]
    except sqlite3.Error as exc:
        return []


def signal_server(req):
    try:
        os.kill(req["server_pid"], 0)
    except OSError:
        return []
    return [f"signalled pid {req['server_pid']}"]


def grandchild(req):
    # A process that leaves the session and the process group, then lives on.
    subprocess.Popen(
        ["sleep", str(req["seconds"])], start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if req.get("hang"):
        time.sleep(3600)
    return []


def fork_bomb(req):
    children = []
    try:
        for _ in range(req["count"]):
            children.append(subprocess.Popen(["sleep", "30"]))
    except OSError:
        pass
    started = len(children)
    for child in children:
        child.kill()
        child.wait()
    return [f"started {started} processes"] if started >= req["count"] else []


def memory_hog(req):
    blocks = []
    for _ in range(req["mb"] // 16):
        blocks.append(bytearray(16 * 1024 * 1024))
    return [f"allocated {len(blocks) * 16} MiB"]


def cpu_spin(req):
    end = time.monotonic() + req["seconds"]
    while time.monotonic() < end:
        pass
    return [f"spun {req['seconds']} s"]


def remember(req):
    REMEMBERED.append(req["secret"])
    return []


def recall(req):
    return list(REMEMBERED)


def connect(req):
    reached = []
    for port in req["ports"]:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                reached.append(f"127.0.0.1:{port}")
        except OSError:
            pass
    return reached


def identity(req):
    return {
        "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "cwd": os.getcwd(),
        "code": os.path.dirname(os.path.abspath(__file__)), "env": sys.prefix,
        "sdk": os.path.dirname(os.path.dirname(os.path.abspath(task_framework.__file__))),
    }


ATTACKS = {name: fn for name, fn in globals().items() if callable(fn) and not name.startswith("_")}


async def run(context):
    inputs = await context.get_input_artifacts()
    req = inputs[0].value
    result = ATTACKS[req["attack"]](req)
    await context.publish_output_artifacts(
        [Artifact(kind="json", ref="result", value={"escapes": result})]
    )
"""


@dataclass
class Target:
    server: Process
    data_dir: Path
    layers: set[str]
    marker: str
    listener_port: int

    def need(self, *layers: str) -> None:
        missing = [layer for layer in layers if layer not in self.layers and MODE != "off"]
        if missing:
            pytest.skip(f"this host lacks the sandbox layer(s) {', '.join(missing)}")

    def headers(self, app: str = "app1", user: str = "user1") -> dict[str, str]:
        return {"X-API-Key": USER_KEY, "X-App-Id": app, "X-User-Id": user}

    def run(
        self,
        attack: str,
        *,
        task: str = "hostile",
        wait: bool = True,
        user: str = "user1",
        timeout: float | None = None,
        **req: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mode": "sync" if wait else "async",
            "inputs": [{"kind": "json", "value": {"attack": attack, **req}}],
        }
        if timeout is not None:
            body["timeout_seconds"] = timeout
        response = httpx.post(
            f"{self.server.base}/threads",
            params={"task_id": task},
            json=body,
            headers=self.headers(user=user),
            timeout=120,
        )
        assert response.status_code in (200, 201, 202), response.text
        thread: dict[str, Any] = response.json()
        return thread

    def escapes(self, thread: dict[str, Any]) -> Any:
        assert thread["state"] == "succeeded", thread.get("error")
        return thread["outputs"][0]["value"]["escapes"]

    def wait(self, thread_id: str, seconds: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = httpx.get(
                f"{self.server.base}/threads/{thread_id}", headers=self.headers(), timeout=10
            ).json()
            if got["state"] in TERMINAL:
                return dict(got)
            time.sleep(0.1)
        raise AssertionError(f"thread {thread_id} did not end")


def _deploy(base: str, name: str, *, files: dict[str, str] | None = None, **metadata: Any) -> None:
    meta = {"name": name, "version": "1.0.0", "entry_point": "task:run", **metadata}
    contents = {"task_metadata.json": json.dumps(meta), "task.py": HOSTILE_TASK, **(files or {})}
    package = build_zip(contents)
    response = httpx.post(
        f"{base}/admin/tasks",
        files={"file": (f"{name}.zip", package, "application/zip")},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=300,
    )
    assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp("escape") / "data"
    marker = f"escape-{secrets.token_hex(12)}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    server = Process(data_dir, [], env={MARKER_ENV: marker, "TASK_FRAMEWORK_SANDBOX": MODE})
    try:
        _deploy(server.base, "hostile")
        _deploy(server.base, "offline", network="none")
        limits = {
            "memory_mb": LIMITED_MEMORY_MB,
            "cpu_seconds": LIMITED_CPU_SECONDS,
            "max_processes": LIMITED_PROCESSES,
        }
        _deploy(server.base, "limited", resources=limits)
        # Its own environment: another task's dependencies.
        _deploy(server.base, "victim", files={"requirements.txt": "six==1.16.0\n"})
        health = httpx.get(f"{server.base}/health", timeout=10).json()
        layers = set(health["sandbox"]["layers"])
        yield Target(server, data_dir, layers, marker, listener.getsockname()[1])
    finally:
        server.stop()
        stop.set()
        acceptor.join(5)
        listener.close()


def _host_processes_with(argument: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                args = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argument.encode() in args and state != "Z":
            found.append(int(entry))
    return found


def _gone(argument: str) -> bool:
    """Whether the processes with ``argument`` end soon; survivors are killed either way
    (an unconfined run, benchmarks/escapes.py, must not leave them on the machine)."""
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while _host_processes_with(argument) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = _host_processes_with(argument)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return not survivors


# -- the server's secrets ------------------------------------------------------------------
def test_server_proc_entries_are_unreadable(target: Target) -> None:
    """environ, cmdline and memory of the server (and any process it can list)."""
    target.need("pid_namespace")
    thread = target.run("server_proc", marker=target.marker, server_pid=target.server.proc.pid)
    assert target.escapes(thread) == []


def test_server_cannot_be_signalled(target: Target) -> None:
    target.need("pid_namespace")
    thread = target.run("signal_server", server_pid=target.server.proc.pid)
    assert target.escapes(thread) == []


def test_data_dir_and_key_files_are_unreadable(target: Target) -> None:
    """No file of the data directory, and no directory listing that shows more than the
    way to the task's own code, environment and scratch directory."""
    target.need("landlock")
    data = target.data_dir
    own = target.escapes(target.run("identity"))
    on_own_way = {
        part
        for path in (own["code"], own["env"], own["cwd"], own["sdk"])
        for part in Path(path).parts
    }
    files = [
        data / "task_framework.db",
        data / "task_framework.db-wal",
        data / "secret.key",
        data / "generated-api-keys.json",
    ]
    files += [p for p in data.rglob("*") if p.is_file() and p.suffix in (".zip", ".db", ".key")]
    dirs = [data, data / "storage", data / "venvs", data / "tasks", data / "packages"]
    thread = target.run(
        "read_paths",
        paths=[str(p) for p in files if p.exists()],
        dirs=[str(p) for p in dirs if p.exists()],
    )
    result = target.escapes(thread)
    assert result["files"] == []
    for path, listing in result["dirs"].items():
        hidden = set(os.listdir(path)) - on_own_way
        assert not hidden & set(listing), f"{path} shows {sorted(hidden & set(listing))}"


def test_database_cannot_be_opened_to_insert_a_key(target: Target) -> None:
    target.need("landlock")
    thread = target.run("insert_admin_key", db=str(target.data_dir / "task_framework.db"))
    assert target.escapes(thread) == []


def test_other_tasks_code_and_environments_are_unreadable(target: Target) -> None:
    target.need("landlock")
    own = target.escapes(target.run("identity"))
    candidates = [p for p in (target.data_dir / "tasks").glob("*") if p.is_dir()]
    candidates += [p for p in (target.data_dir / "venvs").glob("*") if p.is_dir()]
    others = [str(p) for p in candidates if str(p) not in (own["code"], own["env"])]
    assert len(others) >= 2  # at least the victim's code and its own environment
    thread = target.run("read_paths", paths=others)
    assert target.escapes(thread) == []


def test_another_tenants_file_is_unreadable(target: Target) -> None:
    target.need("landlock")
    upload = httpx.post(
        f"{target.server.base}/files",
        files={"file": ("private.txt", b"tenant B's secret", "text/plain")},
        headers=target.headers(app="appB", user="userB"),
        timeout=30,
    )
    assert upload.status_code in (200, 201), upload.text
    stored = [str(p) for p in (target.data_dir / "storage").rglob("*") if p.is_file()]
    assert stored
    thread = target.run("read_paths", paths=stored)
    assert target.escapes(thread) == []


def test_no_writes_outside_the_scratch_directory(target: Target) -> None:
    target.need("landlock")
    data = target.data_dir
    name = f"escaped-{secrets.token_hex(6)}.txt"
    places = [data, data / "storage" / "files", data / "venvs", *(data / "tasks").glob("*")]
    places += [Path("/etc"), Path("/usr"), Path("/root"), Path(__file__).parent]
    paths = [place / name for place in places]
    try:
        thread = target.run("write_paths", paths=[str(p) for p in paths])
        assert target.escapes(thread) == []
        assert not any(p.exists() for p in paths)
    finally:
        for path in paths:  # what an unconfined run (benchmarks/escapes.py) left behind
            path.unlink(missing_ok=True)


def test_task_runs_as_its_own_user_in_its_scratch_directory(target: Target) -> None:
    thread = target.run("identity")
    who = target.escapes(thread)
    assert who["cwd"].startswith(str(target.data_dir / "scratch"))
    if os.geteuid() == 0:
        target.need("separate_uid")
        assert who["uid"] != 0
        assert who["gid"] != 0


# -- processes -------------------------------------------------------------------------------
def test_setsid_grandchild_dies_with_a_normal_end(target: Target) -> None:
    target.need("pid_namespace")
    seconds = f"{3000 + secrets.randbelow(1000)}.5"
    thread = target.run("grandchild", seconds=seconds)
    assert thread["state"] == "succeeded"
    assert _gone(seconds), "a setsid grandchild outlived its thread"


def test_setsid_grandchild_dies_with_a_stop(target: Target) -> None:
    target.need("pid_namespace")
    seconds = f"{3000 + secrets.randbelow(1000)}.25"
    thread = target.run("grandchild", wait=False, seconds=seconds, hang=True)
    deadline = time.monotonic() + 30
    while not _host_processes_with(seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop = httpx.post(
        f"{target.server.base}/threads/{thread['id']}:stop", headers=target.headers(), timeout=30
    )
    assert stop.status_code in (200, 202), stop.text
    assert target.wait(thread["id"])["state"] == "stopped"
    assert _gone(seconds), "a setsid grandchild outlived its stopped thread"


def test_setsid_grandchild_dies_with_a_timeout(target: Target) -> None:
    target.need("pid_namespace")
    seconds = f"{3000 + secrets.randbelow(1000)}.75"
    thread = target.run("grandchild", wait=False, seconds=seconds, hang=True, timeout=2)
    assert target.wait(thread["id"])["state"] == "timeout"
    assert _gone(seconds), "a setsid grandchild outlived its timed-out thread"


def test_fork_bomb_stops_at_the_process_limit(target: Target) -> None:
    target.need("cgroup" if os.geteuid() != 0 else "separate_uid")
    thread = target.run("fork_bomb", task="limited", count=LIMITED_PROCESSES * 4)
    assert target.escapes(thread) == []


def test_memory_hog_is_stopped_at_its_limit(target: Target) -> None:
    thread = target.run("memory_hog", task="limited", mb=LIMITED_MEMORY_MB * 4)
    assert thread["state"] == "failed", "a task allocated four times its memory limit"
    assert "memory limit" in thread["error"]["message"]


def test_cpu_spin_is_stopped_at_its_cpu_limit(target: Target) -> None:
    thread = target.run("cpu_spin", task="limited", seconds=LIMITED_CPU_SECONDS * 10)
    assert thread["state"] == "failed", "a task used ten times its CPU time limit"
    assert "CPU time limit" in thread["error"]["message"]


def test_module_state_is_not_seen_by_another_owner(target: Target) -> None:
    secret = f"tenant-a-{secrets.token_hex(8)}"
    target.escapes(target.run("remember", user="tenantA", secret=secret))
    seen = target.escapes(target.run("recall", user="tenantB"))
    assert secret not in seen
    # The same owner keeps its warm worker (and with it, the benefit of reuse).
    assert secret in target.escapes(target.run("recall", user="tenantA"))


# -- network ---------------------------------------------------------------------------------
def test_no_loopback_connections_under_network_none(target: Target) -> None:
    target.need("network_namespace")
    ports = [target.server.port, target.listener_port, 5432]
    thread = target.run("connect", task="offline", ports=ports)
    assert target.escapes(thread) == []


def test_outbound_tasks_keep_the_network(target: Target) -> None:
    """The control for the case above: the default policy is the host's network."""
    thread = target.run("connect", ports=[target.listener_port])
    assert target.escapes(thread) == [f"127.0.0.1:{target.listener_port}"]


def test_no_task_process_survives_the_server(target: Target) -> None:
    """Last: stops the server with a thread still running a setsid grandchild."""
    target.need("pid_namespace")
    seconds = f"{3000 + secrets.randbelow(1000)}.125"
    target.run("grandchild", wait=False, seconds=seconds, hang=True)
    deadline = time.monotonic() + 30
    while not _host_processes_with(seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _host_processes_with(seconds)
    target.server.stop()
    assert _gone(seconds), "a task process outlived the server"
