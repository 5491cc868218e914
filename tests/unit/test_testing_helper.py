"""task_framework.testing.run_task: unit-testing task functions without a server."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from task_framework import ArtifactValidationError, TaskContext
from task_framework.models.artifact import Artifact
from task_framework.testing import run_task

SCHEMAS = [{"kind": "json", "json_schema": {"type": "object", "required": ["n"]}}]


def echo(context: TaskContext) -> None:
    inputs = context.get_input_artifacts_sync()
    print("inputs", len(inputs))
    context.logger.info("params %s", context.params)
    context.publish_output_artifacts_sync(
        [Artifact(kind="json", ref="out", value={"n": len(inputs), "p": context.params})]
    )


async def echo_async(context: TaskContext) -> None:
    inputs = await context.get_input_artifacts()
    print("inputs", len(inputs))
    context.logger.info("params %s", context.params)
    await context.publish_output_artifacts(
        [{"kind": "json", "ref": "out", "value": {"n": len(inputs), "p": context.params}}]
    )


@pytest.mark.parametrize("fn", [echo, echo_async])
def test_sync_and_async_functions(fn: Any) -> None:
    result = run_task(
        fn, inputs=[{"kind": "text", "text": "a"}], params={"k": 1}, thread_id="thread_t"
    )
    assert result.error is None
    assert result.succeeded
    assert [a.value for a in result.outputs] == [{"n": 1, "p": {"k": 1}}]
    output = result.outputs[0]
    assert (output.thread_id, output.direction, output.ref) == ("thread_t", "output", "out")
    assert output.id
    assert output.created_at
    assert [(r.stream, r.message) for r in result.logs] == [
        ("stdout", "inputs 1"),
        ("log", "params {'k': 1}"),
    ]


async def test_works_from_inside_an_event_loop() -> None:
    assert run_task(echo_async).error is None


def test_schema_violation_raises_in_the_task_and_persists_nothing() -> None:
    seen: list[str] = []

    def task(context: TaskContext) -> None:
        try:
            context.publish_output_artifacts_sync(
                [{"kind": "json", "ref": "ok", "value": {"n": 1}}, {"kind": "json", "value": {}}]
            )
        except ArtifactValidationError as exc:
            seen.append(str(exc))

    result = run_task(task, output_schemas=SCHEMAS)
    assert result.outputs == []
    assert len(seen) == 1
    assert seen[0].startswith("Output artifact validation failed: ")
    assert "'n' is a required property" in seen[0]


def test_escaping_validation_error_fails_the_thread() -> None:
    def task(context: TaskContext) -> None:
        context.publish_output_artifacts_sync([{"kind": "mystery", "value": 1}])

    result = run_task(task)
    assert result.error is not None
    assert result.error.code == "OUTPUT_VALIDATION_FAILED"
    assert "Invalid artifact type: mystery" in result.error.message


def test_duplicate_refs_and_unknown_files_are_refused() -> None:
    def task(context: TaskContext) -> None:
        context.publish_output_artifacts_sync([{"kind": "text", "text": "a", "ref": "r"}])
        context.publish_output_artifacts_sync([{"kind": "text", "text": "b", "ref": "r"}])

    result = run_task(task, thread_id="thread_d")
    assert result.error is not None
    assert "Duplicate ref 'r' within thread 'thread_d'" in result.error.message
    assert [a.text for a in result.outputs] == ["a"]

    def file_task(context: TaskContext) -> None:
        context.publish_output_artifacts_sync([{"kind": "file", "file_ref": "file_nope"}])

    missing = run_task(file_task)
    assert missing.error is not None
    assert "File 'file_nope' does not exist" in missing.error.message


def test_files_upload_download(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"z" * 3_000_000)

    def task(context: TaskContext) -> None:
        uploaded = context.upload_file_sync(source, media_type="application/x-z")
        assert uploaded["filename"] == "data.bin"
        assert uploaded["size"] == 3_000_000
        assert context.download_file_sync(uploaded["file_ref"]) == source.read_bytes()
        assert context.download_file_sync("file_given") == b"given"
        context.publish_output_artifacts_sync(
            [{"kind": "file", "ref": "f", "file_ref": uploaded["file_ref"]}]
        )
        with pytest.raises(FileNotFoundError):
            context.download_file_sync("file_missing")

    result = run_task(task, files={"file_given": b"given"})
    assert result.error is None, result.error
    file_ref = result.outputs[0].file_ref
    assert file_ref is not None
    assert result.files[file_ref] == source.read_bytes()
    assert result.outputs[0].size == 3_000_000


def test_problems_configuration_and_errors() -> None:
    def task(context: TaskContext) -> None:
        context.signal_problem_sync(RuntimeError("meh"), {"x": 1})
        assert context.get("key") == "secret"
        assert context.get_env("key") == "plain"
        assert context.has("key")
        assert not context.has("nope")
        assert context.get_all_env() == {"key": "plain"}
        with pytest.raises(KeyError, match="Secret 'nope' not found"):
            context.get_secret("nope")
        raise ValueError("bad input")

    result = run_task(task, config={"key": "plain"}, secrets={"key": "secret"})
    assert result.problems[0]["message"] == "meh"
    assert result.problems[0]["exception_type"] == "RuntimeError"
    assert result.problems[0]["details"] == {"x": 1}
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.exception_type) == (
        "TASK_EXCEPTION",
        "bad input",
        "ValueError",
    )


def test_sys_exit_is_a_crash_not_a_success() -> None:
    result = run_task(lambda context: sys.exit(2))
    assert result.error is not None
    assert (result.error.code, result.error.message) == (
        "TASK_CRASHED",
        "Task process exited with code 2",
    )


def test_logging_anywhere_is_collected_at_the_level() -> None:
    def task(context: TaskContext) -> None:
        context.logger.debug("dbg")
        logging.getLogger("lib").warning("warn")

    result = run_task(task, log_level="INFO")
    assert [(r.level, r.logger, r.message) for r in result.logs] == [("WARNING", "lib", "warn")]


def test_json_schema_checks_are_skipped_without_jsonschema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import now raises ImportError

    def task(context: TaskContext) -> None:
        context.publish_output_artifacts_sync([{"kind": "json", "value": {}}])

    assert run_task(task, output_schemas=SCHEMAS).error is None
    wrong_kind = run_task(task, output_schemas=[{"kind": "text"}])
    assert wrong_kind.error is not None
    assert wrong_kind.error.code == "OUTPUT_VALIDATION_FAILED"
