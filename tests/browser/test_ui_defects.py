"""The operator-console defects of issue 20, each checked in headless Chromium.

One real ``task-framework serve`` (with two dev tasks) and one browser serve the whole
module; each test signs in with a context of its own. Screenshots of the fixed pages at
1280×800 and 390×844 go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from browser_support import CHROMIUM, CHROMIUM_ARGS, shot
from procs import ADMIN_KEY, USER_KEY, Process, write_task

pytestmark = pytest.mark.slow

WAIT_MS = 30_000
LONG_LOG_LINES = 1500
"""Lines the failing task prints before its final error line (1,501 in all)."""
UI_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")

# Prints numbered lines (``lines`` at once, then ``more`` every ``pause`` s), then
# either fails with a final line naming the error or succeeds.
CHATTY = """\
import time


def run(context):
    params = context.params
    for i in range(1, int(params.get("lines", 0)) + 1):
        print(f"line {i:05d}", flush=True)
    first = int(params.get("lines", 0))
    for i in range(first + 1, first + int(params.get("more", 0)) + 1):
        if context.is_cancelled():
            return
        print(f"line {i:05d}", flush=True)
        time.sleep(float(params.get("pause", 0.05)))
    if params.get("fail"):
        print("FINAL ERROR: the import gave up", flush=True)
        raise RuntimeError("the import gave up")
"""
QUICK = """\
def run(context):
    if context.params.get("fail"):
        raise RuntimeError("asked to fail")
