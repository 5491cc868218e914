"""``task_framework.client`` against a real app: AsyncClient in-process, Client over loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, ServerFactory
from loopback import serve_loopback
from task_framework.client import ApiError, AsyncClient, Client, ServerUnreachable
from task_framework.client.models import Thread


def async_client(server: Server, **identity: Any) -> AsyncClient:
    return AsyncClient(
        "http://testserver",
        server.user_key,
        app_id=identity.get("app_id", "app1"),
        user_id=identity.get("user_id", "user1"),
        transport=httpx.ASGITransport(app=server.app),
    )


async def test_async_client_threads_events_files_and_errors(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server()
    async with async_client(server) as tf:
        done = await tf.run([{"kind": "json", "value": {"name": "Ada"}}], params={"p": 1})
        assert isinstance(done, Thread)
        assert done.state == "succeeded"
        greeting = done.output("greeting")
        assert greeting is not None
        assert greeting.value == {"greeting": "Hello, Ada!"}

        queued = await tf.start([{"kind": "json", "value": {"name": "Bo"}}], name="batch-1")
        assert queued.state in ("queued", "running")
        seen: list[str] = []
        final = await tf.wait(queued.id, timeout=60, on_update=lambda t: seen.append(t.state))
        assert final.succeeded
        assert seen[-1] == "succeeded"

        events = [e async for e in tf.stream_events(final.id)]
        assert events[-1].event == "thread.succeeded"
        assert events[-1].is_terminal
        assert any(e.is_log and "greeting Bo" in e.data["message"] for e in events)
        resumed = [e async for e in tf.stream_events(final.id, after=events[1].id)]
        assert [e.id for e in resumed] == [e.id for e in events[2:]]
        logs = [e async for e in tf.follow_logs(final.id)]
        assert [e.data["seq"] for e in logs] == [r.seq async for r in tf.iter_thread_logs(final.id)]

        # Pagination iterators walk every page.
        names = [t.name async for t in tf.iter_threads(page_size=1)]
        assert len(names) == 2
        assert "batch-1" in names
        page = await tf.list_threads(limit=1)
        assert page.total == 2
        assert page.has_more
        assert page.cursor
        outputs = [a async for a in tf.iter_thread_artifacts(done.id, direction="output")]
        assert {a.ref for a in outputs} == {"greeting", "greeting.txt"}

        # Files: streamed upload and download with progress callbacks.
        payload = os.urandom(300_000)
        up_progress: list[tuple[int, int | None]] = []
        uploaded = await tf.upload_file(
            payload,
            filename="blob.bin",
            progress=lambda done, total: up_progress.append((done, total)),
        )
        assert uploaded.size == len(payload)
        assert up_progress[-1] == (len(payload), len(payload))
        down_progress: list[int] = []
        saved = await tf.download_file(
            uploaded.file_ref, tmp_path, progress=lambda done, _t: down_progress.append(done)
        )
        assert saved == tmp_path / "blob.bin"
        assert saved.read_bytes() == payload
        assert down_progress[-1] == len(payload)
        assert await tf.read_file(uploaded.file_ref) == payload
        assert uploaded.file_ref in [f.file_ref async for f in tf.iter_files()]
        await tf.delete_file(uploaded.file_ref)

        # Errors carry the API's status and code.
        with pytest.raises(ApiError) as missing:
            await tf.get_thread("thread_" + "0" * 32)
        assert (missing.value.status, missing.value.code) == (404, "THREAD_NOT_FOUND")
        with pytest.raises(ApiError) as invalid:
            await tf.stop_thread(done.id)
        assert invalid.value.code == "THREAD_INVALID_STATE"

    async with AsyncClient(
        "http://testserver", "tfk_wrong", transport=httpx.ASGITransport(app=server.app)
    ) as wrong:
        with pytest.raises(ApiError) as denied:
            await wrong.list_threads()
        assert denied.value.status == 401
        assert denied.value.is_auth_error
    async with AsyncClient("http://127.0.0.1:9", "k", timeout=2) as nowhere:
        with pytest.raises(ServerUnreachable):
            await nowhere.health()


async def test_async_client_admin_resources(make_server: ServerFactory) -> None:
    server = await make_server()
    transport = httpx.ASGITransport(app=server.app)
    async with AsyncClient("http://testserver", server.admin_key, transport=transport) as admin:
        assert (await admin.health()).status == "ok"
        assert (await admin.task_metadata()).name == "hello"
        assert "task_framework_api_requests_total" in await admin.metrics_text()

        key = await admin.create_api_key("ci", app_id="app9", user_id="u9")
        assert key.key
        assert key.key.startswith("tfk_")
        assert key.id in [k.id async for k in admin.iter_api_keys()]
        await admin.revoke_api_key(key.id)
        with pytest.raises(ApiError) as gone:
            await admin.revoke_api_key("apikey_" + "0" * 32)
        assert gone.value.code == "API_KEY_NOT_FOUND"

        info = await admin.put_credential("TOKEN", value="s3cret-value", tags=["ci"])
        assert info.has_value
        assert info.value_preview.endswith("alue")
        assert await admin.reveal_credential("TOKEN") == "s3cret-value"
        assert [c.name for c in await admin.list_credentials()] == ["TOKEN"]
        assert (await admin.credential_usage("TOKEN")).used_by == []
        await admin.delete_credential("TOKEN")

        settings = await admin.update_settings(max_concurrent_threads=3)
        assert (
            (await admin.get_settings()).max_concurrent_threads
            == settings.max_concurrent_threads
            == 3
        )

    async with async_client(server) as tf:
        schedule = await tf.create_schedule(
            cron="0 3 * * *", inputs_template=[{"kind": "json", "value": {}}], timezone="UTC"
        )
        assert schedule.state == "active"
        assert schedule.task_id == "hello"
        paused = await tf.update_schedule(schedule.id, state="paused")
        assert paused.state == "paused"
        run = await tf.trigger_schedule(schedule.id)
        assert run.labels == {"trigger": "manual"}
        assert [r.run_id async for r in tf.iter_runs(schedule.id)] == [run.run_id]
        assert (await tf.get_run(schedule.id, run.run_id)).schedule_id == schedule.id
        assert (await tf.cancel_schedule(schedule.id)).state == "canceled"
        await tf.delete_schedule(schedule.id)
        with pytest.raises(ApiError) as no_schedule:
            await tf.get_schedule(schedule.id)
        assert no_schedule.value.code == "SCHEDULE_NOT_FOUND"

        with pytest.raises(ApiError) as blocked:
            await tf.create_webhook("http://127.0.0.1:9/hook")
        assert blocked.value.code == "WEBHOOK_INVALID_URL"


async def test_sync_client(make_server: ServerFactory) -> None:
    """The blocking client over loopback. The how-to's examples run as scripts in
    tests/docs."""
    server = await make_server()
    async with serve_loopback(server.app) as base:

        def blocking() -> Thread:
            with Client(base, server.user_key, app_id="app1", user_id="user1") as tf:
                thread = tf.start([{"kind": "json", "value": {"name": "Sync"}}])
                final = tf.wait(thread.id, timeout=60)
                assert [e.event for e in tf.stream_events(final.id)][-1] == "thread.succeeded"
                assert tf.get_thread(final.id).id == final.id
                return final

        final = await asyncio.to_thread(blocking)
        assert final.succeeded
