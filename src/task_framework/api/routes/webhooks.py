"""``/webhooks`` routes (API.md §7)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from task_framework.api import examples
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
    body: Annotated[WebhookCreateRequest, Body(openapi_examples=examples.CREATE_WEBHOOK)],
    principal: Caller,
    svc: ServicesDep,
) -> Response:
    """Register a webhook: signed POSTs of matching events to `url`.

    Auth: K; the webhook is owned by the caller and, for a regular key, receives only that
    caller's events. The signing `secret` is generated and returned only here (and by
    `:regenerate-secret`). Callback URLs to private, loopback or metadata addresses are
    400 WEBHOOK_INVALID_URL unless allowed by configuration.
    """
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
    """List webhooks, newest first (`secret` is always null here).

    Auth: K. A regular key sees its own webhooks; an admin key sees all.
    """
    filters = WebhookFilters(
        is_enabled=is_enabled, task_id=task_id, task_version=task_version, source=source
    )
    return JSONResponse(await svc.webhooks.list_webhooks(principal, filters, paging))


@router.get("/{webhook_id}", response_model=WebhookModel, summary="Get a webhook")
async def get_webhook(webhook_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """One webhook (`secret` is null).

    Auth: K, owner (admins: any). Unknown or foreign: 404 WEBHOOK_NOT_FOUND.
    """
    return JSONResponse(await svc.webhooks.get(principal, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookModel, summary="Update a webhook")
async def update_webhook(
    webhook_id: str,
    principal: Caller,
    svc: ServicesDep,
    body: Annotated[WebhookUpdateRequest, Body()],
) -> Response:
    """Change a webhook: non-null fields replace the stored values.

    Auth: K, owner (admins: any). The URL is checked again (400 WEBHOOK_INVALID_URL).
    `enabled: true` re-enables a disabled webhook; `api_key: ""` clears the key. Unknown
    or foreign: 404 WEBHOOK_NOT_FOUND.
    """
    return JSONResponse(await svc.webhooks.update(principal, webhook_id, body))


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook and its deliveries")
async def delete_webhook(webhook_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Delete a webhook, its pending attempts and its delivery history.

    Auth: K, owner (admins: any). Answers 204; unknown or foreign: 404 WEBHOOK_NOT_FOUND.
    """
    await svc.webhooks.delete(principal, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}:regenerate-secret",
    response_model=WebhookModel,
    summary="Replace the signing secret (returned once)",
)
async def regenerate_secret(webhook_id: str, principal: Caller, svc: ServicesDep) -> Response:
    """Replace a webhook's signing secret; the new `secret` is returned once.

    Auth: K, owner (admins: any). Attempts made from now on are signed with it. Unknown
    or foreign: 404 WEBHOOK_NOT_FOUND.
    """
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
    """A webhook's delivery attempts, newest first.

    Auth: K, owner (admins: any). Filter by `status`, `thread_id` or `event_type`. Unknown
    or foreign webhook: 404 WEBHOOK_NOT_FOUND.
    """
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
    """One delivery attempt, with the exact payload sent and the receiver's answer.

    Auth: K, owner (admins: any). 404 WEBHOOK_NOT_FOUND or DELIVERY_NOT_FOUND.
    """
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
    """Queue a new attempt of a delivery's event (same event id, new signature).

    Auth: K, owner (admins: any). Answers 202 with the new `pending` delivery; it is not
    retried automatically. A disabled webhook is 400 VALIDATION_FAILED; 404
    WEBHOOK_NOT_FOUND or DELIVERY_NOT_FOUND.
    """
    result = await svc.webhooks.redeliver(principal, webhook_id, delivery_id)
    return JSONResponse(result, status_code=202)