"""

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


class _Hook(BaseHTTPRequestHandler):
    """``/fail`` answers 500, anything else 200."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(500 if self.path.startswith("/fail") else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("ui-defects")
    tasks = [
        write_task(root / "tasks", "chatty", CHATTY),
        write_task(root / "tasks", "quick", QUICK),
    ]
    env = {
        "TASK_FRAMEWORK_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        # Attempt 2 follows at once; attempt 3 waits ten minutes: a pending retry to show.
        "TASK_FRAMEWORK_WEBHOOK_RETRY_SCHEDULE": "1,600",
        "TASK_FRAMEWORK_WORKER_CONCURRENCY": "3",
        "TASK_FRAMEWORK_STOP_GRACE_SECONDS": "1",
    }
    process = Process(root / "data", tasks, env=env)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(server: Process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, headers={"X-API-Key": ADMIN_KEY}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def sign_in(page: Page, base: str, key: str = ADMIN_KEY, app: str = "", user: str = "") -> None:
    page.goto(f"{base}/ui/login")
    page.get_by_label("API key").fill(key)
    if app:
        page.get_by_label("App id (optional)").fill(app)
        page.get_by_label("User id (optional)").fill(user)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def new_page(
    browser: Browser, base: str, *, js: bool = True, viewport: ViewportSize = DESKTOP
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=viewport, java_script_enabled=js)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    sign_in(page, base)
    return context, page


def run_thread(api: httpx.Client, task: str, *, name: str | None = None, **params: Any) -> str:
    created = api.post(
        "/threads",
        params={"task_id": task},
        json={
            "mode": "sync",
            "name": name,
            "params": params,
            "inputs": [{"kind": "json", "value": {}}],
        },
    )
    assert created.status_code == 201, created.text
    thread_id: str = created.json()["id"]
    return thread_id


def reveal(page: Page, summary: str) -> None:
    """Open a collapsed form (``<details>``), leaving an open one open."""
    details = page.locator("details", has=page.locator("summary", has_text=summary))
    if details.get_attribute("open") is None:
        details.locator("summary").click()


def document_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def log_total(api: httpx.Client, thread_id: str) -> int:
    logs = api.get(f"/threads/{thread_id}/logs", params={"limit": 1})
    assert logs.status_code == 200, logs.text
    return int(logs.json()["pagination"]["total"])


def log_numbers(page: Page) -> list[int]:
    text = page.locator("#log").inner_text()
    return [int(n) for n in re.findall(r"\] line (\d{5})$", text, flags=re.MULTILINE)]


@pytest.fixture(scope="module")
def running_chatty(api: httpx.Client) -> Iterator[str]:
    """A thread with 1,200 lines already, printing 20 more per second for a few minutes."""
    created = api.post(
        "/threads",
        params={"task_id": "chatty"},
        json={
            "mode": "async",
            "name": "chatty live",
            "params": {"lines": 1200, "more": 4000, "pause": 0.05},
            "inputs": [{"kind": "json", "value": {}}],
        },
    )
    assert created.status_code == 202, created.text
    thread_id: str = created.json()["id"]
    deadline = time.monotonic() + 60
    while log_total(api, thread_id) < 1210:
        assert time.monotonic() < deadline, "the chatty thread did not start printing"
        time.sleep(0.3)
    yield thread_id
    api.post(f"/threads/{thread_id}:stop")


# -- 1. long logs: the tail first, paging through every line, no JS needed ----------------


# Whether the log's last line is inside the visible part of its scroll box.
_LAST_LINE_IN_VIEW = """box => {
  const text = document.getElementById("log").lastChild;
  const range = document.createRange();
  range.setStart(text, text.length - 3);
  range.setEnd(text, text.length - 2);
  const line = range.getBoundingClientRect(), view = box.getBoundingClientRect();
  return line.top >= view.top && line.bottom <= view.bottom;
}"""
# Distances of a scroll box's view from its top and its bottom (column-reverse aware).
_FROM_TOP = """e => getComputedStyle(e).flexDirection === "column-reverse"
  ? e.scrollHeight - e.clientHeight + e.scrollTop : e.scrollTop"""
_FROM_BOTTOM = """e => getComputedStyle(e).flexDirection === "column-reverse"
  ? -e.scrollTop : e.scrollHeight - e.scrollTop - e.clientHeight"""
_SCROLL_TO_BOTTOM = """e => {
  e.scrollTop = getComputedStyle(e).flexDirection === "column-reverse" ? 0 : e.scrollHeight;
}"""
_SCROLL_TO_TOP_PLUS_40 = """e => {
  e.scrollTop = getComputedStyle(e).flexDirection === "column-reverse"
    ? -(e.scrollHeight - e.clientHeight) + 40 : 40;
}"""


def test_a_long_failed_log_shows_its_end_and_pages_back_without_script(
    server: Process, api: httpx.Client, browser: Browser
) -> None:
    thread_id = run_thread(api, "chatty", name="long failure", lines=LONG_LOG_LINES, fail=True)
    total = log_total(api, thread_id)
    assert total >= LONG_LOG_LINES + 1
    context, page = new_page(browser, server.base, js=False)
    page.goto(f"{server.base}/ui/threads/{thread_id}")
    log = page.locator("#log")
    expect(log).to_contain_text("FINAL ERROR: the import gave up")
    expect(page.locator("#log-range")).to_have_text(
        f"Showing lines {total - 999}–{total} of {total} (the latest)."
    )
    assert "line 00001" not in log.inner_text()
    assert page.locator("#log-box").evaluate(_LAST_LINE_IN_VIEW), "the end is scrolled away"
    shot(page, "defect01-long-log-tail-1280")

    page.get_by_role("link", name="Earlier lines").click()
    expect(page.locator("#log-range")).to_have_text(f"Showing lines 1–{total - 1000} of {total}.")
    numbers = log_numbers(page)
    assert numbers[0] == 1
    assert "FINAL ERROR" not in log.inner_text()
    page.get_by_role("link", name="Later lines").click()
    expect(log).to_contain_text("FINAL ERROR: the import gave up")
    expect(page.locator("#log-range")).to_contain_text(f"of {total} (the latest)")
    context.close()


def test_the_live_log_continues_from_the_lines_the_page_showed(
    server: Process, api: httpx.Client, browser: Browser, running_chatty: str
) -> None:
    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/threads/{running_chatty}")
    first_shown = log_numbers(page)
    assert first_shown
    assert first_shown[0] > 1  # the tail, not line 1
    # New lines arrive through the stream and are appended after the rendered ones.
    page.wait_for_function(
        "n => document.getElementById('log').textContent.split('\\n').length > n + 30",
        arg=len(first_shown),
    )
    numbers = log_numbers(page)
    assert numbers[0] == first_shown[0], "the live view restarted the log"
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "lines lost or doubled"
    assert int(page.locator("#log-last").inner_text()) >= numbers[-1] - 2
    context.close()


# -- 4. following the log only while at its bottom -----------------------------------------


def test_scrolling_up_in_the_live_log_pauses_following(
    server: Process, api: httpx.Client, browser: Browser, running_chatty: str
) -> None:
    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/threads/{running_chatty}")
    # The log's scroll box (the page before the fix scrolled the <pre> itself).
    log, box = page.locator("#log"), page.locator("#log-box, #log").first
    before = len(log.inner_text())
    page.wait_for_timeout(1500)  # lines arrive and the view follows them
    assert len(log.inner_text()) > before, "no new lines arrived"
    assert box.evaluate(_FROM_BOTTOM) < 8

    box.evaluate(_SCROLL_TO_TOP_PLUS_40)
    before = len(log.inner_text())
    page.wait_for_timeout(2000)
    assert len(log.inner_text()) > before, "no new lines arrived"
    assert abs(box.evaluate(_FROM_TOP) - 40) <= 2, "the view moved while paused"
    assert box.evaluate(_FROM_BOTTOM) > 100
    expect(page.locator("#log-follow-toggle")).not_to_be_checked()
    expect(page.locator("#log-follow-state")).to_contain_text("Paused")

    # Following again: by the toggle, or by scrolling back to the bottom.
    page.locator("#log-follow-toggle").check()
    page.wait_for_timeout(1500)
    assert box.evaluate(_FROM_BOTTOM) < 8
    assert box.evaluate(_LAST_LINE_IN_VIEW)
    box.evaluate(_SCROLL_TO_TOP_PLUS_40)
    expect(page.locator("#log-follow-toggle")).not_to_be_checked()
    box.evaluate(_SCROLL_TO_BOTTOM)
    expect(page.locator("#log-follow-toggle")).to_be_checked()
    context.close()


# -- 2. post/redirect/get, one-time secrets ------------------------------------------------


def test_create_forms_redirect_so_a_reload_creates_nothing(
    server: Process, api: httpx.Client, browser: Browser, receiver: str
) -> None:
    context, page = new_page(browser, server.base)
    hook_url = f"{receiver}/prg"
    page.goto(f"{server.base}/ui/webhooks")
    reveal(page, "Create a webhook")
    page.get_by_label("Callback URL (http or https)").fill(hook_url)
    page.get_by_role("button", name="Create webhook").click()
    page.wait_for_url(re.compile(r"/ui/webhooks/webhook_[0-9a-f]+\?done=webhook_created$"))
    secret = page.locator("#webhook-secret").inner_text()
    assert secret.startswith("whsec_")
    assert secret not in page.url
    page.reload()
    expect(page.locator("#webhook-figures")).to_be_visible()
    expect(page.locator("#webhook-secret")).to_have_count(0)  # shown once only
    expect(page.locator("#secret-gone")).to_be_visible()
    hooks = api.get("/webhooks", params={"limit": 100}).json()["items"]
    assert [h["url"] for h in hooks].count(hook_url) == 1

    page.goto(f"{server.base}/ui/keys")
    reveal(page, "Create a key")
    page.get_by_label("Name").fill("reload-safe key")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r"/ui/keys\?done=key_created$"))
    key = page.locator("#new-key").inner_text()
    assert key.startswith("tfk_")
    shot(page, "defect02-key-once-1280")
    page.reload()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    expect(page.locator("#new-key")).to_have_count(0)
    keys = api.get("/admin/api-keys", params={"limit": 1000}).json()["items"]
    assert [k["name"] for k in keys].count("reload-safe key") == 1
    context.close()


