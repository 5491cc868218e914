"""``AsyncClient``: the asyncio client of the task-framework API.

``sync.py`` is generated from this module (``python -m task_framework.client._unasync``);
edit this file and regenerate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from task_framework.client import _ops as ops
from task_framework.client._base import (
    DEFAULT_TIMEOUT_SECONDS,
    DOWNLOAD_CHUNK_BYTES,
    WAIT_POLL_SECONDS,
    ProgressCallback,
    Settings,
    counting_reader,
    target_path,
    upload_source,
)
from task_framework.client.errors import ServerUnreachable, WaitTimeout, error_from_response
from task_framework.client.models import (
    ApiKey,
    Artifact,
    ConfigurationStatus,
    CredentialInfo,
    CredentialUsage,
    DeploymentRecord,
    DownloadUrl,
    FileInfo,
    FileUpload,
    Health,
    LogRecord,
    Page,
    Run,
    Schedule,
    ServerEvent,
    ServerSettings,
    TaskDeployment,
    TaskList,
    TaskMetadata,
    TaskSummary,
    TaskUndeploy,
    TaskVersionInfo,
    Thread,
    UploadUrl,
    Webhook,
    WebhookDelivery,
)

T = TypeVar("T")
Inputs = Iterable[ops.ArtifactLike]


class AsyncClient:
    """Talks to one task-framework server.

    ``base_url`` and ``api_key`` default to ``TASK_FRAMEWORK_URL`` and
    ``TASK_FRAMEWORK_API_KEY``; ``app_id``/``user_id`` (``TASK_FRAMEWORK_APP_ID`` /
    ``TASK_FRAMEWORK_USER_ID``) are sent as the caller identity. ``transport`` lets tests
    talk to an app in-process (``httpx.ASGITransport``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        app_id: str | None = None,
        user_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = Settings.resolve(base_url, api_key, app_id=app_id, user_id=user_id)
        self._http = httpx.AsyncClient(
            base_url=self.settings.base_url,
            headers={**self.settings.headers(), **(headers or {})},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ----------------------------------------------------------------------

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {self.settings.base_url}: {exc}") from exc
        if response.status_code >= 400:
            if stream:
                await response.aread()
                await response.aclose()
            raise error_from_response(response)
        return response

    async def call(self, call: ops.Call[T]) -> T:
        """Send one operation and parse its answer (raises ApiError on an error status)."""
        request = self._http.build_request(
            call.method, call.path, params=call.params, json=call.json
        )
        return call.parse(await self._send(request))

    async def _pages(
        self, make: Callable[..., ops.Call[Page[Any]]], page_size: int, **filters: Any
    ) -> AsyncIterator[Any]:
        cursor = None
        while True:
            result = await self.call(make(**filters, limit=page_size, cursor=cursor))
            for item in result.items:
                yield item
            if not result.has_more or not result.cursor:
                return
            cursor = result.cursor

    # -- system ------------------------------------------------------------------------

    async def health(self) -> Health:
        return await self.call(ops.health())

    async def task_metadata(
        self, task_id: str | None = None, version: str | None = None
    ) -> TaskMetadata:
        return await self.call(ops.task_metadata(task_id, version))

    async def metrics_text(self) -> str:
        return (await self._send(self._http.build_request("GET", "/metrics"))).text

    # -- threads -----------------------------------------------------------------------

    async def _create_thread(
        self, mode: str, inputs: Inputs, task_id: str | None, version: str | None, **fields: Any
    ) -> Thread:
        payload = ops.body(mode=mode, inputs=ops.artifacts(inputs), **fields)
        selection = ops.query(task_id=task_id, version=version)
        return await self.call(
            ops.Call("POST", "/threads", ops.one(Thread), selection, json=payload)
        )

    async def run(
        self,
        inputs: Inputs,
        *,
        task_id: str | None = None,
        version: str | None = None,
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        timeout_seconds: int | None = None,
        idempotency_key: str | None = None,
        webhooks: list[Mapping[str, Any]] | None = None,
    ) -> Thread:
        """Run a thread in sync mode: the server answers once it is final."""
        return await self._create_thread(
            "sync",
            inputs,
            task_id,
            version,
            params=params,
            metadata=metadata,
            name=name,
            timeout_seconds=timeout_seconds,
            idempotency_key=idempotency_key,
            webhooks=webhooks,
        )

    async def start(
        self,
        inputs: Inputs,
        *,
        task_id: str | None = None,
        version: str | None = None,
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        timeout_seconds: int | None = None,
        idempotency_key: str | None = None,
        webhooks: list[Mapping[str, Any]] | None = None,
    ) -> Thread:
        """Queue a thread (async mode) and return it at once; see :meth:`wait`."""
        return await self._create_thread(
            "async",
            inputs,
            task_id,
            version,
            params=params,
            metadata=metadata,
            name=name,
            timeout_seconds=timeout_seconds,
            idempotency_key=idempotency_key,
            webhooks=webhooks,
        )

    async def wait(
        self,
        thread_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
        poll_interval: float = WAIT_POLL_SECONDS,
        on_update: Callable[[Thread], None] | None = None,
    ) -> Thread:
        """Poll until the thread is final; WaitTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            thread = await self.get_thread(thread_id)
            if on_update is not None:
                on_update(thread)
            if thread.is_terminal:
                return thread
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(thread_id, timeout or 0)
            await asyncio.sleep(poll_interval)

    async def get_thread(self, thread_id: str) -> Thread:
        return await self.call(ops.get_thread(thread_id))

    async def list_threads(self, **filters: Any) -> Page[Thread]:
        """One page; filters as in API.md §3.2 (``state``, ``task_id``, ``limit``, …)."""
        return await self.call(ops.list_threads(**filters))

    def iter_threads(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[Thread]:
        """Every matching thread, page after page."""
        return self._pages(ops.list_threads, page_size, **filters)

    async def stop_thread(self, thread_id: str) -> Thread:
        return await self.call(ops.stop_thread(thread_id))

    async def retry_thread(
        self, thread_id: str, *, mode: str = "sync", preserve_run_id: bool = False
    ) -> Thread:
        return await self.call(
            ops.retry_thread(thread_id, mode=mode, preserve_run_id=preserve_run_id)
        )

    async def delete_thread(self, thread_id: str) -> None:
        await self.call(ops.delete_thread(thread_id))

    async def thread_artifacts(self, thread_id: str, **filters: Any) -> Page[Artifact]:
        return await self.call(ops.thread_artifacts(thread_id, **filters))

    def iter_thread_artifacts(
        self, thread_id: str, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[Artifact]:
        return self._pages(ops.thread_artifacts, page_size, thread_id=thread_id, **filters)

    async def thread_logs(self, thread_id: str, **filters: Any) -> Page[LogRecord]:
        return await self.call(ops.thread_logs(thread_id, **filters))

    def iter_thread_logs(
        self, thread_id: str, *, page_size: int = 1000, **filters: Any
    ) -> AsyncIterator[LogRecord]:
        return self._pages(ops.thread_logs, page_size, thread_id=thread_id, **filters)

    async def _sse(
        self, path: str, params: Mapping[str, Any], after: str | None
    ) -> AsyncIterator[ServerEvent]:
        request = self._http.build_request(
            "GET", path, params=params, headers=ops.stream_headers(after), timeout=None
        )
        response = await self._send(request, stream=True)
        decoder = ops.SSEDecoder()
        try:
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event
        finally:
            await response.aclose()

    def stream_events(
        self, thread_id: str, *, after: str | None = None
    ) -> AsyncIterator[ServerEvent]:
        """The thread's events and log lines (SSE) until it is final; resume with ``after``."""
        return self._sse(f"/threads/{thread_id}/events", {}, after)

    def follow_logs(
        self, thread_id: str, *, after: str | None = None, stream: str | None = None
    ) -> AsyncIterator[ServerEvent]:
        """Log records as they are written, until the thread is final."""
        params = ops.query(follow=True, stream=stream)
        return self._sse(f"/threads/{thread_id}/logs", params, after)

    # -- artifacts ---------------------------------------------------------------------

    async def list_artifacts(self, **filters: Any) -> Page[Artifact]:
        return await self.call(ops.list_artifacts(**filters))

    def iter_artifacts(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[Artifact]:
        return self._pages(ops.list_artifacts, page_size, **filters)

    async def get_artifact(self, artifact_id: str) -> Artifact:
        return await self.call(ops.get_artifact(artifact_id))

    async def delete_artifact(self, artifact_id: str) -> None:
        await self.call(ops.delete_artifact(artifact_id))

    async def archive_artifact(self, artifact_id: str) -> Artifact:
        return await self.call(ops.archive_artifact(artifact_id))

    async def artifact_download_url(
        self, artifact_id: str, *, expires_in: int | None = None
    ) -> DownloadUrl:
        return await self.call(ops.artifact_download_url(artifact_id, expires_in))

    # -- files -------------------------------------------------------------------------

    async def upload_file(
        self,
        source: str | Path | bytes | IO[bytes],
        *,
        filename: str | None = None,
        media_type: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> FileUpload:
        """Upload bytes, a path or a binary file object; streamed, with progress."""
        handle, name, size, owned = upload_source(source, filename)
        try:
            reader = counting_reader(handle, size, progress)
            form = {"media_type": media_type} if media_type else {}
            part = (name, reader, media_type or "application/octet-stream")
            request = self._http.build_request(
                "POST", "/files", files={"file": part}, data=form, timeout=None
            )
            return FileUpload.model_validate((await self._send(request)).json())
        finally:
            if owned:
                handle.close()

    async def create_upload(
        self,
        size: int,
        *,
        media_type: str = "application/octet-stream",
        filename: str | None = None,
        expires_in: int | None = None,
    ) -> UploadUrl:
        """Reserve a file ref and get a pre-signed PUT URL for it."""
        return await self.call(
            ops.create_upload(
                size=size, media_type=media_type, filename=filename, expires_in=expires_in
            )
        )

    async def list_files(self, **filters: Any) -> Page[FileInfo]:
        return await self.call(ops.list_files(**filters))

    def iter_files(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[FileInfo]:
        return self._pages(ops.list_files, page_size, **filters)

    async def delete_file(self, file_ref: str) -> None:
        await self.call(ops.delete_file(file_ref))

    async def iter_bytes(
        self, path: str, *, progress: ProgressCallback | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a download route's body in chunks (``/files/…``, package downloads)."""
        response = await self._send(
            self._http.build_request("GET", path, timeout=None), stream=True
        )
        try:
            async for chunk in self._chunks(response, progress):
                yield chunk
        finally:
            await response.aclose()

    async def _chunks(
        self, response: httpx.Response, progress: ProgressCallback | None
    ) -> AsyncIterator[bytes]:
        total = int(response.headers.get("content-length") or 0) or None
        done = 0
        async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            yield chunk

    async def read_file(self, file_ref: str) -> bytes:
        """A file's bytes, in memory."""
        data = bytearray()
        async for chunk in self.iter_bytes(f"/files/{file_ref}"):
            data += chunk
        return bytes(data)

    async def download_file(
        self, file_ref: str, dest: str | Path, *, progress: ProgressCallback | None = None
    ) -> Path:
        """Save a file to ``dest`` (a folder keeps the server's filename); streamed."""
        return await self._save(f"/files/{file_ref}", dest, file_ref, progress)

    async def _save(
        self, path: str, dest: str | Path, fallback: str, progress: ProgressCallback | None
    ) -> Path:
        response = await self._send(
            self._http.build_request("GET", path, timeout=None), stream=True
        )
        try:
            disposition = response.headers.get("content-disposition")
            target = target_path(Path(dest), disposition, fallback)
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as out:
                async for chunk in self._chunks(response, progress):
                    out.write(chunk)
        finally:
            await response.aclose()
        partial.replace(target)
        return target

    # -- tasks (admin) -----------------------------------------------------------------

    async def deploy_task(
        self,
        package: str | Path,
        *,
        force: bool = False,
        progress: ProgressCallback | None = None,
    ) -> TaskDeployment:
        """Upload a package zip (``POST /admin/tasks``); returns once it is installed."""
        handle, name, size, _ = upload_source(Path(package), None)
        with handle:
            reader = counting_reader(handle, size, progress)
            request = self._http.build_request(
                "POST",
                "/admin/tasks",
                params=ops.query(force=force or None),
                files={"file": (name, reader, "application/zip")},
                timeout=None,
            )
            return ops.deploy_result(await self._send(request))

    async def list_tasks(self) -> TaskList:
        return await self.call(ops.list_tasks())

    async def get_task(self, task_id: str) -> TaskSummary:
        return await self.call(ops.get_task(task_id))

    async def task_versions(self, task_id: str) -> list[TaskVersionInfo]:
        return await self.call(ops.task_versions(task_id))

    async def get_task_version(self, task_id: str, version: str) -> TaskVersionInfo:
        return await self.call(ops.get_task_version(task_id, version))

    async def delete_task(self, task_id: str, version: str | None = None) -> TaskUndeploy:
        """Undeploy one version, or every version when ``version`` is None."""
        return await self.call(ops.delete_task(task_id, version))

    async def deployment_history(self) -> list[DeploymentRecord]:
        return await self.call(ops.deployment_history())

    async def download_task(
        self,
        task_id: str,
        dest: str | Path,
        *,
        version: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Save a deployed package zip (the latest version unless ``version``)."""
        fallback = f"{task_id}-{version or 'latest'}.zip"
        return await self._save(ops.task_download_path(task_id, version), dest, fallback, progress)

    async def get_task_config(self, task_id: str, version: str) -> ConfigurationStatus:
        return await self.call(ops.get_task_config(task_id, version))

    async def set_task_config(
        self, task_id: str, version: str, values: Mapping[str, Any]
    ) -> ConfigurationStatus:
        return await self.call(ops.set_task_config(task_id, version, values))

    async def delete_task_config(self, task_id: str, version: str) -> dict[str, Any]:
        return await self.call(ops.delete_task_config(task_id, version))

    # -- schedules ---------------------------------------------------------------------

    async def create_schedule(
        self,
        *,
        cron: str,
        inputs_template: Inputs,
        timezone: str = "UTC",
        task_id: str | None = None,
        task_version: str | None = None,
        **fields: Any,
    ) -> Schedule:
        """Create a schedule; other fields (``params``, ``concurrency_policy``, …) by name."""
        payload = ops.body(
            cron=cron,
            timezone=timezone,
            inputs_template=ops.artifacts(inputs_template),
            task_id=task_id,
            task_version=task_version,
            **fields,
        )
        return await self.call(ops.create_schedule(payload))

    async def list_schedules(self, **filters: Any) -> Page[Schedule]:
        return await self.call(ops.list_schedules(**filters))

    def iter_schedules(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[Schedule]:
        return self._pages(ops.list_schedules, page_size, **filters)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self.call(ops.get_schedule(schedule_id))

    async def update_schedule(self, schedule_id: str, **changes: Any) -> Schedule:
        if "inputs_template" in changes:
            changes["inputs_template"] = ops.artifacts(changes["inputs_template"])
        return await self.call(ops.update_schedule(schedule_id, ops.body(**changes)))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self.call(ops.delete_schedule(schedule_id))

    async def cancel_schedule(self, schedule_id: str) -> Schedule:
        return await self.call(ops.cancel_schedule(schedule_id))

    async def trigger_schedule(self, schedule_id: str) -> Run:
        return await self.call(ops.trigger_schedule(schedule_id))

    async def list_runs(self, schedule_id: str, **filters: Any) -> Page[Run]:
        return await self.call(ops.list_runs(schedule_id, **filters))

    def iter_runs(
        self, schedule_id: str, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[Run]:
        return self._pages(ops.list_runs, page_size, schedule_id=schedule_id, **filters)

    async def get_run(self, schedule_id: str, run_id: str) -> Run:
        return await self.call(ops.get_run(schedule_id, run_id))

    # -- webhooks ----------------------------------------------------------------------

    async def create_webhook(self, url: str, **fields: Any) -> Webhook:
        """Create a webhook; the response is the only one that carries its ``secret``."""
        return await self.call(ops.create_webhook(ops.body(url=url, **fields)))

    async def list_webhooks(self, **filters: Any) -> Page[Webhook]:
        return await self.call(ops.list_webhooks(**filters))

    def iter_webhooks(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[Webhook]:
        return self._pages(ops.list_webhooks, page_size, **filters)

    async def get_webhook(self, webhook_id: str) -> Webhook:
        return await self.call(ops.get_webhook(webhook_id))

    async def update_webhook(self, webhook_id: str, **changes: Any) -> Webhook:
        return await self.call(ops.update_webhook(webhook_id, ops.body(**changes)))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.call(ops.delete_webhook(webhook_id))

    async def regenerate_webhook_secret(self, webhook_id: str) -> Webhook:
        return await self.call(ops.regenerate_webhook_secret(webhook_id))

    async def list_deliveries(self, webhook_id: str, **filters: Any) -> Page[WebhookDelivery]:
        return await self.call(ops.list_deliveries(webhook_id, **filters))

    def iter_deliveries(
        self, webhook_id: str, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[WebhookDelivery]:
        return self._pages(ops.list_deliveries, page_size, webhook_id=webhook_id, **filters)

    async def get_delivery(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        return await self.call(ops.get_delivery(webhook_id, delivery_id))

    async def redeliver(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        return await self.call(ops.redeliver(webhook_id, delivery_id))

    # -- credentials, keys, settings (admin) -------------------------------------------

    async def list_credentials(self) -> list[CredentialInfo]:
        return await self.call(ops.list_credentials())

    async def get_credential(self, name: str) -> CredentialInfo:
        return await self.call(ops.get_credential(name))

    async def put_credential(self, name: str, **fields: Any) -> CredentialInfo:
        """Create or update: ``value``, ``description``, ``tags``, ``expires_at``."""
        return await self.call(ops.put_credential(name, ops.body(**fields)))

    async def delete_credential(self, name: str) -> dict[str, Any]:
        return await self.call(ops.delete_credential(name))

    async def reveal_credential(self, name: str) -> str:
        return await self.call(ops.reveal_credential(name))

    async def credential_usage(self, name: str) -> CredentialUsage:
        return await self.call(ops.credential_usage(name))

    async def create_api_key(self, name: str, **fields: Any) -> ApiKey:
        """A managed key (``role``, ``app_id``, ``user_id``, ``expires_at``); ``.key`` is
        the secret, shown only here."""
        return await self.call(ops.create_api_key(ops.body(name=name, **fields)))

    async def list_api_keys(self, **filters: Any) -> Page[ApiKey]:
        return await self.call(ops.list_api_keys(**filters))

    def iter_api_keys(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[ApiKey]:
        return self._pages(ops.list_api_keys, page_size, **filters)

    async def revoke_api_key(self, key_id: str) -> None:
        await self.call(ops.revoke_api_key(key_id))

    async def get_settings(self) -> ServerSettings:
        return await self.call(ops.get_settings())

    async def update_settings(self, *, max_concurrent_threads: int) -> ServerSettings:
        return await self.call(ops.update_settings(max_concurrent_threads))


__all__ = ["AsyncClient"]
