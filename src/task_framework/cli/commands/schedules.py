"""``task-framework schedules …``: cron schedules and their runs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from task_framework.cli.commands._common import (
    AllOpt,
    AppOpt,
    Conn,
    JsonOpt,
    KeyOpt,
    LimitOpt,
    UrlOpt,
    UserOpt,
    collect,
    details,
    emit,
    handled,
    out,
    table,
)
from task_framework.cli.commands.run import parse_json_input, parse_params
from task_framework.client.models import Run, Schedule

schedules_app = typer.Typer(
    help="Create and manage cron schedules and their runs.", no_args_is_help=True
)

ScheduleArg = Annotated[str, typer.Argument(help="Schedule id")]


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _schedule_table(items: list[Schedule]) -> None:
    table(
        items,
        [
            ("id", lambda s: s.id),
            ("state", lambda s: s.state),
            ("cron", lambda s: f"{s.cron} ({s.timezone})"),
            ("task", lambda s: f"{s.task_id}:{s.task_version}"),
            ("next run", lambda s: _ts(s.next_run_at)),
        ],
    )


def _run_table(items: list[Run]) -> None:
    table(
        items,
        [
            ("run", lambda r: r.run_id),
            ("state", lambda r: r.state),
            ("attempt", lambda r: f"{r.attempt}/{r.max_attempts}"),
            ("threads", lambda r: ", ".join(r.threads)),
            ("labels", lambda r: r.labels or None),
        ],
    )


@schedules_app.command("create")
def create(
    cron: Annotated[str, typer.Option(help="Five cron fields, e.g. '*/5 * * * *'")],
    timezone: Annotated[str, typer.Option("--tz", help="IANA time zone")] = "UTC",
    task_id: Annotated[str | None, typer.Option("--task", "-t", help="Task id")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Task version")] = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="Input template (JSON)")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE")] = None,
    concurrency: Annotated[str, typer.Option(help="allow, forbid or replace")] = "allow",
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts per fire")] = 1,
    misfire: Annotated[str, typer.Option(help="skip or catch_up_last")] = "skip",
    webhook: Annotated[
        list[str] | None, typer.Option(help="Callback URL for the schedule's thread events")
    ] = None,
    paused: Annotated[bool, typer.Option(help="Create it paused")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a schedule."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
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
def list_schedules(
    state: Annotated[str | None, typer.Option(help="active, paused or canceled")] = None,
    task_id: Annotated[str | None, typer.Option("--task", help="Only this task")] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List schedules."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        pages = client.iter_schedules(page_size=min(limit, 1000), state=state, task_id=task_id)
        items = collect(pages, limit, every)
    emit(conn, items, lambda: _schedule_table(items))


@schedules_app.command("show")
def show(
    schedule_id: ScheduleArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a schedule."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        schedule = client.get_schedule(schedule_id)
    emit(conn, schedule, lambda: details(schedule))


@schedules_app.command("update")
def update(
    schedule_id: ScheduleArg,
    cron: Annotated[str | None, typer.Option(help="New cron expression")] = None,
    timezone: Annotated[str | None, typer.Option("--tz", help="New time zone")] = None,
    state: Annotated[str | None, typer.Option(help="active, paused or canceled")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    concurrency: Annotated[str | None, typer.Option(help="allow, forbid or replace")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a schedule (pause with --state paused, resume with --state active)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
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
def cancel(
    schedule_id: ScheduleArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cancel a schedule: no further fires."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        schedule = client.cancel_schedule(schedule_id)
    emit(conn, schedule, lambda: out.print(f"{schedule.id} {schedule.state}"))


@schedules_app.command("delete")
def delete(
    schedule_id: ScheduleArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete a schedule and its runs (its threads are kept)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        client.delete_schedule(schedule_id)
    emit(conn, {"deleted": schedule_id}, lambda: out.print(f"deleted {schedule_id}"))


@schedules_app.command("trigger")
def trigger(
    schedule_id: ScheduleArg,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fire a schedule now (a manual run)."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        run = client.trigger_schedule(schedule_id)
    emit(conn, run, lambda: _run_table([run]))


@schedules_app.command("runs")
def runs(
    schedule_id: ScheduleArg,
    state: Annotated[str | None, typer.Option(help="Only this run state")] = None,
    limit: LimitOpt = 20,
    every: AllOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List a schedule's runs, newest first."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        pages = client.iter_runs(schedule_id, page_size=min(limit, 1000), state=state)
        items = collect(pages, limit, every)
    emit(conn, items, lambda: _run_table(items))


@schedules_app.command("run")
def show_run(
    schedule_id: ScheduleArg,
    run_id: Annotated[str, typer.Argument(help="Run id")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    app_id: AppOpt = None,
    user_id: UserOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one run."""
    conn = Conn(url, api_key, app_id, user_id, json_out)
    with handled(conn) as client:
        run = client.get_run(schedule_id, run_id)
    emit(conn, run, lambda: details(run))
