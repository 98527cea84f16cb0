"""Overflow safety, executed: every valid (q4, s, offset) of a scheme through its dequant program.

A *carry* is a byte lane whose exact value leaves its byte (see ``emulator.machine``): in a
32-bit register the excess lands in the next lane (IMAD, IADD). QServe's per-byte ``__vadd4``
never carries across lanes (the tracing executor checks its inner IADD3); there the failure is
an *in-lane wrap*: ``(q4 - z) s`` outside [-128, 127] comes out modulo 256, a wrong weight.
``OverflowResult.failures`` is the union of both: the triples whose executed weight is wrong
or whose dequant carries.

The domains are derived from the numeric contracts by running the oracles themselves on every
group (min, max) the contract allows, so nothing here re-states a quantization formula:

- LiquidQuant (``liquidref.quantize_weight``): every (mn, mx) with -119 <= mn <= mx <= 119 and
  every code q4 the group can produce; triples (q4, s, a = 128 + mn). The naive scheme uses the
  same groups but adds the two's-complement min byte ``mn & 0xFF`` (= ``a ^ 0x80``) with no XOR.
- QoQ (``liquidref.baselines.quantize_qoq``): every (mn, mx) in [-119, 119] (protective range)
  or [-127, 127] (without it); triples (q4, s, zp = (-z s) & 0xFF).

Each group (mn, mx) is one row of 2 groups: the first holds representative values of [mn, mx]
(its min, max and one value per code step), the second holds +-limit so that the level-1 scale
is exactly 1 and ``q8 == W``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from liquidref import quantize_weight
from liquidref.baselines import (
    INT8_LIMIT,
    qoq_dequantize_exact,
    qoq_scaled_zeros,
    quantize_qoq,
)
from liquidref.constants import (
    BYTE_BROADCAST,
    GROUP_SIZE,
    OFFSET_BIAS,
    Q4_MAX,
    Q8_LIMIT,
    QOQ_GROUP_SIZE,
    XOR_MASK_BYTE,
)

from . import machine, programs

SCHEMES = ("lqq", "naive", "qoq", "qoq_unprotected", "qoq_iadd")
NIBBLE_BROADCAST = 0x11111111  # a code in all 8 nibbles of a packed word


@dataclass(frozen=True)
class GroupDomain:
    """Every (group, code) a scheme's contract can produce.

    Attributes:
        scheme: ``"lqq"`` or ``"qoq"`` (the contract the domain comes from).
        limit: the level-1 limit (119, or 127 for QoQ without the protective range).
        mn, mx: int64 [P], the group minimum and maximum of each (mn, mx) pair.
        pair: int64 [E], the pair of each element.
        q4, s: int64 [E], code and step of each element.
        offset: int64 [E], the stored byte added per lane: ``a`` (LQQ) or ``(-z s) & 0xFF`` (QoQ).
        exact: int64 [E], the intended int8 weight (``q4 s + mn`` or ``(q4 - z) s``).
    """

    scheme: str
    limit: int
    mn: np.ndarray
    mx: np.ndarray
    pair: np.ndarray
    q4: np.ndarray
    s: np.ndarray
    offset: np.ndarray
    exact: np.ndarray

    def triples(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique (q4, s, offset) rows int64 [T, 3], and the index of each element's triple."""
        stacked = np.stack([self.q4, self.s, self.offset], axis=1)
        return np.unique(stacked, axis=0, return_inverse=True)


def _pairs(limit: int) -> tuple[np.ndarray, np.ndarray]:
    mn, mx = np.meshgrid(np.arange(-limit, limit + 1), np.arange(-limit, limit + 1), indexing="ij")
    keep = mn <= mx
    return mn[keep].astype(np.int64), mx[keep].astype(np.int64)


def _rows(mn, mx, candidates, group_size, limit) -> np.ndarray:
    """float32 [P, 2 G]: group 0 = mn, mx and the clipped candidates; group 1 pins s1 = 1."""
    rows = np.empty((mn.size, 2 * group_size), np.float32)
    rows[:, :group_size] = mn[:, None]
    rows[:, 1] = mx
    width = candidates.shape[1]
    rows[:, 2:2 + width] = np.clip(candidates, mn[:, None], mx[:, None])
    rows[:, group_size:] = 0
    rows[:, group_size] = limit
    rows[:, group_size + 1] = -limit
    return rows


