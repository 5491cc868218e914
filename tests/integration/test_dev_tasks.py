"""``serve --dev-task``: edits to the code and to the dependencies apply without a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import ServerFactory
from procs import write_task

pytestmark = pytest.mark.slow

BODY = {"mode": "sync", "inputs": [{"kind": "json", "value": {}}]}


def _task_body(greeting: str) -> str:
    return (
        "from task_framework.models.artifact import Artifact\n\n"
        "def run(context):\n"
        "    try:\n"
        "        import six\n"
        "        dep = six.__version__\n"
        "    except ImportError:\n"
        "        dep = None\n"
        f"    out = {{'greeting': {greeting!r}, 'six': dep}}\n"
        "    context.publish_output_artifacts_sync([Artifact(kind='json', value=out)])\n"
    )


def _touch_later(path: Path) -> None:
    # mtimes can tie within the filesystem's granularity: make the change visible.
    later = time.time() + 2
    os.utime(path, (later, later))


async def test_code_and_dependency_edits_apply_to_the_next_thread(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    folder = write_task(tmp_path, "editable", _task_body("first"))
    server = await make_server(dev_tasks=[folder])

    async def output() -> dict[str, object]:
        response = await server.client.post("/threads", json=BODY, headers=server.user())
        assert response.status_code == 201, response.text
        thread = response.json()
        assert thread["state"] == "succeeded", thread["error"]
        value: dict[str, object] = thread["outputs"][0]["value"]
        return value

    assert await output() == {"greeting": "first", "six": None}

    (folder / "task.py").write_text(_task_body("second"))
    _touch_later(folder / "task.py")
    time.sleep(0.6)  # the code token is re-read at most twice a second
    assert await output() == {"greeting": "second", "six": None}

    (folder / "requirements.txt").write_text("six==1.16.0\n")
    _touch_later(folder / "requirements.txt")
    time.sleep(0.6)
    assert await output() == {"greeting": "second", "six": "1.16.0"}