# -- 3. a form sent after the session ended ------------------------------------------------


def test_a_form_sent_after_the_session_ended_leads_back_through_sign_in(
    server: Process, browser: Browser, receiver: str
) -> None:
    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/webhooks")
    reveal(page, "Create a webhook")
    page.get_by_label("Callback URL (http or https)").fill(f"{receiver}/late")
    # The session ends meanwhile (signed out in another window with the same cookie).
    other = browser.new_context()
    cookie = next(c for c in context.cookies() if c["name"] == "tf_session")
    other.add_cookies(
        [{"name": "tf_session", "value": cookie["value"], "url": f"{server.base}/ui/"}]
    )
    elsewhere = other.new_page()
    elsewhere.goto(f"{server.base}/ui/")
    elsewhere.get_by_role("button", name="Sign out").click()
    other.close()

    page.get_by_role("button", name="Create webhook").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".notice")).to_contain_text("Your session ended before the form was sent")
    assert '"error"' not in page.content()
    expect(page.locator("#sign-in-next")).to_contain_text("/ui/webhooks")
    shot(page, "defect03-sign-in-again-1280")
    page.get_by_label("API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.base}/ui/webhooks")
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    context.close()


# -- 5. tables: whole words, sideways scrolling on a phone ---------------------------------


_SINGLE_LINE = """els => els.map(e => {
  const style = getComputedStyle(e);
  const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.5;
  return e.getBoundingClientRect().height <= line * 1.5 + 6;
})"""


