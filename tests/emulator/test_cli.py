"""``liquidref emulate`` and the demo section."""

from __future__ import annotations

import json

import pytest

import emulator
from emulator import cli
from liquidref.cli import main as liquidref_main

REQUIRED = ("lqq_carries", "naive_carries", "qoq_unprotected_carries", "dual_mma_bank_conflicts",
            "naive_layout_bank_conflicts", "instructions_per_8_weights")


@pytest.fixture(scope="module")
def json_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("emu")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = liquidref_main(["emulate", "--json", "--out", str(out)])
    return status, json.loads(buffer.getvalue()), out


def test_emulate_json(json_output):
    status, result, out = json_output
    assert status == 0 and result["checks_passed"]
    for key in REQUIRED:
        assert key in result
    assert result["lqq_carries"] == 0 and result["naive_carries"] > 0
    assert result["qoq_unprotected_carries"] > 0
    assert (result["dual_mma_bank_conflicts"], result["naive_layout_bank_conflicts"]) == (0, 8)
    assert result["instructions_per_8_weights"]["lqq"] == 7
    assert result["tile_128x4096_bit_exact"]
    assert {p.name for p in out.iterdir()} == {"overflow_heatmaps.png", "bank_conflicts.png"}


def test_text_report_and_demo_section(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "LiquidQuant 0 of" in text and "bit-exact" in text
    lines = emulator.demo_section(tmp_path / "b")
    assert any("instructions per 8 weights" in line for line in lines)
    assert (tmp_path / "b" / "overflow_heatmaps.png").exists()


def test_bad_option():
    with pytest.raises(SystemExit):
        cli.main(["--bogus"])
