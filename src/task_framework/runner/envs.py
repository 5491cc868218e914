"""Build and reuse the per-version virtual environments task code runs in (API.md §14.3).

An environment holds only dependencies: the task's code is never installed into it, the
worker puts the code folder on ``sys.path``. So the environment is keyed by the
dependency files alone, and a redeploy with new code but the same dependencies reuses
the existing one.

Builds go into ``root/.tmp-<key>-<random>`` and are renamed to ``root/<key>`` when
complete, so a half-built environment is never visible at its final path. One build per
key runs at a time: an asyncio lock inside the process, a ``flock`` across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from uv import find_uv_bin

from task_framework.errors import EnvironmentBuildError
from task_framework.runner.base import TaskEnv

BUILDER_VERSION = 1
"""Bump when the way environments are built changes: every key changes with it."""

SDK_REQUIREMENT = "pydantic>=2,<3"
"""What the task SDK overlay needs inside every environment."""

PYPROJECT = "pyproject.toml"
REQUIREMENTS = "requirements.txt"
UV_LOCK = "uv.lock"
DEPENDENCY_FILES = (PYPROJECT, REQUIREMENTS, UV_LOCK)

OUTPUT_TAIL_CHARS = 2000
"""How much of uv's output an EnvironmentBuildError quotes (the end is where the cause is)."""

UV_STEP_TIMEOUT_SECONDS = 900.0
"""A uv step that runs longer than this is killed (a hung index or sdist build)."""

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")

# Variables uv needs to reach an index (proxies, certificates); everything else of the
# server's environment (database URL, API keys...) stays out, since sdist builds run
# third-party code.
_PASSED_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# uv settings the builder controls itself; an operator's value would change the result.
_CONTROLLED_UV_ENV = ("UV_PROJECT_ENVIRONMENT", "UV_SYSTEM_PYTHON", "UV_PYTHON")


