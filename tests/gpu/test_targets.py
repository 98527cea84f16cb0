"""gpu.targets judges the performance targets from a results file (CPU only).

On the two committed runs (docs/bench/) the verdicts must be the ones the performance pages
state, case by case; on small made-up results, the thresholds' edges, strictness and cases that
were not measured. Deliberately wrong judges (mutants) show that these checks can fail.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpu import bench, targets

DOCS_BENCH = bench.DOCS_PAGE.parent / "bench"
BF16, FLOOR_13, FLOOR_115, INT8_4096, INT8_1024, PORTABLE = range(6)  # the order of targets.TARGETS


def _run(name: str) -> dict:
    return json.loads((DOCS_BENCH / name).read_text())


def _misses(verdict) -> list[tuple[str, int, float]]:
    return [(c.shape.partition(":")[2], c.m, round(c.value, 2)) for c in verdict.misses]


def check_recorded_runs(judge) -> None:
    """The verdicts on the committed H100 (2026-12-08 00:30) and H200 (2026-11-22 11:56) runs, as
    docs/performance.md's targets table states them."""
    h100 = judge(_run("bench-h100.json"))
    assert [v.status for v in h100] == ["not met (10 of 12 cases)", "not met (5 of 12 cases)",
                                        "not met (2 of 24 cases)", "met", "met", "met"]
    assert _misses(h100[BF16]) == [("qkv", 64, 2.48), ("o", 64, 2.30)]
    assert [round(c.needed_us, 1) for c in h100[BF16].misses] == [24.0, 19.7]
    met_floor = [(c.shape.partition(":")[2], c.m) for c in h100[FLOOR_13].cases if c.met]
    assert met_floor == [("gate_up", 1), ("gate_up", 16), ("gate_up", 64), ("down", 1), ("down", 16)]
    assert round(targets.worst_case(h100[FLOOR_13]).value, 2) == 1.71  # o at M = 64
    assert round(targets.worst_case(h100[INT8_1024]).value, 2) == 1.12  # 8B down at M = 1024
    assert round(targets.worst_case(h100[PORTABLE]).value, 2) == 1.04  # 70B gate_up at M = 16

    h200 = judge(_run("bench.json"))
    assert [v.status for v in h200] == ["not met (9 of 12 cases)", "not met (4 of 12 cases)",
                                        "not met (0 of 24 cases)", "met", "met", "met"]
    assert _misses(h200[BF16]) == [("qkv", 64, 1.83), ("o", 16, 2.45), ("o", 64, 2.16)]
    assert round(targets.worst_case(h200[FLOOR_13]).value, 2) == 2.19  # qkv at M = 64
    assert round(targets.worst_case(h200[INT8_4096]).value, 2) == 1.26


def test_the_recorded_runs_give_the_stated_verdicts():
    check_recorded_runs(targets.judge)


def test_the_ablation_of_the_recorded_runs():
    """The ablation table of docs/performance.md (H200) and the H100's range in its text."""
    h200 = targets.ablation(_run("bench.json"))
    assert [round(h200["hopper_qoq_dequant"][m], 2) for m in bench.DEFAULT_M] == [1.11, 1.12, 1.13, 1.17, 1.07, 1.09, 1.07]
    assert [round(h200["hopper_excp"][m], 2) for m in bench.DEFAULT_M] == [1.44, 1.42, 1.34, 1.44, 1.43, 1.52, 1.60]
    h100 = targets.ablation(_run("bench-h100.json"))
    assert (round(min(h100["hopper_qoq_dequant"].values()), 2), round(max(h100["hopper_qoq_dequant"].values()), 2)) == (1.05, 1.13)
    assert (round(min(h100["hopper_excp"].values()), 2), round(max(h100["hopper_excp"].values()), 2)) == (1.19, 1.54)


# --- small made-up results -------------------------------------------------------------------


