"""``run_task``: a single-task development server for the calling task's folder."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from task_framework.settings import DEFAULT_PORT


def run_task(task_dir: str | Path | None = None, port: int | None = None) -> None:
    """Serve the task in ``task_dir`` (default: the caller's folder) on 127.0.0.1.

    Records and files live under ``<task_dir>/test-data/data``. Keys come from
    ``API_KEYS``/``ADMIN_API_KEYS``; when unset, keys are generated and printed.
    """
    import uvicorn

    from task_framework.app import create_app
    from task_framework.cli.main import _banner
    from task_framework.observability.logging import configure_logging
    from task_framework.settings import Settings

    if task_dir is None:
        caller = inspect.stack()[1].filename
        task_dir = Path(caller).resolve().parent
    folder = Path(task_dir).resolve()
    chosen_port = port or int(os.environ.get("PORT") or DEFAULT_PORT)
    settings = Settings(
        data_dir=folder / "test-data" / "data",
        dev_tasks=[folder],
        host="127.0.0.1",
        port=chosen_port,
    )
    configure_logging(settings.log_level, log_format=settings.log_format)
    uvicorn.run(
        create_app(settings, on_ready=_banner),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
    )
