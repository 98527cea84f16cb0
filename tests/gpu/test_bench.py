"""Tests of ``gpu/bench.py`` (``liquidref bench``) and ``scripts/gpu_session.sh``.

Everything but the last section runs on the CPU in CI: the byte counts and the floor, the L2
rotation count, the repetition rule, option parsing, the run loop under a time budget (fake
clock, fake measurer), the derived numbers and the summary, the text/markdown/docs rendering,
the outputs, ``main`` with a fake measurer, and the session script's control flow (with a stub
interpreter). Deliberately wrong versions of the formulas (mutants) are kept as fixtures and each
is shown to fail the property that the real one passes. The ``gpu`` tests run a tiny benchmark.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpu.bench as bench
from liquidref.constants import BLOCK_BYTES, BLOCK_K, BLOCK_ROWS, META_BYTES_PER_BLOCK
from liquidref.gemm import w4a8_linear
from liquidref.layout import pack_weight, unpack_weight

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_session.sh"
H100_L2 = 50 * 1024**2


# --- bytes and the floor ----------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(64, 64), (128, 256), (192, 640)])
def test_our_weight_bytes_is_what_pack_weight_stores(n, k):
    w = bench.random_liquid_weight(n, k, seed=n + k)
    assert bench.our_weight_bytes(n, k) == pack_weight(w).nbytes


def test_our_weight_bytes_of_a_llama_layer():
    n, k = 4096, 4096
    codes, meta, s1 = n * k // 2, n * k // 32, 4 * n  # 4 bits, 128 bytes per 64 x 64 block, fp32
    assert bench.our_weight_bytes(n, k) == codes + meta + s1
    assert BLOCK_BYTES == BLOCK_ROWS * BLOCK_K // 2 and META_BYTES_PER_BLOCK == 2 * BLOCK_ROWS


@pytest.mark.parametrize("n, k", [(0, 64), (100, 64), (64, 96), (-64, 64)])
def test_our_weight_bytes_rejects_unaligned_shapes(n, k):
    with pytest.raises(ValueError, match="multiples of 64"):
        bench.our_weight_bytes(n, k)


def test_floor_bytes_counts_weight_fp16_input_and_fp16_output():
    m, n, k = 16, 6144, 4096
    assert bench.floor_bytes(m, n, k) == bench.our_weight_bytes(n, k) + 2 * m * k + 2 * m * n
    assert bench.gemm_ops(m, n, k) == 2 * m * n * k


def test_floor_is_memory_bound_at_decode_and_compute_bound_at_prefill():
    bandwidth, peak = 3.0e12, 1.5e15  # about an H100's copy bandwidth and 8-bit peak
    seconds, bound = bench.floor_seconds(1, 8192, 8192, bandwidth, peak)
    assert bound == "memory"
    assert seconds == pytest.approx(bench.floor_bytes(1, 8192, 8192) / bandwidth)
    seconds, bound = bench.floor_seconds(4096, 8192, 8192, bandwidth, peak)
    assert bound == "compute"
    assert seconds == pytest.approx(2 * 4096 * 8192 * 8192 / peak)


def _floor_min_mutant(m, n, k, bandwidth, peak):  # takes the smaller term
    memory, compute = bench.floor_bytes(m, n, k) / bandwidth, bench.gemm_ops(m, n, k) / peak
    return min(memory, compute), "memory"


def _floor_no_meta_mutant(m, n, k, bandwidth, peak):  # forgets the metadata and s1 bytes
    memory = (n * k // 2 + 2 * m * k + 2 * m * n) / bandwidth
    return max(memory, bench.gemm_ops(m, n, k) / peak), "memory"


def floor_property_holds(floor_fn) -> bool:
    """The floor is the larger of the two times, each from the counted bytes and operations."""
    for m, n, k in [(1, 4096, 4096), (64, 57344, 8192), (4096, 4096, 14336), (256, 10240, 8192)]:
        for bandwidth, peak in [(3.0e12, 1.5e15), (4.3e12, 1.3e15)]:
            memory = bench.floor_bytes(m, n, k) / bandwidth
            compute = 2 * m * n * k / peak
            seconds, bound = floor_fn(m, n, k, bandwidth, peak)
            if not math.isclose(seconds, max(memory, compute), rel_tol=1e-12):
                return False
            if bound != ("memory" if memory >= compute else "compute"):
                return False
    return True


@pytest.mark.mutant
@pytest.mark.parametrize(
    "floor_fn, correct",
    [(bench.floor_seconds, True), (_floor_min_mutant, False), (_floor_no_meta_mutant, False)],
    ids=["floor_seconds", "mutant-min", "mutant-no-meta"],
)
def test_floor_property_catches_the_mutants(floor_fn, correct):
    assert floor_property_holds(floor_fn) is correct


def test_floor_needs_positive_ceilings():
    with pytest.raises(ValueError, match="positive"):
        bench.floor_seconds(1, 64, 64, 0.0, 1e15)


def test_peer_byte_counts():
    m, n, k = 1, 4096, 4096
    assert bench.peer_weight_bytes("cublas_bf16", n, k) == 2 * n * k
    assert bench.peer_weight_bytes("cublas_int8", n, k) == n * k
    assert bench.peer_weight_bytes("torch_int4", n, k) == n * k // 2 + (k // 128) * n * 4
    assert bench.peer_bytes("cublas_int8", m, n, k) == n * k + 24 * k + 4 * 24 * n  # padded rows
    with pytest.raises(ValueError, match="unknown peer"):
        bench.peer_weight_bytes("cutlass", n, k)


@pytest.mark.parametrize("m, rows", [(1, 24), (16, 24), (17, 24), (24, 24), (25, 32), (64, 64), (4096, 4096)])
def test_int_mm_rows_satisfies_torch_int_mm(m, rows):
    assert bench.int_mm_rows(m) == rows
    assert rows > 16 and rows % 8 == 0 and rows >= m


# --- L2 rotation and repetitions --------------------------------------------------------------


def _rotation_floor_mutant(bytes_per_copy, l2_bytes, max_copies=bench.MAX_COPIES):
    return max(1, min(max_copies, 2 * l2_bytes // bytes_per_copy))  # no copy beyond the L2 twice


def _rotation_one_copy_mutant(bytes_per_copy, l2_bytes, max_copies=bench.MAX_COPIES):
    return 1


def rotation_property_holds(rotation_fn, bytes_per_copy: int, l2_bytes: int) -> bool:
    """Total bytes exceed 2 x L2; between two uses of a copy the others read >= 2 x L2; minimal."""
    copies = rotation_fn(bytes_per_copy, l2_bytes, 10**9)
    if copies * bytes_per_copy <= 2 * l2_bytes and bytes_per_copy <= 2 * l2_bytes:
        return False
    if not bench.rotation_defeats_l2(bytes_per_copy, copies, l2_bytes):
        return False
    return copies == 1 or not bench.rotation_defeats_l2(bytes_per_copy, copies - 1, l2_bytes)


@given(st.integers(1, 2 * 10**9), st.sampled_from([H100_L2, 60 * 1024**2, 1024**2]))
def test_rotation_copies_defeat_l2_with_the_fewest_copies(bytes_per_copy, l2_bytes):
    assert rotation_property_holds(bench.rotation_copies, bytes_per_copy, l2_bytes)


@pytest.mark.mutant
@pytest.mark.parametrize("mutant", [_rotation_floor_mutant, _rotation_one_copy_mutant])
def test_rotation_property_catches_the_mutants(mutant):
    sizes = [1_000_000, 33_554_432, 8_912_896, 60_000_000, 100_000_000]
    assert not all(rotation_property_holds(mutant, b, H100_L2) for b in sizes)


def test_rotation_copies_examples_and_cap():
    assert bench.rotation_copies(2 * H100_L2 + 1, H100_L2) == 1  # 70B gate_up in bf16: one copy
    assert bench.rotation_copies(H100_L2, H100_L2) == 3
    ours_8b_o = bench.our_weight_bytes(4096, 4096)
    assert bench.rotation_copies(ours_8b_o, H100_L2) == 1 + math.ceil(2 * H100_L2 / ours_8b_o)
    assert bench.rotation_copies(1, H100_L2) == bench.MAX_COPIES
    assert not bench.rotation_defeats_l2(1, bench.MAX_COPIES, H100_L2)  # records say the cap bound
    with pytest.raises(ValueError):
        bench.rotation_copies(0, H100_L2)


@pytest.mark.parametrize(
    "estimate, reps",
    [(1e-6, 100), (1e-3, 50), (0.02, 3), (1.0, 3), (0.0, 100)],
)
def test_choose_reps_fills_the_target_within_bounds(estimate, reps):
    assert bench.choose_reps(estimate, target_s=0.05, max_reps=100, min_reps=3) == reps


def test_geometric_mean():
    assert bench.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert bench.geometric_mean([]) is None
    with pytest.raises(ValueError):
        bench.geometric_mean([1.0, 0.0])


# --- options ----------------------------------------------------------------------------------


def test_parse_shapes_models_layers_and_custom():
    shapes = bench.parse_shapes("llama3-8b, llama2-70b:down,4096x4096,4096×4096")
    assert [s.label for s in shapes] == [
        "llama3-8b:qkv", "llama3-8b:o", "llama3-8b:gate_up", "llama3-8b:down",
        "llama2-70b:down", "custom:4096x4096",
    ]
    assert (shapes[-2].n, shapes[-2].k) == (8192, 28672)
    assert len(bench.parse_shapes("all")) == 8


@pytest.mark.parametrize("spec, message", [("llama4", "unknown shape"), ("100x64", "multiple of 64"), (",", "no shapes")])
def test_parse_shapes_rejects_bad_input(spec, message):
    with pytest.raises(ValueError, match=message):
        bench.parse_shapes(spec)


def test_parse_m_list():
    assert bench.parse_m_list("1, 16,16,4096") == [1, 16, 4096]
    for bad in ("0", "-1", "x", ""):
        with pytest.raises(ValueError):
            bench.parse_m_list(bad)


def test_parse_backends():
    ours = ["hopper", "mma_sync"]
    assert bench.parse_backends("all", ours) == (ours, list(bench.PEERS))
    assert bench.parse_backends("hopper,cublas_int8", ours) == (["hopper"], ["cublas_int8"])
    assert bench.parse_backends("ours", ours) == (ours, [])
    assert bench.parse_backends("peers", ours) == ([], list(bench.PEERS))
    with pytest.raises(ValueError, match="unknown backend 'hopper_qoq'"):
        bench.parse_backends("hopper_qoq", ours)


def test_parse_args_defaults_quick_and_overrides():
    args = bench.parse_args([])
    assert len(args.shape_list) == 8 and args.m_list == list(bench.DEFAULT_M)
    quick = bench.parse_args(["--quick"])
    assert [s.label for s in quick.shape_list] == list(bench.QUICK_SHAPES)
    assert quick.m_list == list(bench.QUICK_M)
    mixed = bench.parse_args(["--quick", "--m", "1", "--max-seconds", "30", "--json"])
    assert mixed.m_list == [1] and mixed.max_seconds == 30 and mixed.json


@pytest.mark.parametrize("argv", [["--shapes", "llama9"], ["--m", "0"], ["--max-seconds", "-1"], ["--max-reps", "0"]])
def test_parse_args_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


# --- a fake device: the run loop, the budget, the derived numbers ------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


PEER_FACTORS = {"cublas_bf16": 3.0, "cublas_int8": 2.0, "cublas_fp8": 2.5, "torch_int4": 1.5}


class FakeMeasurer:
    """Times without a GPU: ours take ``base`` s, a peer ``factor * base``; each case costs
    ``seconds_per_case`` on the fake clock."""

    def __init__(self, clock=None, seconds_per_case=1.0, mismatch=(), fail=(), int4_unavailable=False, terminate_at=None):
        self.clock = clock or FakeClock()
        self.seconds_per_case = seconds_per_case
        self.mismatch, self.fail = set(mismatch), set(fail)
        self.int4_unavailable = int4_unavailable
        self.terminate_at = terminate_at
        self.unavailable = {}
        self.notes = ["fake measurer"]
        self.calls = []
        self.closed = False

    def meta(self):
        return {"device": "Fake H100", "our_backends_available": ["hopper", "mma_sync"]}

    def measure_ceilings(self):
        return {"copy_bytes_per_s": 3.0e12, "peak_ops_per_s": 1.5e15, "errors": {}}

    def check(self, shape, backend):
        self.calls.append(("check", shape.label, backend))
        ok = backend not in self.mismatch
        return {"ok": ok, "detail": "bit-exact" if ok else "3 of 960 fp16 values differ", "mismatches": 0 if ok else 3}

    def peer_unavailable(self, peer):
        return self.unavailable.get(peer)

    def measure(self, case):
        self.calls.append(("measure", case.shape.label, case.m, case.backend))
        if self.terminate_at is not None and len([c for c in self.calls if c[0] == "measure"]) == self.terminate_at:
            raise bench.Terminated()
        self.clock.now += self.seconds_per_case
        if case.backend in self.fail:
            raise RuntimeError("launch failed")
        if case.backend == "torch_int4" and self.int4_unavailable:
            self.unavailable["torch_int4"] = "_convert_weight_to_int4pack refused"
            raise bench.Unavailable(self.unavailable["torch_int4"])
        base = 1e-6 * case.m
        return {"time_s": base * PEER_FACTORS.get(case.backend, 1.0), "reps": 7, "method": "graph", "copies": 2}

    def close(self):
        self.closed = True


def _plan(shapes="llama3-8b:o,llama3-8b:qkv", ms=(1, 16), ours=("hopper",), peers=bench.PEERS):
    return bench.build_plan(bench.parse_shapes(shapes), list(ms), list(ours), list(peers))


def test_build_plan_orders_by_shape_then_m_ours_first():
    plan = _plan(ms=(1, 16), ours=("hopper", "mma_sync"), peers=("cublas_bf16",))
    assert [(c.shape.layer, c.m, c.backend) for c in plan[:4]] == [
        ("o", 1, "hopper"), ("o", 1, "mma_sync"), ("o", 1, "cublas_bf16"), ("o", 16, "hopper"),
    ]
    assert len(plan) == 2 * 2 * 3


def test_run_plan_checks_each_backend_once_per_shape_before_timing():
    measurer = FakeMeasurer()
    raw = bench.run_plan(_plan(), measurer, bench.Budget(None, measurer.clock))
    checks = [c for c in measurer.calls if c[0] == "check"]
    assert checks == [("check", "llama3-8b:o", "hopper"), ("check", "llama3-8b:qkv", "hopper")]
    first_timing = measurer.calls.index(("measure", "llama3-8b:o", 1, "hopper"))
    assert measurer.calls.index(checks[0]) < first_timing
    assert raw["stopped"] is None and all(r["status"] == "ok" for r in raw["records"])


def test_budget_stops_cleanly_and_marks_the_rest_skipped():
    clock = FakeClock()
    measurer = FakeMeasurer(clock, seconds_per_case=1.0)
    plan = _plan()  # 2 shapes x 2 M x 5 backends = 20 cases
    checkpoints = []
    raw = bench.run_plan(plan, measurer, bench.Budget(7.5, clock), checkpoint=checkpoints.append)
    statuses = [r["status"] for r in raw["records"]]
    assert statuses == ["ok"] * 8 + ["skipped"] * 12
    assert "7.5 s" in raw["stopped"]
    assert len(raw["records"]) == len(plan)
    assert len(checkpoints) == 2  # after each shape, the skipped one included


def test_budget_with_a_fake_clock():
    clock = FakeClock()
    budget = bench.Budget(10, clock)
    assert not budget.exhausted()
    clock.now = 9.99
    assert not budget.exhausted() and budget.elapsed() == pytest.approx(9.99)
    clock.now = 10.0
    assert budget.exhausted()
    assert not bench.Budget(None, clock).exhausted()
    with pytest.raises(ValueError):
        bench.Budget(0)


def test_run_plan_records_errors_unavailable_peers_and_interruption():
    measurer = FakeMeasurer(fail={"cublas_fp8"}, int4_unavailable=True, terminate_at=8)
    raw = bench.run_plan(_plan(), measurer, bench.Budget(None, measurer.clock))
    by_backend = {}
    for r in raw["records"]:
        by_backend.setdefault(r["backend"], []).append(r["status"])
    assert by_backend["cublas_fp8"][0] == "error"
    assert by_backend["torch_int4"][0] == "unavailable"
    assert "interrupted" in raw["stopped"]
    assert raw["records"][7]["status"] == "skipped" and raw["records"][-1]["status"] == "skipped"
    assert len(raw["records"]) == 20


def test_watchdog_reports_a_case_that_never_finishes():
    import threading
    import time

    fired = threading.Event()
    seen = []

    class Hangs(FakeMeasurer):
        def measure(self, case):
            if case.backend == "cublas_int8":
                fired.wait(5)  # "hangs" until the watchdog has fired
            return super().measure(case)

    def on_timeout(case, records, checks):
        seen.append((case.backend, len(records), len(checks)))
        fired.set()

    watchdog = bench.Watchdog(0.2, on_timeout, poll_s=0.02)
    start = time.monotonic()
    raw = bench.run_plan(_plan(ms=(1,)), Hangs(), bench.Budget(None), watchdog=watchdog)
    watchdog.close()
    assert seen == [("cublas_int8", 2, 1)]  # ours and bf16 done, one check made
    assert time.monotonic() - start < 4 and len(raw["records"]) == 10


HANG_SCRIPT = """
import sys, time
import gpu.bench as bench
import tests.gpu.test_bench as t

