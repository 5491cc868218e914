"""Deploying task packages through the admin API (API.md §10.1, §14)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, ServerFactory
from task_framework.app import create_app
from task_framework.settings import Settings
from task_zips import (
    bomb_zip,
    build_zip,
    corrupt_crc_zip,
    many_members_zip,
    metadata,
    symlink_entry,
    task_files,
    with_entry,
)

GiB = 1024**3


async def _deploy(
    server: Server, data: bytes, *, force: bool = False, filename: str = "package.zip"
) -> httpx.Response:
    return await server.client.post(
        "/admin/tasks",
        params={"force": "true"} if force else None,
        files={"file": (filename, data, "application/zip")},
        headers=server.admin,
    )


async def _run(client: httpx.AsyncClient, headers: dict[str, str], **query: str) -> httpx.Response:
    body = {"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "Ada"}}]}
    return await client.post("/threads", params=query, json=body, headers=headers)


def _error(response: httpx.Response) -> dict[str, Any]:
    detail: dict[str, Any] = response.json()["detail"]
    return detail


def _files_under(root: Path, *, skip: tuple[Path, ...]) -> set[Path]:
    found: set[Path] = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        found.update(Path(folder, name) for name in files)
    return found


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros in a ~5 MiB zip (built once: it takes about a second)."""
    return bomb_zip(GiB)


async def test_hostile_packages_are_rejected(
    make_server: ServerFactory, tmp_path: Path, bomb: bytes
) -> None:
    server = await make_server(dev_tasks=[], max_package_bytes=20 * 1024 * 1024)
    data_dir = server.settings.data_dir.resolve()
    venvs = server.settings.resolved_venvs_dir
    link, link_data = symlink_entry("evil_link", "../../../../etc/passwd")
    evil_name = task_files()
    evil_name["task_metadata.json"] = metadata("../evil")
    bad_entry = task_files()
    del bad_entry["task.py"]
    cases: list[tuple[bytes, str, str]] = [
        (
            with_entry(task_files(), zipfile.ZipInfo("../../x"), b"pwned"),
            "package.zip",
            "Entry '../../x' has a '..' component in its path",
        ),
        (
            with_entry(task_files(), zipfile.ZipInfo("/tmp/tf-abs-evil"), b"pwned"),
            "package.zip",
            "Entry '/tmp/tf-abs-evil' has an absolute path",
        ),
        (
            with_entry(task_files(), link, link_data),
            "p.zip",
            "Entry 'evil_link' is a symbolic link",
        ),
        (bomb, "bomb.zip", "Entry 'bomb.bin' has a compression ratio of "),
        (many_members_zip(100_000), "many.zip", "Package has 100002 entries, more than the limit"),
        (build_zip(evil_name), "p.zip", "task name '../evil' is not a safe identifier"),
        (corrupt_crc_zip(), "p.zip", "Entry 'task.py' is corrupt: Bad CRC-32"),
        (b"PK\x03\x04 definitely not a zip", "p.zip", "File is not a valid zip archive"),
        (build_zip({"task.py": ""}), "p.zip", "task_metadata.json not found at the package root"),
        (build_zip(bad_entry), "p.zip", "Entry module 'task' of entry_point 'task:run' not found"),
        (build_zip(task_files()), "package.tar", "File must be a .zip file"),
    ]
    before = _files_under(tmp_path.parent, skip=(data_dir, venvs))
    for data, filename, message in cases:
        response = await _deploy(server, data, filename=filename)
        assert response.status_code == 400, (message, response.text)
        error = _error(response)
        assert error["code"] == "INVALID_TASK_PACKAGE"
        assert message in error["detail"], (message, error["detail"])
    too_big = await _deploy(server, os.urandom(21 * 1024 * 1024))
    assert too_big.status_code == 413
    assert _error(too_big)["code"] == "FILE_SIZE_EXCEEDED"
    assert _files_under(tmp_path.parent, skip=(data_dir, venvs)) == before
    assert not Path("/tmp/tf-abs-evil").exists()
    # Rejected packages leave nothing inside the data directory either.
    for sub in ("tmp", "tasks"):
        assert not any((data_dir / sub).iterdir())
    listing = (await server.client.get("/admin/tasks", headers=server.admin)).json()
    assert listing == {"tasks": [], "total": 0, "total_versions": 0}
    assert (
        await server.client.get("/admin/tasks/deployments/history", headers=server.admin)
    ).json() == []


