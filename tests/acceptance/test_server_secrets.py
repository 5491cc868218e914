"""The real server keeps its environment and memory from other processes of its user."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs import USER_KEY, Process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

# The server and the prying process run as the same user without any capability (as
# root without CAP_SYS_PTRACE behaves like any other user): only dumpability decides.
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
PRY = """
import sys
import time
pid = sys.argv[1]
for name in ("environ", "mem"):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            data = handle.read(65536) if name == "environ" else b""
    except PermissionError:
        print(f"{name}:denied")
    else:
        print(f"{name}:read:{sys.argv[2].encode() in data}")
"""


def pry(pid: int) -> list[str]:
    done = subprocess.run(
        [*NO_CAPS, sys.executable, "-c", PRY, str(pid), USER_KEY],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


@pytest.fixture
def bystander() -> Iterator[int]:
    """A dumpable process with the same key in its environment and the same rights."""
    proc = subprocess.Popen(
        [*NO_CAPS, sys.executable, "-c", "import time; time.sleep(60)"],
        env={"TASK_FRAMEWORK_API_KEYS": USER_KEY},
    )
    yield proc.pid
    proc.kill()
    proc.wait(10)


def test_serve_is_not_dumpable(tmp_path: Path, bystander: int) -> None:
    # The probe works: a dumpable process of the same user gives its environment away.
    assert pry(bystander) == ["environ:read:True", "mem:read:False"]
    server = Process(tmp_path / "data", [], wrapper=NO_CAPS)
    try:
        assert pry(server.proc.pid) == ["environ:denied", "mem:denied"]
        assert Path(f"/proc/{server.proc.pid}/environ").stat().st_uid == 0  # kernel-owned
    finally:
        server.stop()


def test_worker_is_not_dumpable(tmp_path: Path) -> None:
    worker = Process(tmp_path / "data", [], worker=True, wrapper=NO_CAPS)
    try:
        # No HTTP to wait for: the prctl comes before the settings are even read.
        for _ in range(100):
            if pry(worker.proc.pid) == ["environ:denied", "mem:denied"]:
                break
            time.sleep(0.1)
        assert pry(worker.proc.pid) == ["environ:denied", "mem:denied"]
        assert worker.proc.poll() is None
    finally:
        worker.stop()