class Hangs(t.FakeMeasurer):
    def measure(self, case):
        if case.backend == "cublas_fp8":
            time.sleep(60)
        return super().measure(case)

bench.CASE_TIMEOUT_S = 0.5
bench.GpuMeasurer = lambda **kwargs: Hangs()
sys.exit(bench.main(["--shapes", "4096x4096", "--m", "1", "--no-plot", "--out", sys.argv[1]]))
"""


def test_main_writes_the_results_and_exits_when_a_case_hangs(tmp_path):
    done = subprocess.run([sys.executable, "-c", HANG_SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=50)
    assert done.returncode == 3, done.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["stopped"] == "custom:4096x4096 M=1 cublas_fp8 hung"
    assert [r["status"] for r in result["records"]] == ["ok"] * 4 + ["error"]
    assert "INCOMPLETE: custom:4096x4096 M=1 cublas_fp8 hung" in done.stdout


def test_watchdog_stays_quiet_for_cases_that_finish():
    calls = []
    watchdog = bench.Watchdog(5.0, lambda *args: calls.append(args), poll_s=0.01)
    bench.run_plan(_plan(), FakeMeasurer(), bench.Budget(None), watchdog=watchdog)
    watchdog.close()
    assert calls == []


def _result(measurer=None, budget_seconds=None, **plan_kwargs):
    measurer = measurer or FakeMeasurer()
    raw = bench.run_plan(_plan(**plan_kwargs), measurer, bench.Budget(budget_seconds, measurer.clock))
    raw.update(
        schema=bench.SCHEMA_VERSION,
        meta={"device": "Fake H100", "date": "2026-11-22 00:00 UTC", "torch": "2.11.0", "cupy": "14.2.0"},
        ceilings=measurer.measure_ceilings(),
        unavailable=dict(measurer.unavailable),
    )
    return bench.derive(raw)


def test_derive_ratios_floor_and_throughput():
    result = _result()
    ours = [r for r in result["records"] if r["kind"] == "ours"]
    for r in ours:
        assert r["vs"] == pytest.approx(PEER_FACTORS)
        floor_s, bound = bench.floor_seconds(r["m"], r["n"], r["k"], 3.0e12, 1.5e15)
        assert r["floor_us"] == pytest.approx(floor_s * 1e6) and r["floor_bound"] == bound
        assert r["floor_frac"] == pytest.approx(floor_s / r["time_s"])
        assert r["tbps"] == pytest.approx(bench.floor_bytes(r["m"], r["n"], r["k"]) / r["time_s"] / 1e12)
        assert r["tops"] == pytest.approx(2 * r["m"] * r["n"] * r["k"] / r["time_s"] / 1e12)
        assert r["check"] == "ok"
    assert result["complete"]


def test_summary_is_the_geometric_mean_over_shapes():
    result = _result()
    # make the bf16 ratio 2 on one shape and 8 on the other at M = 1: the mean must be 4
    raw = {k: v for k, v in result.items() if k not in ("summary", "complete")}
    for r in raw["records"]:
        if r["backend"] == "hopper" and r["m"] == 1:
            bf16 = next(p for p in raw["records"] if p["backend"] == "cublas_bf16" and p["shape"] == r["shape"] and p["m"] == 1)
            r["time_s"] = bf16["time_s"] / (2.0 if r["layer"] == "o" else 8.0)
    summary = bench.derive(raw)["summary"]
    row = next(s for s in summary if s["backend"] == "hopper" and s["m"] == 1)
    assert row["vs"]["cublas_bf16"] == pytest.approx(4.0)  # an arithmetic mean would give 5
    assert row["shapes"] == 2 and row["vs_shapes"]["cublas_bf16"] == 2


def test_a_mismatch_is_loud_everywhere():
    result = _result(FakeMeasurer(mismatch={"hopper"}))
    assert bench.mismatches(result)
    text = bench.render_text(result)
    assert "MISMATCH <<<" in text and "CORRECTNESS MISMATCH: hopper on llama3-8b:o" in text
    assert "**MISMATCH**" in bench.render_markdown(result)
    assert all(r["check"] == "MISMATCH" for r in result["records"] if r["kind"] == "ours")


def test_render_text_tables_and_status_lines():
    result = _result(FakeMeasurer(int4_unavailable=True), budget_seconds=15)
    text = bench.render_text(result)
    for needle in ("Fake H100", "ceilings: copy 3.00 TB/s", "vs bf16", "3.00x", "int4 us",
                   "peer torch_int4 unavailable", "INCOMPLETE", "summary (geometric mean over shapes)"):
        assert needle in text, needle
    summary = bench.render_summary(result)
    assert summary.splitlines()[0].split()[:4] == ["backend", "M", "shapes", "of"]
    assert not result["complete"]


def test_status_lines_name_peer_failures_eager_timing_and_cached_weights():
    result = _result(FakeMeasurer(fail={"cublas_fp8"}))
    raw = {k: v for k, v in result.items() if k not in ("summary", "complete")}
    raw["config"] = {"graphs": True}
    for r in raw["records"]:
        if r["backend"] == "mma_sync" or (r["backend"] == "hopper" and r["m"] == 16):
            r.update(method="eager", note="graph capture failed, eager launches timed (boom)")
        if r["backend"] == "cublas_bf16" and r["m"] == 1:
            r.update(l2_defeated=False, note="bf16 note")
    lines = bench.render_status(bench.derive(raw))
    assert any(line.startswith("peer cublas_fp8 failed in 4 cases, first: RuntimeError: launch failed") for line in lines)
    assert any(line.startswith("hopper: 2 cases timed on eager launches: graph capture failed") for line in lines)
    assert any(line.startswith("cublas_bf16: in 2 cases the weight copies could stay in L2") for line in lines)
    notes = bench.render_notes(bench.derive(raw))
    assert notes == ["note: bf16 note"]  # graph failures are warnings, not notes
    assert "hopper*" in bench.render_ours_table(bench.derive(raw))


def test_write_outputs_writes_json_text_and_plot(tmp_path):
    result = _result()
    written = bench.write_outputs(result, tmp_path / "out")
    assert sorted(written) == sorted(bench.OUTPUT_FILES)
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "out" / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob("*.tmp"))


# --- the docs page -----------------------------------------------------------------------------




@pytest.mark.parametrize(
    ("page", "results"),
    [("performance.md", "bench.json"), ("performance-h100.md", "bench-h100.json")],
)
def test_docs_page_shows_exactly_the_recorded_run_and_no_invented_numbers(page, results):
    """A page's results section is either the no-numbers notice or precisely what the renderer
    makes of its committed results JSON (docs/bench/<results>) and figure (docs/img/<results
    name>.png): no number typed by hand."""
    docs = bench.DOCS_PAGE.parent
    text = (docs / page).read_text()
    section = text[text.index(bench.DOCS_BEGIN) + len(bench.DOCS_BEGIN): text.index(bench.DOCS_END)]
    recorded = docs / "bench" / results
    if not recorded.is_file():
        assert "No GPU numbers have been measured yet" in section
        assert not any(ch.isdigit() for ch in section.replace("gpu.bench", ""))
        return
    result = json.loads(recorded.read_text())
    assert result["schema"] == bench.SCHEMA_VERSION
    figure = f"img/{Path(results).with_suffix('.png').name}"
    assert (docs / figure).is_file()
    assert section.strip("\n") == bench.render_markdown(result, figure).strip("\n")
    assert result["checks"] and all(c["ok"] and c["mismatches"] == 0 for c in result["checks"])


def test_replace_docs_section_keeps_the_rest_and_is_idempotent():
    page = f"# Title\n\nbefore\n{bench.DOCS_BEGIN}\nold\n{bench.DOCS_END}\nafter\n"
    once = bench.replace_docs_section(page, "new table")
    assert once == f"# Title\n\nbefore\n{bench.DOCS_BEGIN}\nnew table\n{bench.DOCS_END}\nafter\n"
    assert bench.replace_docs_section(once, "new table") == once
    with pytest.raises(ValueError, match="markers"):
        bench.replace_docs_section("# no markers", "x")


def test_render_docs_from_a_results_file(tmp_path):
    result = _result()
    bench.write_outputs(result, tmp_path / "run")
    page = tmp_path / "docs" / "performance.md"
    page.parent.mkdir()
    page.write_text(bench.DOCS_PAGE.read_text())
    assert bench.main(["--render-docs", str(tmp_path / "run" / "bench.json"), "--docs-page", str(page)]) == 0
    text = page.read_text()
    assert "No GPU numbers have been measured yet" not in text
    assert "Measured on **Fake H100** on 2026-11-22 00:00 UTC" in text
    assert "![Speed-up over cuBLAS bf16 per shape](img/bench.png)" in text
    assert (page.parent / "img" / "bench.png").is_file()
    assert text.startswith("# Performance") and "## Reproducing" in text


# --- main with a fake measurer -------------------------------------------------------------------


def _fake_main(monkeypatch, measurer):
    monkeypatch.setattr(bench, "GpuMeasurer", lambda **kwargs: measurer)


def test_main_end_to_end_with_a_fake_device(monkeypatch, tmp_path, capsys):
    measurer = FakeMeasurer()
    _fake_main(monkeypatch, measurer)
    code = bench.main(["--shapes", "llama3-8b:o", "--m", "1,16", "--out", str(tmp_path)])
    assert code == 0 and measurer.closed
    out = capsys.readouterr().out
    assert "summary (geometric mean over shapes)" in out and "bench: wrote" in out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["complete"] and result["meta"]["device"] == "Fake H100"
    assert {r["backend"] for r in result["records"]} == {"hopper", "mma_sync", *bench.PEERS}


def test_main_exit_code_and_json_on_a_mismatch(monkeypatch, tmp_path, capsys):
    _fake_main(monkeypatch, FakeMeasurer(mismatch={"mma_sync"}))
    code = bench.main(["--shapes", "4096x4096", "--m", "1", "--out", str(tmp_path), "--json", "--no-plot"])
    assert code == 1
    printed = json.loads(capsys.readouterr().out)
    assert bench.mismatches(printed)[0]["backend"] == "mma_sync"
    assert not (tmp_path / "bench.png").exists()
    assert bench.main(["--render-summary", str(tmp_path / "bench.json")]) == 1
    assert "CORRECTNESS MISMATCH" in capsys.readouterr().out


def test_main_max_seconds_still_writes_what_was_measured(monkeypatch, tmp_path):
    clock = FakeClock()
    monkeypatch.setattr(bench.time, "monotonic", clock)
    _fake_main(monkeypatch, FakeMeasurer(clock, seconds_per_case=1.0))
    assert bench.main(["--shapes", "llama3-8b", "--m", "1,16", "--max-seconds", "5", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert not result["complete"] and "5 s" in result["stopped"]
    assert sum(r["status"] == "ok" for r in result["records"]) == 5
    assert "INCOMPLETE" in (tmp_path / "bench.txt").read_text()


def test_main_without_a_gpu_says_so(monkeypatch, capsys):
    def no_gpu(**kwargs):
        raise RuntimeError("torch sees no CUDA device")

    monkeypatch.setattr(bench, "GpuMeasurer", no_gpu)
    assert bench.main(["--quick"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_main_unknown_backend(monkeypatch, capsys):
    _fake_main(monkeypatch, FakeMeasurer())
    assert bench.main(["--quick", "--backends", "hopper_excp"]) == 2
    assert "unknown backend 'hopper_excp'" in capsys.readouterr().err


def test_cli_dispatches_bench():
    from liquidref.cli import SUBCOMMANDS

    assert SUBCOMMANDS["bench"][0] == "gpu.bench"


# --- the correctness check's pieces ---------------------------------------------------------------


def test_random_liquid_weight_is_valid_reproducible_and_not_zero():
    w = bench.random_liquid_weight(128, 256, seed=3)  # LiquidQuantWeight validates the invariant
    again = bench.random_liquid_weight(128, 256, seed=3)
    other = bench.random_liquid_weight(128, 256, seed=4)
    assert np.array_equal(w.q4, again.q4) and np.array_equal(w.a, again.a)
    assert not np.array_equal(w.q4, other.q4)
    assert w.q4.any() and len(np.unique(w.s)) > 8 and w.a.min() >= 9


def test_compare_fp16_is_bitwise():
    y = np.array([[1.0, -0.0, np.nan]], np.float16)
    assert bench.compare_fp16(y, y.copy())["ok"]  # the same NaN bits are equal
    signed_zero = np.array([[1.0, 0.0, np.nan]], np.float16)
    verdict = bench.compare_fp16(y, signed_zero)
    assert not verdict["ok"] and verdict["mismatches"] == 1 and "[0, 1]" in verdict["detail"]
    one_ulp = y.copy()
    one_ulp.view(np.uint16)[0, 0] += 1
    assert not bench.compare_fp16(one_ulp, y)["ok"]
    assert not bench.compare_fp16(y.astype(np.float32), y)["ok"]


def test_check_columns_sample_first_middle_last_blocks():
    assert list(bench.check_columns(64)) == list(range(64))
    cols = bench.check_columns(4096)
    assert len(cols) == 192 and cols[0] == 0 and cols[-1] == 4095 and 2048 in cols
    assert np.all(np.diff(cols) > 0)


def test_random_packed_weight_is_valid_and_has_our_byte_count():
    packed = bench.random_packed_weight(192, 640, seed=5)
    assert packed.nbytes == bench.our_weight_bytes(192, 640)
    w = unpack_weight(packed)  # LiquidQuantWeight checks q4 * s + a <= 255 and the ranges
    assert np.array_equal(pack_weight(w).codes, packed.codes)
    assert np.array_equal(pack_weight(w).meta, packed.meta)
    assert w.q4.max() == 15 and w.q4.min() == 0 and w.s.max() == 16 and w.a.min() >= 9


def test_oracle_on_row_blocks_equals_those_columns_of_the_full_oracle():
    packed = bench.random_packed_weight(256, 512, seed=7)
    X = np.random.default_rng(0).standard_normal((5, 512)).astype(np.float16)
    blocks = bench.check_row_blocks(256)
    assert blocks == [0, 2, 3]
    full = w4a8_linear(X, unpack_weight(packed))
    part = w4a8_linear(X, unpack_weight(bench.packed_row_blocks(packed, blocks)))
    cols = bench.check_columns(256)
    assert np.array_equal(full[:, cols].view(np.uint16), part.view(np.uint16))
    # a wrong subset (the neighbouring blocks) does not match: the test can fail
    wrong = w4a8_linear(X, unpack_weight(bench.packed_row_blocks(packed, [1, 2, 3])))
    assert not np.array_equal(full[:, cols].view(np.uint16), wrong.view(np.uint16))


# --- --build-only with a fake device (NumPy arrays standing in for CuPy) ------------------------------


class _FakeCupy:
    asarray = staticmethod(np.asarray)
    asnumpy = staticmethod(np.asarray)

    class cuda:  # noqa: N801 - mirrors cupy.cuda
        class Device:
            id = 0

            def synchronize(self):
                pass

        class runtime:  # noqa: N801
            @staticmethod
            def getDeviceProperties(device_id):  # noqa: N802
                return {"name": b"Fake H100"}


def _fake_api(monkeypatch, linear):
    import gpu.api as api

    monkeypatch.setattr(api.runtime, "require_gpu", lambda: _FakeCupy)
    monkeypatch.setattr(api, "available_backends", lambda: ["fake"])
    monkeypatch.setattr(api, "upload", lambda w: w)
    monkeypatch.setattr(api, "linear", linear)


def test_build_only_reports_each_backend_and_m(monkeypatch, capsys):
    _fake_api(monkeypatch, lambda X, w, backend: w4a8_linear(X, w))
    assert bench.main(["--build-only", "--m", "1,5"]) == 0
    out = capsys.readouterr().out
    assert "device Fake H100" in out and "0 failures" in out and out.count("bit-exact") == 2


@pytest.mark.mutant
def test_build_only_fails_on_a_one_ulp_error_or_an_exception(monkeypatch, capsys):
    def off_by_one_ulp(X, w, backend):
        y = w4a8_linear(X, w)
        y.view(np.uint16)[-1, -1] ^= 1
        return y

    _fake_api(monkeypatch, off_by_one_ulp)
    assert bench.main(["--build-only", "--m", "3", "--shapes", "128x256"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: 1 of 384 fp16 values differ" in out and "N=128, K=256" in out and "fake M=3" in out

    def launch_fails(X, w, backend):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    _fake_api(monkeypatch, launch_fails)
    assert bench.main(["--build-only", "--m", "1"]) == 1
    assert "CUDA_ERROR_ILLEGAL_ADDRESS" in capsys.readouterr().out


def test_build_only_without_a_gpu(monkeypatch, capsys):
    import gpu.api as api

    def no_gpu():
        raise RuntimeError("no usable CUDA device")

    monkeypatch.setattr(api.runtime, "require_gpu", no_gpu)
    assert bench.main(["--build-only"]) == 2
    assert "no usable CUDA device" in capsys.readouterr().err


# --- GpuMeasurer's logic with NumPy standing in for torch and CuPy --------------------------------------
# The stand-ins implement only the calls GpuMeasurer makes, with NumPy; CUDA events report a fixed
# 1 ms. They cannot show that the real APIs behave so; they show that the measurer's own logic (the
# check's columns, the state per shape, the copies, the graph fallback, the records) is wired right.


class _Tensor:
    def __init__(self, a, dtype=None):
        self.a = np.asarray(a)
        self.dtype = dtype or str(self.a.dtype)

    shape = property(lambda self: self.a.shape)

    def _new(self, a, dtype=None):
        return _Tensor(a, dtype or self.dtype)

    def half(self):
        return _Tensor(self.a.astype(np.float16))

    def bfloat16(self):
        return _Tensor(self.a.astype(np.float32), "bfloat16")

    def to(self, dtype):
        return _Tensor(self.a.astype(_DTYPES[dtype]), dtype)

    def t(self):
        return self._new(self.a.T)

    def abs(self):
        return self._new(np.abs(self.a))

    def amax(self, dim, keepdim=False):
        return self._new(self.a.max(axis=dim, keepdims=keepdim))

    def round(self):
        return self._new(np.rint(self.a))

    def contiguous(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a

    def random_(self):
        self.a[...] = np.random.default_rng(0).integers(0, 256, self.a.shape)
        return self

    def copy_(self, other):
        self.a[...] = other.a
        return self

    def __setitem__(self, key, value):
        self.a[key] = value.a

    def __mul__(self, other):
        return self._new(self.a * (other.a if isinstance(other, _Tensor) else other))

    __rmul__ = __mul__

    def __add__(self, other):
        return self._new(self.a + other)

    def __rtruediv__(self, other):
        return self._new(other / self.a)


FAKE_L2 = 256 * 1024  # small, so that the tiny shapes below rotate few copies
_DTYPES = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32, "int8": np.int8,
           "uint8": np.uint8, "int32": np.int32, "float8_e4m3fn": np.float16}


class _Generator:
    def __init__(self, device):
        self.rng = np.random.default_rng(0)

    def manual_seed(self, seed):
        self.rng = np.random.default_rng(seed % 2**32)
        return self


class _Event:
    def __init__(self, enable_timing):
        self.recorded = False

    def record(self, stream):
        self.recorded = True

    def elapsed_time(self, end):
        assert self.recorded and end.recorded
        return 1.0  # ms


class _Context:
    def __init__(self, on_enter=None):
        self.on_enter = on_enter

    def __enter__(self):
        if self.on_enter:
            self.on_enter()
        return self

    def __exit__(self, *exc):
        return False


def _fake_torch(graph_fails=False, int4_refused=False):
    from types import SimpleNamespace as NS

    def randn(*shape, device=None, generator=None, dtype="float32"):
        return _Tensor(generator.rng.standard_normal(shape).astype(_DTYPES[dtype]), dtype)

    def randint(low, high, size, device=None, generator=None, dtype="int64"):
        return _Tensor(generator.rng.integers(low, high, size).astype(_DTYPES[dtype]), dtype)

    def rand(*shape, device=None, generator=None):
        return _Tensor(generator.rng.random(shape).astype(np.float32))

    def graph(g, stream=None, capture_error_mode="global"):
        def enter():
            assert capture_error_mode == "relaxed" and stream is not None
            if graph_fails:
                raise RuntimeError("operation not permitted when stream is capturing")
        return _Context(enter)

    def scaled_mm(a, b, scale_a, scale_b, out_dtype=None, use_fast_accum=False):
        return _Tensor(a.a.astype(np.float32) @ b.a.astype(np.float32), "bfloat16")

    def convert_int4(codes, inner):
        if int4_refused:
            raise RuntimeError("_convert_weight_to_int4pack: expected int32")
        n, half_k = codes.shape
        return _Tensor(np.zeros((n // 8, 2 * half_k // (inner * 16), 32, inner // 2), np.int32))

    def int4_mm(x, w, group, scales_zeros):
        assert group == 128 and x.dtype == "bfloat16" and scales_zeros.dtype == "bfloat16"
        return _Tensor(np.ones((x.shape[0], scales_zeros.shape[1]), np.float32), "bfloat16")

    props = NS(name="Fake H100", multi_processor_count=132, L2_cache_size=FAKE_L2, total_memory=80 << 30, major=9, minor=0)
    stream = NS(cuda_stream=1234, synchronize=lambda: None)
    cuda = NS(
        is_available=lambda: True, Stream=lambda: stream, get_device_properties=lambda i: props,
        stream=lambda s: _Context(), Event=_Event, CUDAGraph=lambda: NS(replay=lambda: None), graph=graph,
        synchronize=lambda: None, empty_cache=lambda: None, current_stream=lambda: stream,
        caching_allocator_alloc=lambda size, device, stream: 0, caching_allocator_delete=lambda pointer: None,
    )
    return NS(
        __version__="2.11.0+fake", version=NS(cuda="13.0"), cuda=cuda, Generator=_Generator,
        randn=randn, randint=randint, rand=rand,
        ones=lambda shape, device=None, dtype="float32": _Tensor(np.ones(shape, np.float32)),
        empty=lambda n, dtype=None, device=None: _Tensor(np.zeros(n, _DTYPES[dtype]), dtype),
        empty_like=lambda t: _Tensor(np.zeros_like(t.a), t.dtype),
        cat=lambda ts, dim: _Tensor(np.concatenate([t.a for t in ts], axis=dim)),
        nn=NS(functional=NS(linear=lambda x, w: _Tensor(x.a @ w.a.T, "bfloat16"))),
        _int_mm=lambda a, b: _Tensor(a.a.astype(np.int32) @ b.a.astype(np.int32)),
        _scaled_mm=scaled_mm, _weight_int4pack_mm=int4_mm,
        ops=NS(aten=NS(_convert_weight_to_int4pack=convert_int4)),
        float16="float16", bfloat16="bfloat16", float32="float32", int8="int8", uint8="uint8",
        int32="int32", float8_e4m3fn="float8_e4m3fn",
    )


def _fake_cupy():
    from types import SimpleNamespace as NS

    stream = NS(ptr=1234, __enter__=None)
    cuda = NS(
        Stream=NS(from_external=lambda s: _Context()), get_current_stream=lambda: stream,
        memory=NS(PythonFunctionAllocator=lambda malloc, free: NS(malloc=malloc)),
        get_allocator=lambda: "cupy-pool", set_allocator=lambda allocator: None,
    )
    return NS(__version__="14.2.0+fake", ndarray=np.ndarray, cuda=cuda,
              from_dlpack=lambda t: t.a, asnumpy=np.asarray)


def _fake_gpu_api(monkeypatch):
    from dataclasses import dataclass

    import gpu.api as api
    from liquidref.layout import PackedWeight

    @dataclass(frozen=True)
    class FakeDeviceWeight:
        codes: np.ndarray
        meta: np.ndarray
        s1: np.ndarray
        n: int
        k: int

    def linear(X, dw, backend="auto", check_finite=True):
        y = w4a8_linear(X, unpack_weight(PackedWeight(dw.codes, dw.meta, dw.s1)))
        if backend == "fake_wrong":
            y.view(np.uint16)[0, 0] ^= 0x0001  # one ulp off in the first column: the check sees it
        return y

    monkeypatch.setattr(api, "available_backends", lambda: ["fake", "fake_wrong"])
    monkeypatch.setattr(api, "upload", lambda p: FakeDeviceWeight(p.codes, p.meta, p.s1, p.n, p.k))
    monkeypatch.setattr(api, "linear", linear)
    monkeypatch.setattr(bench, "COPY_CEILING_BYTES", 4096)
    monkeypatch.setattr(bench, "PEAK_GEMM_SIZE", 64)


def _run_measurer(monkeypatch, tmp_path, argv, **fake):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(**fake))
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    _fake_gpu_api(monkeypatch)
    code = bench.main(argv + ["--out", str(tmp_path), "--no-plot"])
    return code, json.loads((tmp_path / "bench.json").read_text())


def test_gpu_measurer_logic_with_stand_ins(monkeypatch, tmp_path):
    code, result = _run_measurer(monkeypatch, tmp_path, ["--shapes", "256x1024,128x512", "--m", "1,24"])
    assert code == 1  # fake_wrong mismatches
    checks = {(c["shape"], c["backend"]): c for c in result["checks"]}
    assert checks[("custom:256x1024", "fake")]["ok"] and checks[("custom:256x1024", "fake")]["compared"] == 5 * 192
    assert checks[("custom:128x512", "fake")]["compared"] == 5 * 128
    wrong = checks[("custom:256x1024", "fake_wrong")]
    assert not wrong["ok"] and wrong["mismatches"] == 1 and "[0, 0]" in wrong["detail"]
    records = {(r["shape"], r["m"], r["backend"]): r for r in result["records"]}
    assert all(r["status"] == "ok" and r["method"] == "graph" for r in records.values()), records
    ours = records[("custom:256x1024", 1, "fake")]
    copies = bench.rotation_copies(bench.our_weight_bytes(256, 1024), FAKE_L2)
    assert ours["copies"] == copies and ours["time_s"] == pytest.approx(1e-3 / copies)
    assert ours["l2_defeated"] and ours["reps"] == 50  # 1 ms a pass, 50 ms target
    assert "24 rows" in records[("custom:256x1024", 1, "cublas_int8")]["note"]
    assert "per-row scales" in records[("custom:256x1024", 1, "cublas_fp8")]["note"]
    assert result["ceilings"]["copy_bytes_per_s"] == pytest.approx(2 * 4096 / 1e-3)
    assert result["ceilings"]["peak_ops_per_s"] == pytest.approx(2 * 64**3 / 1e-3)
    assert result["meta"]["device"] == "Fake H100" and result["meta"]["our_backends_available"] == ["fake", "fake_wrong"]


def test_gpu_measurer_falls_back_to_eager_and_reports_unavailable_int4(monkeypatch, tmp_path):
    argv = ["--shapes", "128x512", "--m", "1", "--backends", "fake,peers"]
    code, result = _run_measurer(monkeypatch, tmp_path, argv, graph_fails=True, int4_refused=True)
    assert code == 0
    records = {r["backend"]: r for r in result["records"]}
    assert records["fake"]["method"] == "eager" and "graph capture failed" in records["fake"]["note"]
    assert records["torch_int4"]["status"] == "unavailable"
    assert "_convert_weight_to_int4pack refused" in result["unavailable"]["torch_int4"]
    text = (tmp_path / "bench.txt").read_text()
    assert "fake: 1 cases timed on eager launches" in text and "peer torch_int4 unavailable" in text


# --- the session script -----------------------------------------------------------------------------


def test_session_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


STUB = r"""#!/usr/bin/env bash
# A stand-in interpreter: logs each call; exit codes come from STUB_* variables.
echo "$*" >> "$STUB_CALLS"
case "$*" in
  "-m pip"*) exit "${STUB_PIP_RC:-0}" ;;
  "-") cat >/dev/null; echo "python stub"; exit 0 ;;
  *"--render-summary"*) echo "STUB SUMMARY of $3"; exit 0 ;;
  *"--build-only"*) echo "build: 1.0 s in all; 0 failures"; exit "${STUB_BUILD_RC:-0}" ;;
  *"racecheck_probe.py cluster_"*) sleep "${STUB_CLUSTER_PROBE_SLEEP:-0}"; echo "racecheck_probe ${*: -1}: correct"
    exit "${STUB_CLUSTER_PROBE_RC:-${STUB_PROBE_RC:-0}}" ;;
  *"racecheck_probe.py"*) echo "racecheck_probe ${*: -1}: sums correct"; exit "${STUB_PROBE_RC:-0}" ;;
  *"cluster_occupancy.py"*) echo "cluster occupancy (132 SMs) stub"; exit "${STUB_OCCUPANCY_RC:-0}" ;;
  "-m pytest"*"-k sanitizer_case and barrier_exchange"*) sleep "${STUB_BARRIER_CASES_SLEEP:-0}"
    echo "${STUB_TEST_OUT:-3 passed, 1 skipped in 0.50s}"; exit "${STUB_TEST_RC:-0}" ;;
  "-m pytest"*) echo "CI=$CI"; echo "${STUB_TEST_OUT:-3 passed, 1 skipped in 0.50s}"; exit "${STUB_TEST_RC:-0}" ;;
  "-m gpu.bench --out"*)
    mkdir -p "$4"; echo '{"schema": 1}' > "$4/bench.json"; echo "table" > "$4/bench.txt"
    exit "${STUB_BENCH_RC:-0}" ;;
