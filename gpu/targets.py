"""The performance targets, judged from one benchmark run (no GPU needed).

The targets are those of issue 6 (the Hopper kernel) and of the design card
(``ARCHITECTURE.md`` section 5). Each one is a threshold on a ratio measured in one run: our
LiquidGEMM kernel (backend ``hopper``) against a peer, or against the floor. ``judge(result)``
takes a results dict of ``gpu.bench`` (after ``gpu.bench.derive``) and returns one ``Verdict``
per target, with every case it covers. A case that was not measured is left out and counted,
never taken as met. ``ablation(result)`` gives the paper's Figure 13 ratios: each variant's time
over the kernel's, as a geometric mean over the shapes at each M.

    python -m gpu.bench --render-summary RUN/bench.json    # prints these tables too
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bench import _table, geometric_mean

OURS = "hopper"  # the backend the targets are about
PORTABLE = "mma_sync"  # the portable kernel it must beat everywhere
ABLATION_VARIANTS = ("hopper_qoq_dequant", "hopper_excp")
DECODE_MAX_M = 64  # "M <= 64": decode
TARGET_MODEL = "llama2-70b"  # the decode targets are on its shapes


@dataclass(frozen=True)
class Case:
    """One (shape, M) a target covers: the measured ratio and whether it meets the threshold."""

    shape: str
    m: int
    value: float  # the ratio the threshold is on (a speed-up, or our time over the floor)
    ours_us: float
    needed_us: float  # the time of ours that would just meet the threshold
    met: bool


@dataclass(frozen=True)
class Target:
    """A threshold on one ratio over a set of cases.

    ``ratio(record, times)`` gives the ratio of one of our records (``times``: the run's times
    in us by (shape, M, backend)) or None when it was not measured. The ratio must reach
    ``threshold`` (exceed it when ``strict``), or with ``at_most`` stay at or below it (our time
    over the floor).
    """

    text: str
    source: str  # "issue 6" or "design card"
    applies: Callable[[dict], bool]  # which of our records it covers
    ratio: Callable[[dict, dict], float | None]
    threshold: float
    at_most: bool = False
    strict: bool = False
    unit: str = "x"

    def case(self, record: dict, times: dict) -> Case | None:
        value = self.ratio(record, times)
        if value is None:
            return None
        ours = record["time_us"]
        # the time that meets the threshold exactly: the ratio scales as 1 / our time for a
        # speed-up and as our time for time over the floor
        needed = ours * self.threshold / value if self.at_most else ours * value / self.threshold
        if self.at_most:
            met = value <= self.threshold
        else:
            met = value > self.threshold if self.strict else value >= self.threshold
        return Case(record["shape"], record["m"], value, ours, needed, met)


@dataclass(frozen=True)
class Verdict:
    """A target judged on one run: the cases measured, and how many it covers but lack a number."""

    target: Target
    cases: tuple[Case, ...]
    unmeasured: int

    @property
    def met(self) -> bool:
        return bool(self.cases) and self.unmeasured == 0 and all(c.met for c in self.cases)

    @property
    def misses(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if not c.met)

    @property
    def status(self) -> str:
        if not self.cases:
            return "not measured"
        met = sum(c.met for c in self.cases)
        text = "met" if self.met else f"not met ({met} of {len(self.cases)} cases)"
        return text + (f", {self.unmeasured} not measured" if self.unmeasured else "")


def _speedup_over(peer: str):
    def ratio(record: dict, times: dict) -> float | None:
        other = times.get((record["shape"], record["m"], peer))
        return None if other is None else other / record["time_us"]

    return ratio


def _time_over_floor(record: dict, times: dict) -> float | None:  # noqa: ARG001
    floor = record.get("floor_us")
    return None if not floor else record["time_us"] / floor


def _decode_70b(record: dict) -> bool:
    return record["m"] <= DECODE_MAX_M and record["shape"].startswith(TARGET_MODEL + ":")


TARGETS = (
    Target("70B layers, M <= 64: at least 2.5x faster than cuBLAS bf16", "issue 6", _decode_70b,
           _speedup_over("cublas_bf16"), 2.5),
    Target("70B layers, M <= 64: within 1.3x of the floor", "issue 6", _decode_70b, _time_over_floor, 1.3,
           at_most=True, unit="x the floor"),
    Target("M <= 64: within 1.15x of the floor", "design card", lambda r: r["m"] <= DECODE_MAX_M,
           _time_over_floor, 1.15, at_most=True, unit="x the floor"),
    Target("M = 4096: at least as fast as cuBLAS int8", "issue 6", lambda r: r["m"] == 4096,
           _speedup_over("cublas_int8"), 1.0),
    Target("M >= 1024: at least 1.1x faster than cuBLAS int8", "design card", lambda r: r["m"] >= 1024,
           _speedup_over("cublas_int8"), 1.1),
    Target("faster than the portable mma.sync kernel everywhere", "issue 6", lambda r: True,
           _speedup_over(PORTABLE), 1.0, strict=True),
)


def _times(result: dict) -> dict[tuple[str, int, str], float]:
    """Every measured time in us by (shape, M, backend), ours and the peers'."""
    return {(r["shape"], r["m"], r["backend"]): r["time_us"] for r in result["records"] if r["status"] == "ok"}


