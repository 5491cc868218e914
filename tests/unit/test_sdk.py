"""The SDK overlay: exactly the task-author modules, reused, importable without the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import task_framework
from task_framework._version import SDK_PROTOCOL_VERSION, __version__
from task_framework.runner.sdk import SDK_MODULES, sdk_dir

PACKAGE_DIR = Path(task_framework.__file__).parent


def _run_isolated(overlay: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh ``-I`` interpreter with the overlay first on sys.path."""
    prelude = f"import sys; sys.path.insert(0, {str(overlay)!r})\n"
    return subprocess.run(
        [sys.executable, "-I", "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_overlay_holds_exactly_the_sdk_modules(tmp_path: Path) -> None:
    overlay = sdk_dir(tmp_path)

    copied = {
        path.relative_to(overlay / "task_framework").as_posix()
        for path in overlay.rglob("*")
        if path.is_file()
    }
    expected = {rel for rel in SDK_MODULES if (PACKAGE_DIR / rel).is_file()}
    assert copied == expected
    assert {"__init__.py", "errors.py", "models/artifact.py"} <= copied
    assert overlay.parent == tmp_path / "sdk"
    assert not [p for p in overlay.parent.iterdir() if p.name.startswith(".tmp-")]


def test_overlay_is_reused(tmp_path: Path) -> None:
    first = sdk_dir(tmp_path)
    marker = first / "marker"
    marker.write_text("x")

    second = sdk_dir(tmp_path)

    assert second == first
    assert marker.exists()
    assert len(list((tmp_path / "sdk").iterdir())) == 1


def test_overlay_version_module_states_the_server_version(tmp_path: Path) -> None:
    overlay = sdk_dir(tmp_path)

    result = _run_isolated(
        overlay,
        "import task_framework._version as v; print(v.__version__, v.SDK_PROTOCOL_VERSION)",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [__version__, str(SDK_PROTOCOL_VERSION)]
    assert "importlib" not in (overlay / "task_framework" / "_version.py").read_text()


def test_overlay_imports_the_sdk_but_not_the_server(tmp_path: Path) -> None:
    overlay = sdk_dir(tmp_path)

    result = _run_isolated(
        overlay,
        "import task_framework\n"
        "from task_framework.models.artifact import Artifact\n"
        "from task_framework.utils.artifact_validation import ArtifactValidationError\n"
        "from task_framework import Artifact as A2, ArtifactValidationError as E2\n"
        "assert A2 is Artifact and E2 is ArtifactValidationError\n"
        "Artifact(kind='json', ref='r', value={'n': 1})\n"
        "print(task_framework.__file__)\n"
        "try:\n"
        "    import task_framework.api\n"
        "except ModuleNotFoundError:\n"
        "    print('no-api')\n",
    )

    assert result.returncode == 0, result.stderr
    module_file, api = result.stdout.split()
    assert Path(module_file).is_relative_to(overlay)
    assert api == "no-api"


def test_overlay_provides_task_context(tmp_path: Path) -> None:
    if not (PACKAGE_DIR / "context.py").is_file():
        pytest.skip("task_framework/context.py is not written yet")
    overlay = sdk_dir(tmp_path)

    result = _run_isolated(
        overlay,
        "import task_framework.context\n"
        "from task_framework import TaskContext\n"
        "assert TaskContext is task_framework.context.TaskContext\n",
    )

    assert result.returncode == 0, result.stderr
