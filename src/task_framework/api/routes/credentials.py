"""Admin routes: the credential vault and task configuration (API.md §10.2, §10.3).

Bodies are parsed here rather than by FastAPI, because these routes answer body problems
with 400 (not 422), in the envelope with the legacy top-level ``error`` string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from task_framework.api import examples
from task_framework.api.deps import Admin, ServicesDep
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.errors import ValidationFailed
from task_framework.services.credentials import CredentialUpdate
from task_framework.utils.strict_json import NotStrictJSON, loads_strict

router = APIRouter(route_class=StrictJSONRoute, responses=ERROR_RESPONSES, tags=["admin"])

M = TypeVar("M", bound=BaseModel)


class CredentialUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    expires_at: datetime | None = None


class CredentialInfo(BaseModel):
    name: str
    description: str
    tags: list[str]
    created_at: str
    updated_at: str
    expires_at: str | None
    has_value: bool
    value_preview: str


class CredentialList(BaseModel):
    credentials: list[CredentialInfo]


class CredentialValue(BaseModel):
    name: str
    value: str


class CredentialUse(BaseModel):
    task_id: str
    version: str
    config_key: str


class CredentialUsage(BaseModel):
    credential_name: str
    used_by: list[CredentialUse]


class ConfigValue(BaseModel):
    value: str | None = None
    vault_key: str | None = None
    is_vault_ref: bool = False


class TaskConfiguration(BaseModel):
    model_config = ConfigDict(extra="ignore")
    config_values: dict[str, ConfigValue]


class RequirementStatus(BaseModel):
    name: str
    required: bool
    description: str
    default: str | None
    is_vault_ref: bool
    vault_key: str | None
    current_value: str | None
    is_set: bool


class ConfigurationStatus(BaseModel):
    task_id: str
    version: str
    requirements: list[RequirementStatus]
    config_values: dict[str, dict[str, Any]]
    ready: bool
    missing_required: list[str]


class Message(BaseModel):
    message: str


def _body_doc(
    model: type[BaseModel], examples: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """OpenAPI text for a body the route parses itself (nested models inlined)."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    media: dict[str, Any] = {"schema": inline(schema)}
    if examples:
        media["examples"] = examples
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = loads_strict(raw)
    except NotStrictJSON as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": str(exc), "type": "json_invalid"}]
        ) from None
    except (ValueError, RecursionError):
        raise ValidationFailed("Invalid JSON body") from None
    if not isinstance(data, dict):
        raise ValidationFailed("Request body must be a JSON object")
    return data


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise ValidationFailed(f"Invalid field '{where}': {error['msg']}") from None


@router.get("/admin/credentials", response_model=CredentialList, summary="List credentials")
async def list_credentials(_: Admin, svc: ServicesDep) -> Response:
    """The credentials in the vault, without their values.

    Auth: A. Errors on the credential routes also carry a top-level `error` string.
    """
    return JSONResponse({"credentials": await svc.credentials.list_all()})


@router.get("/admin/credentials/{name}", response_model=CredentialInfo, summary="Get a credential")
async def get_credential(name: str, _: Admin, svc: ServicesDep) -> Response:
    """One credential, without its value (`value_preview` shows its last characters).

    Auth: A. Unknown: 404 CREDENTIAL_NOT_FOUND.
    """
    return JSONResponse(await svc.credentials.get(name))


@router.put(
    "/admin/credentials/{name}",
    response_model=CredentialInfo,
    openapi_extra=_body_doc(CredentialUpdateRequest, examples.PUT_CREDENTIAL),
    summary="Create or update a credential",
)
async def put_credential(name: str, request: Request, _: Admin, svc: ServicesDep) -> Response:
    """Create or update a credential; its value is encrypted at rest.

    Auth: A. A new credential needs `value`. On update, an omitted `value`, an empty
    `description`, null `tags` and a null `expires_at` keep what is stored. A body that is
    not a JSON object, or a bad field, is 400 VALIDATION_FAILED. Expired credentials
    resolve as missing for tasks.
    """
    body = _validated(CredentialUpdateRequest, await _json_object(request))
    change = CredentialUpdate(
        value=body.value,
        description=body.description,
        tags=body.tags,
        expires_at=body.expires_at,
    )
    return JSONResponse(await svc.credentials.put(name, change))


@router.delete("/admin/credentials/{name}", response_model=Message, summary="Delete a credential")
async def delete_credential(name: str, _: Admin, svc: ServicesDep) -> Response:
    """Delete a credential.

    Auth: A. Unknown: 404 CREDENTIAL_NOT_FOUND.
    """
    return JSONResponse(await svc.credentials.delete(name))


@router.get(
    "/admin/credentials/{name}/reveal",
    response_model=CredentialValue,
    summary="Reveal a credential's value",
)
async def reveal_credential(name: str, principal: Admin, svc: ServicesDep) -> Response:
    """A credential's value in plain text (written to the audit log).

    Auth: A. Unknown: 404 CREDENTIAL_NOT_FOUND. The response is not cached.
    """
    result = await svc.credentials.reveal(name, revealed_by=principal.display_name)
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


@router.get(
    "/admin/credentials/{name}/usage",
    response_model=CredentialUsage,
    summary="Where a credential is used",
)
async def credential_usage(name: str, _: Admin, svc: ServicesDep) -> Response:
    """The task configurations that reference a credential.

    Auth: A. Unknown: 404 CREDENTIAL_NOT_FOUND.
    """
    return JSONResponse(await svc.credentials.usage(name))


@router.get(
    "/admin/tasks/{task_id}/{version}/config",
    response_model=ConfigurationStatus,
    summary="Get a task version's configuration",
)
async def get_task_config(task_id: str, version: str, _: Admin, svc: ServicesDep) -> Response:
    """A task version's configuration: its requirements and whether each is set.

    Auth: A. Direct values are shown, vault references by name only. Unknown task version:
    404 TASK_NOT_FOUND.
    """
    return JSONResponse(await svc.task_configs.status(task_id, version))


@router.put(
    "/admin/tasks/{task_id}/{version}/config",
    response_model=ConfigurationStatus,
    openapi_extra=_body_doc(TaskConfiguration),
    summary="Replace a task version's configuration",
)
async def put_task_config(
    task_id: str, version: str, request: Request, _: Admin, svc: ServicesDep
) -> Response:
    """Replace a task version's configuration (`config_values`).

    Auth: A. Each value is either `{"value": ...}` or a vault reference
    `{"vault_key": ..., "is_vault_ref": true}`; a reference to a missing credential is 400.
    Applies to the next thread that starts, on every replica.
    """
    body = await _json_object(request)
    if "config_values" not in body:
        raise ValidationFailed("Field 'config_values' is required")
    return JSONResponse(await svc.task_configs.put(task_id, version, body["config_values"]))


@router.delete(
    "/admin/tasks/{task_id}/{version}/config",
    response_model=Message,
    summary="Delete a task version's configuration",
)
async def delete_task_config(task_id: str, version: str, _: Admin, svc: ServicesDep) -> Response:
    """Delete a task version's configuration.

    Auth: A. None stored: 404 NOT_FOUND.
    """
    return JSONResponse(await svc.task_configs.delete(task_id, version))
