"""DeploymentService over the SQLite deployments store, with a stand-in environment
builder and runner: deploy rules (new, identical, conflicting, forced), the history, and
two replicas sharing one store (refresh loads what the other deployed or undeployed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from task_framework.errors import Conflict, DeploymentFailed, NotFound
from task_framework.runner.base import ErrorInfo, Runner, TaskEnv, TaskSpec
from task_framework.runner.envs import EnvironmentBuilder
from task_framework.services.deployments import DeploymentService
from task_framework.services.packages import PackageLimits
from task_framework.services.tasks import TaskRegistry
from task_framework.services.threads import ThreadService
from task_framework.store.database import Database
from task_framework.store.sql import SqlDeploymentStore
from task_zips import build_zip, task_files


class _Builder:
    """Every environment is built at once; keys are the source directory's name."""

    def __init__(self) -> None:
        self.built: set[str] = set()

    def key_for(self, source_dir: Path) -> str:
        return source_dir.name

    def is_built(self, key: str) -> bool:
        return key in self.built

    def remove(self, key: str) -> None:
        self.built.discard(key)

    async def ensure(self, source_dir: Path) -> TaskEnv:
        self.built.add(source_dir.name)
        return TaskEnv(key=source_dir.name, path=source_dir)


class _Runner:
    def __init__(self) -> None:
        self.error: ErrorInfo | None = None

    async def check_entry_point(self, spec: TaskSpec) -> ErrorInfo | None:
        return self.error


def _replica(db: Database, data_dir: Path, runner: _Runner | None = None) -> DeploymentService:
    return DeploymentService(
        store=SqlDeploymentStore(db),
        registry=TaskRegistry(),
        builder=cast(EnvironmentBuilder, _Builder()),
        runner=cast(Runner, runner or _Runner()),
        threads=cast(ThreadService, None),
        data_dir=data_dir,
        discovery_dir=data_dir / "discovery",
        limits=PackageLimits(),
    )


def _zip(tmp_path: Path, name: str, marker: str, version: str = "1.0.0") -> Path:
    path = tmp_path / f"{name}-{version}-{marker}.zip"
    path.write_bytes(build_zip(task_files(name, version, marker=marker)))
    return path


async def test_deploy_rules_and_history(sqlite_db: Database, tmp_path: Path) -> None:
    service = _replica(sqlite_db, tmp_path / "a")
    result, new = await service.deploy(_zip(tmp_path, "greet", "v1"))
    assert (new, result["message"]) == (True, "Task greet:1.0.0 deployed successfully")
    again, new = await service.deploy(_zip(tmp_path, "greet", "v1"))
    assert (new, again["was_new"]) == (False, False)
    with pytest.raises(Conflict) as taken:
        await service.deploy(_zip(tmp_path, "greet", "v2"))
    assert taken.value.code == "TASK_ALREADY_EXISTS"
    _, new = await service.deploy(_zip(tmp_path, "greet", "v2"), force=True)
    assert new
    info = await service.version("greet", "1.0.0")
    name, data = await service.package("greet", None)
    assert name == "greet-1.0.0.zip"
    assert data == _zip(tmp_path, "greet", "v2").read_bytes()
    assert info["zip_hash"] is not None
    history = await service.history()
    assert [h["status"] for h in history] == ["deployed", "deployed"]
    assert history[0]["zip_hash"] == info["zip_hash"]


async def test_a_failed_deploy_is_recorded_and_publishes_nothing(
    sqlite_db: Database, tmp_path: Path
) -> None:
    runner = _Runner()
    runner.error = ErrorInfo("IMPORT_ERROR", "no module", "ImportError")
    service = _replica(sqlite_db, tmp_path / "a", runner)
    with pytest.raises(DeploymentFailed):
        await service.deploy(_zip(tmp_path, "greet", "v1"))
    assert [(h["status"], h["task_id"]) for h in await service.history()] == [("failed", "greet")]
    with pytest.raises(NotFound):
        await service.get_task("greet")


async def test_replicas_share_deploys_and_undeploys_through_the_store(
    sqlite_db: Database, tmp_path: Path
) -> None:
    a = _replica(sqlite_db, tmp_path / "a")
    b = _replica(sqlite_db, tmp_path / "b")
    await a.deploy(_zip(tmp_path, "greet", "v1"))
    await a.deploy(_zip(tmp_path, "greet", "v1", version="2.0.0"))
    assert (await b.list_tasks())["total_versions"] == 2  # listed from the store
    await b.refresh()
    loaded: Any = b._registry.get("greet", "2.0.0")
    assert loaded is not None
    assert (loaded.code_dir / "task.py").is_file()
    assert loaded.code_dir.is_relative_to(tmp_path / "b")  # extracted from the stored zip

    undone = await b.undeploy("greet", "1.0.0")
    assert undone["undeployed"] == ["greet:1.0.0"]
    await a.refresh()
    assert a._registry.get("greet", "1.0.0") is None
    assert a._registry.get("greet", "2.0.0") is not None
    await a.undeploy("greet")
    with pytest.raises(NotFound):
        await b.get_task("greet")
    await b.refresh()
    assert b._registry.all() == []
