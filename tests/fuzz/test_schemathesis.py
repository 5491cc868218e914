"""schemathesis over the live OpenAPI document of a real server: no operation may answer 5xx.

The server runs in this process behind uvicorn on loopback, with a task deployed; the
schemathesis CLI runs in a subprocess, once with a regular key (and an identity) and once
with an admin key. Every phase runs: examples, coverage (boundary values), fuzzing and
stateful, whose links schemathesis infers from the schema and from the ids in responses,
so id routes are reached with real ids. ``TASK_FRAMEWORK_FUZZ_EXAMPLES`` sets the
examples per operation (default :data:`DEFAULT_EXAMPLES`, which keeps the whole module to
a few minutes on two cores; issue 15 asks for 100 before a release).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import Server, ServerFactory
from loopback import serve_loopback
from task_zips import build_zip, task_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

EXAMPLES_ENV = "TASK_FRAMEWORK_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 20
REQUEST_TIMEOUT_SECONDS = 60
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _examples() -> int:
    return int(os.environ.get(EXAMPLES_ENV) or DEFAULT_EXAMPLES)


async def _deploy(server: Server) -> None:
    response = await server.client.post(
        "/admin/tasks",
        files={"file": ("greet.zip", build_zip(task_files("greet")), "application/zip")},
        headers=server.admin,
    )
    assert response.status_code == 201, response.text


async def _schemathesis(base: str, headers: dict[str, str], report: Path) -> tuple[int, str]:
    args = [
        str(SCHEMATHESIS),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(_examples()),
        "--workers",
        "2",
        "--request-timeout",
        str(REQUEST_TIMEOUT_SECONDS),
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "--warnings",
        "off",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode("utf-8", "replace")


@pytest.mark.parametrize("role", ["user", "admin"])
async def test_no_operation_answers_5xx(
    make_server: ServerFactory, database_url: str, role: str, tmp_path: Path
) -> None:
    # Tasks run inline: the fuzzer exercises the API, not process start-up.
    server = await make_server(database_url=database_url, dev_tasks=[], worker_concurrency=2)
    await _deploy(server)
    headers = server.user("fuzz-app", "fuzz-user") if role == "user" else server.admin
    async with serve_loopback(server.app) as base:
        code, output = await _schemathesis(base, headers, tmp_path / "events.ndjson")
    summary = "\n".join(output.splitlines()[-60:])
    print(output)  # shown with -s, and by pytest on failure
    assert code == 0, f"schemathesis found failures ({role} key):\n{summary}"
    assert re.search(r"\d+ passed", output), summary  # it did run test cases
