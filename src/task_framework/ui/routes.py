"""The web UI application, mounted under ``/ui`` (API.md §13).

Server-rendered pages (Jinja2, autoescaped) plus a small script for live updates. The
pages call the services with the session's :class:`Principal`, so a regular key sees in
the UI exactly what it sees through the API. Every response carries a strict
Content-Security-Policy: no inline script or style, nothing from other origins.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from task_framework.api.deps import client_address
from task_framework.errors import AuthForbidden, TaskFrameworkError
from task_framework.ui import overview, pages_admin, pages_resources, pages_threads
from task_framework.ui.common import (
    HERE,
    UI_PREFIX,
    FormSession,
    SignInRequired,
    Svc,
    UiSession,
    redirect,
    render,
    safe_next,
    session_store,
)
from task_framework.ui.flash import FlashStore
from task_framework.ui.sessions import COOKIE_NAME, COOKIE_PATH, SessionStore

if TYPE_CHECKING:
    from task_framework.app import Services

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
LOGIN_COOKIE = "tf_login"
"""Double-submit token of the sign-in form (there is no session yet to hold one)."""


class _SecurityHeaders:
    """Adds the security headers to every UI response; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{UI_PREFIX}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {name for name, _ in SECURITY_HEADERS}
                ]
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def _error_page(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    # Inside the normal layout: a signed-in operator keeps the navigation.
    session = await session_store(request).resolve(request.cookies.get(COOKIE_NAME))
    return render(
        request, "error.html", session, status=status, status_code=status, message=message
    )


def _route_path(request: Request) -> str:
    path = request.url.path
    return path[len(UI_PREFIX) :] if path.startswith(UI_PREFIX + "/") else path


def _form_page(app: FastAPI, path: str) -> str:
    """The page a form posted to ``path`` lives on: the longest prefix of ``path`` that
    is a GET page (``/threads/x/stop`` → ``/threads/x``, ``/keys/k/revoke`` → ``/keys``)."""
    parts = path.rstrip("/").split("/")
    while len(parts) > 1:
        candidate = "/".join(parts)
        scope = {"type": "http", "path": candidate, "root_path": "", "method": "GET"}
        for route in app.router.routes:
            if not isinstance(route, Mount) and route.matches(scope)[0] == Match.FULL:
                return candidate
        parts.pop()
    return "/"


def _sign_in_redirect(next_page: str, done: str | None) -> Response:
    query = {"next": next_page} if next_page not in ("/ui/", "/ui") else {}
    if done:
        query["done"] = done
    target = f"{UI_PREFIX}/login" + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(target, status_code=303)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: Exception) -> Response:
        # Scripts (uploads, previews) ask for JSON and get a 401; a browser form or page
        # goes to the sign-in form, which then brings the operator back.
        if _wants_json(request):
            return JSONResponse({"error": "Sign in first", "status": 401}, status_code=401)
        had_cookie = COOKIE_NAME in request.cookies
        if request.method == "GET":
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return _sign_in_redirect(here, "expired" if had_cookie else None)
        # A POST body is not kept: it may hold secrets (a key, a credential value) and
        # replaying it after sign-in would act without the operator seeing the form.
        page = UI_PREFIX + _form_page(app, _route_path(request))
        return _sign_in_redirect(page, "form_expired")

    @app.exception_handler(TaskFrameworkError)
    async def _service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TaskFrameworkError)
        return await _error_page(request, exc.status, exc.message)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        errors = exc.errors()
        message = str(errors[0]["msg"]) if errors else "invalid input"
        where = ".".join(str(part) for part in errors[0]["loc"]) if errors else ""
        return await _error_page(request, 400, f"{where}: {message}" if where else message)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid input"}
        return await _error_page(request, 400, f"Invalid request: {first['msg']}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        text = "This page does not exist." if exc.status_code == 404 else str(exc.detail)
        return await _error_page(request, exc.status_code, text)


def create_ui_app(svc: Services) -> ASGIApp:
    """The UI as an ASGI app to mount at ``/ui`` on the main application."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = svc
    app.state.sessions = SessionStore(svc.ui_sessions, svc.keys)
    app.state.flashes = FlashStore(svc.settings_store, svc.secret_box)
    _install_handlers(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/login")
    async def login_form(
        request: Request,
        next_page: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
    ) -> Response:
        token = secrets.token_urlsafe(32)
        response = render(
            request, "login.html", None, login_token=token, error=None, next=safe_next(next_page)
        )
        _set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
        return response

    @app.post("/login")
    async def login(
        request: Request,
        api_key: Annotated[str, Form(max_length=4096)] = "",
        app_id: Annotated[str, Form(max_length=255)] = "",
        user_id: Annotated[str, Form(max_length=255)] = "",
        login_token: Annotated[str, Form(max_length=128)] = "",
        next_page: Annotated[str, Form(alias="next", max_length=2048)] = "",
    ) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not secrets.compare_digest(expected, login_token):
            raise AuthForbidden("The sign-in form expired. Reload the page and sign in again.")
        try:
            principal = await svc.keys.authenticate_from(
                client_address(request),
                surface="ui",
                api_key=api_key.strip() or None,
                admin_key=None,
                app_id=app_id.strip() or None,
                user_id=user_id.strip() or None,
            )
        except TaskFrameworkError as exc:
            token = secrets.token_urlsafe(32)
            message = {
                "AUTH_REQUIRED": "Enter an API key.",
                "AUTH_INVALID": "This API key is unknown, revoked or expired.",
                "METADATA_REQUIRED": "This key needs an app id and a user id.",
                "AUTH_RATE_LIMITED": "Too many failed sign-ins from here or with this key. "
                f"Try again in {exc.extra.get('retry_after')} s.",
            }.get(exc.code, exc.message)
            response = render(
                request,
                "login.html",
                None,
                status=exc.status,
                login_token=token,
                error=message,
                next=safe_next(next_page),
            )
            _set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
            if "retry_after" in exc.extra:
                response.headers["Retry-After"] = str(exc.extra["retry_after"])
            return response
        token, _ = await session_store(request).create(api_key.strip(), principal)
        back = safe_next(next_page)
        done = RedirectResponse(back, status_code=303) if back else redirect("/")
        _set_cookie(request, done, COOKIE_NAME, token, max_age=None)
        done.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return done

    @app.post("/logout")
    async def logout(request: Request, session: FormSession) -> Response:
        await session_store(request).revoke(session.id)
        response = redirect("/login", "signed_out")
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
        return response

    @app.get("/")
    async def home(request: Request, session: UiSession, svc_: Svc) -> Response:
        data = await overview.collect(svc_, session.principal)
        return render(request, "overview.html", session, nav="overview", **data)

    app.include_router(pages_threads.router)
    app.include_router(pages_resources.router)
    app.include_router(pages_admin.router)
    return _SecurityHeaders(app)


def _set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )


def root_redirect() -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/")


__all__ = ["CONTENT_SECURITY_POLICY", "create_ui_app", "root_redirect"]
