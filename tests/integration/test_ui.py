"""The web UI over HTTP: sessions, CSRF, tenant isolation, escaping, security headers."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import update

from conftest import Server, ServerFactory
from procs import write_task
from task_framework.models._time import utcnow
from task_framework.store.tables import ui_sessions

HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
# URLs cannot hold spaces (the URL guard refuses them); this form needs none.
HOSTILE_URL = "http://127.0.0.1:9/</script><img/src=x/onerror=alert(4)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;"


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found, f"no {name} field"
    return found.group(1)


async def sign_in(
    client: httpx.AsyncClient, key: str, app_id: str = "", user_id: str = ""
) -> httpx.Response:
    form = await client.get("/ui/login")
    token = _hidden(form.text, "login_token")
    return await client.post(
        "/ui/login",
        data={"api_key": key, "app_id": app_id, "user_id": user_id, "login_token": token},
    )


def browser(server: Server) -> httpx.AsyncClient:
    """A separate cookie jar per simulated browser."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server.app), base_url="http://testserver", timeout=60
    )


async def test_sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it(
    make_server: ServerFactory,
) -> None:
    server = await make_server(dev_tasks=[])
    async with browser(server) as client:
        root = await client.get("/")
        assert root.status_code == 307
        assert root.headers["location"] == "/ui/"
        anonymous = await client.get("/ui/")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/ui/login"
        page = await client.get("/ui/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"

        wrong = await sign_in(client, "tfk_not_a_key")
        assert wrong.status_code == 401
        assert "unknown, revoked or expired" in wrong.text
        no_identity = await sign_in(client, server.user_key)
        assert no_identity.status_code == 400
        assert "needs an app id" in no_identity.text

        ok = await sign_in(client, server.user_key, "app1", "user1")
        assert ok.status_code == 303
        cookie = next(
            h for h in ok.headers.get_list("set-cookie") if h.startswith("tf_session=")
        ).lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/ui" in cookie
        assert "secure" not in cookie  # plain http here; https requests get Secure
        assert server.user_key not in cookie
        home = await client.get("/ui/")
        assert home.status_code == 200
        assert "Overview" in home.text
        csrf = _hidden(home.text, "csrf_token")

        out = await client.post("/ui/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
        # The old token is revoked server-side, not merely dropped by the browser.
        token = ok.cookies["tf_session"]
        client.cookies.set("tf_session", token, path="/ui")
        assert (await client.get("/ui/")).status_code == 303


async def test_login_form_needs_its_own_token(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    async with browser(server) as client:
        forged = await client.post(
            "/ui/login", data={"api_key": server.admin_key, "login_token": "guess"}
        )
        assert forged.status_code == 403
        assert "tf_session" not in forged.cookies


async def test_sign_in_returns_only_to_a_ui_page(make_server: ServerFactory) -> None:
    """``next`` brings the operator back after sign-in, never to another site."""
    server = await make_server(dev_tasks=[])
    cases = {
        "/ui/threads?state=failed": "/ui/threads?state=failed",
        "//evil.example/ui/": "/ui/",
        "https://evil.example/ui/": "/ui/",
        "/ui/\\evil.example": "/ui/",
        "/uix": "/ui/",
        "/ui/login?next=/ui/keys": "/ui/",
    }
    for given, expected in cases.items():
        async with browser(server) as client:
            form = await client.get("/ui/login", params={"next": given})
            token = _hidden(form.text, "login_token")
            done = await client.post(
                "/ui/login",
                data={"api_key": server.admin_key, "login_token": token, "next": given},
            )
            assert done.status_code == 303, given
            assert done.headers["location"] == expected, given


async def test_a_form_sent_without_a_session_goes_to_sign_in_not_json(
    make_server: ServerFactory,
) -> None:
    server = await make_server(dev_tasks=[])
    async with browser(server) as client:
        client.cookies.set("tf_session", "ended", path="/ui")
        sent = await client.post("/ui/threads/thread_x/stop", data={"csrf_token": "x"})
        assert sent.status_code == 303
        assert sent.headers["location"] == (
            "/ui/login?next=%2Fui%2Fthreads%2Fthread_x&done=form_expired"
        )
        page = await client.get("/ui/keys", params={"cursor": "a"})
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fkeys%3Fcursor%3Da&done=expired"
        script = await client.post("/ui/files", headers={"accept": "application/json"})
        assert script.status_code == 401
        assert script.json()["status"] == 401


async def test_every_state_change_needs_the_session_csrf_token(make_server: ServerFactory) -> None:
    server = await make_server()
    created = await server.client.post(
        "/threads",
        headers=server.user(),
        json={"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "x"}}]},
    )
    thread_id = created.json()["id"]
    async with browser(server) as client:
        await sign_in(client, server.user_key, "app1", "user1")
        csrf = _hidden((await client.get("/ui/threads")).text, "csrf_token")
        url = f"/ui/threads/{thread_id}/delete"
        assert (await client.post(url)).status_code == 403
        assert (await client.post(url, data={"csrf_token": "x" * 43})).status_code == 403
        foreign = await client.post(
            url, data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert (await client.get(f"/ui/threads/{thread_id}")).status_code == 200
        done = await client.post(url, data={"csrf_token": csrf})
        assert done.status_code == 303
        assert (await client.get(f"/ui/threads/{thread_id}")).status_code == 404


async def test_regular_keys_see_only_their_own_objects(make_server: ServerFactory) -> None:
    server = await make_server()
    other = await server.client.post(
        "/threads",
        headers=server.user("app2", "user2"),
        json={"mode": "sync", "name": "other-tenant", "inputs": [{"kind": "json", "value": {}}]},
    )
    async with browser(server) as client:
        await sign_in(client, server.user_key, "app1", "user1")
        listing = await client.get("/ui/threads")
        assert "other-tenant" not in listing.text
        assert "No threads yet" in listing.text
        page = await client.get(f"/ui/threads/{other.json()['id']}")
        assert page.status_code == 404
        assert "other-tenant" not in page.text
        assert (await client.get("/ui/tasks")).status_code == 403
        assert (await client.get("/ui/keys")).status_code == 403
    async with browser(server) as admin:
        await sign_in(admin, server.admin_key)
        assert "other-tenant" in (await admin.get("/ui/threads")).text


async def test_revoked_key_and_idle_session_end_the_session(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    created = await server.client.post(
        "/admin/api-keys",
        headers=server.admin,
        json={"name": "ui", "app_id": "app1", "user_id": "user1"},
    )
    key, key_id = created.json()["key"], created.json()["id"]
    async with browser(server) as client:
        assert (await sign_in(client, key)).status_code == 303
        assert (await client.get("/ui/")).status_code == 200
        await server.client.delete(f"/admin/api-keys/{key_id}", headers=server.admin)
        ended = await client.get("/ui/")
        assert ended.status_code == 303
        assert "expired" in ended.headers["location"]
    async with browser(server) as client:
        await sign_in(client, server.admin_key)
        assert (await client.get("/ui/")).status_code == 200
        old = utcnow() - timedelta(hours=9)
        await server.services.db.tx(
            lambda conn: conn.execute(update(ui_sessions).values(last_seen_at=old))
        )
        assert (await client.get("/ui/")).status_code == 303


ECHO_TASK = """\
from task_framework.models.artifact import Artifact


async def run(context):
    given = (await context.get_input_artifacts())[0]
    context.logger.warning("log line %s", given.text)
    await context.publish_output_artifacts([Artifact(kind="text", ref="echo", text=given.text)])
"""


async def test_hostile_values_render_as_text(make_server: ServerFactory, tmp_path: Path) -> None:
    task = write_task(tmp_path, "echo", ECHO_TASK)
    server = await make_server(dev_tasks=[task], webhook_allow_private_networks=True)
    created = await server.client.post(
        "/threads",
        headers=server.user(),
        json={
            "mode": "sync",
            "name": HOSTILE,
            "metadata": {"note": HOSTILE},
            "inputs": [{"kind": "text", "text": HOSTILE, "url": "javascript:alert(3)"}],
        },
    )
    assert created.json()["outputs"][0]["text"] == HOSTILE
    assert created.status_code == 201, created.text
    hook = await server.client.post(
        "/webhooks",
        headers=server.user(),
        json={"url": HOSTILE_URL},
    )
    assert hook.status_code == 201, hook.text
    async with browser(server) as client:
        await sign_in(client, server.user_key, "app1", "user1")
        pages = [
            await client.get(f"/ui/threads/{created.json()['id']}"),
            await client.get("/ui/threads"),
            await client.get("/ui/webhooks"),
            await client.get(f"/ui/webhooks/{hook.json()['id']}"),
        ]
    for page in pages:
        assert page.status_code == 200
        assert "<img src=x" not in page.text
        assert "<script>alert" not in page.text
        assert "</script><script>" not in page.text
        assert 'href="javascript:' not in page.text
    assert ESCAPED in pages[0].text
    assert ESCAPED in pages[1].text
    for page in pages[2:]:
        assert "<img/src" not in page.text
        assert "&lt;/script&gt;&lt;img/src=x/onerror=alert(4)&gt;" in page.text
    # No inline script anywhere: the only script is the same-origin file.
    assert re.findall(r"<script[^>]*>", pages[0].text) == ['<script src="/ui/static/app.js" defer>']


async def test_cron_preview_lists_next_fires_in_the_zone(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    async with browser(server) as client:
        await sign_in(client, server.admin_key)
        good = await client.get(
            "/ui/schedules/preview", params={"cron": "30 9 * * *", "timezone": "Asia/Tokyo"}
        )
        fires = good.json()["fires"]
        assert len(fires) == 5
        assert all("09:30 JST" in f["local"] for f in fires)
        assert all(f["utc"].endswith(" 00:30:00 UTC") for f in fires)  # the shared format
        bad = await client.get("/ui/schedules/preview", params={"cron": "61 * * * *"})
        assert bad.json()["fires"] == []
        assert "Invalid cron" in bad.json()["error"]
        static = await client.get("/ui/static/app.js")
        assert static.status_code == 200
        assert "textContent" in static.text


async def test_start_a_thread_from_the_form(make_server: ServerFactory) -> None:
    server = await make_server()
    async with browser(server) as client:
        await sign_in(client, server.user_key, "app1", "user1")
        csrf = _hidden((await client.get("/ui/threads")).text, "csrf_token")
        bad = await client.post(
            "/ui/threads", data={"csrf_token": csrf, "task_id": "hello", "inputs": "[{"}
        )
        assert bad.status_code == 400
        assert "Inputs is not valid JSON" in bad.text
        started = await client.post(
            "/ui/threads",
            data={
                "csrf_token": csrf,
                "task_id": "hello",
                "name": "from the form",
                "inputs": '[{"kind": "json", "value": {"name": "UI"}}]',
            },
        )
        assert started.status_code == 303, started.text
        page = await client.get(started.headers["location"])
        assert page.status_code == 200
        assert "from the form" in page.text
