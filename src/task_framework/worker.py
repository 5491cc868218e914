"""``task-framework worker``: claim and run threads (and webhook deliveries) without HTTP.

A worker is a replica without the HTTP server: same services, same background loops,
coordinated with the others through the database only.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from task_framework.app import create_app
from task_framework.settings import Settings

log = logging.getLogger("task_framework.worker")


async def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain (API.md §15.3) and exit."""
    app = create_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with app.router.lifespan_context(app):
        log.info(
            "worker.started",
            extra={"concurrency": settings.worker_concurrency, "tasks": settings.worker_tasks},
        )
        await stop.wait()
        log.info("worker.draining")
    log.info("worker.stopped")
