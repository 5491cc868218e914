"""FastAPI dependencies: the services of this app and the caller's identity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import APIKeyHeader

from task_framework.errors import ValidationFailed
from task_framework.limits import MAX_IDENTITY_CHARS, MAX_OFFSET
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


_IDENTITY_FIELDS = (("app_id", "x-app-id"), ("user_id", "x-user-id"))


def _header_text(raw: str, header: str) -> str:
    # Starlette decodes header bytes as Latin-1; identities are UTF-8, as in the query.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ValidationFailed(f"{header} must be UTF-8") from None


def check_identity(field: str, value: str) -> str:
    """Refuse an ``app_id``/``user_id`` longer than the bound or with control characters."""
    if len(value) > MAX_IDENTITY_CHARS:
        raise ValidationFailed(f"{field} must be at most {MAX_IDENTITY_CHARS} characters")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000 for ch in value):
        raise ValidationFailed(f"{field} must not contain control characters")
    return value


def _identity(
    request: Request, app_header: str | None, user_header: str | None
) -> tuple[str | None, str | None]:
    """The caller's (app_id, user_id).

    The ``X-App-Id``/``X-User-Id`` headers decide when either is present; a query
    ``app_id``/``user_id`` that disagrees with them is refused, so that a backend which
    sets the headers and forwards its users' query strings lets no one pick a tenant.
    Without identity headers the query may carry the identity (compatibility).
    """
    query = request.query_params
    from_headers = [
        _header_text(raw, header) if raw else None
        for raw, (_, header) in zip((app_header, user_header), _IDENTITY_FIELDS, strict=True)
    ]
    from_query = [query.get(field) or None for field, _ in _IDENTITY_FIELDS]
    if any(value is not None for value in from_headers):
        for (field, header), given, decided in zip(
            _IDENTITY_FIELDS, from_query, from_headers, strict=True
        ):
            if given is not None and given != decided:
                raise ValidationFailed(
                    f"Query parameter {field} differs from the {header.title()} header"
                )
        chosen = from_headers
    else:
        chosen = from_query
    app_id, user_id = (
        None if value is None else check_identity(field, value)
        for (field, _), value in zip(_IDENTITY_FIELDS, chosen, strict=True)
    )
    return app_id, user_id


# The schemes and headers below are what /openapi.json (and so /docs) shows: Swagger UI's
# "Authorize" fills the key headers, and every K and A operation lists the identity headers.
API_KEY_SCHEME = "ApiKey"
ADMIN_KEY_SCHEME = "AdminApiKey"
_api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name=API_KEY_SCHEME,
    description=(
        "A regular or an admin API key. A regular key also needs the caller's identity "
        "(`X-User-Id` and `X-App-Id`) unless it is bound to one. On admin routes this "
        "header may hold an admin key instead of `X-Admin-API-Key`."
    ),
    auto_error=False,
)
_admin_key_header = APIKeyHeader(
    name="X-Admin-API-Key",
    scheme_name=ADMIN_KEY_SCHEME,
    description="An admin API key, for the `/admin` routes (checked before `X-API-Key`).",
    auto_error=False,
)
_IDENTITY_RULE = (
    "Required with a regular API key that is not bound to one (else 400 "
    "METADATA_REQUIRED); a bound key supplies its own, and a different value is 403 "
    "AUTH_FORBIDDEN. Optional for admin keys: it stamps ownership on created resources "
    "and filters lists. Without identity headers the query parameters `app_id`/`user_id` "
    "are read instead (compatibility); when a header is sent, a query value that "
    f"differs is 400 VALIDATION_FAILED. 1 to {MAX_IDENTITY_CHARS} characters, no control "
    "characters."
)
ApiKeyHeader = Annotated[str | None, Security(_api_key_header)]
AdminKeyHeader = Annotated[str | None, Security(_admin_key_header)]
AppIdHeader = Annotated[
    str | None, Header(alias="X-App-Id", description="The calling app. " + _IDENTITY_RULE)
]
UserIdHeader = Annotated[
    str | None, Header(alias="X-User-Id", description="The calling user. " + _IDENTITY_RULE)
]


async def caller(
    request: Request,
    x_api_key: ApiKeyHeader,
    x_app_id: AppIdHeader = None,
    x_user_id: UserIdHeader = None,
) -> Principal:
    """A K route's caller: a regular or admin key in ``X-API-Key``."""
    app_id, user_id = _identity(request, x_app_id, x_user_id)
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
    x_admin_api_key: AdminKeyHeader,
    x_api_key: ApiKeyHeader,
    x_app_id: AppIdHeader = None,
    x_user_id: UserIdHeader = None,
) -> Principal:
    """An A route's caller: an admin key in ``X-Admin-API-Key`` or ``X-API-Key``."""
    app_id, user_id = _identity(request, x_app_id, x_user_id)
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
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor or None, offset=offset)


Paging = Annotated[PageRequest, Depends(page_request)]


def client_address(request: Request) -> str | None:
    """The caller's address, as the limits on failed authentication count it (behind a
    proxy, the address the server trusts it to forward: uvicorn ``--forwarded-allow-ips``)."""
    return request.client.host if request.client is not None else None
