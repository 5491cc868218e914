"""``task-framework webhooks …``: webhooks and their deliveries."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from task_framework.cli.commands._common import (
    AllOpt,
    Column,
    Conn,
    LimitOpt,
    collect,
    details,
    emit,
    handled,
    ident,
    out,
    print_items,
    remote,
    remote_list,
    table,
)
from task_framework.client.models import Webhook

webhooks_app = typer.Typer(help="Manage webhooks and inspect deliveries.", no_args_is_help=True)

HookArg = Annotated[str, typer.Argument(metavar="WEBHOOK_ID", help="Webhook id")]


HOOK_COLUMNS = (
    ident("id", lambda w: w.id),
    Column("url", lambda w: w.url),
    Column("enabled", lambda w: "yes" if w.enabled else f"no ({w.disabled_reason})"),
    Column("events", lambda w: w.events),
    Column("source", lambda w: w.source),
)


DELIVERY_COLUMNS = (
    ident("id", lambda d: d.id),
    Column("event", lambda d: d.event_type),
    Column("status", lambda d: d.status),
    Column("code", lambda d: d.status_code),
    Column("attempt", lambda d: d.attempt),
    Column("error", lambda d: d.error),
)


def _show_hook(hook: Webhook) -> None:
    details(hook)
    if hook.secret:
        out.print("[yellow]keep the secret: it is shown only now[/yellow]")


@webhooks_app.command("create")
@remote
def create(
    conn: Conn,
    target: Annotated[str, typer.Argument(metavar="URL", help="Where events are POSTed")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", metavar="EVENT", help="Only these events (repeatable)"),
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--task", metavar="TASK_ID", help="Only this task's events")
    ] = None,
    thread_id: Annotated[
        str | None, typer.Option("--thread", metavar="THREAD_ID", help="Only this thread")
    ] = None,
    schedule_id: Annotated[
        str | None, typer.Option("--schedule", metavar="SCHEDULE_ID", help="Only this schedule")
    ] = None,
    detail: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="none, inline_small or inline_all")
    ] = None,
    timeout: Annotated[
        int | None,
        typer.Option(min=1, max=60, metavar="SECONDS", help="Delivery timeout in seconds"),
    ] = None,
) -> None:
    """Create a webhook; its signing secret is printed once."""
    scope = {k: v for k, v in {"thread_id": thread_id, "schedule_id": schedule_id}.items() if v}
    fields: dict[str, Any] = {
        "events": {"include": event} if event else None,
        "task_id": task_id,
        "scope": scope or None,
        "data_filters": {"detail": detail} if detail else None,
        "timeout_seconds": timeout,
    }
    with handled(conn) as client:
        hook = client.create_webhook(target, **fields)
    emit(conn, hook, lambda: _show_hook(hook))


@webhooks_app.command("list")
@remote_list
def list_webhooks(
    conn: Conn,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", metavar="", help="Filter")
    ] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List webhooks."""
    with handled(conn) as client:
        pages = client.iter_webhooks(page_size=min(limit, 1000), is_enabled=enabled)
        items = collect(pages, limit, every)
    print_items(conn, items, HOOK_COLUMNS)


@webhooks_app.command("show")
@remote
def show(
    conn: Conn,
    webhook_id: HookArg,
) -> None:
    """Show a webhook."""
    with handled(conn) as client:
        hook = client.get_webhook(webhook_id)
    emit(conn, hook, lambda: details(hook))


@webhooks_app.command("update")
@remote
def update(
    conn: Conn,
    webhook_id: HookArg,
    target: Annotated[
        str | None, typer.Option("--target", metavar="URL", help="New callback URL")
    ] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", metavar="", help="Switch")
    ] = None,
    timeout: Annotated[
        int | None, typer.Option(min=1, max=60, metavar="SECONDS", help="New delivery timeout")
    ] = None,
) -> None:
    """Change a webhook (enable, disable, new URL or timeout)."""
    with handled(conn) as client:
        hook = client.update_webhook(
            webhook_id, url=target, enabled=enabled, timeout_seconds=timeout
        )
    emit(conn, hook, lambda: details(hook))


@webhooks_app.command("delete")
@remote
def delete(
    conn: Conn,
    webhook_id: HookArg,
) -> None:
    """Delete a webhook and its delivery history."""
    with handled(conn) as client:
        client.delete_webhook(webhook_id)
    emit(conn, {"deleted": webhook_id}, lambda: out.print(f"deleted {webhook_id}"))


@webhooks_app.command("regenerate-secret")
@remote
def regenerate_secret(
    conn: Conn,
    webhook_id: HookArg,
) -> None:
    """Issue a new signing secret (printed once)."""
    with handled(conn) as client:
        hook = client.regenerate_webhook_secret(webhook_id)
    emit(conn, hook, lambda: out.print(hook.secret or ""))


@webhooks_app.command("deliveries")
@remote_list
def deliveries(
    conn: Conn,
    webhook_id: HookArg,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help="pending, success or failed")
    ] = None,
    thread_id: Annotated[
        str | None, typer.Option("--thread", metavar="THREAD_ID", help="Only this thread")
    ] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List a webhook's delivery attempts, newest first."""
    with handled(conn) as client:
        pages = client.iter_deliveries(
            webhook_id, page_size=min(limit, 1000), status=status, thread_id=thread_id
        )
        items = collect(pages, limit, every)
    print_items(conn, items, DELIVERY_COLUMNS)


@webhooks_app.command("delivery")
@remote
def delivery(
    conn: Conn,
    webhook_id: HookArg,
    delivery_id: Annotated[str, typer.Argument(metavar="DELIVERY_ID", help="Delivery id")],
) -> None:
    """Show one delivery attempt with its payload."""
    with handled(conn) as client:
        item = client.get_delivery(webhook_id, delivery_id)
    emit(conn, item, lambda: details(item))


@webhooks_app.command("redeliver")
@remote
def redeliver(
    conn: Conn,
    webhook_id: HookArg,
    delivery_id: Annotated[str, typer.Argument(metavar="DELIVERY_ID", help="Delivery id")],
) -> None:
    """Send a delivery's event again (same webhook-id, new signature)."""
    with handled(conn) as client:
        item = client.redeliver(webhook_id, delivery_id)
    emit(conn, item, lambda: table([item], DELIVERY_COLUMNS))
