"""JSON log lines: keys, timestamps, request id, stdlib routing and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from task_framework.observability.logging import configure_logging, get_logger, reset_logging

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
API_KEY = "tfk_" + "Ab0-_" * 8 + "xyz"  # 43 base64url characters after the prefix

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    yield buffer
    reset_logging()


@pytest.fixture
def lines(stream: io.StringIO) -> Lines:
    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    return read


def test_one_json_object_per_line_with_the_contract_keys(lines: Lines) -> None:
    get_logger("task_framework.threads").info("thread.created", thread_id="thread_1")

    [line] = lines()

    assert line["event"] == "thread.created"
    assert line["level"] == "info"
    assert line["logger"] == "task_framework.threads"
    assert TIMESTAMP.fullmatch(line["timestamp"])
    assert line["thread_id"] == "thread_1"
    assert "request_id" not in line


def test_request_id_is_added_while_bound(lines: Lines) -> None:
    log = get_logger("t")
    tokens = structlog.contextvars.bind_contextvars(request_id="req-1")
    log.info("inside.request")
    structlog.contextvars.reset_contextvars(**tokens)
    log.info("outside.request")

    inside, outside = lines()

    assert inside["request_id"] == "req-1"
    assert "request_id" not in outside


def test_api_key_inside_a_message_is_masked(stream: io.StringIO, lines: Lines) -> None:
    get_logger("t").info(f"auth.failed for key {API_KEY} from client")
    logging.getLogger("other").warning("stdlib saw %s", API_KEY)

    assert API_KEY not in stream.getvalue()
    structlog_line, stdlib_line = lines()
    assert structlog_line["event"] == "auth.failed for key tfk_*** from client"
    assert stdlib_line["message"] == "stdlib saw tfk_***"


def test_secret_fields_are_masked(stream: io.StringIO, lines: Lines) -> None:
    get_logger("t").info(
        "webhook.delivered",
        api_key="plain-key",
        headers={"X-API-Key": "k1", "X-Task-Signature": "t=1,v1=ab", "Accept": "*/*"},
        url="https://example.com/hook?api_key=abc123&x=1",
        secret="whsec_" + "A" * 44,
        webhook_id="webhook_1",
    )

    [line] = lines()
    assert line["api_key"] == "***"
    assert line["headers"] == {"X-API-Key": "***", "X-Task-Signature": "***", "Accept": "*/*"}
    assert line["url"] == "https://example.com/hook?api_key=***&x=1"
    assert line["secret"] == "***"
    assert line["webhook_id"] == "webhook_1"
    for leaked in ("plain-key", "k1", "abc123", "whsec_A"):
        assert leaked not in stream.getvalue()


def test_credential_values_are_masked(lines: Lines) -> None:
    get_logger("t").info("credential.updated", name="db_password_name", value="s3cret")

    [line] = lines()
    assert line["value"] == "***"
    assert line["name"] == "db_password_name"


def test_stdlib_records_share_the_renderer(lines: Lines) -> None:
    tokens = structlog.contextvars.bind_contextvars(request_id="req-2")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
    logging.getLogger("task_framework.x").info("thread.started", extra={"thread_id": "thread_2"})
    structlog.contextvars.reset_contextvars(**tokens)

    free_text, dotted = lines()
    assert free_text["event"] == "log.message"
    assert free_text["message"] == "Started server process [7]"
    assert free_text["logger"] == "uvicorn.error"
    assert free_text["request_id"] == "req-2"
    assert TIMESTAMP.fullmatch(free_text["timestamp"])
    assert dotted["event"] == "thread.started"
    assert dotted["thread_id"] == "thread_2"


def test_uvicorn_access_lines_are_structured_and_redacted(lines: Lines) -> None:
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.1:5000",
        "GET",
        "/files/file_abc?expires=1&signature=deadbeef",
        "1.1",
        200,
    )

    [line] = lines()
    assert line["event"] == "http.access"
    assert line["status"] == 200
    assert line["path"] == "/files/file_abc?expires=1&signature=***"


def test_exceptions_are_rendered_and_redacted(lines: Lines) -> None:
    try:
        raise ValueError(f"bad key {API_KEY}")
    except ValueError:
        get_logger("t").exception("thread.crashed")

    [line] = lines()
    assert line["level"] == "error"
    assert "ValueError: bad key tfk_***" in line["exception"]


def test_level_filters_structlog_and_stdlib(stream: io.StringIO, lines: Lines) -> None:
    configure_logging("WARN", stream=stream)
    get_logger("t").info("not.shown")
    logging.getLogger("t").info("not shown either")
    get_logger("t").warning("shown.once")

    assert [line["event"] for line in lines()] == ["shown.once"]


def test_configure_twice_does_not_duplicate_output(stream: io.StringIO, lines: Lines) -> None:
    configure_logging("INFO", stream=stream)
    configure_logging("INFO", stream=stream)
    get_logger("t").info("only.once")

    assert len(lines()) == 1


def test_reset_restores_previous_state() -> None:
    root = logging.getLogger()
    handlers_before, level_before = list(root.handlers), root.level
    structlog_configured_before = structlog.is_configured()
    uvicorn_handler = logging.NullHandler()
    logging.getLogger("uvicorn").addHandler(uvicorn_handler)
    try:
        configure_logging("DEBUG", stream=io.StringIO())
        assert logging.getLogger("uvicorn").handlers == []

        reset_logging()

        assert root.handlers == handlers_before
        assert root.level == level_before
        assert logging.getLogger("uvicorn").handlers == [uvicorn_handler]
        assert structlog.is_configured() == structlog_configured_before
    finally:
        logging.getLogger("uvicorn").removeHandler(uvicorn_handler)


def test_default_stream_follows_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    try:
        get_logger("t").info("to.stdout")
    finally:
        reset_logging()

    assert json.loads(capsys.readouterr().out)["event"] == "to.stdout"


def test_uvicorn_colour_copy_and_alembic_plugin_lines_are_dropped(lines: Lines) -> None:
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "\x1b[36m%d\x1b[0m"}
    )
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate")

    [line] = lines()
    assert line["message"] == "Started server process [42]"
    assert "color_message" not in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("log_format", "terminal"), [("console", False), ("auto", True)])
def test_console_format_is_readable_and_still_redacts(log_format: str, terminal: bool) -> None:
    buffer = _Terminal() if terminal else io.StringIO()
    configure_logging("INFO", stream=buffer, log_format=log_format)
    try:
        get_logger("task_framework.auth").info("key.created", api_key=API_KEY, name="ci")
        logging.getLogger("uvicorn.error").info("Application startup complete.")
    finally:
        reset_logging()
    text = buffer.getvalue()
    first, second = text.splitlines()
    assert not first.lstrip().startswith("{")
    assert "key.created" in first
    assert API_KEY not in text
    assert "Application startup complete." in second
    assert "log.message" not in second
    assert ("\x1b[" in text) is terminal  # colours only on a terminal


def test_auto_format_writes_json_to_a_pipe() -> None:
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer, log_format="auto")
    try:
        get_logger("t").info("piped.line")
    finally:
        reset_logging()
    assert json.loads(buffer.getvalue())["event"] == "piped.line"
