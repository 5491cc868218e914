"""The settings reference is generated from the settings model and cannot drift."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from task_framework.cli.settings_doc import (
    DEFAULT_OUTPUT,
    format_bytes,
    format_seconds,
    main,
    render_settings_reference,
)
from task_framework.settings import Settings


def test_committed_reference_is_up_to_date() -> None:
    committed = DEFAULT_OUTPUT.read_text(encoding="utf-8")
    assert committed == render_settings_reference(), (
        "docs/reference/settings.md is stale: run python -m task_framework.cli.settings_doc"
    )


def test_every_field_is_a_row_named_by_its_first_alias() -> None:
    reference = render_settings_reference()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        first = alias.choices[0] if isinstance(alias, AliasChoices) else name.upper()
        assert f"| `{first}` |" in reference, name


def test_machine_dependent_default_is_described_not_computed() -> None:
    row = next(
        line
        for line in render_settings_reference().splitlines()
        if line.startswith("| `TASK_FRAMEWORK_WORKER_CONCURRENCY`")
    )
    assert "| CPU count |" in row


def test_units() -> None:
    assert format_bytes(5 * 1024**3) == "5 GiB"
    assert format_bytes(32 * 1024**2) == "32 MiB"
    assert format_bytes(1000) == "1000 bytes"
    assert format_seconds(30.0) == "30 s"
    assert format_seconds(432_000) == "432000 s (5 d)"


def test_check_flags_a_stale_file_and_writing_fixes_it(tmp_path: Path) -> None:
    target = tmp_path / "settings.md"
    assert main(["--check", "--output", str(target)]) == 1
    target.write_text("old\n", encoding="utf-8")
    assert main(["--check", "--output", str(target)]) == 1
    assert main(["--output", str(target)]) == 0
    assert main(["--check", "--output", str(target)]) == 0