class EnvironmentBuilder:
    """Builds task environments under ``root`` with uv, one directory per key."""

    def __init__(
        self, root: Path, *, uv_cache_dir: Path | None = None, python: str | None = None
    ) -> None:
        self.root = root
        self.uv_cache_dir = uv_cache_dir
        self.uv = find_uv_bin()
        self.build_count = 0
        """How many builds this builder started (reuses do not count)."""
        self._locks: dict[str, asyncio.Lock] = {}
        if python is None:
            self.python = sys.executable
            self.python_version = Version(".".join(map(str, sys.version_info[:3])))
        else:
            self.python, self.python_version = self._resolve_python(python)

    def key_for(self, source_dir: Path) -> str:
        """The sha256 hex of the dependency files, the target Python and the builder."""
        digest = hashlib.sha256()
        header = (
            f"builder={BUILDER_VERSION}\n"
            f"python={self.python_version.major}.{self.python_version.minor}\n"
            f"sdk={SDK_REQUIREMENT}\n"
        )
        digest.update(header.encode())
        for name in DEPENDENCY_FILES:
            path = source_dir / name
            if path.is_file():
                data = path.read_bytes()
                digest.update(f"{name}\0{len(data)}\0".encode())
                digest.update(data)
        return digest.hexdigest()

    def is_built(self, key: str) -> bool:
        return self._env_path(key).is_dir()

    def remove(self, key: str) -> None:
        """Delete the environment; moved aside first so its final path is never half-gone."""
        path = self._env_path(key)
        doomed = self.root / f".tmp-{key}-removed-{secrets.token_hex(4)}"
        try:
            path.rename(doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    async def ensure(self, source_dir: Path) -> TaskEnv:
        """Return the environment for ``source_dir``'s dependencies, building it if needed.

        Raises ``EnvironmentBuildError`` (message quoting uv's output) when it cannot be built.
        """
        key = self.key_for(source_dir)
        env = TaskEnv(key=key, path=self._env_path(key))
        if self.is_built(key):
            return env
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self.is_built(key):
                return env
            self.root.mkdir(parents=True, exist_ok=True)
            fd = await _flock(self.root / f"{key}.lock")
            try:
                # Another process may have finished it while we waited for the file lock.
                if not self.is_built(key):
                    await self._build(source_dir, key, env.path)
            finally:
                os.close(fd)
        return env

    def _env_path(self, key: str) -> Path:
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"not an environment key: {key!r}")
        return self.root / key

    async def _build(self, source_dir: Path, key: str, final: Path) -> None:
        self.build_count += 1
        # Holding the key's file lock, any temp dir of this key is left over from a crash.
        for stale in self.root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        pyproject = self._read_pyproject(source_dir)
        tmp = self.root / f".tmp-{key}-{secrets.token_hex(4)}"
        try:
            await self._run_uv(
                "Virtual environment creation failed",
                ["venv", "--relocatable", "--no-project", "--python", self.python, str(tmp)],
                cwd=self.root,
            )
            await self._install(source_dir, pyproject, tmp)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    async def _install(self, source_dir: Path, pyproject: dict[str, Any] | None, env: Path) -> None:
        python = str(env / "bin" / "python")
        lock = source_dir / UV_LOCK
        if pyproject is not None and lock.is_file():
            await self._sync_locked(source_dir, env)
            return
        if pyproject is not None:
            requirements = _project_dependencies(pyproject)
            args = ["pip", "install", "--python", python, SDK_REQUIREMENT, *requirements]
            await self._run_uv("Dependency installation failed", args, cwd=source_dir)
        elif (source_dir / REQUIREMENTS).is_file():
            args = ["pip", "install", "--python", python, SDK_REQUIREMENT, "-r", REQUIREMENTS]
            # cwd is the package so relative paths in requirements.txt resolve inside it.
            await self._run_uv("Dependency installation failed", args, cwd=source_dir)
        else:
            args = ["pip", "install", "--python", python, SDK_REQUIREMENT]
            await self._run_uv("Dependency installation failed", args, cwd=self.root)

    async def _sync_locked(self, source_dir: Path, env: Path) -> None:
        # A scratch project holding only the two files: nothing else of the package
        # (code, .python-version, uv.toml) can influence the sync.
        scratch = env.with_name(env.name + "-project")
        scratch.mkdir()
        try:
            for name in (PYPROJECT, UV_LOCK):
                shutil.copyfile(source_dir / name, scratch / name)
            await self._run_uv(
                "Dependency installation failed",
                ["sync", "--locked", "--no-install-project", "--no-dev", "--python", self.python],
                cwd=scratch,
                extra_env={"UV_PROJECT_ENVIRONMENT": str(env)},
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        installed = _installed_version(env, "pydantic")
        if installed is None:
            args = ["pip", "install", "--python", str(env / "bin" / "python"), SDK_REQUIREMENT]
            await self._run_uv("Dependency installation failed", args, cwd=self.root)
        elif not Requirement(SDK_REQUIREMENT).specifier.contains(installed, prereleases=True):
            raise EnvironmentBuildError(
                f"Dependency installation failed: uv.lock pins pydantic {installed}, "
                f"but the task SDK needs {SDK_REQUIREMENT}"
            )

    def _read_pyproject(self, source_dir: Path) -> dict[str, Any] | None:
        """Parse pyproject.toml (None when absent) and check its requires-python."""
        path = source_dir / PYPROJECT
        if not path.is_file():
            return None
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EnvironmentBuildError(f"Invalid pyproject.toml: {exc}") from exc
        project = data.get("project", {})
        if not isinstance(project, dict):
            raise EnvironmentBuildError("Invalid pyproject.toml: [project] is not a table")
        requires_python = project.get("requires-python")
        if requires_python is not None:
            try:
                spec = SpecifierSet(str(requires_python))
            except InvalidSpecifier as exc:
                raise EnvironmentBuildError(
                    f"Invalid pyproject.toml: requires-python {requires_python!r}: {exc}"
                ) from exc
            if not spec.contains(self.python_version, prereleases=True):
                raise EnvironmentBuildError(
                    f"Incompatible Python: pyproject.toml requires-python is "
                    f"{requires_python!r}, task environments use Python {self.python_version}"
                )
        return data

    def _uv_env(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        # Operator settings such as UV_INDEX_URL or UV_NATIVE_TLS still apply.
        env.update(
            (name, value)
            for name, value in os.environ.items()
            if name.startswith("UV_") and name not in _CONTROLLED_UV_ENV
        )
        env["UV_NO_CONFIG"] = "1"
        env["UV_PYTHON_DOWNLOADS"] = "never"
        if self.uv_cache_dir is not None:
            env["UV_CACHE_DIR"] = str(self.uv_cache_dir)
        return env

    async def _run_uv(
        self, failure: str, args: list[str], *, cwd: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        env = self._uv_env()
        env.update(extra_env or {})
        proc = await asyncio.create_subprocess_exec(
            self.uv,
            *args,
            "--no-progress",
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Own process group, so a timeout or cancel also kills sdist build backends.
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), UV_STEP_TIMEOUT_SECONDS)
        except BaseException as exc:
            _kill_group(proc.pid)
            # Reap uv before the caller deletes the directory it was writing to.
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise EnvironmentBuildError(
                    f"{failure}: uv {args[0]} did not finish within {UV_STEP_TIMEOUT_SECONDS:.0f} s"
                ) from None
            raise
        if proc.returncode != 0:
            tail = output.decode("utf-8", errors="replace").strip()[-OUTPUT_TAIL_CHARS:]
            raise EnvironmentBuildError(f"{failure}: {tail}")

    def _resolve_python(self, request: str) -> tuple[str, Version]:
        """Find the interpreter ``request`` names, as uv would, and its version."""
        env = self._uv_env()
        try:
            found = subprocess.run(
                [self.uv, "python", "find", "--no-project", request],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            path = found.stdout.strip()
            probe = subprocess.run(
                [path, "-I", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                capture_output=True,
                text=True,
                check=True,
            )
        except subprocess.CalledProcessError as exc:
            raise EnvironmentBuildError(
                f"Python {request!r} for task environments not found: {exc.stderr.strip()}"
            ) from exc
        return path, Version(probe.stdout.strip())


def _project_dependencies(pyproject: dict[str, Any]) -> list[str]:
    """``[project].dependencies``, each checked to be a requirement (never a uv option)."""
    deps = pyproject.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(dep, str) for dep in deps):
        raise EnvironmentBuildError(
            "Invalid pyproject.toml: [project].dependencies is not a list of strings"
        )
    for dep in deps:
        try:
            Requirement(dep)
        except InvalidRequirement as exc:
            raise EnvironmentBuildError(
                f"Invalid pyproject.toml: dependency {dep!r}: {exc}"
            ) from exc
    return list(deps)


def _installed_version(env: Path, name: str) -> Version | None:
    """The version of distribution ``name`` in ``env`` (from its dist-info directory)."""
    for dist_info in env.glob(f"lib/python*/site-packages/{name}-*.dist-info"):
        version = dist_info.name[len(name) + 1 : -len(".dist-info")]
        with contextlib.suppress(ValueError):
            return Version(version)
    return None


async def _flock(path: Path) -> int:
    """Open ``path`` and take an exclusive flock on it; the caller closes the fd to release."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    except BaseException:
        os.close(fd)
        raise
    # Contended: wait in a thread. If we are cancelled meanwhile, the thread still ends up
    # holding the lock, so it is released (fd closed) once the thread returns.
    waiter = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
    try:
        await asyncio.shield(waiter)
    except BaseException:
        waiter.add_done_callback(lambda _: os.close(fd))
        raise
    return fd


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
