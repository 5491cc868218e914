"""The packager, run as a real command (API.md §14.5)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from task_framework._version import __version__
from task_zips import PUBLISH_TASK, metadata

PYPROJECT = """\
[project]
name = "greet"
version = "1.0.0"
dependencies = ["mylib"]

[tool.uv.sources]
mylib = { path = "../mylib" }

[tool.other]
keep = true
"""


def _task_folder(root: Path) -> Path:
    folder = root / "greet"
    for relative, content in {
        "task_metadata.json": metadata(),
        "task.py": "MARKER = 'x'\n" + PUBLISH_TASK,
        "pyproject.toml": PYPROJECT,
        "uv.lock": "version = 1\n",
        "lib/helper.py": "X = 1\n",
        "lib/build_utils.py": "Y = 2\n",
        "__pycache__/task.cpython-311.pyc": "junk",
        ".venv/lib/x.py": "junk",
        "build/out.txt": "junk",
        "pkg.egg-info/PKG-INFO": "junk",
        "test-data/data/db": "junk",
        ".env": "SECRET=1",
        "notes.pyc": "junk",
    }.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return folder


def _package(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "task_framework.cli.package", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_packager_builds_a_clean_package(tmp_path: Path) -> None:
    folder = _task_folder(tmp_path)
    result = _package("-t", str(folder), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = sorted(archive.namelist())
        assert names == [
            "lib/build_utils.py",
            "lib/helper.py",
            "pyproject.toml",
            "task.py",
            "task_metadata.json",
            "uv.lock",
        ]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
        meta = json.loads(archive.read("task_metadata.json"))
        pyproject = tomllib.loads(archive.read("pyproject.toml").decode())
    assert meta["sdk_version"] == __version__
    assert "sources" not in pyproject["tool"].get("uv", {})
    assert pyproject["tool"]["other"] == {"keep": True}
    assert pyproject["project"]["dependencies"] == ["mylib"]


def test_validate_only_show_metadata_and_failures(tmp_path: Path) -> None:
    folder = _task_folder(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "task_framework.cli.main",
            "package",
            str(folder),
            "--validate-only",
            "--show-metadata",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["task_id"], shown["version"]) == ("greet", "1.0.0")
    assert shown["zip_hash"].startswith("sha256:")
    assert not list(tmp_path.glob("*.zip"))

    (folder / "task.py").unlink()
    failed = _package("-t", str(folder), "-o", str(tmp_path / "bad.zip"))
    assert failed.returncode == 1
    assert "Entry module 'task' of entry_point 'task:run' not found" in failed.stderr
    assert not (tmp_path / "bad.zip").exists()
