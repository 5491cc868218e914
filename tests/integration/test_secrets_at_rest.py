"""Secrets at rest (issue 15 item 6): no plaintext secret in the records.

Webhook secrets and API keys and the generated URL-signing key are sealed with the vault
key; rows from before that are sealed by migration ``0007_secrets``. Deliveries are still
signed with the original secrets and pre-signed URLs still verify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Connection, insert, select, text
from standardwebhooks import Webhook

from conftest import Server, ServerFactory
from task_framework.models._time import utcnow
from task_framework.services.crypto import Encryptor
from task_framework.services.url_signing import SIGNING_KEY_SETTING, key_id, signature_for
from task_framework.store.database import Database
from task_framework.store.migrate import CipherRequired, upgrade
from task_framework.store.tables import metadata, settings_kv, threads, webhooks
from webhook_receiver import Receiver

ALLOW = {"webhook_allow_private_networks": True}
BODY = {"inputs": [{"kind": "json", "value": {"name": "Ada"}}]}
HOOK_API_KEY = "hook-api-key-PLAINTEXT-1"
ADHOC_API_KEY = "adhoc-api-key-PLAINTEXT-2"
SCHEDULE_API_KEY = "schedule-api-key-PLAINTEXT-3"


@pytest.fixture
async def receiver() -> Any:
    rx = await Receiver().start()
    yield rx
    await rx.stop()


# -- records ----------------------------------------------------------------------------------


async def raw_records(db: Database) -> str:
    """Every row of every table as the database returns it, undecoded (read in one of the
    server's own transactions: on SQLite it shares one connection with the server)."""

    def read(conn: Connection) -> str:
        parts: list[str] = []
        for table in metadata.sorted_tables:
            for row in conn.execute(text(f'SELECT * FROM "{table.name}"')):
                parts.append(repr(tuple(row)))
        return "\n".join(parts)

    return await db.tx(read)


def _signing_key(conn: Connection) -> str:
    value: str = conn.execute(
        select(settings_kv.c.value).where(settings_kv.c.key == SIGNING_KEY_SETTING)
    ).scalar_one()
    return value


def raw_bytes(server: Server) -> bytes:
    """The SQLite files as they are on disk (empty on PostgreSQL)."""
    url = server.services.db.url
    if not url.startswith("sqlite"):
        return b""
    path = Path(url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_no_secret_is_stored_in_plaintext_and_all_still_work(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    server = await make_server(database_url=database_url, **ALLOW)
    user = server.user()
    hook = (
        await server.client.post(
            "/webhooks",
            headers=user,
            json={
                "url": receiver.url,
                "events": {"include": ["thread.succeeded"]},
                "api_key": HOOK_API_KEY,
            },
        )
    ).json()
    rotated = await server.client.post(f"/webhooks/{hook['id']}:regenerate-secret", headers=user)
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_")
    assert secret != hook["secret"]
    adhoc = {"callback_url": receiver.url, "events": ["thread.created"], "api_key": ADHOC_API_KEY}
    thread = await server.client.post(
        "/threads", headers=user, json={"mode": "sync", "webhooks": [adhoc], **BODY}
    )
    assert thread.status_code == 201, thread.text
    schedule = await server.client.post(
        "/schedules",
        headers=user,
        json={
            "cron": "0 3 * * *",
            "timezone": "UTC",
            "inputs_template": BODY["inputs"],
            "webhooks": [{**adhoc, "api_key": SCHEDULE_API_KEY}],
        },
    )
    assert schedule.status_code == 201, schedule.text
    upload = await server.client.post(
        "/files", headers=user, files={"file": ("a.txt", b"signed bytes", "text/plain")}
    )
    ref = upload.json()["file_ref"]
    signed = await server.services.files.signer.sign("GET", ref, expires_in=60)

    # Deliveries carry the secrets in clear and are signed with the current secret.
    received = await receiver.wait_for(2)
    by_type = {r.headers["x-task-event-type"]: r for r in received}
    assert by_type["thread.created"].headers["x-api-key"] == ADHOC_API_KEY
    done = by_type["thread.succeeded"]
    assert done.headers["x-api-key"] == HOOK_API_KEY
    Webhook(secret).verify(done.body, done.headers)
    # Pre-signed URLs verify against the stored (sealed) key; a forged one does not.
    got = await server.client.get(f"/files/{ref}?{signed.query()}")
    assert (got.status_code, got.content) == (200, b"signed bytes")
    forged = signed.query().replace(signed.signature, "0" * 64)
    assert (await server.client.get(f"/files/{ref}?{forged}")).status_code == 403

    db = server.services.db
    stored_key = await db.tx(_signing_key)
    signing_key = server.services.secret_box.unseal(stored_key)
    assert len(signing_key) == 64
    plaintexts = [secret, hook["secret"], HOOK_API_KEY, ADHOC_API_KEY, SCHEDULE_API_KEY]
    plaintexts.append(signing_key)
    records, disk = await raw_records(db), raw_bytes(server)
    for plain in plaintexts:
        assert plain not in records, plain
        assert plain.encode() not in disk, plain
        # JSON columns may escape '/' or '+' on disk: the base64 body must be absent too.
        assert plain.removeprefix("whsec_")[:20].encode() not in disk, plain


# -- the migration ------------------------------------------------------------------------------


OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
OLD_SIGNING_KEY = "ab" * 32
OLD_HOOK_KEY = "old-hook-api-key-PLAINTEXT"
OLD_ADHOC_KEY = "old-adhoc-api-key-PLAINTEXT"


def write_old_rows(url: str, receiver_url: str) -> None:
    """A database at revision 0006 with secrets in plaintext, as such servers wrote them."""
    db = Database(url)
    try:
        upgrade(db.engine, "0006")
        now = utcnow()
        with db.engine.begin() as conn:
            conn.execute(
                insert(settings_kv).values(
                    key=SIGNING_KEY_SETTING, value=OLD_SIGNING_KEY, updated_at=now
                )
            )
            conn.execute(
                insert(webhooks).values(
                    id="webhook_old", url=receiver_url, secret=OLD_SECRET, enabled=True,
                    events={"include": ["thread.succeeded"]}, timeout_seconds=10,
                    api_key=OLD_HOOK_KEY, source="manual", app_id="app1", user_id="user1",
                    metadata={}, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            conn.execute(
                insert(threads).values(
                    id="thread_old", state="failed", app_id="app1", user_id="user1",
                    task_id="hello", task_version="1.0.0", params={},
                    metadata={"app_id": "app1", "user_id": "user1", "task_id": "hello"},
                    problems=[], created_by_admin=False, created_at=now, lease_token=0,
                    stop_requested=False,
                    adhoc_webhooks=[
                        {"callback_url": f"{receiver_url}/adhoc", "events": ["thread.created"],
                         "api_key": OLD_ADHOC_KEY}
                    ],
                )
            )  # fmt: skip
    finally:
        db.engine.dispose()


async def test_migration_seals_rows_written_before_it(
    make_server: ServerFactory, database_url: str, receiver: Receiver
) -> None:
    write_old_rows(database_url, receiver.url)
    key = Fernet.generate_key().decode()
    server = await make_server(database_url=database_url, encryption_key=key, **ALLOW)
    box = Encryptor([key.encode()])

    db = server.services.db

    def read_old(conn: Connection) -> tuple[Any, str, Any]:
        hook = conn.execute(select(webhooks).where(webhooks.c.id == "webhook_old")).one()
        adhoc = conn.execute(
            select(threads.c.adhoc_webhooks).where(threads.c.id == "thread_old")
        ).scalar_one()
        return hook, _signing_key(conn), adhoc

    hook, signing, adhoc = await db.tx(read_old)
    assert box.decrypt(hook.secret) == OLD_SECRET
    assert box.decrypt(hook.api_key) == OLD_HOOK_KEY
    assert box.decrypt(signing) == OLD_SIGNING_KEY
    assert box.decrypt(adhoc[0]["api_key"]) == OLD_ADHOC_KEY
    records = await raw_records(db)
    for plain in (OLD_SECRET, OLD_SIGNING_KEY, OLD_HOOK_KEY, OLD_ADHOC_KEY):
        assert plain not in records, plain

    # The old webhook still signs with its old secret and sends its old key.
    user = server.user()
    ran = await server.client.post("/threads", headers=user, json={"mode": "sync", **BODY})
    assert ran.status_code == 201, ran.text
    (done,) = await receiver.wait_for(1)
    Webhook(OLD_SECRET).verify(done.body, done.headers)
    assert done.headers["x-api-key"] == OLD_HOOK_KEY
    # A retry of the old thread re-creates its ad-hoc webhook with the old key.
    retried = await server.client.post("/threads/thread_old:retry", headers=user, json={})
    assert retried.status_code in (200, 201, 202), retried.text
    retried_id = retried.json()["id"]
    created: list[Any] = []
    wanted = 2
    while not created:  # deliveries of the first thread may still be arriving
        received = await receiver.wait_for(wanted)
        created = [
            r
            for r in received
            if r.headers["x-task-event-type"] == "thread.created"
            and json.loads(r.body)["thread_id"] == retried_id
        ]
        wanted = len(received) + 1
    assert created[0].headers["x-api-key"] == OLD_ADHOC_KEY
    # URLs signed with the old key still verify.
    upload = await server.client.post(
        "/files", headers=user, files={"file": ("a.txt", b"old key", "text/plain")}
    )
    ref = upload.json()["file_ref"]
    expires = int(utcnow().timestamp()) + 60
    signature = signature_for(OLD_SIGNING_KEY.encode(), "GET", ref, expires)
    query = f"expires={expires}&signature={signature}&kid={key_id(OLD_SIGNING_KEY.encode())}"
    got = await server.client.get(f"/files/{ref}?{query}")
    assert (got.status_code, got.content) == (200, b"old key")


def test_the_migration_refuses_to_run_without_the_key(database_url: str) -> None:
    write_old_rows(database_url, "http://127.0.0.1:9/hook")
    db = Database(database_url)
    try:
        with pytest.raises(CipherRequired, match="needs the encryption key"):
            db.migrate()
        with db.engine.connect() as conn:  # nothing half-done: still plaintext, still 0006
            assert conn.execute(select(webhooks.c.secret)).scalar_one() == OLD_SECRET
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert revision == "0006"
    finally:
        db.engine.dispose()
