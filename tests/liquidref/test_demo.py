"""``liquidref demo`` (liquidref/demo.py), in --quick mode into a temporary folder."""

from __future__ import annotations

import contextlib
import io
import re
import time

import numpy as np
import pytest

from liquidref import demo
from liquidref.baselines import SCHEMES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("weight_error_histogram.png", "step_sizes.png", "gemm_error.png")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(exit code, printed text, output folder) of one ``liquidref demo --quick``."""
    out = tmp_path_factory.mktemp("demo-out")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = demo.main(["--quick", "--out", str(out)])
    return code, printed.getvalue(), out


def table_rows(text: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the table whose header line starts with ``first_header``, by scheme."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if set(line) == {"-"}:
            continue
        name, *cells = line.split()
        rows[name] = cells
    return rows


def test_demo_exits_zero_and_names_its_folder(quick_run):
    code, text, out = quick_run
    assert code == 0
    assert str(out.resolve()) in text


def test_scheme_table_has_a_row_per_scheme(quick_run):
    _, text, _ = quick_run
    rows = table_rows(text, "scheme           bits/weight")
    assert list(rows) == list(SCHEMES)
    bits = {name: float(cells[0]) for name, cells in rows.items()}
    assert bits["qoq-g128"] < bits["lqq-g64"] < bits["rtn-g64"] < bits["w8-per-channel"]
    sqnr = {name: float(cells[2]) for name, cells in rows.items()}
    assert sqnr["w8-per-channel"] > max(v for k, v in sqnr.items() if k != "w8-per-channel") + 6
    assert all(8 < value < 40 for value in sqnr.values())
    lqq_margin = int(rows["lqq-g64"][4])
    assert 0 <= lqq_margin <= 255 and rows["lqq-g64"][5] == "(lane)"
    assert int(rows["qoq-g128"][4]) >= 0 and rows["qoq-g128"][5] == "(int8)"
    assert rows["rtn-g64"][4] == "-"


def test_qoq_without_protective_range_overflows_on_the_demo_layer(quick_run):
    _, text, _ = quick_run
    pattern = r"protective range .*: (\d+) of (\d+) weights leave int8 \(headroom (-?\d+)\)"
    match = re.search(pattern, text)
    assert match and int(match[1]) > 0 and int(match[3]) < 0


def test_gemm_section_reports_exactness_and_errors(quick_run):
    _, text, _ = quick_run
    assert re.search(r"W4A8 GEMM \(LiquidQuant oracle\): M=16, N=512, K=1024", text)
    assert "fp16 output bytes equal the int64 brute force on 128 output features: yes" in text
    rows = table_rows(text, "scheme            output rel. RMS err")
    assert list(rows) == list(SCHEMES)
    assert all(0 < float(cells[0]) < 0.3 for cells in rows.values())


def test_figures_are_non_empty_pngs(quick_run):
    _, text, out = quick_run
    for name in FIGURES:
        path = out / name
        assert str(path) in text
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_default_inputs_are_deterministic_and_heavy_tailed():
    W1, outliers1 = demo.default_weight(64, 512)
    W2, outliers2 = demo.default_weight(64, 512)
    assert W1.dtype == np.float16 and np.array_equal(W1.view(np.uint16), W2.view(np.uint16))
    assert np.array_equal(outliers1, outliers2) and outliers1.size == 2
    centered = W1.astype(np.float64)
    kurtosis = np.mean(centered**4) / np.mean(centered**2) ** 2
    assert kurtosis > 6  # a Gaussian has 3
    column_scale = np.abs(W1.astype(np.float32)).mean(axis=0)
    assert set(np.argsort(column_scale)[-2:]) == set(outliers1)


def test_sections_can_be_appended(tmp_path, monkeypatch, capsys):
    def section_extra(out_dir, ctx):
        """An appended section."""
        assert ctx.quantized("lqq-g64") is ctx.quantized("lqq-g64")  # computed once, shared
        (out_dir / "extra.txt").write_text("x")
        return ["extra section ran"]

    monkeypatch.setattr(demo, "SECTIONS", [demo.section_layer, section_extra])
    assert demo.main(["--quick", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "== An appended section." in text and "extra section ran" in text
    assert (tmp_path / "extra.txt").exists()


@pytest.mark.slow
def test_full_demo_runs_in_under_30_seconds(tmp_path, capsys):
    start = time.perf_counter()
    assert demo.main(["--out", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - start
    text = capsys.readouterr().out
    assert "M=64, N=4096, K=4096" in text and "brute force on 128 output features: yes" in text
    assert elapsed < 30, f"the demo took {elapsed:.1f} s"