def test_tables_keep_words_whole_and_scroll_sideways_on_a_phone(
    server: Process, api: httpx.Client, browser: Browser
) -> None:
    run_thread(api, "quick", name="a thread with a rather long descriptive name for the table")
    run_thread(api, "quick", name="failing one", fail=True)
    context, page = new_page(browser, server.base)
    for viewport in (DESKTOP, PHONE):
        width = viewport["width"]
        page.set_viewport_size(viewport)
        page.goto(f"{server.base}/ui/threads")
        states = page.locator("td .state")
        expect(states.first).to_be_visible()
        assert all(states.evaluate_all(_SINGLE_LINE)), f"a state broke over lines at {width}px"
        ids = page.locator("td small")
        assert all(ids.evaluate_all(_SINGLE_LINE)), f"an id broke over lines at {width}px"
        page_width = page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= width + 1, "the page itself scrolls sideways"
        if width == 390:
            wrapper = page.locator(".scroll").first
            assert wrapper.evaluate("e => e.scrollWidth > e.clientWidth"), "table crushed"
            shot(page, "defect05-threads-390")
        else:
            shot(page, "defect05-threads-1280")
    context.close()


# -- 6. webhook deliveries -----------------------------------------------------------------


def test_deliveries_list_retries_apart_once_per_event_with_the_task_filter(
    server: Process, api: httpx.Client, browser: Browser, receiver: str
) -> None:
    hook = api.post(
        "/webhooks",
        json={
            "url": f"{receiver}/fail",
            "task_id": "quick",
            "events": {"include": ["thread.succeeded"]},
        },
    )
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    thread_id = run_thread(api, "quick", name="for the failing hook")
    deadline = time.monotonic() + 60
    while True:
        items = api.get(f"/webhooks/{hook_id}/deliveries").json()["items"]
        statuses = sorted(d["status"] for d in items)
        if statuses == ["failed", "failed", "pending"]:
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)

    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/webhooks/{hook_id}")
    history = page.locator("#deliveries tbody tr")
    expect(history).to_have_count(1)  # one event, however many attempts
    expect(history).not_to_contain_text("pending")
    expect(page.locator("#webhook-events")).to_have_text("thread.succeeded")
    expect(page.locator("#webhook-scope")).to_contain_text("task quick")
    pending = page.locator("#pending tbody tr")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("retry due")
    due = pending.locator("td").first.inner_text()
    assert UI_TIME.match(due), due
    expect(history.locator("td").nth(2)).to_contain_text("2")
    assert page.locator("#deliveries").inner_text().count(thread_id) == 1
    shot(page, "defect06-webhook-1280")
    page.set_viewport_size(PHONE)
    shot(page, "defect06-webhook-390")
    page.goto(f"{server.base}/ui/webhooks")
    expect(page.locator("table")).to_contain_text("task quick (any version)")
    context.close()


# -- 7. schedule runs in the shared time format --------------------------------------------


def test_schedule_runs_use_the_shared_time_format(
    server: Process, api: httpx.Client, browser: Browser
) -> None:
    created = api.post(
        "/schedules",
        params={"task_id": "quick"},
        json={
            "cron": "0 3 1 1 *",
            "timezone": "Europe/Berlin",
            "inputs_template": [{"kind": "json", "value": {}}],
        },
    )
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]
    assert api.post(f"/schedules/{schedule_id}:trigger").status_code < 300
    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/schedules/{schedule_id}")
    cell = page.locator("#runs-h ~ .scroll tbody tr td").first
    assert UI_TIME.match(cell.inner_text().strip()), cell.inner_text()
    assert UI_TIME.match(page.locator("#schedule-last-run").inner_text().strip())
    shot(page, "defect07-schedule-1280")
    page.set_viewport_size(PHONE)
    shot(page, "defect07-schedule-390")
    context.close()


# -- 8. destructive buttons ask first, with or without script ------------------------------


