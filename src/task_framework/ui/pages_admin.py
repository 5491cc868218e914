"""Administrator pages: tasks (deploy, versions, readiness, undeploy), API keys, credentials."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response

from task_framework.api.routes.tasks import _receive_upload
from task_framework.errors import TaskFrameworkError, ValidationFailed
from task_framework.services.credentials import CredentialUpdate
from task_framework.store.paging import PageRequest
from task_framework.ui.common import (
    AdminFormSession,
    AdminSession,
    StreamSession,
    Svc,
    redirect,
    render,
)

router = APIRouter()

PAGE_SIZE = 50
HISTORY_SHOWN = 20


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
    return render(request, "tasks.html", session, nav="tasks", tasks=tasks, history=history)


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
    return render(
        request,
        "deployed.html",
        session,
        status=200 if outcome["ok"] else outcome["status"],
        nav="tasks",
        outcome=outcome,
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
        created=None,
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
    page, items = await svc.keys.list_keys(
        role=None,
        app_id=None,
        user_id=None,
        include_revoked=True,
        page=PageRequest(limit=PAGE_SIZE),
    )
    # The secret is shown on this response only.
    return render(
        request,
        "keys.html",
        session,
        status=201,
        nav="keys",
        keys=items,
        pagination=page.envelope(items)["pagination"],
        first_page=True,
        created=created,
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


@router.post("/credentials/{name}/delete")
async def credential_delete(name: str, session: AdminFormSession, svc: Svc) -> Response:
    await svc.credentials.delete(name)
    return redirect("/credentials", "deleted")
