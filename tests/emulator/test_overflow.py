"""Overflow safety, exhaustively: every valid (q4, s, offset) of each scheme, executed."""

from __future__ import annotations

import numpy as np
import pytest

from emulator import machine, overflow
from liquidref import LiquidQuantWeight, quantize_weight
from liquidref.constants import OFFSET_BIAS, Q4_MAX, Q8_LIMIT, STEP_MAX


@pytest.fixture(scope="module")
def results():
    return {name: overflow.analyze(name) for name in overflow.SCHEMES}


def test_lqq_domain_is_the_contract():
    d = overflow.lqq_domain()
    assert d.mn.size == (2 * Q8_LIMIT + 1) * (2 * Q8_LIMIT + 2) // 2  # 28,680 (min, max) pairs
    assert d.q4.min() == 0 and d.q4.max() == Q4_MAX
    assert d.s.min() == 1 and d.s.max() == STEP_MAX
    assert d.offset.min() == OFFSET_BIAS - Q8_LIMIT and d.offset.max() == OFFSET_BIAS + Q8_LIMIT
    # every element's intended weight is the group's own reconstruction range
    assert (d.exact >= d.mn[d.pair]).all() and (d.exact <= d.mx[d.pair] + STEP_MAX // 2).all()
    # every triple is accepted by the oracle's own overflow check
    triples, _ = d.triples()
    q4, s, a = triples.T.astype(np.uint8)
    LiquidQuantWeight(q4=np.repeat(q4[:, None], 64, 1), s=s[:, None], a=a[:, None],
                      s1=np.ones(len(q4), np.float32))


def test_representative_values_cover_every_code():
    # For every pair whose values fit in one group, all of [mn, mx] gives the same codes as the
    # representatives the domain uses.
    d = overflow.lqq_domain()
    small = np.flatnonzero(d.mx - d.mn <= 61)[::7]
    rows = np.zeros((small.size, 128), np.float32)
    for i, p in enumerate(small):
        values = np.arange(d.mn[p], d.mx[p] + 1)
        rows[i, :64] = d.mn[p]
        rows[i, :values.size] = values
        rows[i, 64], rows[i, 65] = Q8_LIMIT, -Q8_LIMIT
    w = quantize_weight(rows)
    for i, p in enumerate(small):
        assert set(np.unique(w.q4[i, :64])) == set(d.q4[d.pair == p])


def test_lqq_never_carries(results):
    r = results["lqq"]
    assert len(r.triples) > 30_000
    assert r.carry_count == 0 and r.failure_count == 0 and r.counterexample is None
    assert r.max_lane.max() <= 255
    # and the executed bytes are the oracle's weights
    expected = np.zeros(len(r.triples), np.int64)
    expected[r.element_triple] = r.domain.exact
    assert np.array_equal(r.weight_bytes.view(np.int8), expected.astype(np.int8))


def test_naive_carries_exactly_where_the_byte_sum_exceeds_255(results):
    r = results["naive"]
    q4, s, a = r.triples.T
    independent = q4 * s + (a ^ 0x80) > 255  # the two's-complement min byte
    assert np.array_equal(r.carries, independent)
    assert r.carry_count > 0 and np.array_equal(r.wrong, r.carries)
    ce = r.counterexample
    assert (ce["q4"], ce["s"], ce["group_min"], ce["intended_weight"]) == (1, 1, -1, 0)
    assert ce["result_register"] == "0x01010100"  # 0x01010101 + 0xFFFFFFFF: the carries


def test_qoq_protected_never_fails_unprotected_does(results):
    assert results["qoq"].failure_count == 0
    r = results["qoq_unprotected"]
    intended = np.zeros(len(r.triples), np.int64)
    intended[r.element_triple] = r.domain.exact
    outside_int8 = (intended < -128) | (intended > 127)
    assert r.carry_count == 0  # vadd4 never carries across lanes ...
    assert np.array_equal(r.failures, outside_int8)  # ... the lane wraps instead
    assert r.failure_count > 0
    ce = r.counterexample
    assert ce["intended_weight"] < -128 or ce["intended_weight"] > 127
    assert r.domain.limit == 127


def test_qoq_with_iadd_carries(results):
    r = results["qoq_iadd"]
    q4, s, zp = r.triples.T
    assert np.array_equal(r.carries, q4 * s + zp > 255)
    assert r.failure_count > 0


@pytest.mark.mutant
def test_mutant_lqq_without_xor_is_caught():
    r = overflow.analyze("lqq", program=overflow.program_for("lqq", rotate=False))
    assert r.carry_count == 0  # it does not carry ...
    assert r.wrong.all()  # ... but every weight is off by 128


@pytest.mark.mutant
def test_mutant_imad_without_wrap_is_caught_by_the_naive_scheme():
    with pytest.raises(RuntimeError, match="more than 32 bits"):
        overflow.analyze("naive", faults=machine.FAULT_IMAD_NO_WRAP)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown scheme"):
        overflow.analyze("int3")


def test_heatmap_figure(results, tmp_path):
    path = overflow.heatmap_figure(results, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 10_000 and path.endswith("h.png")