def test_destructive_buttons_lead_to_a_confirmation_page(
    server: Process, api: httpx.Client, browser: Browser, receiver: str
) -> None:
    thread_id = run_thread(api, "quick", name="to be deleted")
    hook_id = api.post("/webhooks", json={"url": f"{receiver}/doomed"}).json()["id"]
    key_id = api.post("/admin/api-keys", json={"name": "doomed key"}).json()["id"]
    assert api.put("/admin/credentials/DOOMED", json={"value": "x"}).status_code < 300
    context, page = new_page(browser, server.base, js=False)

    page.goto(f"{server.base}/ui/threads/{thread_id}")
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading", name="Delete thread to be deleted?")).to_be_visible()
    expect(page.locator("#consequences")).to_contain_text("cannot be undone")
    assert api.get(f"/threads/{thread_id}").status_code == 200  # one click changed nothing
    shot(page, "defect08-confirm-1280")
    page.get_by_role("link", name="Go back").click()
    expect(page.locator("#thread-title")).to_have_text("to be deleted")
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete thread").click()
    expect(page.locator(".notice")).to_have_text("Deleted.")
    assert api.get(f"/threads/{thread_id}").status_code == 404

    page.goto(f"{server.base}/ui/webhooks/{hook_id}")
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("button", name="Delete webhook")).to_be_visible()
    assert api.get(f"/webhooks/{hook_id}").status_code == 200

    page.goto(f"{server.base}/ui/keys")
    page.locator(f'a[href="/ui/keys/{key_id}/revoke"]').click()
    expect(page.get_by_role("heading", name="Revoke the key doomed key?")).to_be_visible()
    keys = api.get("/admin/api-keys", params={"limit": 1000}).json()["items"]
    assert next(k for k in keys if k["id"] == key_id)["revoked_at"] is None
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator(".notice")).to_have_text("Key revoked.")

    schedule = api.post(
        "/schedules",
        params={"task_id": "quick"},
        json={
            "cron": "0 3 1 1 *",
            "timezone": "UTC",
            "inputs_template": [{"kind": "json", "value": {}}],
        },
    )
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["id"]
    page.goto(f"{server.base}/ui/schedules/{schedule_id}")
    page.get_by_role("link", name="Cancel…").click()
    page.get_by_role("button", name="Cancel schedule").click()
    expect(page.locator(".notice")).to_have_text("Schedule canceled.")
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("button", name="Delete schedule")).to_be_visible()
    assert api.get(f"/schedules/{schedule_id}").json()["state"] == "canceled"

    page.goto(f"{server.base}/ui/tasks")
    page.get_by_role("link", name="Undeploy quick:1.0.0").click()
    expect(page.get_by_role("heading", name="Undeploy quick:1.0.0?")).to_be_visible()
    expect(page.get_by_role("button", name="Undeploy 1.0.0")).to_be_visible()
    page.get_by_role("link", name="Go back").click()
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()

    page.goto(f"{server.base}/ui/credentials")
    page.locator('a[href="/ui/credentials/DOOMED/delete"]').click()
    expect(page.get_by_role("button", name="Delete credential")).to_be_visible()
    assert api.get("/admin/credentials/DOOMED").status_code == 200
    page.set_viewport_size(PHONE)
    shot(page, "defect08-confirm-390")
    context.close()


# -- 9. the overview chart -----------------------------------------------------------------


