"""``task-framework keys …`` (managed API keys, remote) and ``credentials …`` (vault)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    AllOpt,
    Column,
    Conn,
    LimitOpt,
    collect,
    details,
    emit,
    fail,
    handled,
    ident,
    out,
    print_items,
    remote,
    remote_list,
)

keys_app = typer.Typer(
    help="Managed API keys on a server (admin key; see also `api-key` for local DB access).",
    no_args_is_help=True,
)
credentials_app = typer.Typer(
    help="Credentials in the server's vault (admin key).", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Credential name")]


@keys_app.command("create")
@remote
def create_key(
    conn: Conn,
    name: Annotated[str, typer.Option(help="A name for the key")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin key")] = False,
    bind_app: Annotated[str | None, typer.Option(help="Bind the key to this app_id")] = None,
    bind_user: Annotated[str | None, typer.Option(help="Bind the key to this user_id")] = None,
    expires_at: Annotated[datetime | None, typer.Option(help="Expiry (RFC 3339)")] = None,
) -> None:
    """Create a key; its secret is printed once."""
    if admin and (bind_app or bind_user):
        fail("admin keys cannot be bound to an app_id/user_id")
    with handled(conn) as client:
        key = client.create_api_key(
            name,
            role="admin" if admin else "user",
            app_id=bind_app,
            user_id=bind_user,
            expires_at=expires_at,
        )
    emit(conn, key, lambda: out.print(f"{key.id}  {key.role}  {key.name}\n{key.key}"))


@keys_app.command("list")
@remote_list
def list_keys(
    conn: Conn,
    include_revoked: Annotated[bool, typer.Option(help="Also revoked keys")] = False,
    limit: LimitOpt = 50,
    every: AllOpt = False,
) -> None:
    """List managed keys (never their secrets)."""
    with handled(conn) as client:
        pages = client.iter_api_keys(page_size=min(limit, 1000), include_revoked=include_revoked)
        items = collect(pages, limit, every)
    print_items(
        conn,
        items,
        [
            ident("id", lambda k: k.id),
            Column("name", lambda k: k.name),
            Column("role", lambda k: k.role),
            Column("prefix", lambda k: k.prefix),
            Column("bound", lambda k: ",".join(filter(None, [k.app_id, k.user_id]))),
            Column("revoked", lambda k: k.revoked_at.isoformat() if k.revoked_at else None),
        ],
    )


@keys_app.command("revoke")
@remote
def revoke_key(
    conn: Conn,
    key_id: Annotated[str, typer.Argument(help="Key id (apikey_…)")],
) -> None:
    """Revoke a managed key."""
    with handled(conn) as client:
        client.revoke_api_key(key_id)
    emit(conn, {"revoked": key_id}, lambda: out.print(f"revoked {key_id}"))


@credentials_app.command("list")
@remote_list
def list_credentials(
    conn: Conn,
) -> None:
    """List credentials (values are never shown)."""
    with handled(conn) as client:
        items = client.list_credentials()
    print_items(
        conn,
        items,
        [
            ident("name", lambda c: c.name),
            Column("preview", lambda c: c.value_preview),
            Column("tags", lambda c: ", ".join(c.tags)),
            Column("expires", lambda c: c.expires_at.isoformat() if c.expires_at else None),
            Column("description", lambda c: c.description),
        ],
    )


@credentials_app.command("show")
@remote
def show_credential(
    conn: Conn,
    name: NameArg,
) -> None:
    """Show a credential's description, tags and expiry (not its value)."""
    with handled(conn) as client:
        info = client.get_credential(name)
    emit(conn, info, lambda: details(info))


@credentials_app.command("set")
@remote
def set_credential(
    conn: Conn,
    name: NameArg,
    value: Annotated[str | None, typer.Option(help="The value (prefer --value-stdin)")] = None,
    value_stdin: Annotated[bool, typer.Option(help="Read the value from stdin")] = False,
    description: Annotated[str | None, typer.Option(help="Description")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable)")] = None,
    expires_at: Annotated[datetime | None, typer.Option(help="Expiry (RFC 3339)")] = None,
) -> None:
    """Create or update a credential."""
    if value_stdin:
        value = sys.stdin.read().rstrip("\n")
    with handled(conn) as client:
        info = client.put_credential(
            name, value=value, description=description, tags=tag, expires_at=expires_at
        )
    emit(conn, info, lambda: details(info))


@credentials_app.command("delete")
@remote
def delete_credential(
    conn: Conn,
    name: NameArg,
) -> None:
    """Delete a credential."""
    with handled(conn) as client:
        result = client.delete_credential(name)
    emit(conn, result, lambda: out.print(str(result.get("message", f"deleted {name}"))))


@credentials_app.command("reveal")
@remote
def reveal_credential(
    conn: Conn,
    name: NameArg,
) -> None:
    """Print a credential's value (the server writes this to its audit log)."""
    with handled(conn) as client:
        value = client.reveal_credential(name)
    emit(conn, {"name": name, "value": value}, lambda: print(value))


@credentials_app.command("usage")
@remote_list
def credential_usage(
    conn: Conn,
    name: NameArg,
) -> None:
    """Which task configurations refer to a credential."""
    with handled(conn) as client:
        usage = client.credential_usage(name)
    print_items(
        conn,
        usage.used_by,
        [
            ident("task", lambda u: f"{u.get('task_id')}:{u.get('version')}"),
            Column("key", lambda u: u.get("config_key")),
        ],
    )
