"""Task definitions: metadata, the registry of loaded versions, and task selection.

A task version is code plus ``task_metadata.json`` (or ``task.yaml``). Dev tasks are
loaded from a folder given to ``serve --dev-task``; deployed ones come from packages.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

from task_framework.errors import (
    InvalidTaskPackage,
    NotFound,
    ServiceUnavailable,
    TaskSelectionError,
)
from task_framework.models._time import utcnow
from task_framework.runner.base import TaskEnv, TaskResources, TaskSpec
from task_framework.runner.envs import DEPENDENCY_FILES
from task_framework.runner.sandbox import parse_resources

SAFE_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENTRY_POINT = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
RESERVED_TASK_IDS = frozenset({"deployments"})
RESERVED_VERSIONS = frozenset({"versions"})
DEV_CODE_TOKEN_TTL_SECONDS = 0.5
_IGNORED_DIRS = frozenset({"__pycache__", ".git", ".venv", "venv", "test-data", ".mypy_cache"})


NO_TASK_DEPLOYED = (
    "No task is deployed on this server: deploy one first "
    "(POST /admin/tasks, or `task-framework deploy PACKAGE.zip`)"
)

TASK_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_TASK_LOG_LEVEL = "INFO"
"""Task records at INFO and above reach the thread's log unless its metadata says otherwise."""


@dataclass(slots=True)
class TaskDefinition:
    """One loaded task version."""

    task_id: str
    version: str
    entry_point: str
    name: str
    description: str = ""
    input_schemas: list[dict[str, Any]] = field(default_factory=list)
    output_schemas: list[dict[str, Any]] = field(default_factory=list)
    requirements: list[dict[str, Any]] = field(default_factory=list)
    sdk_version: str | None = None
    code_dir: Path = Path()
    deps_dir: Path = Path()
    dev: bool = False
    deployed_at: datetime = field(default_factory=utcnow)
    zip_hash: str | None = None
    env: TaskEnv | None = None
    resources: TaskResources = field(default_factory=TaskResources)
    """``resources`` and ``network`` of its metadata (the sandbox's limits for it)."""
    log_level: str = DEFAULT_TASK_LOG_LEVEL
    """The lowest level of the task's own log records that reach the thread's log."""
    _token: tuple[float, str] = (0.0, "")
    _deps_seen: tuple[tuple[str, int, int], ...] | None = None
    _deps_checked: float = 0.0

    @property
    def full_id(self) -> str:
        return f"{self.task_id}:{self.version}"

    def code_token(self) -> str:
        """Dev tasks: a token that changes when a file in the folder changes."""
        if not self.dev:
            return ""
        now = time.monotonic()
        if now - self._token[0] < DEV_CODE_TOKEN_TTL_SECONDS:
            return self._token[1]
        newest = 0
        count = 0
        for root, dirs, files in os.walk(self.code_dir):
            dirs[:] = [d for d in dirs if d not in _IGNORED_DIRS]
            for name in files:
                try:
                    stat = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                newest = max(newest, stat.st_mtime_ns)
                count += 1
        token = f"{newest}:{count}"
        self._token = (now, token)
        return token

    def dependencies_changed(self) -> bool:
        """Dev tasks: whether a dependency file changed since the last call (by stat,
        looked at no more often than the code token)."""
        now = time.monotonic()
        if now - self._deps_checked < DEV_CODE_TOKEN_TTL_SECONDS:
            return False
        self._deps_checked = now
        seen = []
        for name in DEPENDENCY_FILES:
            try:
                stat = os.stat(self.deps_dir / name)
            except OSError:
                continue
            seen.append((name, stat.st_mtime_ns, stat.st_size))
        current = tuple(seen)
        changed = self._deps_seen is not None and current != self._deps_seen
        self._deps_seen = current
        return changed

    def spec(self) -> TaskSpec:
        if self.env is None:
            raise ServiceUnavailable(f"Task {self.full_id} has no environment yet")
        return TaskSpec(
            task_id=self.task_id,
            version=self.version,
            entry_point=self.entry_point,
            code_dir=self.code_dir,
            env=self.env,
            code_token=self.code_token(),
            resources=self.resources,
        )

    def summary_metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "entry_point": self.entry_point,
            "input_schemas": self.input_schemas,
            "output_schemas": self.output_schemas,
            "requirements": self.requirements,
            "sdk_version": self.sdk_version,
        }