@functools.lru_cache(maxsize=None)
def lqq_domain() -> GroupDomain:
    """The LiquidQuant domain, from ``liquidref.quantize_weight`` on every (mn, mx) pair (cached;
    treat the arrays as read-only)."""
    mn, mx = _pairs(Q8_LIMIT)
    first = quantize_weight(_rows(mn, mx, np.zeros((mn.size, 0)), GROUP_SIZE, Q8_LIMIT))
    step = first.s[:, 0].astype(np.int64)
    # one value per code step: mn + m s for m = 0..15 covers every code the group can take
    candidates = mn[:, None] + np.arange(Q4_MAX + 1)[None, :] * step[:, None]
    w = quantize_weight(_rows(mn, mx, candidates, GROUP_SIZE, Q8_LIMIT))
    if not np.array_equal(w.s[:, 0], first.s[:, 0]) or not (w.s1 == 1).all():
        raise AssertionError("the representative rows changed the group step or the row scale")
    return _domain_from("lqq", Q8_LIMIT, mn, mx, w.q4[:, :GROUP_SIZE], w.s[:, 0], w.a[:, 0],
                        (w.a[:, 0].astype(np.int64) - OFFSET_BIAS))


def _domain_from(scheme, limit, mn, mx, codes, s, offset, exact_base, z=None) -> GroupDomain:
    codes = codes.astype(np.int64)
    present = np.zeros((mn.size, Q4_MAX + 1), bool)
    present[np.arange(mn.size)[:, None], codes] = True
    pair, q4 = np.nonzero(present)
    s = s.astype(np.int64)[pair]
    if z is None:
        exact = q4 * s + exact_base[pair]
    else:
        exact = (q4 - z.astype(np.int64)[pair]) * s
    return GroupDomain(scheme, limit, mn, mx, pair.astype(np.int64), q4.astype(np.int64), s,
                       offset.astype(np.int64)[pair], exact)


@functools.lru_cache(maxsize=None)
def qoq_domain(protective_range: bool = True) -> GroupDomain:
    """The QoQ domain, from ``liquidref.baselines.quantize_qoq`` on every (mn, mx) pair."""
    limit = Q8_LIMIT if protective_range else INT8_LIMIT
    mn, mx = _pairs(limit)
    empty = np.zeros((mn.size, 0))
    first = quantize_qoq(_rows(mn, mx, empty, QOQ_GROUP_SIZE, limit), QOQ_GROUP_SIZE,
                         protective_range)
    step = first.s[:, 0].astype(np.int64)
    # multiples of s around [mn, mx]: one value per rounded code
    lowest = np.floor_divide(mn, step) - 1
    candidates = (lowest[:, None] + np.arange(2 * (Q4_MAX + 1))[None, :]) * step[:, None]
    w = quantize_qoq(_rows(mn, mx, candidates, QOQ_GROUP_SIZE, limit), QOQ_GROUP_SIZE,
                     protective_range)
    if not np.array_equal(w.s[:, 0], first.s[:, 0]) or not (w.s1 == 1).all():
        raise AssertionError("the representative rows changed the group step or the row scale")
    zero_bytes = qoq_scaled_zeros(w).view(np.uint8)[:, 0]
    domain = _domain_from("qoq", limit, mn, mx, w.q4[:, :QOQ_GROUP_SIZE], w.s[:, 0], zero_bytes,
                          None, z=w.z[:, 0])
    # cross-check the element values against the oracle's own exact dequant
    exact = qoq_dequantize_exact(w)[:, :QOQ_GROUP_SIZE]
    codes = w.q4[:, :QOQ_GROUP_SIZE].astype(np.int64)
    lookup = np.full((mn.size, Q4_MAX + 1), np.iinfo(np.int64).min)
    lookup[np.arange(mn.size)[:, None], codes] = exact
    if not np.array_equal(lookup[domain.pair, domain.q4], domain.exact):
        raise AssertionError("QoQ exact values disagree with liquidref.baselines")
    return domain


