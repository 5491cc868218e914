"""The CLI against a real ``task-framework serve``: package → deploy → run → artifacts →
files → schedules → webhooks → keys → credentials, in --json and human modes, with the
documented exit codes (0 ok, 1 task failed, 2 usage/rejected, 3 server/auth)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

ADMIN_KEY = "tfk_workflow_admin_key_00000000000000000000000"
USER_KEY = "tfk_workflow_user_key_000000000000000000000000"
STARTUP_TIMEOUT_SECONDS = 60.0
COMMAND_TIMEOUT_SECONDS = 300.0

TASK_CODE = """\
from task_framework.models.artifact import Artifact


def run(context):
    inputs = context.get_input_artifacts_sync()
    if context.params.get("fail"):
        raise RuntimeError("asked to fail")
    print("got", len(inputs), "inputs")
    context.logger.info("shouting")
    words = [str(a.value.get("word", "")) for a in inputs if a.kind == "json"]
    loud = " ".join(words).upper() + "!"
    stored = context.upload_file_sync(loud.encode(), filename="loud.txt", media_type="text/plain")
    context.publish_output_artifacts_sync([
        Artifact(kind="text", ref="loud", text=loud),
        Artifact(kind="file", ref="loud.txt", file_ref=stored["file_ref"], media_type="text/plain"),
    ])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "task-framework"
    return [str(script)] if script.exists() else [sys.executable, "-m", "task_framework"]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012 - shared by the test on purpose

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TASK_FRAMEWORK_API_KEYS": USER_KEY,
        "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
        "TASK_FRAMEWORK_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    }
    log = (tmp_path / "server.log").open("wb")
    args = [*_cli(), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        assert proc.poll() is None, "server exited early"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.close()


class Cli:
    """Runs ``task-framework`` subcommands with the connection in the environment."""

    def __init__(self, base: str, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {
            **os.environ,
            "TASK_FRAMEWORK_URL": base,
            "TASK_FRAMEWORK_API_KEY": USER_KEY,
            "TASK_FRAMEWORK_APP_ID": "app1",
            "TASK_FRAMEWORK_USER_ID": "user1",
            "COLUMNS": "200",
        }

    def result(
        self, *args: str, code: int = 0, admin: bool = False, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "TASK_FRAMEWORK_API_KEY": ADMIN_KEY} if admin else self.env
        done = subprocess.run(
            [*_cli(), *args],
            env=env,
            cwd=cwd or self.cwd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done

    def __call__(
        self, *args: str, code: int = 0, admin: bool = False, cwd: Path | None = None
    ) -> str:
        return self.result(*args, code=code, admin=admin, cwd=cwd).stdout

    def json(self, *args: str, code: int = 0, admin: bool = False) -> Any:
        return json.loads(self(*args, "--json", code=code, admin=admin))


def test_cli_workflow(tmp_path: Path, server_url: str, receiver: str) -> None:
    cli = Cli(server_url, tmp_path)
    task_dir = tmp_path / "shout"
    task_dir.mkdir()
    (task_dir / "task.py").write_text(TASK_CODE)
    (task_dir / "task_metadata.json").write_text(
        json.dumps({"name": "shout", "version": "1.0.0", "entry_point": "task:run"})
    )

    # package → deploy → tasks
    cli("package", "-t", str(task_dir), "-o", str(tmp_path / "shout.zip"))
    deployed = cli.json(
        "deploy", str(tmp_path / "shout.zip"), "--url", server_url, "--admin-key", ADMIN_KEY
    )
    assert deployed["task_id"] == "shout"
    listing = cli.json("tasks", "list", admin=True)
    assert [t["task_id"] for t in listing["tasks"]] == ["shout"]
    assert "shout" in cli("tasks", "list", admin=True)
    assert cli.json("tasks", "versions", "shout", admin=True)[0]["version"] == "1.0.0"
    cli("tasks", "download", "shout", "-o", str(tmp_path), admin=True)
    assert (tmp_path / "shout-1.0.0.zip").is_file()
    cli("tasks", "list", code=3)  # a regular key on an admin route

    # run: sync (json and human), failure, async + follow
    thread = cli.json("run", "--task", "shout", "-i", '{"word": "hi"}', "-i", '{"word": "there"}')
    assert thread["state"] == "succeeded"
    assert {a["ref"]: a.get("text") for a in thread["outputs"]}["loud"] == "HI THERE!"
    human = cli("run", "-t", "shout", "-i", '{"word": "human"}')
    assert "succeeded" in human
    assert "HUMAN!" in human
    failed = cli.json("run", "-t", "shout", "-p", "fail=true", code=1)
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "TASK_EXCEPTION"
    followed = cli("run", "-t", "shout", "-i", '{"word": "live"}', "--async", "--follow")
    assert "thread.started" in followed
    assert "shouting" in followed
    assert "thread.succeeded" in followed
    queued_id = cli("run", "-t", "shout", "--async").strip()
    assert queued_id.startswith("thread_")

    # threads
    thread_id = thread["id"]
    assert cli.json("threads", "show", thread_id)["id"] == thread_id
    assert len(cli.json("threads", "list", "--all")) == 5
    assert thread_id in cli("threads", "list")
    logs = cli.json("threads", "logs", thread_id)
    assert any("got 2 inputs" in r["message"] for r in logs)
    assert "shouting" in cli("threads", "logs", thread_id, "--follow")
    events = [
        json.loads(line) for line in cli("threads", "events", thread_id, "--json").splitlines()
    ]
    assert events[-1]["event"] == "thread.succeeded"
    cli("threads", "stop", thread_id, code=2)  # already finished: THREAD_INVALID_STATE
    cli("threads", "show", "thread_" + "0" * 32, code=2)
    retried = cli.json("threads", "retry", failed["id"], code=1)  # fails again
    assert retried["attempt"] == 1

    # artifacts
    artifacts = cli.json("artifacts", "list", "--thread", thread_id)
    file_artifact = next(a for a in artifacts if a["ref"] == "loud.txt")
    saved = cli.json("artifacts", "download", file_artifact["id"], "-o", str(tmp_path / "a.txt"))
    assert Path(saved["path"]).read_text() == "HI THERE!"
    assert "loud.txt" in cli("artifacts", "list", "--thread", thread_id)
    assert cli.json("artifacts", "show", file_artifact["id"])["kind"] == "file"

    # files
    source = tmp_path / "notes.md"
    source.write_bytes(b"# notes\n" * 1000)
    uploaded = cli.json("files", "upload", str(source))
    ref = uploaded["file_ref"]
    assert uploaded["size"] == source.stat().st_size
    assert ref in [f["file_ref"] for f in cli.json("files", "ls")]
    assert "notes.md" in cli("files", "ls")
    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    cli("files", "download", ref, "-o", str(out_dir))
    assert (out_dir / "notes.md").read_bytes() == source.read_bytes()
    cli("files", "rm", ref)
    cli("files", "download", ref, "-o", str(out_dir), code=2)

    # schedules
    schedule = cli.json(
        "schedules", "create", "--cron", "0 4 * * *", "-t", "shout", "-i", '{"word": "cron"}'
    )
    assert schedule["state"] == "active"
    run = cli.json("schedules", "trigger", schedule["id"])
    assert run["labels"] == {"trigger": "manual"}
    assert cli.json("schedules", "runs", schedule["id"])[0]["run_id"] == run["run_id"]
    assert schedule["id"] in cli("schedules", "list")
    assert cli.json("schedules", "update", schedule["id"], "--state", "paused")["state"] == "paused"
    cli("schedules", "cancel", schedule["id"])
    cli("schedules", "delete", schedule["id"])
    cli("schedules", "create", "--cron", "not a cron", code=2)

    # webhooks (+ deliveries)
    hook = cli.json("webhooks", "create", receiver, "-e", "thread.succeeded", "--task", "shout")
    assert hook["secret"].startswith("whsec_")
    ran = cli.json("run", "-t", "shout", "-i", '{"word": "hook"}')
    deadline = time.monotonic() + 30
    deliveries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        deliveries = cli.json("webhooks", "deliveries", hook["id"], "--status", "success")
        if deliveries:
            break
        time.sleep(0.5)
    assert deliveries[0]["thread_id"] == ran["id"]
    assert any(p.get("thread_id") == ran["id"] for p in _Hook.received)
    assert "success" in cli("webhooks", "deliveries", hook["id"])
    redelivered = cli.json("webhooks", "redeliver", hook["id"], deliveries[0]["id"])
    assert redelivered["event_id"] == deliveries[0]["event_id"]
    assert "enabled" in cli("webhooks", "list")
    assert cli.json("webhooks", "update", hook["id"], "--disable")["enabled"] is False
    cli("webhooks", "delete", hook["id"])

    # keys and credentials (admin)
    key = cli.json("keys", "create", "--name", "ci", "--bind-app", "app1", admin=True)
    assert key["key"].startswith("tfk_")
    assert key["id"] in cli("keys", "list", admin=True)
    cli("keys", "revoke", key["id"], admin=True)
    cli("credentials", "set", "TOKEN", "--value", "abcd-1234", "--tag", "ci", admin=True)
    assert cli.json("credentials", "list", admin=True)[0]["value_preview"].endswith("1234")
    assert cli("credentials", "reveal", "TOKEN", admin=True).strip() == "abcd-1234"
    cli("credentials", "delete", "TOKEN", admin=True)

    # exit codes: bad key and unreachable server are 3, CLI misuse is 2
    cli.env["TASK_FRAMEWORK_API_KEY"] = "tfk_wrong"
    cli("threads", "list", code=3)
    cli.env["TASK_FRAMEWORK_URL"] = f"http://127.0.0.1:{_free_port()}"
    cli("threads", "list", code=3)
    cli("threads", "list", "--limit", "0", code=2)


def _package(cli: Cli, folder: Path, **metadata: str) -> Path:
    """Package the shout task from ``folder`` (written fresh) into ``folder``.zip."""
    folder.mkdir(exist_ok=True)
    (folder / "task.py").write_text(TASK_CODE)
    fields = {"name": "shout", "version": "1.0.0", "entry_point": "task:run", **metadata}
    (folder / "task_metadata.json").write_text(json.dumps(fields))
    target = folder.with_suffix(".zip")
    cli("package", "-t", str(folder), "-o", str(target))
    return target


def test_deploy_reads_the_exported_connection_and_exits_by_the_scheme(
    tmp_path: Path, server_url: str
) -> None:
    """The tutorial's exports (TASK_FRAMEWORK_URL, TASK_FRAMEWORK_API_KEY holding the admin
    key) are all deploy needs; its errors use the shared output and exit codes."""
    cli = Cli(server_url, tmp_path)
    first = _package(cli, tmp_path / "v1")
    changed = _package(cli, tmp_path / "v1-changed", description="other content")

    assert cli("deploy", str(first), admin=True).strip() == "deployed shout:1.0.0"
    again = cli.json("deploy", str(first), admin=True)
    assert (again["task_id"], again["was_new"]) == ("shout", False)

    conflict = cli.result("deploy", str(changed), code=2, admin=True)
    assert "TASK_ALREADY_EXISTS (409)" in conflict.stderr
    assert "--force" in conflict.stderr.split("hint:", 1)[1]
    refused = json.loads(cli("deploy", str(changed), "--json", code=2, admin=True))
    assert refused["error"]["code"] == "TASK_ALREADY_EXISTS"
    assert "--force" in refused["error"]["hint"]
    assert cli.json("deploy", str(changed), "--force", admin=True)["was_new"] is True

    cli("deploy", str(tmp_path / "missing.zip"), code=2, admin=True)
    cli("deploy", str(first), code=3)  # a regular key: 401 on the admin route
    # The older spelling still works: an admin key sent as X-Admin-API-Key.
    assert cli.json("deploy", str(changed), "--admin-key", ADMIN_KEY)["was_new"] is False
    cli.env["TASK_FRAMEWORK_API_KEY"] = "tfk_wrong"
    assert "AUTH_INVALID (401)" in cli.result("deploy", str(first), code=3).stderr
    cli.env["TASK_FRAMEWORK_URL"] = f"http://127.0.0.1:{_free_port()}"
    unreachable = json.loads(cli("deploy", str(first), "--json", code=3, admin=True))
    assert unreachable["error"]["code"] == "SERVER_UNREACHABLE"


def test_keys_reach_the_served_database_and_never_create_one(
    tmp_path: Path, server_url: str
) -> None:
    """``keys … --data-dir`` opens the database ``serve --data-dir`` uses; a data dir
    without a database is refused (exit 2) and left as it was."""
    cli = Cli(server_url, tmp_path)
    served = tmp_path / "data"  # the server_url fixture serves --data-dir tmp_path/data
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    missing = tmp_path / "tf-data"
    refused = cli.result("keys", "list", "--data-dir", str(missing), code=2)
    assert str(missing / "task_framework.db") in refused.stderr
    assert "--data-dir" in refused.stderr
    assert not missing.exists()
    cli.result("keys", "list", "--local", code=2, cwd=elsewhere)  # ./data of that folder
    cli.result("api-key", "list", code=2, cwd=elsewhere)  # the old spelling, hidden
    assert list(elsewhere.iterdir()) == []

    remote = cli.json("keys", "create", "--name", "made-remotely", admin=True)
    local = cli.json(
        "keys", "create", "--name", "made-locally", "--admin", "--data-dir", str(served)
    )
    assert local["key"].startswith("tfk_")
    listed = cli("keys", "list", "--data-dir", str(served), "-q").split()
    assert {remote["id"], local["id"]} <= set(listed)
    assert local["id"] in [k["id"] for k in cli.json("keys", "list", admin=True)]
    cli.env["TASK_FRAMEWORK_DATA_DIR"] = str(served)
    assert local["id"] in cli("keys", "list", "--local", "-q", cwd=elsewhere).split()
    assert local["id"] in cli("api-key", "list", "--data-dir", str(served))

    # The key made in the database is a working admin key of the running server.
    cli.env["TASK_FRAMEWORK_API_KEY"] = local["key"]
    assert cli.json("tasks", "list")["tasks"] == []
    cli("keys", "revoke", local["id"], "--data-dir", str(served))
    cli("keys", "revoke", "apikey_" + "0" * 32, "--data-dir", str(served), code=2)


def test_list_ids_stay_whole_at_80_columns_and_quiet_prints_only_ids(
    tmp_path: Path, server_url: str
) -> None:
    cli = Cli(server_url, tmp_path)
    cli.env["COLUMNS"] = "80"
    cli.json("deploy", str(_package(cli, tmp_path / "shout")), admin=True)
    schedule = cli.json("schedules", "create", "--cron", "0 4 * * *", "-t", "shout")
    run = cli.json("schedules", "trigger", schedule["id"])
    threads = [cli.json("run", "-t", "shout", "-i", '{"word": "w"}')["id"] for _ in range(2)]
    version = cli.json("tasks", "versions", "shout", admin=True)[0]

    shown = {
        "threads": cli("threads", "list"),
        "runs": cli("schedules", "runs", schedule["id"]),
        "schedules": cli("schedules", "list"),
        "versions": cli("tasks", "versions", "shout", admin=True),
    }
    assert all(len(line) <= 80 for text in shown.values() for line in text.splitlines())
    for thread_id in threads:
        assert thread_id in shown["threads"]
    assert run["run_id"] in shown["runs"]
    assert schedule["id"] in shown["schedules"]
    assert version["zip_hash"] in shown["versions"]
    assert "…" not in "".join(shown.values())

    listed = [t["id"] for t in cli.json("threads", "list")]
    assert set(threads) <= set(listed)
    assert cli("threads", "list", "-q").splitlines() == listed
    assert cli("schedules", "runs", schedule["id"], "--quiet").splitlines() == [run["run_id"]]
    assert cli("tasks", "list", "-q", admin=True).splitlines() == ["shout"]