@pytest.mark.slow
async def test_deploy_select_download_and_undeploy(
    make_server: ServerFactory, database_url: str
) -> None:
    server = await make_server(dev_tasks=[], database_url=database_url)
    admin, user = server.admin, server.user()
    old = build_zip(task_files("greet", "1.9.0", marker="v1.9"))
    created = await _deploy(server, old)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "task_id": "greet",
        "version": "1.9.0",
        "was_new": True,
        "message": "Task greet:1.9.0 deployed successfully",
    }
    again = await _deploy(server, old, filename="renamed.zip")
    assert again.status_code == 201  # as 0.0.20b0 answers: deploy scripts check for 201
    assert again.json()["was_new"] is False
    assert again.json()["message"] == "Task greet:1.9.0 already deployed (skipped)"
    new = build_zip(task_files("greet", "1.10.0", marker="v1.10"), prefix="greet-1.10.0/")
    assert (await _deploy(server, new)).status_code == 201

    # Latest = highest PEP 440 version; a single task needs no task_id.
    for query, marker in (
        ({}, "v1.10"),
        ({"task_id": "greet"}, "v1.10"),
        ({"version": "1.9.0"}, "v1.9"),
    ):
        thread = (await _run(server.client, user, **query)).json()
        assert thread["state"] == "succeeded", thread
        assert thread["outputs"][0]["value"]["marker"] == marker
    assert (await _run(server.client, user, task_id="greet", task_version="1.9.0")).json()[
        "metadata"
    ]["task_version"] == "1.9.0"

    assert (await _deploy(server, build_zip(task_files("other", "0.1")))).status_code == 201
    required = await _run(server.client, user)
    assert required.status_code == 400
    assert _error(required)["code"] == "TASK_ID_REQUIRED"
    meta = await server.client.get("/task/metadata")
    assert _error(meta)["code"] == "TASK_ID_REQUIRED"
    meta = await server.client.get("/task/metadata", params={"task_id": "greet"})
    assert meta.json()["version"] == "1.10.0"
    for query in ({"task_id": "nope"}, {"task_id": "greet", "version": "9.9"}):
        missing = await _run(server.client, user, **query)
        assert missing.status_code == 404
        assert _error(missing)["code"] == "TASK_NOT_FOUND"

    # Same id and version, other content: 409, unless forced.
    changed = build_zip(task_files("greet", "1.9.0", marker="v1.9-fixed"))
    conflict = await _deploy(server, changed)
    assert conflict.status_code == 409
    assert _error(conflict)["code"] == "TASK_ALREADY_EXISTS"
    forced = await _deploy(server, changed, force=True)
    assert forced.status_code == 201
    assert forced.json()["was_new"] is True
    thread = (await _run(server.client, user, task_id="greet", version="1.9.0")).json()
    assert thread["outputs"][0]["value"]["marker"] == "v1.9-fixed"

    listing = (await server.client.get("/admin/tasks", headers=admin)).json()
    assert listing["total"] == 2
    assert listing["total_versions"] == 3
    greet = next(t for t in listing["tasks"] if t["task_id"] == "greet")
    assert greet["versions"] == ["1.10.0", "1.9.0"]
    assert greet["latest_version"] == "1.10.0"
    assert (await server.client.get("/admin/tasks/greet", headers=admin)).json() == greet
    versions = (await server.client.get("/admin/tasks/greet/versions", headers=admin)).json()
    assert [v["version"] for v in versions] == ["1.10.0", "1.9.0"]
    info = (await server.client.get("/admin/tasks/greet/versions/1.9.0", headers=admin)).json()
    assert info["zip_path"] == "packages/greet/1.9.0.zip"
    assert info["base_path"] == "tasks/greet/1.9.0"
    assert info["zip_hash"].startswith("sha256:")
    assert info["entry_point"] == "task:run"

    download = await server.client.get("/admin/tasks/greet/versions/1.9.0/download", headers=admin)
    assert download.status_code == 200
    assert download.content == changed
    assert download.headers["content-type"] == "application/zip"
    assert download.headers["content-disposition"] == 'attachment; filename="greet-1.9.0.zip"'
    latest = await server.client.get("/admin/tasks/greet/download", headers=admin)
    assert latest.content == new

    history = (await server.client.get("/admin/tasks/deployments/history", headers=admin)).json()
    assert [(h["version"], h["status"]) for h in history] == [
        ("1.9.0", "deployed"),
        ("0.1", "deployed"),
        ("1.10.0", "deployed"),
        ("1.9.0", "deployed"),
    ]

    removed = await server.client.delete("/admin/tasks/greet/versions/1.9.0", headers=admin)
    assert removed.json() == {
        "undeployed": ["greet:1.9.0"],
        "message": "Undeployed task 'greet' version '1.9.0'",
    }
    gone = await _run(server.client, user, task_id="greet", version="1.9.0")
    assert gone.status_code == 404
    for path in ("/admin/tasks/greet/versions/1.9.0", "/admin/tasks/greet/versions/1.9.0/download"):
        assert (await server.client.get(path, headers=admin)).status_code == 404
    assert (await _run(server.client, user, task_id="greet")).json()["state"] == "succeeded"
    removed = await server.client.delete("/admin/tasks/other", headers=admin)
    assert removed.json()["message"] == "Undeployed 1 version(s) of task 'other'"
    assert _error(await server.client.get("/admin/tasks/other", headers=admin))["code"] == (
        "TASK_NOT_FOUND"
    )
    # Back to one task: no task_id needed again.
    assert (await _run(server.client, user)).json()["outputs"][0]["value"]["marker"] == "v1.10"


