"""``/webhooks`` routes (API.md §7)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from task_framework.api.deps import Caller, Paging, ServicesDep
from task_framework.api.errors import ERROR_RESPONSES
from task_framework.api.json_edge import JSONResponse, StrictJSONRoute
from task_framework.models.webhooks import (
    DeliveryStatus,
    WebhookCreateRequest,
    WebhookDeliveryListModel,
    WebhookDeliveryModel,
    WebhookListModel,
    WebhookModel,
    WebhookSource,
    WebhookUpdateRequest,
)
from task_framework.services.webhooks import DeliveryFilters, WebhookFilters

router = APIRouter(
    route_class=StrictJSONRoute, prefix="/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES
)


@router.post("", status_code=201, response_model=WebhookModel, summary="Create a webhook")
async def create_webhook(
    body: WebhookCreateRequest, principal: Caller, svc: ServicesDep
) -> Response:
    return JSONResponse(await svc.webhooks.create(principal, body), status_code=201)


@router.get("", response_model=WebhookListModel, summary="List webhooks")
async def list_webhooks(
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    is_enabled: bool | None = None,
    task_id: str | None = None,
    task_version: str | None = None,
    source: WebhookSource | None = None,
) -> Response:
    filters = WebhookFilters(
        is_enabled=is_enabled, task_id=task_id, task_version=task_version, source=source
    )
    return JSONResponse(await svc.webhooks.list_webhooks(principal, filters, paging))


@router.get("/{webhook_id}", response_model=WebhookModel, summary="Get a webhook")
async def get_webhook(webhook_id: str, principal: Caller, svc: ServicesDep) -> Response:
    return JSONResponse(await svc.webhooks.get(principal, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookModel, summary="Update a webhook")
async def update_webhook(
    webhook_id: str,
    principal: Caller,
    svc: ServicesDep,
    body: Annotated[WebhookUpdateRequest, Body()],
) -> Response:
    return JSONResponse(await svc.webhooks.update(principal, webhook_id, body))


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook and its deliveries")
async def delete_webhook(webhook_id: str, principal: Caller, svc: ServicesDep) -> Response:
    await svc.webhooks.delete(principal, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}:regenerate-secret",
    response_model=WebhookModel,
    summary="Replace the signing secret (returned once)",
)
async def regenerate_secret(webhook_id: str, principal: Caller, svc: ServicesDep) -> Response:
    return JSONResponse(await svc.webhooks.regenerate_secret(principal, webhook_id))


@router.get(
    "/{webhook_id}/deliveries",
    response_model=WebhookDeliveryListModel,
    summary="List delivery attempts",
)
async def list_deliveries(
    webhook_id: str,
    principal: Caller,
    svc: ServicesDep,
    paging: Paging,
    status: DeliveryStatus | None = None,
    thread_id: str | None = None,
    event_type: str | None = None,
) -> Response:
    filters = DeliveryFilters(status=status, thread_id=thread_id, event_type=event_type)
    return JSONResponse(await svc.webhooks.list_deliveries(principal, webhook_id, filters, paging))


@router.get(
    "/{webhook_id}/deliveries/{delivery_id}",
    response_model=WebhookDeliveryModel,
    summary="Get one delivery attempt",
)
async def get_delivery(
    webhook_id: str, delivery_id: str, principal: Caller, svc: ServicesDep
) -> Response:
    return JSONResponse(await svc.webhooks.get_delivery(principal, webhook_id, delivery_id))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}:redeliver",
    status_code=202,
    response_model=WebhookDeliveryModel,
    summary="Send a delivery's event again",
)
async def redeliver(
    webhook_id: str, delivery_id: str, principal: Caller, svc: ServicesDep
) -> Response:
    result = await svc.webhooks.redeliver(principal, webhook_id, delivery_id)
    return JSONResponse(result, status_code=202)
