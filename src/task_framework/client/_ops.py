"""Every API operation as a plain request description (no I/O).

``Client`` and ``AsyncClient`` only send these and parse the answers, so both clients
share one definition of each route, its parameters and its response model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from task_framework.client.models import (
    ApiKey,
    ApiModel,
    Artifact,
    ConfigurationStatus,
    CredentialInfo,
    CredentialUsage,
    DeploymentRecord,
    DownloadUrl,
    FileInfo,
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
M = TypeVar("M", bound=ApiModel)

DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None


def one(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate(response.json())


def many(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
    return lambda response: list(adapter.validate_python(response.json()))


def page(model: type[M]) -> Callable[[httpx.Response], Page[M]]:
    return lambda response: Page[model].model_validate(response.json())  # type: ignore[valid-type]


def nothing(_response: httpx.Response) -> None:
    return None


def raw_json(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


def query(**values: Any) -> dict[str, Any]:
    """Query parameters without the ``None`` values; datetimes as RFC 3339, bools lowercase."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def body(**values: Any) -> dict[str, Any]:
    """A JSON body without the ``None`` values (models and datetimes made JSON-ready)."""
    return {key: jsonable(value) for key, value in values.items() if value is not None}


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


ArtifactLike = Artifact | Mapping[str, Any]
_SERVER_ARTIFACT_FIELDS = ("thread_id", "direction", "archived", "created_at", "archived_at")


def artifacts(items: Iterable[ArtifactLike] | None) -> list[dict[str, Any]] | None:
    """Artifacts as request dicts: models lose their ``None`` fields and server fields."""
    if items is None:
        return None
    out = []
    for item in items:
        data = jsonable(item)
        if isinstance(item, Artifact):
            for server_field in _SERVER_ARTIFACT_FIELDS:
                data.pop(server_field, None)
        out.append(data)
    return out


def json_input(value: Any) -> dict[str, Any]:
    """A one-artifact shortcut: any JSON value becomes a ``json`` artifact."""
    return {"kind": "json", "value": value}


# -- SSE -----------------------------------------------------------------------------------