def _record(backend: str, time_us: float, shape="llama2-70b:o", m=64, kind=None, status="ok", floor_us=None):
    record = {"backend": backend, "kind": kind or ("peer" if backend in bench.PEERS else "ours"),
              "shape": shape, "m": m, "status": status, "time_s": time_us * 1e-6, "time_us": time_us}
    if floor_us is not None:
        record["floor_us"] = floor_us
    return record


def _verdict(records, index: int, judge=targets.judge):
    return judge({"records": records})[index]


def check_edges(judge) -> None:
    """Just inside the threshold a target is met, just outside not; strictly faster means
    strictly; *would meet it* is the time at the threshold."""
    inside = _verdict([_record("hopper", 19.99), _record("cublas_bf16", 50.0)], BF16, judge)
    assert inside.status == "met" and inside.cases[0].needed_us == pytest.approx(20.0)
    short = _verdict([_record("hopper", 20.01), _record("cublas_bf16", 50.0)], BF16, judge)
    assert short.status == "not met (0 of 1 cases)" and short.cases[0].needed_us == pytest.approx(20.0)
    floor = _verdict([_record("hopper", 20.0, floor_us=15.0)], FLOOR_13, judge)
    assert not floor.met and floor.cases[0].value == pytest.approx(20 / 15)
    assert floor.cases[0].needed_us == pytest.approx(19.5)
    tie = _verdict([_record("hopper", 30.0), _record("mma_sync", 30.0)], PORTABLE, judge)
    assert not tie.met


def check_unmeasured(judge) -> None:
    """A covered case without a number is counted and keeps the target from being met."""
    records = [_record("hopper", 10.0, m=1), _record("cublas_bf16", 40.0, m=1),
               _record("hopper", 12.0, m=16), _record("hopper", 0.0, m=64, status="skipped")]
    verdict = _verdict(records, BF16, judge)
    assert len(verdict.cases) == 1 and verdict.unmeasured == 2
    assert not verdict.met and verdict.status == "not met (1 of 1 cases), 2 not measured"
    nothing = _verdict([_record("hopper", 10.0, shape="llama3-8b:o")], BF16, judge)
    assert nothing.status == "not measured" and not nothing.met


def test_edges_of_the_thresholds():
    check_edges(targets.judge)


def test_unmeasured_cases_are_counted_not_met():
    check_unmeasured(targets.judge)


def test_reports_render_every_target_and_the_ablation():
    run = _run("bench-h100.json")
    text = "\n".join(targets.report_lines(run))
    assert text.count("NOT MET") == 3 and text.count("met: ") == 3
    assert "70B o M=64: 2.30x (21.4 us; 19.7 would meet it)" in text and "hopper_excp" in text
    markdown = "\n".join(targets.report_lines(run, markdown=True))
    assert "### Targets" in markdown and "### Ablation" in markdown and "| met |" in markdown
    assert targets.report_lines({"records": [_record("cublas_bf16", 1.0)]}) == []


# --- mutants: wrong judges the checks above must reject ------------------------------------------


def _judge_with(**replaced):
    """targets.judge with each target's fields replaced."""
    def judge(result):
        return targets.judge(result, tuple(dataclasses.replace(t, **replaced) for t in targets.TARGETS))

    return judge


def _judge_ignoring_unmeasured(result):
    return [dataclasses.replace(v, unmeasured=0) for v in targets.judge(result)]


def _judge_floor_inverted(result):
    inverted = lambda r, times: None if not r.get("floor_us") else r["floor_us"] / r["time_us"]  # noqa: E731
    swapped = tuple(dataclasses.replace(t, ratio=inverted) if t.at_most else t for t in targets.TARGETS)
    return targets.judge(result, swapped)


MUTANTS = {
    "unmeasured_cases_ignored": (_judge_ignoring_unmeasured, check_unmeasured),
    "floor_as_floor_over_time": (_judge_floor_inverted, check_recorded_runs),
    "never_strict": (_judge_with(strict=False), check_edges),
}


@pytest.mark.mutant
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_checks_reject_mutant_judges(name):
    judge, check = MUTANTS[name]
    with pytest.raises(AssertionError):
        check(judge)