@dataclass
class OverflowResult:
    """One scheme's exhaustive run.

    Attributes:
        scheme: one of ``SCHEMES``.
        domain: the ``GroupDomain`` it ran over.
        triples: int64 [T, 3] unique (q4, s, offset).
        carries: bool [T], some byte lane of the triple's dequant carried into the next lane.
        max_lane: int64 [T], the largest exact lane value of the first checked instruction
            (``q4 s + offset`` for IMAD-based schemes).
        weight_bytes: uint8 [T], the int8 weight (as a byte) in lane 0 of the result register.
        wrong: bool [T], some output byte differs from the intended weight (or the intended
            weight is outside int8, so no byte can be right).
        element_triple: int64 [E], the triple of each domain element.
        counterexample: a dict describing the minimal carrying triple, or None.
    """

    scheme: str
    domain: GroupDomain
    triples: np.ndarray
    carries: np.ndarray
    max_lane: np.ndarray
    weight_bytes: np.ndarray
    wrong: np.ndarray
    element_triple: np.ndarray
    counterexample: dict | None = field(default=None)

    @property
    def carry_count(self) -> int:
        """Number of (q4, s, offset) triples whose dequant carries across a byte lane."""
        return int(self.carries.sum())

    @property
    def failures(self) -> np.ndarray:
        """bool [T]: the triple's dequant carries across a lane or gives a wrong weight."""
        return self.carries | self.wrong

    @property
    def failure_count(self) -> int:
        """Number of triples in ``failures`` (the count the CLI reports as a scheme's carries)."""
        return int(self.failures.sum())

    def per_pair(self, values: np.ndarray, reduce=np.add) -> np.ndarray:
        """Reduce a per-triple array over each (mn, mx) pair's codes: [P]."""
        out = np.zeros(self.domain.mn.size, values.dtype)
        if reduce is np.maximum:
            out[:] = np.iinfo(values.dtype).min if values.dtype.kind == "i" else 0
        reduce.at(out, self.domain.pair, values[self.element_triple])
        return out


def program_for(scheme: str, rotate: bool = True):
    """The word program of a scheme (``rotate=False`` gives LiquidQuant without its XOR)."""
    if scheme == "lqq":
        return programs.lqq_dequant_program(rotate=rotate)
    if scheme == "naive":
        return programs.naive_dequant_program()
    if scheme in ("qoq", "qoq_unprotected"):
        return programs.qoq_dequant_program()
    if scheme == "qoq_iadd":
        return programs.qoq_dequant_program(use_vadd4=False)
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")


def run_triples(program, q4, s, offset, faults=machine.FAULT_NONE):
    """Run a word program with one triple per lane (the code in all 8 nibbles of ``P``).

    Returns (registers uint32 [T, n_regs], Trace).
    """
    q4 = np.asarray(q4, np.int64)
    regs = machine.new_registers(program, q4.size)
    broadcast = (np.asarray(offset, np.int64) * BYTE_BROADCAST).astype(np.uint32)
    regs[:, program.inputs["P"]] = (q4 * NIBBLE_BROADCAST).astype(np.uint32)
    for half in ("lo", "hi"):
        regs[:, program.inputs[f"s_{half}"]] = np.asarray(s, np.uint32)
        offset_name = [name for name in program.inputs if name.endswith(half) and name != f"s_{half}"]
        regs[:, program.inputs[offset_name[0]]] = broadcast
    return machine.trace(program, regs, _faults=faults)


