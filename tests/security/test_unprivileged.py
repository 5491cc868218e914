"""The sandbox of a server that does not run as root: user namespaces instead of a uid.

The test switches to an unprivileged uid (it runs as root in CI) and runs the server's
own sandbox code as that user: detection, then a hostile script through the launcher.
Its data directory belongs to the same user as the task, so only the sandbox keeps the
task out of it.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

import task_framework

pytestmark = pytest.mark.slow

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

DRIVER = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    from task_framework.runner.base import TaskResources
    from task_framework.runner.sandbox import Sandbox

    root, port = Path(sys.argv[1]), sys.argv[2]
    sandbox = Sandbox(data_dir=root / "data")
    layers = sandbox.detect()
    limits = sandbox.policy.resolve(TaskResources(network="none"))
    launch = sandbox.prepare(
        code_dir=root / "code", env_path=Path(sys.prefix), sdk_path=root / "code", limits=limits
    )
    done = subprocess.run(
        [*launch.argv_prefix, sys.executable, "-I", str(root / "code" / "hostile.py"), port],
        capture_output=True, text=True, cwd=launch.scratch, timeout=60,
    )
    launch.cleanup()
    print(json.dumps({
        "layers": layers.in_force(), "reasons": layers.reasons,
        "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-2000:],
    }))
    """
)

HOSTILE = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
    found = {}
    try:
        found["secret"] = open(os.path.join(data, "secret.key")).read()
    except OSError:
        pass
    try:
        open(os.path.join(data, "planted"), "w").write("x")
        found["planted"] = True
    except OSError:
        pass
    found["processes"] = [p for p in os.listdir("/proc") if p.isdigit()]
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
        found["connected"] = True
    except OSError:
        pass
    subprocess.Popen(["sleep", "4321.5"], start_new_session=True)
    print(json.dumps(found))
    """
)


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop to an unprivileged user")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _closed_to_others(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users may not traverse."""
    for folder in [*reversed(path.parents), path]:
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def _alive_with(argument: bytes) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if argument in handle.read().split(b"\0"):
                        return True
            except OSError:
                continue
    return False


def test_unprivileged_server_confines_its_tasks(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the sandbox layers are Linux's")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"needs {SYSTEM_PYTHON}: an interpreter an unprivileged user may run")
    root = tmp_path / "unprivileged"
    (root / "code").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "code" / "hostile.py").write_text(HOSTILE)
    (root / "driver.py").write_text(DRIVER)
    (root / "data" / "secret.key").write_text("the server's secret")
    prefix = _as_nobody()
    if prefix:
        for path in [root, *root.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        for parent in root.parents:  # pytest's tmp folders are 0700: let nobody through
            if parent == Path("/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o111)
    source = Path(task_framework.__file__).resolve().parents[1]
    site = Path(inspect.getfile(pydantic)).resolve().parents[1]
    for needed in (source, site):
        closed = _closed_to_others(needed)
        if prefix and closed is not None:
            pytest.skip(
                f"{closed} is closed to other users (no o+x), so an unprivileged user cannot "
                f"import the code under test from {needed}: use a checkout others may traverse"
            )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{source}:{site}"}
    try:
        done = subprocess.run(
            [
                *prefix,
                SYSTEM_PYTHON,
                str(root / "driver.py"),
                str(root),
                str(listener.getsockname()[1]),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    layers = set(report["layers"])
    if "user_namespace" not in layers:
        pytest.skip(f"unprivileged user namespaces are refused here: {report['reasons']}")
    assert {"pid_namespace", "filesystem_view", "network_namespace"} <= layers, report
    assert report["returncode"] == 0, report["stderr"]
    found = json.loads(report["stdout"])
    assert "secret" not in found
    assert "planted" not in found
    assert not (root / "data" / "planted").exists()
    assert "connected" not in found
    assert found["processes"] == ["1"]
    assert not _alive_with(b"4321.5"), "a setsid grandchild outlived its worker"
