"""End-to-end: ``/docs`` (Swagger UI) and ``/redoc`` in headless Chromium, offline.

A real ``task-framework serve`` runs on loopback with the hello task. Every request the
pages make to another origin is recorded and aborted, so the test passes only when the
pages load everything from the server itself, as they must on a machine without
internet. Through Swagger UI's "Authorize" and "Try it out", a regular key (with
``X-User-Id``/``X-App-Id``) runs a thread. Locally the test skips when
``/usr/bin/chromium`` is missing; in CI (``CI`` set) it runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from browser_support import CHROMIUM, CHROMIUM_ARGS
from conftest import HELLO_TASK
from procs import USER_KEY, Process

pytestmark = pytest.mark.slow

WAIT_MS = 60_000
CREATE_THREAD = "#operations-threads-create_thread_threads_post"

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    Page,
    Route,
    expect,
    sync_playwright,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = Process(tmp_path_factory.mktemp("docs") / "data", [HELLO_TASK])
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Offline:
    """A page whose requests to any origin but the server's are recorded and aborted."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url == self.base or url.startswith(self.base + "/"):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()


def test_swagger_ui_runs_a_thread_with_a_regular_key(browser: Browser, server: Process) -> None:
    offline = Offline(browser, server.base)
    page = offline.page
    page.goto(f"{server.base}/docs")
    expect(page.locator(CREATE_THREAD)).to_be_visible()
    assert page.locator(".opblock").count() >= 60
    favicon = page.locator("link[rel='shortcut icon']").get_attribute("href")
    assert favicon == "/docs/assets/favicon-32x32.png"

    # Authorize: both key schemes are offered; a regular key goes into X-API-Key.
    page.locator(".auth-wrapper .authorize").click()
    dialog = page.locator(".dialog-ux")
    expect(dialog.locator(".auth-container")).to_have_count(2)
    api_key = dialog.locator(".auth-container").filter(has=page.get_by_text("ApiKey", exact=True))
    expect(api_key).to_contain_text("X-API-Key")
    api_key.locator("input").fill(USER_KEY)
    api_key.locator("button.authorize").click()
    expect(api_key.locator("button", has_text="Logout")).to_be_visible()
    dialog.locator("button.btn-done").first.click()

    # Try it out: the identity headers are parameters; the body is the sync example.
    operation = page.locator(CREATE_THREAD)
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("tr[data-param-name='X-User-Id'] input").fill("docs-user")
    operation.locator("tr[data-param-name='X-App-Id'] input").fill("docs-app")
    body = json.loads(operation.locator("textarea.body-param__text").input_value())
    assert body["mode"] == "sync"
    with page.expect_response(
        lambda response: (
            response.url.startswith(f"{server.base}/threads") and response.request.method == "POST"
        )
    ) as answer:
        operation.get_by_role("button", name="Execute").click()
    response = answer.value
    assert response.status == 201, response.text()
    assert response.request.headers["x-api-key"] == USER_KEY
    thread = response.json()
    assert thread["id"].startswith("thread_")
    assert thread["state"] == "succeeded"
    assert thread["metadata"]["user_id"] == "docs-user"
    assert thread["metadata"]["app_id"] == "docs-app"
    live = operation.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("201")
    expect(live).to_contain_text(thread["id"])

    offline.context.close()
    assert offline.foreign == [], offline.foreign
    assert offline.errors == [], offline.errors


def test_redoc_renders_offline(browser: Browser, server: Process) -> None:
    offline = Offline(browser, server.base)
    page = offline.page
    page.goto(f"{server.base}/redoc")
    expect(page.locator(".menu-content")).to_be_visible()
    expect(page.get_by_role("heading", name="Create a thread (run a task)")).to_be_visible()
    expect(page.get_by_text("X-Admin-API-Key").first).to_be_attached()
    offline.context.close()
    assert offline.foreign == [], offline.foreign
    assert offline.errors == [], offline.errors
