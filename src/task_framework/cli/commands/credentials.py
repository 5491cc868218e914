"""``task-framework credentials …``: credentials in the server's vault."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer

from task_framework.cli.commands._common import (
    Column,
    Conn,
    details,
    emit,
    handled,
    ident,
    out,
    print_items,
    remote,
    remote_list,
)

credentials_app = typer.Typer(
    help="Credentials in the server's vault (admin key).", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Credential name")]


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
    value: Annotated[
        str | None, typer.Option(metavar="VALUE", help="The value (prefer --value-stdin)")
    ] = None,
    value_stdin: Annotated[
        bool, typer.Option(metavar="", help="Read the value from stdin")
    ] = False,
    description: Annotated[str | None, typer.Option(metavar="TEXT", help="Description")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", metavar="TAG", help="A tag (repeatable)")
    ] = None,
    expires_at: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="Expiry (RFC 3339)")
    ] = None,
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
