"""Python client of the task-framework API.

``Client`` (blocking) and ``AsyncClient`` (asyncio) cover every route of the API; both
read ``TASK_FRAMEWORK_URL`` and ``TASK_FRAMEWORK_API_KEY`` when not given explicitly::

    from task_framework.client import Client

    with Client("http://127.0.0.1:3000", "tfk_…", app_id="app1", user_id="me") as tf:
        thread = tf.run([{"kind": "json", "value": {"name": "Ada"}}], task_id="hello")
        print(thread.state, thread.output("greeting").value)

Errors answered by the server raise :class:`ApiError` with ``status``, ``code`` and
``detail``; a server that cannot be reached raises :class:`ServerUnreachable`.
"""

from task_framework.client import models
from task_framework.client._base import ProgressCallback
from task_framework.client.aio import AsyncClient
from task_framework.client.errors import ApiError, ClientError, ServerUnreachable, WaitTimeout
from task_framework.client.models import Artifact, Page, ServerEvent, Thread
from task_framework.client.sync import Client

__all__ = [
    "ApiError",
    "Artifact",
    "AsyncClient",
    "Client",
    "ClientError",
    "Page",
    "ProgressCallback",
    "ServerEvent",
    "ServerUnreachable",
    "Thread",
    "WaitTimeout",
    "models",
]
