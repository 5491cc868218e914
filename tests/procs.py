"""Real ``task-framework`` processes for acceptance and fault tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT_SECONDS = 90.0
ADMIN_KEY = "tfk_acceptance_admin_key_0000000000000000000000"
USER_KEY = "tfk_acceptance_user_key_00000000000000000000000"
USER = {"X-API-Key": USER_KEY, "X-App-Id": "app1", "X-User-Id": "user1"}
TERMINAL = {"succeeded", "failed", "stopped", "timeout", "expired"}


PROCESS_ID = '''
def process_id():
    """This process as the host can find it: "<pid namespace>[@<its init's start>]/<pid>".

    A sandboxed task is PID 1 of a namespace of its own, so its pid alone says nothing
    outside; namespace inodes are reused, so the start time of the namespace's init tells
    this one from a later one.
    """
    import os
    ns = os.readlink("/proc/self/ns/pid")
    if os.getpid() == 1:
        with open("/proc/1/stat") as handle:
            ns += "@" + handle.read().rsplit(")", 1)[1].split()[19]
    return f"{ns}/{os.getpid()}"
'''
"""Source of ``process_id()`` for test tasks; the helpers below read what it returns."""


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _members(token: str) -> tuple[bool, str, dict[int, str]]:
    """(whether the token's namespace is ours, its pid, {host pid: pid in the namespace}
    of every process still in that very namespace)."""
    where, _, pid = token.partition("#")[0].rpartition("/")
    ns, _, init_start = where.partition("@")
    if ns == _namespace("self"):
        return True, pid, {}
    members: dict[int, str] = {}
    init_ok = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _namespace(entry) != ns:
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        inner = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1]
        members[int(entry)] = inner
        fields = _stat(entry)
        if inner == "1" and fields is not None and fields[19] == init_start:
            init_ok = True
    return False, pid, members if init_ok else {}


def host_pid(token: str) -> int | None:
    """The host pid of a process a task reported as "<namespace>/<pid in it>#..."."""
    own, pid, members = _members(token)
    if own:
        return int(pid)
    return next((host for host, inner in members.items() if inner == pid), None)


def live_processes(token: str) -> list[int]:
    """Live processes (not zombies) of the worker that reported ``token``: its process
    group, or, when it has a PID namespace of its own, everything in that namespace."""
    own, pid, members = _members(token)
    alive = []
    for entry in os.listdir("/proc") if own else [str(host) for host in members]:
        if not entry.isdigit():
            continue
        fields = _stat(entry)
        if fields is None or fields[0] == "Z":
            continue
        if not own or int(fields[2]) == int(pid):
            alive.append(int(entry))
    return alive


def process_alive(token: str) -> bool:
    pid = host_pid(token)
    fields = _stat(pid) if pid is not None else None
    return fields is not None and fields[0] != "Z"


def readable_by_workers(folder: Path) -> Path:
    """Open a task folder of the test to the sandbox's worker uid (as a real task folder
    is): pytest makes its temporary folders 0700."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli() -> list[str]:
    script = Path(sys.executable).parent / "task-framework"
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_framework"]


class Process:
    """``task-framework serve`` (``port`` set) or ``task-framework worker``; ``wrapper``
    is a command that execs the rest (``setpriv ...``), so the pid stays the server's."""

    def __init__(
        self,
        data_dir: Path,
        tasks: list[Path],
        *,
        worker: bool = False,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.port = 0 if worker else free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [*(wrapper or []), *cli(), "worker" if worker else "serve"]
        args += ["--data-dir", str(data_dir)]
        if not worker:
            args += ["--port", str(self.port)]
        for task in tasks:
            readable_by_workers(task)
            args += ["--dev-task", str(task)]
        args += extra_args or []
        environment = {
            **os.environ,
            "TASK_FRAMEWORK_API_KEYS": USER_KEY,
            "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
            "TASK_FRAMEWORK_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        name = "worker" if worker else f"server-{self.port}"
        self.log_path = data_dir / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, env=environment, stdout=self.log, stderr=subprocess.STDOUT
        )
        if not worker:
            self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"server exited early with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("server did not become healthy")

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def children(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self.log.closed:
            self.log.close()


def processes_in_group(pgid: int) -> list[int]:
    """Live processes of a process group (zombies are dead already: not counted)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def write_task(root: Path, name: str, body: str, *, entry: str = "run") -> Path:
    """A dev task folder whose ``task.py`` is ``body``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task_metadata.json").write_text(
        json.dumps({"name": name, "version": "1.0.0", "entry_point": f"task:{entry}"})
    )
    (folder / "task.py").write_text(body)
    return folder