SIX_TASK = """\
import six
from task_framework.models.artifact import Artifact


def run(context):
    context.publish_output_artifacts_sync([Artifact(kind="json", value={"six": six.__version__})])
"""

# A package as the task-framework-py 0.0.20b0 README describes it.
LEGACY_METADATA = """{
  "name": "my-task",
  "version": "1.0.0",
  "description": "My task description",
  "entry_point": "task:my_task",
  "input_schemas": [{"kind": "json", "media_type": "application/json", "required": true}],
  "output_schemas": [{"kind": "json", "media_type": "application/json"}]
}"""
LEGACY_TASK = """\
async def my_task(context):
    # Get input artifacts
    inputs = await context.get_input_artifacts()

    # Process inputs
    result = {"message": "Task completed", "input_count": len(inputs)}

    # Publish output
    from task_framework.models.artifact import Artifact
    await context.publish_output_artifacts([
        Artifact(kind="json", value=result, media_type="application/json")
    ])
"""
LEGACY_PYPROJECT = '[project]\nname = "my-task"\nversion = "1.0.0"\ndependencies = []\n'


@contextlib.asynccontextmanager
async def _replica(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=120
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.mark.slow
async def test_pinned_dependencies_legacy_zip_discovery_and_restart(
    tmp_path: Path, shared_venvs: Path
) -> None:
    admin_key, user_key = f"tfk_a_{secrets.token_hex(8)}", f"tfk_u_{secrets.token_hex(8)}"
    settings = Settings(
        data_dir=tmp_path / "data",
        venvs_dir=shared_venvs,
        api_keys=[user_key],
        admin_api_keys=[admin_key],
        dev_tasks=[],
        worker_concurrency=2,
    )
    admin = {"X-API-Key": admin_key}
    user = {"X-API-Key": user_key, "X-App-Id": "a", "X-User-Id": "u"}
    packages = {
        "six-new": build_zip(
            {
                "task_metadata.json": metadata("six-new"),
                "task.py": SIX_TASK,
                "requirements.txt": "six==1.16.0\n",
            }
        ),
        "six-old": build_zip(
            {
                "task_metadata.json": metadata("six-old"),
                "task.py": SIX_TASK,
                "requirements.txt": "six==1.15.0\n",
            }
        ),
        "my-task": build_zip(
            {
                "task_metadata.json": LEGACY_METADATA,
                "task.py": LEGACY_TASK,
                "pyproject.toml": LEGACY_PYPROJECT,
            }
        ),
    }

    async def check_runs(client: httpx.AsyncClient) -> None:
        for task_id, expected in (
            ("six-new", {"six": "1.16.0"}),
            ("six-old", {"six": "1.15.0"}),
            ("my-task", {"message": "Task completed", "input_count": 1}),
        ):
            thread = (await _run(client, user, task_id=task_id)).json()
            assert thread["state"] == "succeeded", thread
            assert thread["outputs"][0]["value"] == expected

    async with _replica(settings) as client:
        for name, data in packages.items():
            response = await client.post(
                "/admin/tasks", files={"file": (f"{name}.zip", data)}, headers=admin
            )
            assert response.status_code == 201, response.text
        await check_runs(client)

    # Restart with a package waiting in the discovery folder.
    discovery = settings.resolved_task_definitions_dir
    discovery.mkdir(parents=True)
    (discovery / "discovered.zip").write_bytes(build_zip(task_files("discovered", "2.0")))
    async with _replica(settings) as client:
        builder = client.app.state.services.builder  # type: ignore[attr-defined]
        listing = (await client.get("/admin/tasks", headers=admin)).json()
        assert sorted(t["task_id"] for t in listing["tasks"]) == [
            "discovered",
            "my-task",
            "six-new",
            "six-old",
        ]
        assert builder.build_count == 0  # every environment was still valid
        await check_runs(client)
        thread = (await _run(client, user, task_id="discovered")).json()
        assert thread["outputs"][0]["value"]["marker"] == "v1"


@pytest.mark.slow
async def test_failed_deploys_leave_the_previous_state(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    good = build_zip(task_files("fragile", "1.0.0", marker="good"))
    assert (await _deploy(server, good)).status_code == 201
    broken_deps = build_zip(
        task_files(
            "fragile",
            "1.0.0",
            marker="bad",
            **{"requirements.txt": "tf-no-such-package-xyz==0.0.1\n"},
        )
    )
    failed = await _deploy(server, broken_deps, force=True)
    assert failed.status_code == 400, failed.text
    error = _error(failed)
    assert error["code"] == "TASK_DEPLOYMENT_FAILED"
    assert error["title"] == "Deployment Failed"
    assert error["detail"].startswith("Deployment of task fragile:1.0.0 failed: ")
    assert "tf-no-such-package-xyz" in error["detail"]
    thread = (await _run(server.client, server.user(), task_id="fragile")).json()
    assert thread["outputs"][0]["value"]["marker"] == "good"
    download = await server.client.get("/admin/tasks/fragile/download", headers=server.admin)
    assert download.content == good

    broken_import = build_zip(
        {"task_metadata.json": metadata("broken"), "task.py": "import not_a_module_xyz\n"}
    )
    failed = await _deploy(server, broken_import)
    assert failed.status_code == 400
    assert "not_a_module_xyz" in _error(failed)["detail"]
    assert (await server.client.get("/admin/tasks/broken", headers=server.admin)).status_code == 404
    history = (
        await server.client.get("/admin/tasks/deployments/history", headers=server.admin)
    ).json()
    assert [(h["task_id"], h["status"]) for h in history] == [
        ("broken", "failed"),
        ("fragile", "failed"),
        ("fragile", "deployed"),
    ]
    assert "tf-no-such-package-xyz" in history[1]["error"]


SLEEPER_TASK = """\
import time
from task_framework.models.artifact import Artifact


def run(context):
    deadline = time.monotonic() + context.params["seconds"]
    while time.monotonic() < deadline and not context.is_cancelled():
        time.sleep(0.05)
    context.publish_output_artifacts_sync([Artifact(kind="json", value={"done": True})])
"""


async def _wait_state(server: Server, thread_id: str, states: set[str]) -> dict[str, Any]:
    for _ in range(400):
        thread: dict[str, Any] = (
            await server.client.get(f"/threads/{thread_id}", headers=server.admin)
        ).json()
        if thread["state"] in states:
            return thread
        await asyncio.sleep(0.05)
    raise AssertionError(f"thread {thread_id} never reached {states}: {thread['state']}")


@pytest.mark.slow
async def test_undeploy_with_running_threads(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    for version in ("1.0.0", "2.0.0"):
        files = {"task_metadata.json": metadata("sleeper", version), "task.py": SLEEPER_TASK}
        assert (await _deploy(server, build_zip(files))).status_code == 201

    async def start(version: str, seconds: float) -> str:
        response = await server.client.post(
            "/threads",
            params={"task_id": "sleeper", "version": version},
            json={
                "mode": "async",
                "inputs": [{"kind": "json", "value": {}}],
                "params": {"seconds": seconds},
            },
            headers=server.user(),
        )
        assert response.status_code == 202, response.text
        thread_id: str = response.json()["id"]
        await _wait_state(server, thread_id, {"running"})
        return thread_id

    # Deploying another version does not disturb a running thread; undeploying its own
    # version lets it finish, and refuses new threads of that version.
    first = await start("1.0.0", 1.5)
    third = build_zip({"task_metadata.json": metadata("sleeper", "3.0.0"), "task.py": SLEEPER_TASK})
    assert (await _deploy(server, third)).status_code == 201
    removed = await server.client.delete(
        "/admin/tasks/sleeper/versions/1.0.0", headers=server.admin
    )
    assert removed.status_code == 200
    refused = await _run(server.client, server.user(), task_id="sleeper", version="1.0.0")
    assert _error(refused)["code"] == "TASK_NOT_FOUND"
    finished = await _wait_state(server, first, {"succeeded", "failed", "stopped"})
    assert finished["state"] == "succeeded"
    assert finished["outputs"][0]["value"] == {"done": True}

    # With stop_running=true the running thread is stopped.
    second = await start("2.0.0", 60)
    removed = await server.client.delete(
        "/admin/tasks/sleeper/versions/2.0.0",
        params={"stop_running": "true"},
        headers=server.admin,
    )
    assert removed.status_code == 200
    assert (await _wait_state(server, second, {"stopped", "succeeded"}))["state"] == "stopped"