class SSEDecoder:
    """Incremental Server-Sent Events parser: feed lines, get events at blank lines."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> ServerEvent | None:
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            text = "\n".join(self._data)
            self._data = []
            event, self._event = self._event, "message"
            try:
                data = json.loads(text)
            except ValueError:
                data = {"text": text}
            return ServerEvent(
                id=self._id, event=event, data=data if isinstance(data, dict) else {"value": data}
            )
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def stream_headers(after: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if after:
        headers["Last-Event-ID"] = after
    return headers


# -- operations that need no special handling -------------------------------------------


def health() -> Call[Health]:
    return Call("GET", "/health", one(Health))


def task_metadata(task_id: str | None, version: str | None) -> Call[TaskMetadata]:
    return Call("GET", "/task/metadata", one(TaskMetadata), query(task_id=task_id, version=version))


def get_thread(thread_id: str) -> Call[Thread]:
    return Call("GET", f"/threads/{thread_id}", one(Thread))


def list_threads(**filters: Any) -> Call[Page[Thread]]:
    return Call("GET", "/threads", page(Thread), query(**filters))


def stop_thread(thread_id: str) -> Call[Thread]:
    return Call("POST", f"/threads/{thread_id}:stop", one(Thread))


def retry_thread(thread_id: str, *, mode: str, preserve_run_id: bool) -> Call[Thread]:
    payload = {"mode": mode, "preserve_run_id": preserve_run_id}
    return Call("POST", f"/threads/{thread_id}:retry", one(Thread), json=payload)


def delete_thread(thread_id: str) -> Call[None]:
    return Call("DELETE", f"/threads/{thread_id}", nothing)


def thread_artifacts(thread_id: str, **filters: Any) -> Call[Page[Artifact]]:
    return Call("GET", f"/threads/{thread_id}/artifacts", page(Artifact), query(**filters))


def thread_logs(thread_id: str, **filters: Any) -> Call[Page[LogRecord]]:
    return Call("GET", f"/threads/{thread_id}/logs", page(LogRecord), query(**filters))


def list_artifacts(**filters: Any) -> Call[Page[Artifact]]:
    return Call("GET", "/artifacts", page(Artifact), query(**filters))


def get_artifact(artifact_id: str) -> Call[Artifact]:
    return Call("GET", f"/artifacts/{artifact_id}", one(Artifact))


def delete_artifact(artifact_id: str) -> Call[None]:
    return Call("DELETE", f"/artifacts/{artifact_id}", nothing)


def archive_artifact(artifact_id: str) -> Call[Artifact]:
    return Call("POST", f"/artifacts/{artifact_id}:archive", one(Artifact))


def artifact_download_url(artifact_id: str, expires_in: int | None) -> Call[DownloadUrl]:
    return Call(
        "GET",
        f"/artifacts/{artifact_id}/download",
        one(DownloadUrl),
        query(expires_in=expires_in),
    )


def list_files(**filters: Any) -> Call[Page[FileInfo]]:
    return Call("GET", "/files", page(FileInfo), query(**filters))


def delete_file(file_ref: str) -> Call[None]:
    return Call("DELETE", f"/files/{file_ref}", nothing)


def create_upload(
    *, size: int, media_type: str, filename: str | None, expires_in: int | None
) -> Call[UploadUrl]:
    payload = body(size=size, media_type=media_type, filename=filename, expires_in=expires_in)
    return Call("POST", "/uploads", one(UploadUrl), json=payload)


def list_tasks() -> Call[TaskList]:
    return Call("GET", "/admin/tasks", one(TaskList))


def get_task(task_id: str) -> Call[TaskSummary]:
    return Call("GET", f"/admin/tasks/{task_id}", one(TaskSummary))


def task_versions(task_id: str) -> Call[list[TaskVersionInfo]]:
    return Call("GET", f"/admin/tasks/{task_id}/versions", many(TaskVersionInfo))


def get_task_version(task_id: str, version: str) -> Call[TaskVersionInfo]:
    return Call("GET", f"/admin/tasks/{task_id}/versions/{version}", one(TaskVersionInfo))


def delete_task(task_id: str, version: str | None) -> Call[TaskUndeploy]:
    path = f"/admin/tasks/{task_id}" + (f"/versions/{version}" if version else "")
    return Call("DELETE", path, one(TaskUndeploy))


def deployment_history() -> Call[list[DeploymentRecord]]:
    return Call("GET", "/admin/tasks/deployments/history", many(DeploymentRecord))


def task_download_path(task_id: str, version: str | None) -> str:
    if version:
        return f"/admin/tasks/{task_id}/versions/{version}/download"
    return f"/admin/tasks/{task_id}/download"


def get_task_config(task_id: str, version: str) -> Call[ConfigurationStatus]:
    return Call("GET", f"/admin/tasks/{task_id}/{version}/config", one(ConfigurationStatus))


def set_task_config(
    task_id: str, version: str, values: Mapping[str, Any]
) -> Call[ConfigurationStatus]:
    payload = {"config_values": jsonable(values)}
    path = f"/admin/tasks/{task_id}/{version}/config"
    return Call("PUT", path, one(ConfigurationStatus), json=payload)


def delete_task_config(task_id: str, version: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/admin/tasks/{task_id}/{version}/config", raw_json)


def deploy_result(response: httpx.Response) -> TaskDeployment:
    return TaskDeployment.model_validate(response.json())


def create_schedule(payload: Mapping[str, Any], **selection: Any) -> Call[Schedule]:
    return Call("POST", "/schedules", one(Schedule), query(**selection), json=jsonable(payload))


def list_schedules(**filters: Any) -> Call[Page[Schedule]]:
    return Call("GET", "/schedules", page(Schedule), query(**filters))


def get_schedule(schedule_id: str) -> Call[Schedule]:
    return Call("GET", f"/schedules/{schedule_id}", one(Schedule))


def update_schedule(schedule_id: str, changes: Mapping[str, Any]) -> Call[Schedule]:
    return Call("PATCH", f"/schedules/{schedule_id}", one(Schedule), json=jsonable(changes))


def delete_schedule(schedule_id: str) -> Call[None]:
    return Call("DELETE", f"/schedules/{schedule_id}", nothing)


def cancel_schedule(schedule_id: str) -> Call[Schedule]:
    return Call("POST", f"/schedules/{schedule_id}:cancel", one(Schedule))


def trigger_schedule(schedule_id: str) -> Call[Run]:
    return Call("POST", f"/schedules/{schedule_id}:trigger", one(Run))


def list_runs(schedule_id: str, **filters: Any) -> Call[Page[Run]]:
    return Call("GET", f"/schedules/{schedule_id}/runs", page(Run), query(**filters))


def get_run(schedule_id: str, run_id: str) -> Call[Run]:
    return Call("GET", f"/schedules/{schedule_id}/runs/{run_id}", one(Run))


def create_webhook(payload: Mapping[str, Any]) -> Call[Webhook]:
    return Call("POST", "/webhooks", one(Webhook), json=jsonable(payload))


def list_webhooks(**filters: Any) -> Call[Page[Webhook]]:
    return Call("GET", "/webhooks", page(Webhook), query(**filters))


def get_webhook(webhook_id: str) -> Call[Webhook]:
    return Call("GET", f"/webhooks/{webhook_id}", one(Webhook))


def update_webhook(webhook_id: str, changes: Mapping[str, Any]) -> Call[Webhook]:
    return Call("PATCH", f"/webhooks/{webhook_id}", one(Webhook), json=jsonable(changes))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"/webhooks/{webhook_id}", nothing)


def regenerate_webhook_secret(webhook_id: str) -> Call[Webhook]:
    return Call("POST", f"/webhooks/{webhook_id}:regenerate-secret", one(Webhook))


def list_deliveries(webhook_id: str, **filters: Any) -> Call[Page[WebhookDelivery]]:
    path = f"/webhooks/{webhook_id}/deliveries"
    return Call("GET", path, page(WebhookDelivery), query(**filters))


def get_delivery(webhook_id: str, delivery_id: str) -> Call[WebhookDelivery]:
    path = f"/webhooks/{webhook_id}/deliveries/{delivery_id}"
    return Call("GET", path, one(WebhookDelivery))


def redeliver(webhook_id: str, delivery_id: str) -> Call[WebhookDelivery]:
    path = f"/webhooks/{webhook_id}/deliveries/{delivery_id}:redeliver"
    return Call("POST", path, one(WebhookDelivery))


def list_credentials() -> Call[list[CredentialInfo]]:
    adapter = TypeAdapter(list[CredentialInfo])
    return Call(
        "GET",
        "/admin/credentials",
        lambda r: list(adapter.validate_python(r.json()["credentials"])),
    )


def get_credential(name: str) -> Call[CredentialInfo]:
    return Call("GET", f"/admin/credentials/{name}", one(CredentialInfo))


def put_credential(name: str, payload: Mapping[str, Any]) -> Call[CredentialInfo]:
    return Call("PUT", f"/admin/credentials/{name}", one(CredentialInfo), json=jsonable(payload))


def delete_credential(name: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/admin/credentials/{name}", raw_json)


def reveal_credential(name: str) -> Call[str]:
    return Call("GET", f"/admin/credentials/{name}/reveal", lambda r: str(r.json()["value"]))


def credential_usage(name: str) -> Call[CredentialUsage]:
    return Call("GET", f"/admin/credentials/{name}/usage", one(CredentialUsage))


def create_api_key(payload: Mapping[str, Any]) -> Call[ApiKey]:
    return Call("POST", "/admin/api-keys", one(ApiKey), json=jsonable(payload))


def list_api_keys(**filters: Any) -> Call[Page[ApiKey]]:
    return Call("GET", "/admin/api-keys", page(ApiKey), query(**filters))


def revoke_api_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"/admin/api-keys/{key_id}", nothing)


def get_settings() -> Call[ServerSettings]:
    return Call("GET", "/admin/settings", one(ServerSettings))


def update_settings(max_concurrent_threads: int) -> Call[ServerSettings]:
    payload = {"max_concurrent_threads": max_concurrent_threads}
    return Call("PUT", "/admin/settings", one(ServerSettings), json=payload)
