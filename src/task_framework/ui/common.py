"""Shared pieces of the web UI: templates, the session dependencies, rendering helpers.

Every template is rendered with autoescaping on; data is never marked safe, so any value
(thread names, metadata, artifact text, URLs) reaches the page as text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from task_framework.api.deps import ServicesDep
from task_framework.errors import AuthForbidden, TaskFrameworkError
from task_framework.services.auth import Principal
from task_framework.ui.flash import FlashStore
from task_framework.ui.sessions import COOKIE_NAME, Session, SessionStore
from task_framework.utils.strict_json import NotStrictJSON, loads_strict

UI_PREFIX = "/ui"
HERE = Path(__file__).resolve().parent
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# Fixed notices for ``?done=<code>`` after a redirect: a URL can pick one, never write one.
NOTICES = {
    "stopped": "Stop requested.",
    "deleted": "Deleted.",
    "retried": "Retry started: this new thread runs the original's inputs again.",
    "created": "Created.",
    "webhook_created": "Webhook created.",
    "key_created": "Key created.",
    "deployed": "Deployment finished.",
    "uploaded": "File uploaded.",
    "paused": "Schedule paused.",
    "resumed": "Schedule resumed.",
    "canceled": "Schedule canceled.",
    "triggered": "A run was started now.",
    "redelivered": "A new delivery attempt was queued.",
    "revoked": "Key revoked.",
    "saved": "Saved.",
    "signed_out": "You are signed out.",
    "expired": "Your session has ended. Sign in again.",
    "form_expired": "Your session ended before the form was sent, so nothing was changed. "
    "Sign in again, then send the form again.",
}


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
"""The one way the UI writes a time: in UTC, to the second."""


def short_ts(value: str | datetime | None) -> str:
    """``2026-01-01T10:00:00.123456Z`` (or a datetime) → ``2026-01-01 10:00:00 UTC``."""
    if not value:
        return "—"
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(TIME_FORMAT)


def _webhook_scope(webhook: dict[str, Any]) -> str:
    """Which threads' events a webhook receives: its task filter and scope, in words."""
    parts = []
    if webhook.get("task_id"):
        version = webhook.get("task_version")
        parts.append(
            f"task {webhook['task_id']}" + (f":{version}" if version else " (any version)")
        )
    for key, value in sorted((webhook.get("scope") or {}).items()):
        if value:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts) if parts else "all (no task or scope filter)"


def build_templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _pretty_json
    env.filters["ts"] = short_ts
    env.filters["webhook_scope"] = _webhook_scope
    env.globals["urlencode"] = urlencode
    return env


TEMPLATES = build_templates()


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in form, scripts get a 401."""


def session_store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def flashes(request: Request) -> FlashStore:
    store: FlashStore = request.app.state.flashes
    return store


def safe_next(value: str | None) -> str | None:
    """A page to return to after sign-in: a path under /ui only, never another site."""
    if not value or len(value) > 2048 or not value.startswith(UI_PREFIX + "/"):
        return None
    if value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith(UI_PREFIX + "/login"):
        return None
    return value


async def require_session(request: Request) -> Session:
    session = await session_store(request).resolve(request.cookies.get(COOKIE_NAME))
    if session is None:
        raise SignInRequired()
    return session


def _same_origin(request: Request) -> bool:
    """A state change must not come from another site: an ``Origin`` naming another host
    is refused. Under ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` for
    form posts, so a missing or null origin is left to the CSRF token and SameSite."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def form_session(request: Request) -> Session:
    """A session for a form POST: the form's CSRF field (or header) must match."""
    session = await require_session(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not _same_origin(request) or not session.csrf_ok(given):
        raise AuthForbidden("The form expired or did not come from this site. Reload and retry.")
    return session


async def stream_session(request: Request) -> Session:
    """A session for a streamed upload (body not parsed as a form): header or query token."""
    session = await require_session(request)
    given = request.headers.get(CSRF_HEADER) or request.query_params.get(CSRF_FIELD)
    if not _same_origin(request) or not session.csrf_ok(given):
        raise AuthForbidden("The form expired or did not come from this site. Reload and retry.")
    return session


async def admin_session(request: Request) -> Session:
    session = await require_session(request)
    if not session.principal.is_admin:
        raise AuthForbidden("This page is for administrators.")
    return session


async def admin_form_session(request: Request) -> Session:
    session = await form_session(request)
    if not session.principal.is_admin:
        raise AuthForbidden("This page is for administrators.")
    return session


UiSession = Annotated[Session, Depends(require_session)]
FormSession = Annotated[Session, Depends(form_session)]
StreamSession = Annotated[Session, Depends(stream_session)]
AdminSession = Annotated[Session, Depends(admin_session)]
AdminFormSession = Annotated[Session, Depends(admin_form_session)]
Svc = ServicesDep


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    principal: Principal | None = session.principal if session else None
    notice = NOTICES.get(request.query_params.get("done", ""))
    html = TEMPLATES.get_template(template).render(
        request_path=request.url.path,
        session=session,
        principal=principal,
        csrf=session.csrf_token if session else "",
        notice=notice,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def redirect(path: str, done: str | None = None) -> RedirectResponse:
    """303 to a UI page (a relative path under /ui only), with an optional notice code."""
    target = UI_PREFIX + path
    if done:
        target += ("&" if "?" in target else "?") + urlencode({"done": done})
    return RedirectResponse(target, status_code=303)


async def form_text(request: Request, name: str, default: str = "") -> str:
    value = (await request.form()).get(name)
    return value.strip() if isinstance(value, str) else default


def parse_json_field(text: str, label: str, default: Any) -> Any:
    from task_framework.errors import ValidationFailed

    if not text.strip():
        return default
    try:
        return loads_strict(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{label} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    except NotStrictJSON as exc:
        raise ValidationFailed(f"{label}: {exc}") from None


def error_message(exc: Exception) -> str:
    if isinstance(exc, TaskFrameworkError):
        return exc.message
    return str(exc)


def confirm_page(
    request: Request,
    session: Session,
    *,
    nav: str,
    title: str,
    consequences: list[str],
    action: str,
    button: str,
    cancel: str,
    fields: dict[str, str] | None = None,
) -> HTMLResponse:
    """The page a destructive button leads to: what will happen, then the POST button.

    A plain GET page, so it needs no script and one stray click changes nothing.
    """
    return render(
        request,
        "confirm.html",
        session,
        nav=nav,
        title=title,
        consequences=consequences,
        action=action,
        button=button,
        cancel=cancel,
        fields=fields or {},
    )
