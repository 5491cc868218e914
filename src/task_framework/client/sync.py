"""``Client``: the blocking client of the task-framework API.

Generated from ``aio.py`` by ``python -m task_framework.client._unasync``: edit
``aio.py`` and regenerate, never this file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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


class Client:
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
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = Settings.resolve(base_url, api_key, app_id=app_id, user_id=user_id)
        self._http = httpx.Client(
            base_url=self.settings.base_url,
            headers={**self.settings.headers(), **(headers or {})},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {self.settings.base_url}: {exc}") from exc
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise error_from_response(response)
        return response

    def call(self, call: ops.Call[T]) -> T:
        """Send one operation and parse its answer (raises ApiError on an error status)."""
        request = self._http.build_request(
            call.method, call.path, params=call.params, json=call.json
        )
        return call.parse(self._send(request))

    def _pages(
        self, make: Callable[..., ops.Call[Page[Any]]], page_size: int, **filters: Any
    ) -> Iterator[Any]:
        cursor = None
        while True:
            result = self.call(make(**filters, limit=page_size, cursor=cursor))
            yield from result.items
            if not result.has_more or not result.cursor:
                return
            cursor = result.cursor

    # -- system ------------------------------------------------------------------------

    def health(self) -> Health:
        return self.call(ops.health())

    def task_metadata(self, task_id: str | None = None, version: str | None = None) -> TaskMetadata:
        return self.call(ops.task_metadata(task_id, version))

    def metrics_text(self) -> str:
        return (self._send(self._http.build_request("GET", "/metrics"))).text

    # -- threads -----------------------------------------------------------------------

    def _create_thread(
        self, mode: str, inputs: Inputs, task_id: str | None, version: str | None, **fields: Any
    ) -> Thread:
        payload = ops.body(mode=mode, inputs=ops.artifacts(inputs), **fields)
        selection = ops.query(task_id=task_id, version=version)
        return self.call(ops.Call("POST", "/threads", ops.one(Thread), selection, json=payload))

    def run(
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
        return self._create_thread(
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

    def start(
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
        return self._create_thread(
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

    def wait(
        self,
        thread_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = WAIT_POLL_SECONDS,
        on_update: Callable[[Thread], None] | None = None,
    ) -> Thread:
        """Poll until the thread is final; WaitTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            thread = self.get_thread(thread_id)
            if on_update is not None:
                on_update(thread)
            if thread.is_terminal:
                return thread
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(thread_id, timeout or 0)
            time.sleep(poll_interval)

    def get_thread(self, thread_id: str) -> Thread:
        return self.call(ops.get_thread(thread_id))

    def list_threads(self, **filters: Any) -> Page[Thread]:
        """One page; filters as in API.md §3.2 (``state``, ``task_id``, ``limit``, …)."""
        return self.call(ops.list_threads(**filters))

    def iter_threads(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[Thread]:
        """Every matching thread, page after page."""
        return self._pages(ops.list_threads, page_size, **filters)

    def stop_thread(self, thread_id: str) -> Thread:
        return self.call(ops.stop_thread(thread_id))

    def retry_thread(
        self, thread_id: str, *, mode: str = "sync", preserve_run_id: bool = False
    ) -> Thread:
        return self.call(ops.retry_thread(thread_id, mode=mode, preserve_run_id=preserve_run_id))

    def delete_thread(self, thread_id: str) -> None:
        self.call(ops.delete_thread(thread_id))

    def thread_artifacts(self, thread_id: str, **filters: Any) -> Page[Artifact]:
        return self.call(ops.thread_artifacts(thread_id, **filters))

    def iter_thread_artifacts(
        self, thread_id: str, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[Artifact]:
        return self._pages(ops.thread_artifacts, page_size, thread_id=thread_id, **filters)

    def thread_logs(self, thread_id: str, **filters: Any) -> Page[LogRecord]:
        return self.call(ops.thread_logs(thread_id, **filters))

    def iter_thread_logs(
        self, thread_id: str, *, page_size: int = 1000, **filters: Any
    ) -> Iterator[LogRecord]:
        return self._pages(ops.thread_logs, page_size, thread_id=thread_id, **filters)

    def _sse(
        self, path: str, params: Mapping[str, Any], after: str | None
    ) -> Iterator[ServerEvent]:
        request = self._http.build_request(
            "GET", path, params=params, headers=ops.stream_headers(after), timeout=None
        )
        response = self._send(request, stream=True)
        decoder = ops.SSEDecoder()
        try:
            for line in response.iter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event
        finally:
            response.close()

    def stream_events(self, thread_id: str, *, after: str | None = None) -> Iterator[ServerEvent]:
        """The thread's events and log lines (SSE) until it is final; resume with ``after``."""
        return self._sse(f"/threads/{thread_id}/events", {}, after)

    def follow_logs(
        self, thread_id: str, *, after: str | None = None, stream: str | None = None
    ) -> Iterator[ServerEvent]:
        """Log records as they are written, until the thread is final."""
        params = ops.query(follow=True, stream=stream)
        return self._sse(f"/threads/{thread_id}/logs", params, after)

    # -- artifacts ---------------------------------------------------------------------

    def list_artifacts(self, **filters: Any) -> Page[Artifact]:
        return self.call(ops.list_artifacts(**filters))

    def iter_artifacts(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[Artifact]:
        return self._pages(ops.list_artifacts, page_size, **filters)

    def get_artifact(self, artifact_id: str) -> Artifact:
        return self.call(ops.get_artifact(artifact_id))

    def delete_artifact(self, artifact_id: str) -> None:
        self.call(ops.delete_artifact(artifact_id))

    def archive_artifact(self, artifact_id: str) -> Artifact:
        return self.call(ops.archive_artifact(artifact_id))

    def artifact_download_url(
        self, artifact_id: str, *, expires_in: int | None = None
    ) -> DownloadUrl:
        return self.call(ops.artifact_download_url(artifact_id, expires_in))

    # -- files -------------------------------------------------------------------------

    def upload_file(
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
            return FileUpload.model_validate((self._send(request)).json())
        finally:
            if owned:
                handle.close()

    def create_upload(
        self,
        size: int,
        *,
        media_type: str = "application/octet-stream",
        filename: str | None = None,
        expires_in: int | None = None,
    ) -> UploadUrl:
        """Reserve a file ref and get a pre-signed PUT URL for it."""
        return self.call(
            ops.create_upload(
                size=size, media_type=media_type, filename=filename, expires_in=expires_in
            )
        )

    def list_files(self, **filters: Any) -> Page[FileInfo]:
        return self.call(ops.list_files(**filters))

    def iter_files(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[FileInfo]:
        return self._pages(ops.list_files, page_size, **filters)

    def delete_file(self, file_ref: str) -> None:
        self.call(ops.delete_file(file_ref))

    def iter_bytes(self, path: str, *, progress: ProgressCallback | None = None) -> Iterator[bytes]:
        """Stream a download route's body in chunks (``/files/…``, package downloads)."""
        response = self._send(self._http.build_request("GET", path, timeout=None), stream=True)
        try:
            yield from self._chunks(response, progress)
        finally:
            response.close()

    def _chunks(
        self, response: httpx.Response, progress: ProgressCallback | None
    ) -> Iterator[bytes]:
        total = int(response.headers.get("content-length") or 0) or None
        done = 0
        for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            yield chunk

    def read_file(self, file_ref: str) -> bytes:
        """A file's bytes, in memory."""
        data = bytearray()
        for chunk in self.iter_bytes(f"/files/{file_ref}"):
            data += chunk
        return bytes(data)

    def download_file(
        self, file_ref: str, dest: str | Path, *, progress: ProgressCallback | None = None
    ) -> Path:
        """Save a file to ``dest`` (a folder keeps the server's filename); streamed."""
        return self._save(f"/files/{file_ref}", dest, file_ref, progress)

    def _save(
        self, path: str, dest: str | Path, fallback: str, progress: ProgressCallback | None
    ) -> Path:
        response = self._send(self._http.build_request("GET", path, timeout=None), stream=True)
        try:
            disposition = response.headers.get("content-disposition")
            target = target_path(Path(dest), disposition, fallback)
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as out:
                for chunk in self._chunks(response, progress):
                    out.write(chunk)
        finally:
            response.close()
        partial.replace(target)
        return target

    # -- tasks (admin) -----------------------------------------------------------------

    def deploy_task(
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
            return ops.deploy_result(self._send(request))

    def list_tasks(self) -> TaskList:
        return self.call(ops.list_tasks())

    def get_task(self, task_id: str) -> TaskSummary:
        return self.call(ops.get_task(task_id))

    def task_versions(self, task_id: str) -> list[TaskVersionInfo]:
        return self.call(ops.task_versions(task_id))

    def get_task_version(self, task_id: str, version: str) -> TaskVersionInfo:
        return self.call(ops.get_task_version(task_id, version))

    def delete_task(self, task_id: str, version: str | None = None) -> TaskUndeploy:
        """Undeploy one version, or every version when ``version`` is None."""
        return self.call(ops.delete_task(task_id, version))

    def deployment_history(self) -> list[DeploymentRecord]:
        return self.call(ops.deployment_history())

    def download_task(
        self,
        task_id: str,
        dest: str | Path,
        *,
        version: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Save a deployed package zip (the latest version unless ``version``)."""
        fallback = f"{task_id}-{version or 'latest'}.zip"
        return self._save(ops.task_download_path(task_id, version), dest, fallback, progress)

    def get_task_config(self, task_id: str, version: str) -> ConfigurationStatus:
        return self.call(ops.get_task_config(task_id, version))

    def set_task_config(
        self, task_id: str, version: str, values: Mapping[str, Any]
    ) -> ConfigurationStatus:
        return self.call(ops.set_task_config(task_id, version, values))

    def delete_task_config(self, task_id: str, version: str) -> dict[str, Any]:
        return self.call(ops.delete_task_config(task_id, version))

    # -- schedules ---------------------------------------------------------------------

    def create_schedule(
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
        return self.call(ops.create_schedule(payload))

    def list_schedules(self, **filters: Any) -> Page[Schedule]:
        return self.call(ops.list_schedules(**filters))

    def iter_schedules(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[Schedule]:
        return self._pages(ops.list_schedules, page_size, **filters)

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self.call(ops.get_schedule(schedule_id))

    def update_schedule(self, schedule_id: str, **changes: Any) -> Schedule:
        if "inputs_template" in changes:
            changes["inputs_template"] = ops.artifacts(changes["inputs_template"])
        return self.call(ops.update_schedule(schedule_id, ops.body(**changes)))

    def delete_schedule(self, schedule_id: str) -> None:
        self.call(ops.delete_schedule(schedule_id))

    def cancel_schedule(self, schedule_id: str) -> Schedule:
        return self.call(ops.cancel_schedule(schedule_id))

    def trigger_schedule(self, schedule_id: str) -> Run:
        return self.call(ops.trigger_schedule(schedule_id))

    def list_runs(self, schedule_id: str, **filters: Any) -> Page[Run]:
        return self.call(ops.list_runs(schedule_id, **filters))

    def iter_runs(
        self, schedule_id: str, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[Run]:
        return self._pages(ops.list_runs, page_size, schedule_id=schedule_id, **filters)

    def get_run(self, schedule_id: str, run_id: str) -> Run:
        return self.call(ops.get_run(schedule_id, run_id))

    # -- webhooks ----------------------------------------------------------------------

    def create_webhook(self, url: str, **fields: Any) -> Webhook:
        """Create a webhook; the response is the only one that carries its ``secret``."""
        return self.call(ops.create_webhook(ops.body(url=url, **fields)))

    def list_webhooks(self, **filters: Any) -> Page[Webhook]:
        return self.call(ops.list_webhooks(**filters))

    def iter_webhooks(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[Webhook]:
        return self._pages(ops.list_webhooks, page_size, **filters)

    def get_webhook(self, webhook_id: str) -> Webhook:
        return self.call(ops.get_webhook(webhook_id))

    def update_webhook(self, webhook_id: str, **changes: Any) -> Webhook:
        return self.call(ops.update_webhook(webhook_id, ops.body(**changes)))

    def delete_webhook(self, webhook_id: str) -> None:
        self.call(ops.delete_webhook(webhook_id))

    def regenerate_webhook_secret(self, webhook_id: str) -> Webhook:
        return self.call(ops.regenerate_webhook_secret(webhook_id))

    def list_deliveries(self, webhook_id: str, **filters: Any) -> Page[WebhookDelivery]:
        return self.call(ops.list_deliveries(webhook_id, **filters))

    def iter_deliveries(
        self, webhook_id: str, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[WebhookDelivery]:
        return self._pages(ops.list_deliveries, page_size, webhook_id=webhook_id, **filters)

    def get_delivery(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        return self.call(ops.get_delivery(webhook_id, delivery_id))

    def redeliver(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        return self.call(ops.redeliver(webhook_id, delivery_id))

    # -- credentials, keys, settings (admin) -------------------------------------------

    def list_credentials(self) -> list[CredentialInfo]:
        return self.call(ops.list_credentials())

    def get_credential(self, name: str) -> CredentialInfo:
        return self.call(ops.get_credential(name))

    def put_credential(self, name: str, **fields: Any) -> CredentialInfo:
        """Create or update: ``value``, ``description``, ``tags``, ``expires_at``."""
        return self.call(ops.put_credential(name, ops.body(**fields)))

    def delete_credential(self, name: str) -> dict[str, Any]:
        return self.call(ops.delete_credential(name))

    def reveal_credential(self, name: str) -> str:
        return self.call(ops.reveal_credential(name))

    def credential_usage(self, name: str) -> CredentialUsage:
        return self.call(ops.credential_usage(name))

    def create_api_key(self, name: str, **fields: Any) -> ApiKey:
        """A managed key (``role``, ``app_id``, ``user_id``, ``expires_at``); ``.key`` is
        the secret, shown only here."""
        return self.call(ops.create_api_key(ops.body(name=name, **fields)))

    def list_api_keys(self, **filters: Any) -> Page[ApiKey]:
        return self.call(ops.list_api_keys(**filters))

    def iter_api_keys(
        self, *, page_size: int = ops.DEFAULT_PAGE_SIZE, **filters: Any
    ) -> Iterator[ApiKey]:
        return self._pages(ops.list_api_keys, page_size, **filters)

    def revoke_api_key(self, key_id: str) -> None:
        self.call(ops.revoke_api_key(key_id))

    def get_settings(self) -> ServerSettings:
        return self.call(ops.get_settings())

    def update_settings(self, *, max_concurrent_threads: int) -> ServerSettings:
        return self.call(ops.update_settings(max_concurrent_threads))


__all__ = ["Client"]
