"""Admin routes: settings and managed API keys (API.md §11)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from task_framework.api import examples
from task_framework.api.deps import Admin, Paging, ServicesDep, check_identity
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.errors import ValidationFailed
from task_framework.limits import MAX_CONCURRENT_THREADS, MAX_IDENTITY_CHARS
from task_framework.models._time import as_utc, utcnow

router = APIRouter(route_class=StrictJSONRoute, responses=ERROR_RESPONSES)


class SettingsResponse(BaseModel):
    max_concurrent_threads: int
    updated_at: str
    updated_by: str | None
    current_running_threads: int
    current_queued_threads: int


class SettingsUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    max_concurrent_threads: int | None = Field(None, ge=0, le=MAX_CONCURRENT_THREADS)


class ApiKeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=100)
    role: Literal["user", "admin"] = "user"
    app_id: str | None = Field(None, min_length=1, max_length=MAX_IDENTITY_CHARS)
    user_id: str | None = Field(None, min_length=1, max_length=MAX_IDENTITY_CHARS)
    expires_at: datetime | None = None

    @model_validator(mode="after")
    def _identity_for_users_only(self) -> ApiKeyCreateRequest:
        if self.role == "admin" and (self.app_id or self.user_id):
            raise ValueError("app_id and user_id can only be bound to keys with role 'user'")
        return self


class ApiKeyModel(BaseModel):
    id: str
    name: str
    role: Literal["user", "admin"]
    app_id: str | None
    user_id: str | None
    prefix: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class ApiKeyCreatedModel(ApiKeyModel):
    key: str


class ApiKeyListModel(BaseModel):
    items: list[ApiKeyModel]
    pagination: dict[str, object]


@router.get(
    "/admin/settings",
    tags=["admin"],
    response_model=SettingsResponse,
    summary="Get the cluster settings",
)
@router.get(
    "/admin/settings/threads",
    tags=["admin"],
    response_model=SettingsResponse,
    summary="Get the cluster settings (alias)",
)
async def get_settings(_: Admin, svc: ServicesDep) -> Response:
    """The cluster-wide settings, with the current running and queued thread counts.

    Auth: A (an admin key in `X-Admin-API-Key` or `X-API-Key`); a regular key is 403
    AUTH_FORBIDDEN. `/admin/settings/threads` is an alias.
    """
    return JSONResponse(await svc.settings_service.get())


@router.put(
    "/admin/settings",
    tags=["admin"],
    response_model=SettingsResponse,
    summary="Change the cluster settings",
)
@router.put(
    "/admin/settings/threads",
    tags=["admin"],
    response_model=SettingsResponse,
    summary="Change the cluster settings (alias)",
)
async def put_settings(body: SettingsUpdateRequest, principal: Admin, svc: ServicesDep) -> Response:
    """Change the cluster-wide settings (today: `max_concurrent_threads`, 0 = unlimited).

    Auth: A. Applies on every replica within seconds; `updated_by` is the key's name.
    `/admin/settings/threads` is an alias.
    """
    result = await svc.settings_service.update(
        max_concurrent_threads=body.max_concurrent_threads, updated_by=principal.key_name or "admin"
    )
    svc.executor.wake()
    return JSONResponse(result)


@router.post(
    "/admin/api-keys",
    tags=["admin"],
    status_code=201,
    response_model=ApiKeyCreatedModel,
    summary="Create an API key",
)
async def create_api_key(
    body: Annotated[ApiKeyCreateRequest, Body(openapi_examples=examples.CREATE_API_KEY)],
    _: Admin,
    svc: ServicesDep,
) -> Response:
    """Create a managed API key; the secret `key` is in this response only.

    Auth: A. A `user` key may be bound to an `app_id` and/or `user_id`: it then supplies
    that identity itself, and a request naming another one is 403 AUTH_FORBIDDEN. Admin
    keys cannot be bound (422). An `expires_at` in the past is 400 VALIDATION_FAILED.
    """
    expires_at = as_utc(body.expires_at) if body.expires_at else None
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed("expires_at must be in the future")
    for field, value in (("app_id", body.app_id), ("user_id", body.user_id)):
        if value is not None:
            check_identity(field, value)
    created = await svc.keys.create_key(
        name=body.name,
        role=body.role,
        app_id=body.app_id,
        user_id=body.user_id,
        expires_at=expires_at,
    )
    return JSONResponse(created, status_code=201)


@router.get(
    "/admin/api-keys", tags=["admin"], response_model=ApiKeyListModel, summary="List API keys"
)
async def list_api_keys(
    _: Admin,
    svc: ServicesDep,
    paging: Paging,
    role: Literal["user", "admin"] | None = None,
    app_id: Annotated[str | None, Query()] = None,
    user_id: Annotated[str | None, Query()] = None,
    include_revoked: bool = False,
) -> Response:
    """List managed API keys (never their secrets), newest first.

    Auth: A. Keys from the server configuration are not listed; revoked keys only with
    `include_revoked=true`.
    """
    page, items = await svc.keys.list_keys(
        role=role, app_id=app_id, user_id=user_id, include_revoked=include_revoked, page=paging
    )
    return JSONResponse(page.envelope(items))


@router.delete(
    "/admin/api-keys/{key_id}", tags=["admin"], status_code=204, summary="Revoke an API key"
)
async def revoke_api_key(key_id: str, _: Admin, svc: ServicesDep) -> Response:
    """Revoke a managed API key; it stops working on every replica within a second.

    Auth: A. Answers 204; an unknown key is 404 API_KEY_NOT_FOUND.
    """
    await svc.keys.revoke_key(key_id)
    return Response(status_code=204)