def test_the_overview_chart_has_one_colour_per_state_axes_and_tooltips(
    server: Process, api: httpx.Client, browser: Browser
) -> None:
    run_thread(api, "quick", name="chart ok")
    run_thread(api, "quick", name="chart failed", fail=True)
    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/")
    legend = page.locator("#chart-legend li")
    expect(legend).to_have_count(7)
    colours = page.locator("#chart-legend .swatch").evaluate_all(
        "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert len(set(colours)) == 7, colours
    fills = page.locator("#chart rect[class^=bar-]").evaluate_all(
        "els => els.map(e => [e.getAttribute('class'), getComputedStyle(e).fill])"
    )
    by_state: dict[str, set[str]] = {}
    for cls, fill in fills:
        by_state.setdefault(cls, set()).add(fill)
    assert {"bar-succeeded", "bar-failed"} <= set(by_state)
    assert all(len(f) == 1 for f in by_state.values())
    assert len({next(iter(f)) for f in by_state.values()}) == len(by_state)
    chart = page.locator("#chart")
    expect(chart.locator("text.axis-title")).to_have_count(2)
    expect(chart.locator("text.tick-y").first).to_have_text("0")
    assert chart.locator("text.tick-x").count() >= 4
    titles = chart.locator("rect.bar-failed title").evaluate_all(
        "els => els.map(e => e.textContent)"
    )
    assert titles
    assert all(re.search(r"UTC: \d+ failed of \d+", t) for t in titles), titles
    shot(page, "defect09-overview-1280")
    page.set_viewport_size(PHONE)
    shot(page, "defect09-overview-390")
    context.close()


# -- 10. error pages in the layout ---------------------------------------------------------


def test_error_pages_keep_the_navigation_and_offer_sign_in_only_when_signed_out(
    server: Process, browser: Browser
) -> None:
    context, page = new_page(browser, server.base)
    answer = page.goto(f"{server.base}/ui/no-such-page")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in")).to_have_count(0)
    shot(page, "defect10-404-1280")
    context.close()

    user = browser.new_context(viewport=PHONE)
    page = user.new_page()
    sign_in(page, server.base, USER_KEY, "app1", "user1")
    answer = page.goto(f"{server.base}/ui/keys")
    assert answer is not None
    assert answer.status == 403
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.locator("main")).to_contain_text("This page is for administrators.")
    expect(page.get_by_role("link", name="Sign in")).to_have_count(0)
    shot(page, "defect10-403-390")
    user.close()

    anonymous = browser.new_context()
    page = anonymous.new_page()
    answer = page.goto(f"{server.base}/ui/no-such-page")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    anonymous.close()


# -- 11. retries keep the name and link both ways ------------------------------------------


def test_a_retry_keeps_the_name_and_links_to_its_original(
    server: Process, api: httpx.Client, browser: Browser
) -> None:
    original = run_thread(api, "quick", name="nightly import", fail=True)
    context, page = new_page(browser, server.base)
    page.goto(f"{server.base}/ui/threads/{original}")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r"/ui/threads/thread_[0-9a-f]+\?done=retried$"))
    retry_id = page.url.rsplit("/", 1)[1].split("?")[0]
    assert retry_id != original
    expect(page.locator("#thread-title")).to_have_text("nightly import")
    expect(page.locator(".notice")).to_contain_text("Retry started")
    expect(page.locator("#retry-of a")).to_have_attribute("href", f"/ui/threads/{original}")
    # The retry runs like any thread; a loaded machine may take a while to start its worker.
    expect(page.locator("#thread-state")).to_have_text("failed", timeout=60_000)
    shot(page, "defect11-retry-1280")
    assert api.get(f"/threads/{retry_id}").json()["name"] == "nightly import"

    page.locator("#retry-of a").click()
    page.wait_for_url(f"{server.base}/ui/threads/{original}")
    expect(page.locator(".notice")).to_have_count(0)
    expect(page.locator("#retries a")).to_have_attribute("href", f"/ui/threads/{retry_id}")
    page.set_viewport_size(PHONE)
    shot(page, "defect11-original-390")
    context.close()


# -- screenshots of the other fixed pages at both sizes ------------------------------------


def test_screenshots_of_the_console_at_desktop_and_phone_sizes(
    server: Process, api: httpx.Client, browser: Browser
) -> None:
    thread_id = run_thread(api, "chatty", name="screenshot log", lines=1200, fail=True)
    context, page = new_page(browser, server.base)
    pages = {
        "overview": "/ui/",
        "threads": "/ui/threads",
        "thread-log": f"/ui/threads/{thread_id}",
        "keys": "/ui/keys",
        "webhooks": "/ui/webhooks",
        "tasks": "/ui/tasks",
        "credentials": "/ui/credentials",
        "files": "/ui/files",
        "schedules": "/ui/schedules",
    }
    for size, viewport in (("1280", DESKTOP), ("390", PHONE)):
        page.set_viewport_size(viewport)
        for name, path in pages.items():
            answer = page.goto(f"{server.base}{path}")
            assert answer is not None
            assert answer.status == 200, path
            width = document_width(page)
            assert width <= viewport["width"] + 1, path
            shot(page, f"console-{name}-{size}")
    context.close()
    anonymous = browser.new_context()
    page = anonymous.new_page()
    for size, viewport in (("1280", DESKTOP), ("390", PHONE)):
        page.set_viewport_size(viewport)
        page.goto(f"{server.base}/ui/threads")  # signed out: the sign-in form, then back
        expect(page.locator("#sign-in-next")).to_contain_text("/ui/threads")
        shot(page, f"console-sign-in-{size}")
    anonymous.close()
