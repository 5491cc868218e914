"""Serve an already started app over real loopback HTTP (for streaming responses).

``httpx.ASGITransport`` returns a response only once the app has finished it, so a live
stream has to go through a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_SECONDS = 10.0


@contextlib.asynccontextmanager
async def serve_loopback(app: FastAPI) -> AsyncIterator[str]:
    """Yield the base URL of ``app`` served by uvicorn on 127.0.0.1 (lifespan not rerun)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
        while not server.started:
            await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
