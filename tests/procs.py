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
