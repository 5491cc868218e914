"""End-to-end: the web UI in headless Chromium (Debian's package) driven by Playwright.

A real ``task-framework serve`` runs in a subprocess; a loopback HTTP receiver takes the
webhook deliveries. Screenshots of each page go to ``test-artifacts/screenshots/``.
Locally the test skips when ``/usr/bin/chromium`` is missing; in CI (``CI`` set) it runs.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser_support import CHROMIUM, CHROMIUM_ARGS, shot
from procs import ADMIN_KEY, Process
from task_zips import build_zip

pytestmark = pytest.mark.slow

WAIT_MS = 60_000
HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
HOSTILE_URL_PATH = "/</script><img/src=x/onerror=alert(4)>"

TASK = """\
import time

from task_framework.models.artifact import Artifact


def run(context):
    seconds = float(context.params.get("sleep", 0))
    inputs = context.get_input_artifacts_sync()
    context.logger.warning("working for %s s", seconds)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not context.is_cancelled():
        time.sleep(0.1)
    text = inputs[0].text if inputs and inputs[0].text else "all done"
    context.logger.warning("finished")
    context.publish_output_artifacts_sync([Artifact(kind="text", ref="result", text=text)])
"""

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (/usr/bin/chromium)", allow_module_level=True)

from playwright.sync_api import (  # noqa: E402
    ConsoleMessage,
    Dialog,
    Page,
    expect,
    sync_playwright,
)


class _Hook(BaseHTTPRequestHandler):
    """Answers 500 to the first delivery, 200 afterwards."""

    seen: list[str] = []  # noqa: RUF012 - shared by the handler instances of one test

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.seen.append(self.path)
        status = 500 if len(self.seen) == 1 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Hook.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Process]:
    env = {
        "TASK_FRAMEWORK_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "TASK_FRAMEWORK_WEBHOOK_RETRY_SCHEDULE": "1,1,1",
        "TASK_FRAMEWORK_WORKER_CONCURRENCY": "2",
        "TASK_FRAMEWORK_STOP_GRACE_SECONDS": "1",
    }
    process = Process(tmp_path / "data", [], env=env)
    yield process
    process.stop()


def start_thread(page: Page, base: str, *, name: str, sleep: float, text: str = "hi") -> str:
    page.goto(f"{base}/ui/threads")
    summary = page.locator("summary", has_text="Run a task")
    if page.locator("#new-thread").is_hidden():
        summary.click()
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_label("Inputs (JSON list of artifacts)").fill(
        json.dumps([{"kind": "text", "text": text}])
    )
    page.get_by_label("Params (JSON object, optional)").fill(json.dumps({"sleep": sleep}))
    page.get_by_role("button", name="Start thread").click()
    page.wait_for_url(re.compile(r"/ui/threads/thread_[0-9a-f]+"))
    return page.url.rsplit("/", 1)[1].split("?")[0]


def test_ui_end_to_end(server: Process, receiver: str, tmp_path: Path) -> None:
    base = server.base
    dialogs: list[str] = []
    errors: list[str] = []
    package = tmp_path / "worker-task.zip"
    package.write_bytes(
        build_zip(
            {
                "task_metadata.json": json.dumps(
                    {"name": "worker", "version": "1.0.0", "entry_point": "task:run"}
                ),
                "task.py": TASK,
            }
        )
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(message.text)

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Sign in.
        page.goto(f"{base}/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot(page, "01-sign-in")
        page.get_by_label("API key").fill(ADMIN_KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert page.evaluate("JSON.stringify(window.localStorage)") == "{}"

        # Deploy a zip: upload progress, then the deployment message.
        page.get_by_role("link", name="Tasks").click()
        page.get_by_label("Package (.zip)").set_input_files(str(package))
        page.get_by_role("button", name="Deploy").click()
        expect(page.locator(".upload-status")).to_contain_text(
            "deployed successfully", timeout=180_000
        )
        expect(page.locator(".build-log")).to_contain_text("worker:1.0.0")
        shot(page, "02-tasks-deployed")
        page.wait_for_url("**/ui/tasks?done=created")
        expect(page.get_by_role("cell", name="ready")).to_be_visible()
        shot(page, "03-tasks")

        # Run a thread and watch it finish live; its outputs and logs.
        thread_id = start_thread(page, base, name="first run", sleep=2, text="hello output")
        expect(page.locator("#thread-state")).to_have_text("succeeded", timeout=WAIT_MS)
        expect(page.locator("#outputs")).to_contain_text("hello output")
        expect(page.locator("#log")).to_contain_text("finished")
        shot(page, "04-thread-succeeded")

        # Stop a long thread.
        long_id = start_thread(page, base, name="long run", sleep=120)
        expect(page.locator("#thread-state")).to_have_text("running", timeout=WAIT_MS)
        page.get_by_role("button", name="Stop").click()
        expect(page.locator(".notice")).to_have_text("Stop requested.")
        expect(page.locator("#thread-state")).to_have_text("stopped")
        shot(page, "05-thread-stopped")
        assert long_id != thread_id

        # Thread list with a filter.
        page.goto(f"{base}/ui/threads?state=succeeded")
        expect(page.get_by_role("link", name="first run")).to_be_visible()
        expect(page.get_by_role("link", name="long run")).to_have_count(0)
        shot(page, "06-threads")

        # A schedule with its cron preview, then its next fire times.
        page.goto(f"{base}/ui/schedules")
        page.get_by_label("Cron expression", exact=False).fill("30 9 * * 1-5")
        page.get_by_label("Time zone (IANA name)").fill("Europe/Berlin")
        expect(page.locator("#cron-fires li")).to_have_count(5)
        expect(page.locator("#cron-fires li").first).to_contain_text("09:30")
        shot(page, "07-schedule-preview")
        page.get_by_role("button", name="Create schedule").click()
        expect(page.locator("#next-fires li")).to_have_count(5)
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_text("Schedule paused.")).to_be_visible()
        page.get_by_role("button", name="Run now").click()
        expect(page.get_by_text("A run was started now.")).to_be_visible()
        shot(page, "08-schedule")

        # A webhook: a failed delivery (500), then a successful retry.
        page.goto(f"{base}/ui/webhooks")
        page.get_by_label("Callback URL (http or https)").fill(receiver)
        page.get_by_label("thread.succeeded", exact=True).check()
        page.get_by_role("button", name="Create webhook").click()
        expect(page.locator("#webhook-secret")).to_contain_text("whsec_")
        hook_url = page.url
        start_thread(page, base, name="for the webhook", sleep=0)
        expect(page.locator("#thread-state")).to_have_text("succeeded")
        page.goto(f"{base}/ui/webhooks")
        page.get_by_role("link", name=receiver).click()
        # One row per event: the first one failed (500), then its retry succeeded.
        attempts = page.locator("summary", has_text="All")
        retried = page.locator("#deliveries tbody tr", has=attempts)
        for _ in range(60):
            if retried.locator(".state-success").count():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(retried.locator(".state-success")).to_have_count(1)
        retried.locator("summary", has_text="All").click()
        expect(page.locator("#deliveries .attempts")).to_contain_text("failed, HTTP 500")
        page.get_by_role("button", name="Redeliver").first.click()
        expect(page.get_by_text("A new delivery attempt was queued.")).to_be_visible()
        shot(page, "09-webhook-deliveries")
        assert hook_url.startswith(f"{base}/ui/webhooks")

        # Files: upload with progress, then the list.
        upload = tmp_path / "notes.txt"
        upload.write_text("some notes")
        page.goto(f"{base}/ui/files")
        page.get_by_label("File", exact=True).set_input_files(str(upload))
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url("**/ui/files?done=uploaded")
        expect(page.get_by_role("link", name="notes.txt")).to_be_visible()
        shot(page, "10-files")

        # Hostile values render as text and run nothing.
        hostile = _hostile_objects(base, receiver)
        page.goto(f"{base}/ui/threads/{hostile['thread']}")
        expect(page.locator("#thread-title")).to_have_text(HOSTILE)
        expect(page.locator("#thread-metadata")).to_contain_text(HOSTILE)
        expect(page.locator("#outputs")).to_contain_text(HOSTILE)
        assert page.locator("main img").count() == 0
        shot(page, "11-xss-thread")
        page.goto(f"{base}/ui/webhooks/{hostile['webhook']}")
        expect(page.locator("#webhook-url")).to_contain_text(HOSTILE_URL_PATH)
        assert page.locator("main img").count() == 0
        page.goto(f"{base}/ui/threads")
        expect(page.get_by_role("link", name=HOSTILE)).to_be_visible()
        shot(page, "12-xss-list")

        # Admin pages, overview, and a phone-width view.
        page.goto(f"{base}/ui/keys")
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        shot(page, "13-api-keys")
        page.goto(f"{base}/ui/credentials")
        expect(page.get_by_role("heading", name="Credentials")).to_be_visible()
        shot(page, "14-credentials")
        page.goto(f"{base}/ui/")
        expect(page.get_by_text("Recent failures")).to_be_visible()
        shot(page, "15-overview")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{base}/ui/threads/{thread_id}")
        expect(page.locator("#thread-state")).to_have_text("succeeded")
        shot(page, "16-phone-thread")
        page.set_viewport_size({"width": 1280, "height": 900})

        # Keyboard: the skip link is the first stop and moves focus to the content.
        page.keyboard.press("Tab")
        expect(page.locator(".skip")).to_be_focused()

        # Sign out: the session is gone.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        page.goto(f"{base}/ui/threads")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot(page, "17-signed-out")
        browser.close()
    assert dialogs == [], dialogs
    assert errors == [], errors


def _hostile_objects(base: str, receiver: str) -> dict[str, str]:
    """A thread (name, metadata, output text) and a webhook URL holding markup."""
    headers = {"X-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        thread = client.post(
            "/threads",
            json={
                "mode": "sync",
                "name": HOSTILE,
                "metadata": {"note": HOSTILE},
                "params": {"sleep": 0},
                "inputs": [{"kind": "text", "text": HOSTILE}],
            },
        )
        assert thread.status_code == 201, thread.text
        hook_base = receiver.rsplit("/", 1)[0]
        hook = client.post("/webhooks", json={"url": hook_base + HOSTILE_URL_PATH})
        assert hook.status_code == 201, hook.text
        return {"thread": thread.json()["id"], "webhook": hook.json()["id"]}
