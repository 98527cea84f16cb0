"""The ``liquidref`` command (liquidref/cli.py): help, unknown commands, dispatch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from liquidref import cli


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_lists_every_command(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: liquidref <command>")
    for name in cli.SUBCOMMANDS:
        assert f"  {name} " in out


def test_unknown_command_exits_2_with_a_message(capsys):
    assert cli.main(["frobnicate"]) == 2
    captured = capsys.readouterr()
    assert "liquidref: unknown command 'frobnicate'" in captured.err
    assert "usage: liquidref <command>" in captured.err
    assert captured.out == ""


def test_demo_help_is_dispatched(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: liquidref demo" in out and "--quick" in out and "--out" in out


def test_console_entry_point_runs_as_a_program():
    done = subprocess.run(
        [sys.executable, "-m", "liquidref.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "usage: liquidref" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "liquidref.cli", "nope"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "unknown command 'nope'" in done.stderr
