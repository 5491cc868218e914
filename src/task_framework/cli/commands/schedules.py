"""``task-framework schedules …``: cron schedules and their runs."""

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
from task_framework.cli.commands.run import parse_json_input, parse_params

schedules_app = typer.Typer(
    help="Create and manage cron schedules and their runs.", no_args_is_help=True
)

ScheduleArg = Annotated[str, typer.Argument(metavar="SCHEDULE_ID", help="Schedule id")]


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


SCHEDULE_COLUMNS = (
    ident("id", lambda s: s.id),
    Column("state", lambda s: s.state),
    Column("cron", lambda s: f"{s.cron} ({s.timezone})"),
    Column("task", lambda s: f"{s.task_id}:{s.task_version}"),
    Column("next run", lambda s: _ts(s.next_run_at)),
)


RUN_COLUMNS = (
    ident("run", lambda r: r.run_id),
    Column("state", lambda r: r.state),
    Column("attempt", lambda r: f"{r.attempt}/{r.max_attempts}"),
    ident("threads", lambda r: ", ".join(r.threads)),
    Column("labels", lambda r: r.labels or None),
)


@schedules_app.command("create")
@remote
def create(
    conn: Conn,
    cron: Annotated[str, typer.Option(metavar="CRON", help="Five cron fields, e.g. '*/5 * * * *'")],
    timezone: Annotated[str, typer.Option("--tz", metavar="ZONE", help="IANA time zone")] = "UTC",
    task_id: Annotated[
        str | None, typer.Option("--task", "-t", metavar="TASK_ID", help="Task id")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", metavar="VERSION", help="Task version")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", metavar="JSON", help="Input template (JSON)"),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", metavar="KEY=VALUE", help="KEY=VALUE")
    ] = None,
    concurrency: Annotated[
        str, typer.Option(metavar="POLICY", help="allow, forbid or replace")
    ] = "allow",
    max_attempts: Annotated[int, typer.Option(min=1, metavar="N", help="Attempts per fire")] = 1,
    misfire: Annotated[str, typer.Option(metavar="POLICY", help="skip or catch_up_last")] = "skip",
    webhook: Annotated[
        list[str] | None,
        typer.Option(metavar="URL", help="Callback URL for the schedule's thread events"),
    ] = None,
    paused: Annotated[bool, typer.Option(metavar="", help="Create it paused")] = False,
) -> None:
    """Create a schedule."""
    template = [parse_json_input(text) for text in inputs or []] or [{"kind": "json", "value": {}}]
    with handled(conn) as client:
        schedule = client.create_schedule(
            cron=cron,
            timezone=timezone,
            inputs_template=template,
            task_id=task_id,
            task_version=version,
            params=parse_params(param or [], None) or None,
            concurrency_policy=concurrency,
            max_attempts=max_attempts,
            misfire_policy=misfire,
            state="paused" if paused else None,
            webhooks=[{"callback_url": u} for u in webhook] if webhook else None,
        )
    emit(conn, schedule, lambda: details(schedule))


@schedules_app.command("list")
@remote_list
def list_schedules(
    conn: Conn,
    state: Annotated[
        str | None, typer.Option(metavar="STATE", help="active, paused or canceled")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--task", metavar="TASK_ID", help="Only this task")
    ] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List schedules."""
    with handled(conn) as client:
        pages = client.iter_schedules(page_size=min(limit, 1000), state=state, task_id=task_id)
        items = collect(pages, limit, every)
    print_items(conn, items, SCHEDULE_COLUMNS)


@schedules_app.command("show")
@remote
def show(
    conn: Conn,
    schedule_id: ScheduleArg,
) -> None:
    """Show a schedule."""
    with handled(conn) as client:
        schedule = client.get_schedule(schedule_id)
    emit(conn, schedule, lambda: details(schedule))


@schedules_app.command("update")
@remote
def update(
    conn: Conn,
    schedule_id: ScheduleArg,
    cron: Annotated[str | None, typer.Option(metavar="CRON", help="New cron expression")] = None,
    timezone: Annotated[
        str | None, typer.Option("--tz", metavar="ZONE", help="New time zone")
    ] = None,
    state: Annotated[
        str | None, typer.Option(metavar="STATE", help="active, paused or canceled")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="New attempts per fire")
    ] = None,
    concurrency: Annotated[
        str | None, typer.Option(metavar="POLICY", help="allow, forbid or replace")
    ] = None,
) -> None:
    """Change a schedule (pause with --state paused, resume with --state active)."""
    with handled(conn) as client:
        schedule = client.update_schedule(
            schedule_id,
            cron=cron,
            timezone=timezone,
            state=state,
            max_attempts=max_attempts,
            concurrency_policy=concurrency,
        )
    emit(conn, schedule, lambda: details(schedule))


@schedules_app.command("cancel")
@remote
def cancel(
    conn: Conn,
    schedule_id: ScheduleArg,
) -> None:
    """Cancel a schedule: no further fires."""
    with handled(conn) as client:
        schedule = client.cancel_schedule(schedule_id)
    emit(conn, schedule, lambda: out.print(f"{schedule.id} {schedule.state}"))


@schedules_app.command("delete")
@remote
def delete(
    conn: Conn,
    schedule_id: ScheduleArg,
) -> None:
    """Delete a schedule and its runs (its threads are kept)."""
    with handled(conn) as client:
        client.delete_schedule(schedule_id)
    emit(conn, {"deleted": schedule_id}, lambda: out.print(f"deleted {schedule_id}"))


@schedules_app.command("trigger")
@remote
def trigger(
    conn: Conn,
    schedule_id: ScheduleArg,
) -> None:
    """Fire a schedule now (a manual run)."""
    with handled(conn) as client:
        run = client.trigger_schedule(schedule_id)
    emit(conn, run, lambda: table([run], RUN_COLUMNS))


@schedules_app.command("runs")
@remote_list
def runs(
    conn: Conn,
    schedule_id: ScheduleArg,
    state: Annotated[str | None, typer.Option(metavar="STATE", help="Only this run state")] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
) -> None:
    """List a schedule's runs, newest first."""
    with handled(conn) as client:
        pages = client.iter_runs(schedule_id, page_size=min(limit, 1000), state=state)
        items = collect(pages, limit, every)
    print_items(conn, items, RUN_COLUMNS)


@schedules_app.command("run")
@remote
def show_run(
    conn: Conn,
    schedule_id: ScheduleArg,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="Run id")],
) -> None:
    """Show one run."""
    with handled(conn) as client:
        run = client.get_run(schedule_id, run_id)
    emit(conn, run, lambda: details(run))
