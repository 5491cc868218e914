"""EnvironmentBuilder against real uv and PyPI (uv's default cache keeps reruns warm)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from uv import find_uv_bin

from task_framework.errors import EnvironmentBuildError
from task_framework.runner.base import TaskEnv
from task_framework.runner.envs import EnvironmentBuilder

pytestmark = pytest.mark.slow

REUSE_LIMIT_SECONDS = 1.0


@pytest.fixture
def builder(tmp_path: Path) -> EnvironmentBuilder:
    return EnvironmentBuilder(tmp_path / "venvs")


def make_source(root: Path, name: str, files: dict[str, str]) -> Path:
    source = root / name
    source.mkdir(parents=True)
    (source / "task.py").write_text("def main(context):\n    pass\n")
    for filename, text in files.items():
        (source / filename).write_text(text)
    return source


def run_in(env: TaskEnv, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env.python), "-I", "-c", code], capture_output=True, text=True, timeout=60
    )


def six_version(env: TaskEnv) -> str:
    result = run_in(env, "import six; print(six.__version__)")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] if root.exists() else []


def pyproject(dependencies: list[str], requires_python: str = ">=3.11") -> str:
    deps = ", ".join(f'"{dep}"' for dep in dependencies)
    return (
        "[project]\n"
        'name = "demo-task"\n'
        'version = "0.1.0"\n'
        f'requires-python = "{requires_python}"\n'
        f"dependencies = [{deps}]\n"
    )


def uv_lock(project: Path) -> None:
    env = {**os.environ, "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [find_uv_bin(), "lock", "--no-progress", "--python", sys.executable],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


async def test_no_dependency_files_gives_just_pydantic(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    source = make_source(tmp_path, "plain", {})

    env = await builder.ensure(source)

    assert env.path == builder.root / env.key
    assert builder.is_built(env.key)
    assert run_in(env, "import pydantic; assert pydantic.VERSION.startswith('2.')").returncode == 0
    assert run_in(env, "import fastapi").returncode != 0
    assert run_in(env, "import task").returncode != 0  # code is not installed
    assert leftovers(builder.root) == []


async def test_requirements_pins_give_separate_envs(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    new = make_source(tmp_path, "new", {"requirements.txt": "six==1.16.0\n"})
    old = make_source(tmp_path, "old", {"requirements.txt": "six==1.15.0\n"})

    env_new, env_old = await asyncio.gather(builder.ensure(new), builder.ensure(old))

    assert env_new.key != env_old.key
    assert six_version(env_new) == "1.16.0"
    assert six_version(env_old) == "1.15.0"
    assert run_in(env_old, "import pydantic").returncode == 0


async def test_pyproject_dependencies_win_over_requirements(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    source = make_source(
        tmp_path,
        "both",
        {"pyproject.toml": pyproject(["six==1.15.0"]), "requirements.txt": "six==1.16.0\n"},
    )

    env = await builder.ensure(source)

    assert six_version(env) == "1.15.0"
    assert run_in(env, "import pydantic").returncode == 0


async def test_lock_is_honoured(builder: EnvironmentBuilder, tmp_path: Path) -> None:
    source = make_source(tmp_path, "locked", {"pyproject.toml": pyproject(["six==1.16.0"])})
    uv_lock(source)

    env = await builder.ensure(source)

    assert six_version(env) == "1.16.0"
    # The lock has no pydantic, so the builder added it for the SDK.
    assert run_in(env, "import pydantic").returncode == 0
    assert leftovers(builder.root) == []


async def test_lock_pins_win_over_a_loose_range(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    source = make_source(tmp_path, "loose", {"pyproject.toml": pyproject(["six==1.15.0"])})
    uv_lock(source)
    (source / "pyproject.toml").write_text(pyproject(["six>=1.15"]))
    uv_lock(source)  # relocks the loosened requirement, keeping the locked 1.15.0
    assert 'version = "1.15.0"' in (source / "uv.lock").read_text()

    env = await builder.ensure(source)

    # Without the lock, ``six>=1.15`` would resolve to the newest six.
    assert six_version(env) == "1.15.0"


async def test_lock_that_does_not_match_fails(builder: EnvironmentBuilder, tmp_path: Path) -> None:
    source = make_source(tmp_path, "stale", {"pyproject.toml": pyproject(["six==1.16.0"])})
    uv_lock(source)
    (source / "pyproject.toml").write_text(pyproject(["six==1.15.0"]))

    with pytest.raises(EnvironmentBuildError) as caught:
        await builder.ensure(source)

    assert caught.value.message.startswith("Dependency installation failed: ")
    assert "uv.lock" in caught.value.message
    assert not builder.is_built(builder.key_for(source))
    assert leftovers(builder.root) == []


async def test_unknown_package_fails_quoting_uv(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    missing = "task-framework-no-such-package-7c1e9a"
    source = make_source(tmp_path, "missing", {"requirements.txt": f"{missing}\n"})

    with pytest.raises(EnvironmentBuildError) as caught:
        await builder.ensure(source)

    message = caught.value.message
    assert message.startswith("Dependency installation failed: ")
    assert missing in message
    assert "not found" in message
    assert not builder.is_built(builder.key_for(source))
    assert leftovers(builder.root) == []


async def test_incompatible_requires_python_fails(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    source = make_source(tmp_path, "future", {"pyproject.toml": pyproject([], ">=4")})

    with pytest.raises(EnvironmentBuildError) as caught:
        await builder.ensure(source)

    assert "requires-python" in caught.value.message
    assert "'>=4'" in caught.value.message
    assert not builder.is_built(builder.key_for(source))


async def test_same_dependencies_new_code_reuses_env(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    first = make_source(tmp_path, "v1", {"requirements.txt": "six==1.16.0\n"})
    second = make_source(tmp_path, "v2", {"requirements.txt": "six==1.16.0\n"})
    (second / "task.py").write_text("def main(context):\n    return 2\n")
    (second / "helper.py").write_text("X = 1\n")

    env1 = await builder.ensure(first)
    started = time.perf_counter()
    env2 = await builder.ensure(second)
    elapsed = time.perf_counter() - started

    assert builder.key_for(first) == builder.key_for(second)
    assert env2 == env1
    assert builder.build_count == 1
    assert elapsed < REUSE_LIMIT_SECONDS


async def test_key_changes_with_dependency_files(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    plain = make_source(tmp_path, "plain", {})
    reqs = make_source(tmp_path, "reqs", {"requirements.txt": "six\n"})
    renamed = make_source(tmp_path, "renamed", {"pyproject.toml": "six\n"})

    keys = {builder.key_for(plain), builder.key_for(reqs), builder.key_for(renamed)}

    assert len(keys) == 3
    assert all(len(key) == 64 for key in keys)


async def test_concurrent_ensure_builds_once(builder: EnvironmentBuilder, tmp_path: Path) -> None:
    source = make_source(tmp_path, "busy", {"requirements.txt": "six==1.16.0\n"})

    envs = await asyncio.gather(*(builder.ensure(source) for _ in range(4)))

    assert len(set(envs)) == 1
    assert builder.build_count == 1
    assert six_version(envs[0]) == "1.16.0"


async def test_builders_sharing_a_root_build_once(tmp_path: Path) -> None:
    # Separate builders stand in for separate processes: only the file lock is shared.
    root = tmp_path / "venvs"
    builders = [EnvironmentBuilder(root) for _ in range(3)]
    source = make_source(tmp_path, "shared", {"requirements.txt": "six==1.15.0\n"})

    envs = await asyncio.gather(*(b.ensure(source) for b in builders))

    assert len(set(envs)) == 1
    assert sum(b.build_count for b in builders) == 1
    assert six_version(envs[0]) == "1.15.0"


async def test_remove_then_rebuild(builder: EnvironmentBuilder, tmp_path: Path) -> None:
    source = make_source(tmp_path, "gone", {})
    env = await builder.ensure(source)

    builder.remove(env.key)
    builder.remove(env.key)  # removing twice is harmless

    assert not builder.is_built(env.key)
    assert not env.path.exists()
    assert leftovers(builder.root) == []
    rebuilt = await builder.ensure(source)
    assert rebuilt == env
    assert builder.build_count == 2


def test_rejects_keys_that_are_not_hashes(builder: EnvironmentBuilder) -> None:
    with pytest.raises(ValueError, match="not an environment key"):
        builder.remove("../etc")


async def test_cancelled_build_leaves_nothing_behind(
    builder: EnvironmentBuilder, tmp_path: Path
) -> None:
    source = make_source(tmp_path, "cancelled", {"requirements.txt": "six==1.16.0\n"})
    task = asyncio.create_task(builder.ensure(source))
    await asyncio.sleep(0.05)  # a build takes a few hundred ms: this lands inside uv

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not builder.is_built(builder.key_for(source))
    assert leftovers(builder.root) == []
    env = await builder.ensure(source)
    assert six_version(env) == "1.16.0"


async def test_explicit_python_and_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache"
    builder = EnvironmentBuilder(tmp_path / "venvs", uv_cache_dir=cache, python=sys.executable)
    assert builder.python_version.release[:2] == sys.version_info[:2]
    source = make_source(tmp_path, "cached", {})

    env = await builder.ensure(source)

    version = run_in(env, "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert any(cache.iterdir())  # uv used the given cache, not its default one
    assert builder.key_for(source) == EnvironmentBuilder(tmp_path / "other").key_for(source)


def test_unknown_python_fails(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentBuildError, match="not found"):
        EnvironmentBuilder(tmp_path, python="2.1")