def analyze(scheme: str, *, program=None, domain: GroupDomain | None = None,
            faults=machine.FAULT_NONE) -> OverflowResult:
    """Run every valid triple of ``scheme`` through its dequant program (or ``program``)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
    if domain is None:
        domain = lqq_domain() if scheme in ("lqq", "naive") else qoq_domain(scheme != "qoq_unprotected")
    program = program_for(scheme) if program is None else program
    triples, element_triple = domain.triples()
    q4, s, offset = triples.T
    if scheme == "naive":
        offset = offset ^ XOR_MASK_BYTE  # the two's-complement min byte instead of a = 128 + mn
    regs, tr = run_triples(program, q4, s, offset, faults)
    checked = tr.checked_rows()
    carries = tr.carry[checked].any(axis=(0, 2))
    max_lane = tr.lane_value[checked[0]].max(axis=1)
    out = regs[:, program.outputs["weights"]]  # [T, 2] (lo, hi), each 4 equal lanes expected
    # intended byte of each triple (every element of a triple has the same intended value)
    intended = np.zeros(len(triples), np.int64)
    intended[element_triple] = domain.exact
    expected_word = ((intended & 0xFF) * BYTE_BROADCAST).astype(np.uint32)
    unrepresentable = (intended < -128) | (intended > 127)
    wrong = (out != expected_word[:, None]).any(axis=1) | unrepresentable
    result = OverflowResult(scheme, domain, triples, carries, max_lane,
                            (out[:, 0] & 0xFF).astype(np.uint8), wrong, element_triple)
    result.counterexample = _counterexample(result, regs, program, offset)
    return result


def _counterexample(result: OverflowResult, regs, program, offset) -> dict | None:
    """The minimal failing triple: smallest q4, then s, then |stored offset - 128|."""
    bad = np.flatnonzero(result.failures)
    if bad.size == 0:
        return None
    q4, s, stored = result.triples[bad].T
    order = np.lexsort((np.abs(stored - OFFSET_BIAS), s, q4))
    index = bad[order[0]]
    elements = np.flatnonzero(result.element_triple == index)
    pairs = result.domain.pair[elements]
    spans = result.domain.mx[pairs] - result.domain.mn[pairs]
    pair = pairs[np.argmin(spans)]
    word_in = int(regs[index, program.inputs["P"]]) & 0x0F0F0F0F
    word_out = int(regs[index, program.outputs["weights"][0]])
    intended = int(result.domain.exact[elements[0]])
    return {
        "q4": int(result.triples[index, 0]),
        "s": int(result.triples[index, 1]),
        "offset_byte": int(offset[index]),
        "group_min": int(result.domain.mn[pair]),
        "group_max": int(result.domain.mx[pair]),
        "codes_register": f"{word_in:#010x}",
        "result_register": f"{word_out:#010x}",
        "intended_weight": intended,
        "intended_register": f"{(intended & 0xFF) * BYTE_BROADCAST:#010x}",
        "max_lane_value": int(result.max_lane[index]),
    }


def summary(results: dict[str, OverflowResult]) -> dict:
    """JSON-ready counts and counterexamples of ``analyze`` results."""
    return {
        name: {
            "triples": int(len(r.triples)),
            "lane_carries": r.carry_count,
            "wrong_weights": int(r.wrong.sum()),
            "failures": r.failure_count,
            "max_lane_value": int(r.max_lane.max()),
            "counterexample": r.counterexample,
        }
        for name, r in results.items()
    }


# --- figures -------------------------------------------------------------------------------
def _pair_image(domain: GroupDomain, values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """[max, min] image of a per-pair array (NaN where mx < mn), and its imshow extent."""
    limit = domain.limit
    image = np.full((2 * limit + 1, 2 * limit + 1), np.nan)
    image[domain.mx + limit, domain.mn + limit] = values
    return image, [-limit - 0.5, limit + 0.5, -limit - 0.5, limit + 0.5]


def heatmap_figure(results: dict[str, OverflowResult], path) -> str:
    """Four panels over the group (min, max) plane: LiquidQuant's headroom ``255 - max(q4 s + a)``,
    and the number of failing codes per group (carry or wrong weight) for the naive scheme, QoQ
    without the protective range, and QoQ with a 32-bit IADD instead of vadd4. PNG at ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 10.5), layout="constrained")
    axes = fig.subplots(2, 2)
    lqq = results["lqq"]
    headroom = 255 - lqq.per_pair(lqq.max_lane, np.maximum)
    panels = [
        (lqq, headroom, f"LiquidQuant: byte headroom 255 - max(q4*s + a)\n"
                        f"min {int(headroom.min())} (>= 0: no carry, {lqq.carry_count} carries)",
         "viridis", "headroom"),
    ]
    titles = {
        "naive": "naive q4*s + min (two's complement, no XOR)",
        "qoq_unprotected": "QoQ without protective range (|q8| <= 127)",
        "qoq_iadd": "QoQ with IADD instead of vadd4",
    }
    for name in ("naive", "qoq_unprotected", "qoq_iadd"):
        r = results[name]
        counts = r.per_pair(r.failures.astype(np.int64))
        panels.append((r, counts, f"{titles[name]}\n{r.failure_count} of {len(r.triples)} "
                                  "(q4, s, offset) triples fail", "magma_r", "failing codes"))
    for ax, (r, values, title, cmap, label) in zip(axes.ravel(), panels):
        image, extent = _pair_image(r.domain, values)
        shown = ax.imshow(image, origin="lower", extent=extent, cmap=cmap, aspect="equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("group min (q8)")
        ax.set_ylabel("group max (q8)")
        fig.colorbar(shown, ax=ax, label=label, shrink=0.8)
    fig.suptitle("Byte-lane carries of every valid (q4, s, offset), executed by the emulator")
    fig.savefig(path, dpi=90)
    return str(path)
