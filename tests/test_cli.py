"""The ``lre`` dispatcher: every subcommand resolves to a module that declares and runs it."""

from __future__ import annotations

import importlib

import pytest

from lre.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_its_functions_and_help(name: str, capsys) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(getattr(module, f"cli_{name}_args"))
    assert callable(getattr(module, f"cli_{name}"))
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"lre {name}" in out
    # The command's own options are listed, not only the dispatcher's.
    assert out.count("\n") > 4


def test_no_command_prints_usage_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_user_error_is_one_line_without_traceback(tmp_path, capsys) -> None:
    rc = main(["validate", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err
    assert "missing" in err
