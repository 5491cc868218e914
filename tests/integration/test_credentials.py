"""The credential vault and task configuration over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from conftest import Server, ServerFactory
from task_framework.observability.logging import configure_logging, reset_logging
from task_framework.services.crypto import (
    KEY_FILE_NAME,
    SALT_SETTING,
    EncryptionKeyError,
    Encryptor,
)
from task_framework.store.tables import credentials, settings_kv, task_configs

pytestmark = pytest.mark.slow

SECRET = "sk-live-0123456789abcdef-SECRET"
TASK_ID, VERSION = "configured", "1.0.0"
CONFIG_URL = f"/admin/tasks/{TASK_ID}/{VERSION}/config"
NAMES = ["API_TOKEN", "GREETING", "REGION", "OPTIONAL", "UNDECLARED"]
INPUTS = [{"kind": "json", "value": {}}]

TASK_CODE = """
import hashlib

from task_framework.models.artifact import Artifact

NAMES = ["API_TOKEN", "GREETING", "REGION", "OPTIONAL", "UNDECLARED"]


def shown(name, value):
    # Never echo the secret itself: a response would then contain it.
    if name == "API_TOKEN" and isinstance(value, str):
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return value


async def run(context):
    try:
        context.get_secret("OPTIONAL")
        secret_error = None
    except KeyError as exc:
        secret_error = str(exc)
    report = {
        "get": {n: shown(n, context.get(n)) for n in NAMES},
        "get_secret": {n: shown(n, context.get_secret(n, "<absent>")) for n in NAMES},
        "get_env": {n: context.get_env(n) for n in NAMES},
        "has": {n: context.has(n) for n in NAMES},
        "all_env": context.get_all_env(),
        "secret_error": secret_error,
    }
    await context.publish_output_artifacts([Artifact(kind="json", ref="report", value=report)])
"""

METADATA = {
    "name": TASK_ID,
    "version": VERSION,
    "entry_point": "task:run",
    "requirements": [
        {"name": "API_TOKEN", "required": True, "description": "Upstream token"},
        {"name": "GREETING", "required": False, "default": "Hello"},
        {"name": "REGION"},
        {"name": "OPTIONAL", "required": False},
    ],
}


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "configured-task"
    folder.mkdir()
    (folder / "task_metadata.json").write_text(json.dumps(METADATA))
    (folder / "task.py").write_text(TASK_CODE)
    return folder


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The app's JSON log lines, as they would reach stdout."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    reset_logging()


class Recorder:
    """Every response body the client received, by request path."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str]] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.bodies.append((response.request.url.path, response.text))


def record(server: Server) -> Recorder:
    recorder = Recorder()
    server.client.event_hooks["response"].append(recorder)
    return recorder


def digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


async def put_credential(server: Server, name: str, body: dict[str, Any]) -> httpx.Response:
    return await server.client.put(f"/admin/credentials/{name}", json=body, headers=server.admin)


async def run_report(server: Server, headers: dict[str, str], params: Any = None) -> Any:
    body = {"mode": "sync", "inputs": INPUTS, "params": params or {}}
    response = await server.client.post("/threads", json=body, headers=headers)
    assert response.status_code == 201, response.text
    thread = response.json()
    assert thread["state"] == "succeeded", thread["error"]
    return thread["outputs"][0]["value"]


