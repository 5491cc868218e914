"""Every option of every command says what it is for, and no help screen shows a Python
type (``<list[Path]>``, ``<bool>``) where a metavar belongs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from task_framework.cli.main import cli_command

PYTHON_TYPE = re.compile(
    r"<[^>]*>|\b(?:list|dict|tuple)\[|\b(?:str|int|float|bool|Path|datetime|NoneType)\b"
)


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


COMMANDS = list(_commands(cli_command()))
IDS = [" ".join(path) or "task-framework" for path, _ in COMMANDS]


def _own_params(command: Any) -> list[Any]:
    return [p for p in command.params if p.name != "help"]


def test_the_walk_sees_every_group_and_the_hidden_alias() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"deploy", "keys create", "keys list", "api-key list", "threads list"} <= paths
    assert sum(len(_own_params(c)) for _, c in COMMANDS) > 200


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_option_has_help_and_a_real_metavar(path: tuple[str, ...], command: Any) -> None:
    ctx = command.context_class(command)
    for param in _own_params(command):
        where = f"{' '.join(path)} {param.opts[0] if param.opts else param.name}"
        assert (param.help or "").strip(), f"{where}: no help text"
        shown = param.display_type_rich(ctx) or ""
        if param.param_type_name == "argument":
            assert re.fullmatch(r"[A-Z][A-Z_]*", param.metavar or ""), f"{where}: no metavar"
            assert not PYTHON_TYPE.search(shown), f"{where}: shows {shown!r}"
        elif getattr(param, "is_flag", False):
            assert shown == "", f"{where}: a flag shows a value placeholder {shown!r}"
        else:
            assert shown, f"{where}: no metavar"
            assert not PYTHON_TYPE.search(shown), f"{where}: metavar {shown!r}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_screens_show_no_python_types(
    path: tuple[str, ...], command: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_command().main([*path, "--help"], prog_name="task-framework", standalone_mode=False)
    shown = capsys.readouterr().out
    assert code in (0, None)
    assert "Usage:" in shown
    found = re.findall(r"<[a-zA-Z][\w\[\], ]*>", shown)
    assert found == [], f"{' '.join(path)} --help shows {found}"
