"""Administrator pages: tasks (deploy, versions, readiness, undeploy), API keys, credentials."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response

from task_framework.api.routes.tasks import _receive_upload
from task_framework.errors import NotFound, TaskFrameworkError, ValidationFailed
from task_framework.services.credentials import CredentialUpdate
from task_framework.store.paging import PageRequest
from task_framework.ui.common import (
    AdminFormSession,
    AdminSession,
    StreamSession,
    Svc,
    confirm_page,
    flashes,
    redirect,
    render,
)

router = APIRouter()

PAGE_SIZE = 50
HISTORY_SHOWN = 20
NEW_KEY_FLASH = "new_key"
DEPLOY_FLASH = "deploy_outcome"


# -- tasks ----------------------------------------------------------------------------------


@router.get("/tasks")
async def task_list(request: Request, session: AdminSession, svc: Svc) -> Response:
    listing = await svc.deployments.list_tasks()
    tasks: list[dict[str, Any]] = []
    for summary in listing["tasks"]:
        versions = []
        for info in await svc.deployments.versions(summary["task_id"]):
            try:
                status = await svc.task_configs.status(info["task_id"], info["version"])
            except TaskFrameworkError:
                status = None  # undeployed meanwhile, or not loaded on this replica yet
            versions.append({"info": info, "config": status})
        tasks.append({"summary": summary, "versions": versions})
    history = (await svc.deployments.history())[:HISTORY_SHOWN]
    outcome = await flashes(request).pop(session.id, DEPLOY_FLASH)
    return render(
        request,
        "tasks.html",
        session,
        nav="tasks",
        tasks=tasks,
        history=history,
        outcome=outcome,
    )


@router.post("/tasks/deploy")
async def task_deploy(
    request: Request,
    session: StreamSession,
    svc: Svc,
    force: Annotated[bool, Query()] = False,
) -> Response:
    """The package arrives as multipart ``file``; the answer carries the deployment log."""
    if not session.principal.is_admin:
        raise ValidationFailed("Only administrators deploy tasks")
    tmp_dir = svc.deployments.tmp_dir
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="ui-upload-", suffix=".zip", dir=tmp_dir)
    os.close(fd)
    path = Path(name)
    try:
        await _receive_upload(request, path, svc.settings.max_package_bytes)
        try:
            result, was_new = await svc.deployments.deploy(path, force=force, source="ui")
            outcome: dict[str, Any] = {"ok": True, "status": 201 if was_new else 200, **result}
        except TaskFrameworkError as exc:
            outcome = {"ok": False, "status": exc.status, "code": exc.code, "message": exc.message}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(outcome, status_code=200 if outcome["ok"] else outcome["status"])
    # Without script: post/redirect/get, the outcome shown once on the tasks page.
    await flashes(request).put(session.id, DEPLOY_FLASH, outcome)
    return redirect("/tasks", "deployed")


@router.get("/tasks/{task_id}/delete")
async def task_delete_confirm(
    request: Request,
    task_id: str,
    session: AdminSession,
    svc: Svc,
    version: Annotated[str, Query(max_length=255)] = "",
) -> Response:
    versions = [v["version"] for v in await svc.deployments.versions(task_id)]
    if version and version not in versions:
        raise NotFound(f"Task {task_id}:{version} is not deployed", code="TASK_NOT_FOUND")
    which = f"{task_id}:{version}" if version else f"every version of {task_id}"
    return confirm_page(
        request,
        session,
        nav="tasks",
        title=f"Undeploy {which}?",
        consequences=[
            "New threads and schedule fires for it are refused until it is deployed again.",
            "Threads already running finish; finished threads and their outputs are kept.",
            "Deploying the same package again brings it back.",
        ],
        action=f"/ui/tasks/{task_id}/delete",
        button=f"Undeploy {version or task_id}",
        cancel="/ui/tasks",
        fields={"version": version} if version else None,
    )


@router.post("/tasks/{task_id}/delete")
async def task_delete(
    task_id: str,
    session: AdminFormSession,
    svc: Svc,
    version: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    await svc.deployments.undeploy(task_id, version or None)
    return redirect("/tasks", "deleted")


# -- API keys -------------------------------------------------------------------------------


@router.get("/keys")
async def key_list(
    request: Request,
    session: AdminSession,
    svc: Svc,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    page, items = await svc.keys.list_keys(
        role=None,
        app_id=None,
        user_id=None,
        include_revoked=True,
        page=PageRequest(limit=PAGE_SIZE, cursor=cursor or None),
    )
    envelope = page.envelope(items)
    return render(
        request,
        "keys.html",
        session,
        nav="keys",
        keys=items,
        pagination=envelope["pagination"],
        first_page=cursor is None,
        created=await flashes(request).pop(session.id, NEW_KEY_FLASH),
    )


@router.post("/keys")
async def key_create(
    request: Request,
    session: AdminFormSession,
    svc: Svc,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    role: Annotated[str, Form(pattern="^(user|admin)$")] = "user",
    app_id: Annotated[str, Form(max_length=255)] = "",
    user_id: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    if role == "admin" and (app_id or user_id):
        raise ValidationFailed("app_id and user_id can only be bound to keys with role 'user'")
    created = await svc.keys.create_key(
        name=name.strip(), role=role, app_id=app_id.strip() or None, user_id=user_id.strip() or None
    )
    # Post/redirect/get: the key waits server-side for the next page, shown once.
    await flashes(request).put(
        session.id, NEW_KEY_FLASH, {"name": created["name"], "key": created["key"]}
    )
    return redirect("/keys", "key_created")


@router.get("/keys/{key_id}/revoke")
async def key_revoke_confirm(
    request: Request, key_id: str, session: AdminSession, svc: Svc
) -> Response:
    key = await svc.keys.get_key(key_id)
    if key["revoked_at"] is not None:
        raise NotFound(f"Key {key_id} not found or already revoked", code="API_KEY_NOT_FOUND")
    return confirm_page(
        request,
        session,
        nav="keys",
        title=f"Revoke the key {key['name']}?",
        consequences=[
            f"Requests with it (prefix {key['prefix']}…) are refused from now on.",
            "UI sessions signed in with it end.",
            "This cannot be undone: a new key has a new secret.",
        ],
        action=f"/ui/keys/{key_id}/revoke",
        button="Revoke key",
        cancel="/ui/keys",
    )


@router.post("/keys/{key_id}/revoke")
async def key_revoke(key_id: str, session: AdminFormSession, svc: Svc) -> Response:
    await svc.keys.revoke_key(key_id)
    return redirect("/keys", "revoked")


# -- credentials ----------------------------------------------------------------------------


@router.get("/credentials")
async def credential_list(request: Request, session: AdminSession, svc: Svc) -> Response:
    items = await svc.credentials.list_all()
    return render(request, "credentials.html", session, nav="credentials", credentials=items)


@router.post("/credentials")
async def credential_put(
    session: AdminFormSession,
    svc: Svc,
    name: Annotated[str, Form(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._-]+$")],
    value: Annotated[str, Form(max_length=65536)] = "",
    description: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    await svc.credentials.put(
        name, CredentialUpdate(value=value or None, description=description or None)
    )
    return redirect("/credentials", "saved")


@router.get("/credentials/{name}/delete")
async def credential_delete_confirm(
    request: Request, name: str, session: AdminSession, svc: Svc
) -> Response:
    await svc.credentials.get(name)  # 404 when it is gone already
    return confirm_page(
        request,
        session,
        nav="credentials",
        title=f"Delete the credential {name}?",
        consequences=[
            "Its encrypted value is deleted.",
            "Task settings that refer to it become missing for new threads.",
            "This cannot be undone.",
        ],
        action=f"/ui/credentials/{quote(name, safe='')}/delete",
        button="Delete credential",
        cancel="/ui/credentials",
    )


@router.post("/credentials/{name}/delete")
async def credential_delete(name: str, session: AdminFormSession, svc: Svc) -> Response:
    await svc.credentials.delete(name)
    return redirect("/credentials", "deleted")
