"""FastAPI dependencies: the services of this app and the caller's identity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Query, Request

from task_framework.services.auth import Principal
from task_framework.store.paging import DEFAULT_LIMIT, MAX_LIMIT, PageRequest

if TYPE_CHECKING:
    from task_framework.app import Services


def services_of(request: Request) -> Services:
    """This app's services (one app per process in production; several in tests)."""
    result: Services = request.app.state.services
    return result


async def services(request: Request) -> Services:
    # async on purpose: FastAPI runs plain-def dependencies in a worker thread.
    return services_of(request)


ServicesDep = Annotated["Services", Depends(services)]


def _identity(request: Request) -> tuple[str | None, str | None]:
    query, headers = request.query_params, request.headers
    app_id = query.get("app_id") or headers.get("x-app-id") or None
    user_id = query.get("user_id") or headers.get("x-user-id") or None
    return app_id, user_id


async def caller(
    request: Request,
    x_api_key: Annotated[str | None, Header(include_in_schema=True)] = None,
) -> Principal:
    """A K route's caller: a regular or admin key in ``X-API-Key``."""
    app_id, user_id = _identity(request)
    return await services_of(request).keys.authenticate_from(
        client_address(request),
        surface="api",
        api_key=x_api_key,
        admin_key=None,
        app_id=app_id,
        user_id=user_id,
    )


async def admin(
    request: Request,
    x_api_key: Annotated[str | None, Header()] = None,
    x_admin_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """An A route's caller: an admin key in ``X-Admin-API-Key`` or ``X-API-Key``."""
    app_id, user_id = _identity(request)
    return await services_of(request).keys.authenticate_from(
        client_address(request),
        surface="admin",
        api_key=x_api_key,
        admin_key=x_admin_api_key,
        app_id=app_id,
        user_id=user_id,
        admin_only=True,
    )


Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]


async def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
    offset: Annotated[int | None, Query(ge=0)] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor or None, offset=offset)


Paging = Annotated[PageRequest, Depends(page_request)]


def client_address(request: Request) -> str | None:
    """The caller's address, as the limits on failed authentication count it (behind a
    proxy, the address the server trusts it to forward: uvicorn ``--forwarded-allow-ips``)."""
    return request.client.host if request.client is not None else None