def parse_metadata(raw: dict[str, Any], *, default_version: str | None = None) -> dict[str, Any]:
    """Check ``task_metadata.json`` content; raise InvalidTaskPackage with a precise message."""
    if not isinstance(raw, dict):
        raise InvalidTaskPackage("task_metadata.json must contain a JSON object")
    name = raw.get("name") or raw.get("task_id")
    version = raw.get("version", default_version)
    entry_point = raw.get("entry_point")
    for key, value in (("name", name), ("version", version), ("entry_point", entry_point)):
        if value is None or value == "":
            raise InvalidTaskPackage(f"task metadata is missing required field '{key}'")
        if not isinstance(value, str):
            raise InvalidTaskPackage(f"task metadata field '{key}' must be a string")
    name, version, entry_point = str(name), str(version), str(entry_point)
    if not SAFE_IDENTIFIER.fullmatch(name) or name in RESERVED_TASK_IDS:
        raise InvalidTaskPackage(f"task name '{name}' is not a safe identifier")
    if not SAFE_IDENTIFIER.fullmatch(version) or version in RESERVED_VERSIONS:
        raise InvalidTaskPackage(f"task version '{version}' is not a safe identifier")
    if not ENTRY_POINT.fullmatch(entry_point):
        raise InvalidTaskPackage(
            f"entry_point '{entry_point}' must have the form 'module.path:function'"
        )
    lists = {}
    for key in ("input_schemas", "output_schemas", "requirements"):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise InvalidTaskPackage(f"task metadata field '{key}' must be a list of objects")
        lists[key] = value
    for req in lists["requirements"]:
        if not isinstance(req.get("name"), str) or not req["name"]:
            raise InvalidTaskPackage("every requirement needs a 'name'")
    description = raw.get("description") or ""
    log_level = raw.get("log_level") or DEFAULT_TASK_LOG_LEVEL
    if not isinstance(log_level, str) or log_level.upper() not in TASK_LOG_LEVELS:
        raise InvalidTaskPackage(
            f"task metadata field 'log_level' must be one of {', '.join(TASK_LOG_LEVELS)}"
        )
    try:
        sandbox = parse_resources(raw)
    except ValueError as exc:
        raise InvalidTaskPackage(str(exc)) from None
    return {
        **sandbox.as_metadata(),
        "task_id": name,
        "version": version,
        "entry_point": entry_point,
        "description": str(description),
        "sdk_version": raw.get("sdk_version"),
        "log_level": log_level.upper(),
        **lists,
    }


def entry_module_exists(code_dir: Path, entry_point: str) -> bool:
    module = entry_point.split(":", 1)[0].replace(".", "/")
    return any(
        (base / candidate).is_file()
        for base in (code_dir, code_dir / "lib")
        for candidate in (f"{module}.py", f"{module}/__init__.py")
    )


def load_dev_task(folder: Path) -> TaskDefinition:
    """A task from a source folder (``serve --dev-task``)."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise InvalidTaskPackage(f"dev task folder {folder} does not exist")
    json_path, yaml_path = folder / "task_metadata.json", folder / "task.yaml"
    try:
        if json_path.is_file():
            raw = json.loads(json_path.read_text(encoding="utf-8"))
            meta = parse_metadata(raw)
        elif yaml_path.is_file():
            raw = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
            meta = parse_metadata(raw, default_version="dev")
        else:
            raise InvalidTaskPackage(f"{folder} has no task_metadata.json or task.yaml")
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidTaskPackage(f"task metadata of {folder} is not valid: {exc}") from exc
    except RecursionError:
        raise InvalidTaskPackage(f"task metadata of {folder} is nested too deeply") from None
    code_dir = folder / "src" if (folder / "src").is_dir() else folder
    if not entry_module_exists(code_dir, meta["entry_point"]):
        raise InvalidTaskPackage(f"entry module of '{meta['entry_point']}' not found in {code_dir}")
    resources = parse_resources(meta)
    meta = {k: v for k, v in meta.items() if k not in ("resources", "network")}
    return TaskDefinition(
        name=meta["task_id"],
        code_dir=code_dir,
        deps_dir=folder,
        dev=True,
        resources=resources,
        **meta,
    )


def version_order_key(versions: list[str]) -> list[str]:
    """Newest first: PEP 440 order, or descending strings if any version is not PEP 440."""
    try:
        parsed = {v: Version(v) for v in versions}
    except InvalidVersion:
        return sorted(versions, reverse=True)
    return sorted(versions, key=lambda v: parsed[v], reverse=True)


class TaskRegistry:
    """The task versions this replica can run, and task selection (API.md §1.7)."""

    def __init__(self) -> None:
        self._tasks: dict[str, dict[str, TaskDefinition]] = {}

    def add(self, task: TaskDefinition) -> None:
        self._tasks.setdefault(task.task_id, {})[task.version] = task

    def remove(self, task_id: str, version: str | None = None) -> list[TaskDefinition]:
        versions = self._tasks.get(task_id, {})
        removed = (
            list(versions.values())
            if version is None
            else [versions[version]]
            if version in versions
            else []
        )
        for task in removed:
            versions.pop(task.version, None)
        if not versions:
            self._tasks.pop(task_id, None)
        return removed

    def get(self, task_id: str, version: str) -> TaskDefinition | None:
        return self._tasks.get(task_id, {}).get(version)

    def versions(self, task_id: str) -> list[TaskDefinition]:
        by_version = self._tasks.get(task_id, {})
        return [by_version[v] for v in version_order_key(list(by_version))]

    def task_ids(self) -> list[str]:
        return sorted(self._tasks)

    def all(self) -> list[TaskDefinition]:
        return [task for task_id in self.task_ids() for task in self.versions(task_id)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._tasks.values())

    def select(self, task_id: str | None, version: str | None) -> TaskDefinition:
        if not task_id:
            if len(self._tasks) > 1:
                raise TaskSelectionError(
                    "task_id query parameter is required when multiple tasks are registered "
                    f"(deployed: {', '.join(self.task_ids())})"
                )
            if not self._tasks:
                raise NotFound(NO_TASK_DEPLOYED, code="TASK_NOT_FOUND")
            task_id = next(iter(self._tasks))
        if task_id not in self._tasks:
            raise NotFound(f"Task '{task_id}' not found", code="TASK_NOT_FOUND")
        if version:
            task = self.get(task_id, version)
            if task is None:
                raise NotFound(
                    f"Task '{task_id}' version '{version}' not found", code="TASK_NOT_FOUND"
                )
            return task
        return self.versions(task_id)[0]