esac
echo "unexpected call: $*" >&2
exit 42
"""


def _run_session(tmp_path, **env):
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    stub = tmp_path / "python-stub"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHON": str(stub),
        "OUT": str(out),
        "STUB_CALLS": str(tmp_path / "calls"),
        **env,
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines()
    return done, calls, out


def _step(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(name + " "))


def test_session_all_steps_pass_and_the_summary_comes_last(tmp_path):
    done, calls, out = _run_session(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("SESSION PASSED")
    assert [c.split()[1] if c.startswith("-m") else c for c in calls] == [
        "pip", "-", "gpu.bench", "scripts/cluster_occupancy.py", "pytest", "gpu.bench", "gpu.bench"
    ]
    assert "--max-seconds" in calls[5] and "--render-summary" in calls[6]
    assert (out / "summary.txt").read_text().splitlines()[3] == "cluster occupancy (132 SMs) stub"
    assert "3 passed, 1 skipped" in _step(done.stdout, "tests")
    assert "SANITIZE=1 to run" in _step(done.stdout, "sanitize")
    assert "STUB SUMMARY" in done.stdout
    assert (out / "summary.txt").read_text() in done.stdout
    assert "CI=1" in (out / "gpu-tests.log").read_text()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["bench/bench.json", "bench/bench.txt", "gpu-tests.log", "session.log", "summary.txt"]


def test_session_failing_tests_do_not_stop_the_bench_and_fail_the_session(tmp_path):
    done, calls, _ = _run_session(tmp_path, STUB_TEST_RC="1", STUB_BUILD_RC="1")
    assert done.returncode == 1
    assert any("--out" in c for c in calls)  # the bench still ran
    assert "FAILED (exit 1)" in _step(done.stdout, "tests")
    assert "FAILED (exit 1)" in _step(done.stdout, "build")
    assert "ok" in _step(done.stdout, "bench")
    assert done.stdout.rstrip().endswith("SESSION FAILED (see the steps above)")


def test_session_install_failure_falls_back_to_the_source_tree(tmp_path):
    done, calls, _ = _run_session(tmp_path, STUB_PIP_RC="1")
    assert done.returncode == 1
    assert "PYTHONPATH" in _step(done.stdout, "install")
    assert len(calls) == 7  # every later step still ran


def test_session_cluster_occupancy_is_information_only(tmp_path):
    """A failed occupancy query is said in the summary but fails no step; after a build that
    timed out it is not asked."""
    done, _, _ = _run_session(tmp_path, STUB_OCCUPANCY_RC="1")
    assert done.returncode == 0 and done.stdout.rstrip().endswith("SESSION PASSED")
    assert "the query failed (session.log): cluster occupancy (132 SMs) stub" in done.stdout
    done, calls, _ = _run_session(tmp_path / "hung", STUB_BUILD_RC="124")
    assert not any("cluster_occupancy" in c for c in calls) and "not queried" in done.stdout


def test_session_knobs(tmp_path):
    done, calls, _ = _run_session(tmp_path, SKIP_TESTS="1", BENCH_ARGS="--quick --shapes llama2-70b")
    assert done.returncode == 0
    assert not any(c.startswith("-m pytest") for c in calls)
    bench_call = next(c for c in calls if "--out" in c)
    assert bench_call.endswith("--quick --shapes llama2-70b")
    assert "skipped" in _step(done.stdout, "tests")
    done, calls, _ = _run_session(tmp_path / "skip-bench", SKIP_BENCH="1", SKIP_TESTS="1")
    assert done.returncode == 0 and not any("--out" in c for c in calls)
    done, calls, _ = _run_session(tmp_path / "short", SKIP_TESTS="1", SESSION_SECONDS="60")
    assert "only" in _step(done.stdout, "bench") and not any("--out" in c for c in calls)


def test_session_build_timeout_skips_the_later_gpu_steps(tmp_path):
    done, calls, _ = _run_session(tmp_path, STUB_BUILD_RC="124", SANITIZE="1")
    assert done.returncode == 1
    assert "FAILED (timed out)" in _step(done.stdout, "build")
    for step in ("tests", "sanitize", "bench"):
        assert "build timed out" in _step(done.stdout, step)
    assert not any(c.startswith("-m pytest") or "--out" in c for c in calls)


SANITIZER_STUB = r"""#!/usr/bin/env bash
# A stand-in compute-sanitizer: runs the program after its options, then prints a summary.
# racecheck reports STUB_HAZARDS hazards (STUB_MUTANT_HAZARDS on the racecheck mutant) and, as
# the real one, exits with --error-exitcode's value when it reports any.
tool="$2"
exitcode=""
while [ "${1#--}" != "$1" ]; do [ "$1" = --error-exitcode ] && exitcode="$2"; shift 2; done
"$@"
rc=$?
if [ "$tool" = racecheck ]; then
  hazards="${STUB_HAZARDS:-0}"
  case "$*" in *racecheck_mutant*) hazards="${STUB_MUTANT_HAZARDS:-1}" ;; esac
  echo "========= RACECHECK SUMMARY: $hazards hazards displayed ($hazards errors, 0 warnings)"
  [ "$hazards" -gt 0 ] && [ -n "$exitcode" ] && exit "$exitcode"