def assert_error(response: httpx.Response, status: int, code: str, detail: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"]["code"] == code
    assert body["detail"]["detail"] == detail
    assert body["error"] == detail


async def test_credential_crud_preview_reveal_and_errors(
    make_server: ServerFactory,
    database_url: str,
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    server = await make_server(
        database_url=database_url, dev_tasks=[], encryption_key=Fernet.generate_key().decode()
    )
    recorder = record(server)
    client, admin = server.client, server.admin

    missing = await put_credential(server, "token", {"description": "no value"})
    assert_error(missing, 400, "VALIDATION_FAILED", "Field 'value' is required for new credentials")
    created = await put_credential(
        server,
        "token",
        {
            "value": SECRET,
            "description": "upstream",
            "tags": ["a", "b"],
            "expires_at": "2999-01-01T00:00:00+02:00",
        },
    )
    assert created.status_code == 200, created.text
    info = created.json()
    assert info["value_preview"] == "••••" + SECRET[-4:]
    assert info["has_value"] is True
    assert info["expires_at"] == "2998-12-31T22:00:00.000000Z"
    assert set(info) == {
        "name", "description", "tags", "created_at", "updated_at", "expires_at",
        "has_value", "value_preview",
    }  # fmt: skip

    # Omitted value, empty description, null tags and null expiry keep the stored ones.
    kept = await put_credential(
        server, "token", {"description": "", "tags": None, "expires_at": None}
    )
    assert kept.status_code == 200, kept.text
    assert {k: kept.json()[k] for k in ("description", "tags", "expires_at", "value_preview")} == {
        k: info[k] for k in ("description", "tags", "expires_at", "value_preview")
    }
    assert kept.json()["created_at"] == info["created_at"]

    for name, value, preview in (("short", "abcd", "••••"), ("empty", "", "")):
        response = await put_credential(server, name, {"value": value})
        assert response.json()["value_preview"] == preview
        assert response.json()["has_value"] is (value != "")

    listed = await client.get("/admin/credentials", headers=admin)
    assert [c["name"] for c in listed.json()["credentials"]] == ["empty", "short", "token"]
    assert (await client.get("/admin/credentials/token", headers=admin)).json() == kept.json()

    revealed = await client.get("/admin/credentials/token/reveal", headers=admin)
    assert revealed.json() == {"name": "token", "value": SECRET}
    assert (await client.get("/admin/credentials/token/usage", headers=admin)).json() == {
        "credential_name": "token",
        "used_by": [],
    }

    bad_json = await client.put(
        "/admin/credentials/token",
        content=b"{not json",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert_error(bad_json, 400, "VALIDATION_FAILED", "Invalid JSON body")
    bad_date = await put_credential(server, "token", {"expires_at": "next tuesday"})
    assert bad_date.status_code == 400
    assert bad_date.json()["detail"]["code"] == "VALIDATION_FAILED"
    assert "expires_at" in bad_date.json()["error"]
    bad_name = await put_credential(server, "bad name!", {"value": "x"})
    assert bad_name.status_code == 400
    not_object = await client.put("/admin/credentials/token", json=[1], headers=admin)
    assert_error(not_object, 400, "VALIDATION_FAILED", "Request body must be a JSON object")
    regular = await client.get("/admin/credentials", headers=server.user())
    assert regular.status_code == 403  # a valid key, without the admin role
    assert regular.json()["detail"]["code"] == "AUTH_FORBIDDEN"

    deleted = await client.delete("/admin/credentials/token", headers=admin)
    assert deleted.json() == {"message": "Credential 'token' deleted"}
    for path in ("", "/reveal", "/usage"):
        gone = await client.get(f"/admin/credentials/token{path}", headers=admin)
        assert_error(gone, 404, "CREDENTIAL_NOT_FOUND", "Credential 'token' not found")
    gone = await client.delete("/admin/credentials/token", headers=admin)
    assert gone.status_code == 404

    # The secret reached exactly one response (/reveal) and no log line; the reveal was audited.
    assert [path for path, text in recorder.bodies if SECRET in text] == [
        "/admin/credentials/token/reveal"
    ]
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    audits = [line for line in lines if line["event"] == "credential.revealed"]
    assert [a["name"] for a in audits] == ["token"]
    assert SECRET not in log_stream.getvalue()
    assert SECRET not in caplog.text


async def test_values_are_encrypted_at_rest(
    make_server: ServerFactory, database_url: str, task_dir: Path
) -> None:
    server = await make_server(
        database_url=database_url,
        dev_tasks=[task_dir],
        encryption_key=Fernet.generate_key().decode(),
    )
    assert (await put_credential(server, "token", {"value": SECRET})).status_code == 200
    config = {
        "API_TOKEN": {"vault_key": "token", "is_vault_ref": True},
        "REGION": {"value": "eu-central-plaintext", "is_vault_ref": False},
    }
    response = await server.client.put(
        CONFIG_URL, json={"config_values": config}, headers=server.admin
    )
    assert response.status_code == 200, response.text

    def raw(conn: Any) -> tuple[str, str]:
        value = conn.execute(select(credentials.c.value)).scalar_one()
        blob = conn.execute(select(task_configs.c.config_values)).scalar_one()
        return value, blob

    value, blob = await server.services.db.tx(raw)
    assert SECRET not in value
    assert "eu-central-plaintext" not in blob
    assert "token" not in blob
    key = server.settings.encryption_key
    assert key is not None
    assert Fernet(key.encode()).decrypt(value.encode()).decode() == SECRET


async def test_key_rotation_keeps_old_values_readable(
    make_server: ServerFactory, database_url: str
) -> None:
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = await make_server(database_url=database_url, dev_tasks=[], encryption_key=key_a)
    assert (await put_credential(first, "old", {"value": "value-from-a"})).status_code == 200

    second = await make_server(
        database_url=database_url,
        dev_tasks=[],
        encryption_key=f"{key_b},{key_a}",
        data_dir=first.settings.data_dir,
    )
    old = await second.client.get("/admin/credentials/old/reveal", headers=second.admin)
    assert old.json()["value"] == "value-from-a"
    assert (await put_credential(second, "new", {"value": "value-from-b"})).status_code == 200

    def tokens(conn: Any) -> dict[str, str]:
        return dict(conn.execute(select(credentials.c.name, credentials.c.value)).all())

    stored = await second.services.db.tx(tokens)
    assert Encryptor([key_b.encode()]).decrypt(stored["new"]) == "value-from-b"
    with pytest.raises(Exception, match="cannot be decrypted"):
        Encryptor([key_a.encode()]).decrypt(stored["new"])


async def test_passphrase_keys_use_a_stored_salt(
    make_server: ServerFactory, database_url: str
) -> None:
    passphrase = "correct horse battery staple"
    first = await make_server(database_url=database_url, dev_tasks=[], encryption_key=passphrase)
    assert (await put_credential(first, "pw", {"value": "hunter2-long"})).status_code == 200

    def salt(conn: Any) -> Any:
        return conn.execute(
            select(settings_kv.c.value).where(settings_kv.c.key == SALT_SETTING)
        ).scalar_one()

    stored_salt = await first.services.db.tx(salt)
    second = await make_server(
        database_url=database_url,
        dev_tasks=[],
        encryption_key=passphrase,
        data_dir=first.settings.data_dir,
    )
    assert await second.services.db.tx(salt) == stored_salt
    revealed = await second.client.get("/admin/credentials/pw/reveal", headers=second.admin)
    assert revealed.json()["value"] == "hunter2-long"


async def test_sqlite_key_file_is_created_private_and_reused(
    make_server: ServerFactory, tmp_path: Path, log_stream: io.StringIO
) -> None:
    url = f"sqlite:///{tmp_path / 'keyfile.db'}"
    first = await make_server(database_url=url, dev_tasks=[], encryption_key=None)
    key_file = first.settings.data_dir.resolve() / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert (await put_credential(first, "kf", {"value": "kept-across-restarts"})).status_code == 200
    warnings = [
        json.loads(line)
        for line in log_stream.getvalue().splitlines()
        if '"encryption.key_file"' in line
    ]
    assert [(w["level"], w["generated"]) for w in warnings] == [("warning", True)]
    assert key.decode().strip() not in log_stream.getvalue()

    second = await make_server(
        database_url=url, dev_tasks=[], encryption_key=None, data_dir=first.settings.data_dir
    )
    assert key_file.read_bytes() == key
    revealed = await second.client.get("/admin/credentials/kf/reveal", headers=second.admin)
    assert revealed.json()["value"] == "kept-across-restarts"


@pytest.mark.postgres
async def test_postgres_without_key_refuses_to_start(
    make_server: ServerFactory, postgres_url: str
) -> None:
    with pytest.raises(EncryptionKeyError, match="ENCRYPTION_KEY"):
        await make_server(database_url=postgres_url, dev_tasks=[], encryption_key=None)


async def test_configuration_reaches_the_task(
    make_server: ServerFactory,
    database_url: str,
    task_dir: Path,
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    server = await make_server(
        database_url=database_url,
        dev_tasks=[task_dir],
        encryption_key=Fernet.generate_key().decode(),
    )
    recorder = record(server)
    client, admin = server.client, server.admin

    status = (await client.get(CONFIG_URL, headers=admin)).json()
    assert status["ready"] is False
    assert status["missing_required"] == ["API_TOKEN", "REGION"]
    assert status["config_values"] == {}
    assert status["requirements"][1] == {
        "name": "GREETING",
        "required": False,
        "description": "",
        "default": "Hello",
        "is_vault_ref": False,
        "vault_key": None,
        "current_value": None,
        "is_set": False,
    }

    unknown = await client.get(f"/admin/tasks/{TASK_ID}/9.9/config", headers=admin)
    assert_error(unknown, 404, "TASK_NOT_FOUND", f"Task '{TASK_ID}:9.9' not found")
    config = {
        "API_TOKEN": {"vault_key": "token", "is_vault_ref": True},
        "REGION": {"value": "eu-west", "is_vault_ref": False},
    }
    dangling = await client.put(CONFIG_URL, json={"config_values": config}, headers=admin)
    assert_error(
        dangling,
        400,
        "VALIDATION_FAILED",
        "Vault entry 'token' not found (referenced by 'API_TOKEN')",
    )
    malformed = await client.put(
        CONFIG_URL, json={"config_values": {"REGION": {"value": 5}}}, headers=admin
    )
    assert malformed.status_code == 400

    assert (await put_credential(server, "token", {"value": SECRET})).status_code == 200
    response = await client.put(CONFIG_URL, json={"config_values": config}, headers=admin)
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["ready"] is True
    assert status["missing_required"] == []
    assert status["config_values"] == config
    by_name = {r["name"]: r for r in status["requirements"]}
    assert (by_name["API_TOKEN"]["is_set"], by_name["API_TOKEN"]["current_value"]) == (True, None)
    assert by_name["API_TOKEN"]["vault_key"] == "token"
    assert (by_name["REGION"]["is_set"], by_name["REGION"]["current_value"]) == (True, "eu-west")
    assert (await client.get(CONFIG_URL, headers=admin)).json() == status

    usage = (await client.get("/admin/credentials/token/usage", headers=admin)).json()
    assert usage["used_by"] == [{"task_id": TASK_ID, "version": VERSION, "config_key": "API_TOKEN"}]

    report = await run_report(server, server.user())
    assert report["get"] == {
        "API_TOKEN": digest(SECRET),
        "GREETING": "Hello",
        "REGION": "eu-west",
        "OPTIONAL": None,
        "UNDECLARED": None,
    }
    assert report["get_secret"]["API_TOKEN"] == digest(SECRET)
    assert report["get_secret"]["REGION"] == "<absent>"
    assert report["get_env"]["API_TOKEN"] is None
    assert report["get_env"]["REGION"] == "eu-west"
    assert report["has"] == {
        "API_TOKEN": True,
        "GREETING": True,
        "REGION": True,
        "OPTIONAL": False,
        "UNDECLARED": False,
    }
    assert report["all_env"] == {"GREETING": "Hello", "REGION": "eu-west"}
    assert "Secret 'OPTIONAL' not found" in report["secret_error"]

    overrides = {"_env_overrides": {"GREETING": "Hi", "UNDECLARED": "sneaky"}}
    as_user = await run_report(server, server.user(), overrides)
    assert (as_user["get"]["GREETING"], as_user["get"]["UNDECLARED"]) == ("Hello", None)
    as_admin = await run_report(server, admin, overrides)
    assert (as_admin["get"]["GREETING"], as_admin["get"]["UNDECLARED"]) == ("Hi", None)

    # Changes apply to the next thread: a removed credential resolves as missing.
    await client.delete("/admin/credentials/token", headers=admin)
    after = await run_report(server, server.user())
    assert (after["has"]["API_TOKEN"], after["get"]["API_TOKEN"]) == (False, None)
    assert (await client.get(CONFIG_URL, headers=admin)).json()["missing_required"] == ["API_TOKEN"]

    deleted = await client.delete(CONFIG_URL, headers=admin)
    assert deleted.status_code == 200
    assert "message" in deleted.json()
    again = await client.delete(CONFIG_URL, headers=admin)
    assert again.status_code == 404
    assert again.json()["detail"]["code"] == "NOT_FOUND"
    assert "error" in again.json()

    assert not [path for path, text in recorder.bodies if SECRET in text]
    assert SECRET not in log_stream.getvalue()
    assert SECRET not in caplog.text


async def test_expired_credential_resolves_as_missing(
    make_server: ServerFactory, database_url: str, task_dir: Path
) -> None:
    server = await make_server(
        database_url=database_url,
        dev_tasks=[task_dir],
        encryption_key=Fernet.generate_key().decode(),
    )
    expired = await put_credential(
        server, "old-token", {"value": SECRET, "expires_at": "2020-01-01T00:00:00Z"}
    )
    assert expired.status_code == 200, expired.text
    config = {
        "API_TOKEN": {"vault_key": "old-token", "is_vault_ref": True},
        "REGION": {"value": "eu-west"},
    }
    response = await server.client.put(
        CONFIG_URL, json={"config_values": config}, headers=server.admin
    )
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["ready"] is False
    assert status["missing_required"] == ["API_TOKEN"]
    report = await run_report(server, server.user())
    assert (report["has"]["API_TOKEN"], report["get"]["API_TOKEN"]) == (False, None)
    assert report["get"]["REGION"] == "eu-west"
