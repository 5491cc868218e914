"""Remote commands of the ``task-framework`` CLI, built on :mod:`task_framework.client`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the remote commands and command groups to the main app."""
    from task_framework.cli.commands.credentials import credentials_app
    from task_framework.cli.commands.deploy import deploy
    from task_framework.cli.commands.files import files_app
    from task_framework.cli.commands.keys import keys_app, legacy_app
    from task_framework.cli.commands.run import run
    from task_framework.cli.commands.schedules import schedules_app
    from task_framework.cli.commands.tasks import tasks_app
    from task_framework.cli.commands.threads import artifacts_app, threads_app
    from task_framework.cli.commands.webhooks import webhooks_app

    app.command("deploy")(deploy)
    app.command("run")(run)
    app.add_typer(threads_app, name="threads")
    app.add_typer(artifacts_app, name="artifacts")
    app.add_typer(files_app, name="files")
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(schedules_app, name="schedules")
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(keys_app, name="keys")
    app.add_typer(legacy_app, name="api-key", hidden=True)
    app.add_typer(credentials_app, name="credentials")