else echo "========= ERROR SUMMARY: 0 errors"; fi
exit $rc
"""


def test_session_sanitize_runs_the_sanitizer_cases_and_the_racecheck_probe(tmp_path):
    """SANITIZE=1: memcheck of every backend; memcheck and synccheck of the Hopper sanitizer
    cases, racecheck of those without clusters and of the cluster split's racecheck build, and
    racecheck of RACECHECK_MUTANT, which must report a hazard; racecheck of the probe's four ring
    modes and its two cluster-barrier exchange modes, where only a correct mode that fails fails
    the step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    sanitizer = bin_dir / "compute-sanitizer"
    sanitizer.write_text(SANITIZER_STUB)
    sanitizer.chmod(sanitizer.stat().st_mode | stat.S_IEXEC)
    path = f"{bin_dir}:{os.environ['PATH']}"

    def session(name, **env):
        return _run_session(tmp_path / name, SANITIZE="1", SKIP_TESTS="1", SKIP_BENCH="1", PATH=path, **env)

    done, calls, _ = session("ok")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR SUMMARY: 0 errors" in _step(done.stdout, "sanitize")
    cases = _step(done.stdout, "cases")
    assert "memcheck: 0 errors" in cases and "synccheck: 0 errors" in cases
    assert "racecheck workspace: 0 hazards" in cases and "racecheck barrier_exchange: 0 hazards" in cases
    assert "racecheck mutant (needs a hazard): 1 hazards" in cases
    assert sum("-k sanitizer_case" in c for c in calls) == 4
    assert sum("-k sanitizer_case and workspace" in c for c in calls) == 1
    assert sum("-k sanitizer_case and barrier_exchange" in c for c in calls) == 1
    assert sum("test_hopper_mutants.py -k racecheck_mutant" in c for c in calls) == 1
    racecheck = _step(done.stdout, "racecheck")
    assert "correct: 0 hazards" in racecheck and "cluster_barrier_exchange_racy: 0 hazards" in racecheck
    assert [c.split()[-1] for c in calls if "racecheck_probe.py" in c] == [
        "correct", "early", "tensor", "tensor_early", "cluster_barrier_exchange", "cluster_barrier_exchange_racy"]
    # a hazard in the real cases fails the step; so does a mutant racecheck does not flag
    done, _, _ = session("hazards", STUB_HAZARDS="2")
    assert done.returncode == 1 and "FAILED (exit 99)" in _step(done.stdout, "cases")
    assert "racecheck workspace: 2 hazards" in _step(done.stdout, "cases")
    done, _, _ = session("mutant_unseen", STUB_MUTANT_HAZARDS="0")
    assert done.returncode == 1 and "FAILED (exit 1)" in _step(done.stdout, "cases")
    done, _, _ = session("wrong", STUB_PROBE_RC="1")
    assert done.returncode == 1 and "FAILED (exit 1)" in _step(done.stdout, "racecheck")
    done, _, _ = session("cluster_wrong", STUB_CLUSTER_PROBE_RC="1")
    assert done.returncode == 1 and "FAILED (exit 1)" in _step(done.stdout, "racecheck")
    done, _, _ = session("hang", STUB_CLUSTER_PROBE_SLEEP="5", CLUSTER_PROBE_SECONDS="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cluster_barrier_exchange: did not finish in 1 s" in _step(done.stdout, "racecheck")
    done, _, _ = session("barrier_hang", STUB_BARRIER_CASES_SLEEP="5", CLUSTER_CASES_SECONDS="1")
    assert done.returncode == 1 and "FAILED (timed out)" in _step(done.stdout, "cases")
    assert "racecheck barrier_exchange: did not finish in 1 s" in _step(done.stdout, "cases")
    assert "racecheck mutant (needs a hazard): 1 hazards" in _step(done.stdout, "cases")
    done, _, _ = session("cases", STUB_TEST_RC="1")
    assert done.returncode == 1 and "FAILED (exit 1)" in _step(done.stdout, "cases")


def test_session_tests_that_all_skip_fail_the_step(tmp_path):
    done, _, _ = _run_session(tmp_path, STUB_TEST_OUT="30 skipped in 0.50s")
    assert done.returncode == 1
    assert "FAILED (exit 1)" in _step(done.stdout, "tests") and "no test passed" in _step(done.stdout, "tests")


def test_session_bench_failure_is_reported(tmp_path):
    done, _, _ = _run_session(tmp_path, STUB_BENCH_RC="2", SKIP_TESTS="1")
    assert done.returncode == 1 and "FAILED (exit 2)" in _step(done.stdout, "bench")


# --- on a GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_build_only_is_bit_exact_on_the_device(cp, capsys):
    assert bench.main(["--build-only", "--shapes", "128x512", "--m", "1,5,16"]) == 0
    assert "0 failures" in capsys.readouterr().out


@pytest.mark.gpu
def test_a_tiny_benchmark_on_the_device(torch_cuda, tmp_path):
    code = bench.main(["--shapes", "256x1024", "--m", "1,24", "--out", str(tmp_path), "--target-ms", "5", "--max-reps", "10"])
    result = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0, bench.render_text(result)
    assert result["checks"] and all(c["ok"] for c in result["checks"])
    ours = [r for r in result["records"] if r["kind"] == "ours"]
    assert ours and all(r["status"] == "ok" and r["time_s"] > 0 for r in ours)
    assert all(r["method"] == "graph" for r in ours), [r.get("note") for r in ours]
    peers = {r["backend"]: r["status"] for r in result["records"] if r["kind"] == "peer"}
    assert peers["cublas_bf16"] == "ok" and peers["cublas_int8"] == "ok"
    assert result["ceilings"]["copy_bytes_per_s"] > 1e11 and result["ceilings"]["peak_ops_per_s"] > 1e13
