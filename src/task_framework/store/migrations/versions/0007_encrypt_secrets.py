"""encrypt the secrets kept in records with the vault key

Webhook secrets and API keys (``webhooks.secret``, ``webhooks.api_key``, the ``api_key``
of each ad-hoc webhook kept on its thread for retries) and the generated URL-signing key
(setting ``url_signing_key``) were stored in plaintext. This seals every existing one
with the vault key; from here on the services write and read only sealed values.
``webhooks.secret`` becomes TEXT, since a Fernet token is longer than 64 characters.

Revision ID: 0007_secrets
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from task_framework.store.migrate import Cipher, cipher_for
from task_framework.store.tables import JSONType

revision = "0007_secrets"
down_revision = "0006"
branch_labels = None
depends_on = None

SIGNING_KEY_SETTING = "url_signing_key"

_webhooks = sa.table(
    "webhooks", sa.column("id", sa.String), sa.column("secret"), sa.column("api_key")
)
_settings = sa.table("settings", sa.column("key", sa.String), sa.column("value", JSONType))
_threads = sa.table("threads", sa.column("id", sa.String), sa.column("adhoc_webhooks", JSONType))


def _rewrite(conn: sa.Connection, change: Callable[[Cipher, str], str]) -> None:
    """Apply ``change`` (encrypt or decrypt) to every stored secret."""
    hooks = conn.execute(sa.select(_webhooks.c.id, _webhooks.c.secret, _webhooks.c.api_key)).all()
    signing = conn.execute(
        sa.select(_settings.c.value).where(_settings.c.key == SIGNING_KEY_SETTING)
    ).scalar()
    adhoc = [
        (row.id, row.adhoc_webhooks)
        for row in conn.execute(
            sa.select(_threads.c.id, _threads.c.adhoc_webhooks).where(
                _threads.c.adhoc_webhooks.is_not(None)
            )
        )
        if any(isinstance(h, dict) and h.get("api_key") for h in row.adhoc_webhooks or [])
    ]
    if not hooks and signing is None and not adhoc:
        return  # a new installation: nothing to rewrite, no key needed
    cipher = cipher_for(context.config, conn)
    for row in hooks:
        conn.execute(
            sa.update(_webhooks)
            .where(_webhooks.c.id == row.id)
            .values(
                secret=change(cipher, row.secret),
                api_key=change(cipher, row.api_key) if row.api_key else row.api_key,
            )
        )
    if isinstance(signing, str):
        conn.execute(
            sa.update(_settings)
            .where(_settings.c.key == SIGNING_KEY_SETTING)
            .values(value=change(cipher, signing))
        )
    for thread_id, stored in adhoc:
        rewritten: list[Any] = [
            {**h, "api_key": change(cipher, h["api_key"])}
            if isinstance(h, dict) and h.get("api_key")
            else h
            for h in stored
        ]
        conn.execute(
            sa.update(_threads).where(_threads.c.id == thread_id).values(adhoc_webhooks=rewritten)
        )


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column(
            "secret", type_=sa.Text(), existing_type=sa.String(length=64), existing_nullable=False
        )
    _rewrite(op.get_bind(), lambda cipher, value: cipher.encrypt(value))


def downgrade() -> None:
    _rewrite(op.get_bind(), lambda cipher, value: cipher.decrypt(value))
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column(
            "secret", type_=sa.String(length=64), existing_type=sa.Text(), existing_nullable=False
        )