def judge(result: dict, targets: tuple[Target, ...] = TARGETS) -> list[Verdict]:
    """One verdict per target from a derived results dict. A covered case of ours that did not
    run, or whose peer did not, counts as unmeasured; a target with no measured case at all is
    "not measured" (a run of other shapes or token counts)."""
    times = _times(result)
    ours = [r for r in result["records"] if r["kind"] == "ours" and r["backend"] == OURS]
    verdicts = []
    for target in targets:
        covered = [r for r in ours if target.applies(r)]
        cases = [target.case(r, times) for r in covered if r["status"] == "ok"]
        measured = tuple(c for c in cases if c is not None)
        verdicts.append(Verdict(target, measured, len(covered) - len(measured)))
    return verdicts


def ablation(result: dict) -> dict[str, dict[int, float]]:
    """{variant: {M: geometric mean over the shapes of variant time / kernel time}} for the
    ablation variants that ran (above 1: the variant is slower)."""
    times = _times(result)
    out: dict[str, dict[int, float]] = {}
    for variant in ABLATION_VARIANTS:
        by_m: dict[int, list[float]] = {}
        for (shape, m, backend), ours in times.items():
            if backend == OURS and (shape, m, variant) in times:
                by_m.setdefault(m, []).append(times[(shape, m, variant)] / ours)
        if by_m:
            out[variant] = {m: geometric_mean(ratios) for m, ratios in sorted(by_m.items())}
    return out


MISSES_LISTED = 4  # misses named per target; the rest are counted


def _short_shape(shape: str) -> str:
    """``70B qkv`` for ``llama2-70b:qkv``, ``8B o`` for ``llama3-8b:o``; other shapes as they are."""
    model, _, layer = shape.partition(":")
    size = model.rpartition("-")[2]
    return f"{size.upper()} {layer}" if layer and size[:-1].isdigit() and size.endswith("b") else shape


def _case_text(case: Case, target: Target) -> str:
    return (f"{_short_shape(case.shape)} M={case.m}: {case.value:.2f}{target.unit} "
            f"({case.ours_us:.1f} us; {case.needed_us:.1f} would meet it)")


def worst_case(verdict: Verdict) -> Case | None:
    """The case farthest from the threshold on the wrong side (or nearest to it, when all meet it)."""
    return max(verdict.cases, key=lambda c: c.value if verdict.target.at_most else -c.value, default=None)


def render_targets(verdicts: list[Verdict], markdown: bool = False) -> str:
    """Each target, where it comes from, its verdict, its worst case and the misses (the first
    ``MISSES_LISTED`` in shape order, then a count): a table, or one line per target as text."""
    rows = []
    for v in verdicts:
        worst = worst_case(v)
        misses = [_case_text(c, v.target) for c in v.misses]
        if len(misses) > MISSES_LISTED:
            misses = misses[:MISSES_LISTED] + [f"{len(misses) - MISSES_LISTED} more"]
        rows.append([v.target.text, v.target.source, v.status,
                     "-" if worst is None else _case_text(worst, v.target), "; ".join(misses) or "-"])
    if markdown:
        return _table(["target", "from", "verdict", "worst case", "cases that miss it"], rows, markdown=True)
    return "\n".join(f"{status.replace('not met', 'NOT MET')}: {text} ({source}); worst {worst}"
                     + ("" if misses == "-" else f"; misses {misses}")
                     for text, source, status, worst, misses in rows)


def render_ablation(ratios: dict[str, dict[int, float]], markdown: bool = False) -> str:
    """A table: per variant, its time over the kernel's at each M (geometric means)."""
    ms = sorted({m for by_m in ratios.values() for m in by_m})
    rows = [[variant] + [f"{by_m[m]:.2f}" if m in by_m else "-" for m in ms] for variant, by_m in ratios.items()]
    return _table(["variant / hopper", *(f"M={m}" for m in ms)], rows, markdown)


def report_lines(result: dict, markdown: bool = False) -> list[str]:
    """The targets and the ablation of a derived results dict, each under a heading: lines for
    ``gpu.bench``'s text report and docs section ([] when our kernel did not run)."""
    if not any(r["kind"] == "ours" and r["backend"] == OURS for r in result["records"]):
        return []
    ratios = ablation(result)
    if markdown:
        lines = ["### Targets", "",
                 f"Each target of issue 6 and of the design card (`ARCHITECTURE.md` section 5), judged on "
                 f"this run's `{OURS}` times (`gpu.targets`). *would meet it*: the time of ours that would "
                 "just reach the threshold.", "", render_targets(judge(result), markdown=True), ""]
        if ratios:
            lines += ["### Ablation", "",
                      f"Each variant's time over `{OURS}`'s, geometric mean over the shapes (above 1: the "
                      "variant is slower; the paper's Figure 13).", "", render_ablation(ratios, markdown=True), ""]
        return lines
    lines = ["targets (issue 6 and the design card; would meet it = the time of ours that would just reach "
             "the threshold)", render_targets(judge(result))]
    if ratios:
        lines += ["", f"ablation (variant time / {OURS} time, geometric mean over the shapes)", render_ablation(ratios)]
    return lines
