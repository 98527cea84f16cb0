"""Property tests of LiquidQuant (liquidref/quant.py), each shown to reject its mutants.

Every property is a plain function ``check_xxx(impl, data)``: the same check runs against the
oracle (``mutants.REAL``) and against the deliberately wrong implementations in ``mutants.py``.

The error bound of the two-level scheme (derived here, checked below, tight):

    level 1:  q8 = rint(W / s1)  =>  |W / s1 - q8| <= 1/2  (+ the float32 rounding of W / s1,
              at most 119 * 2**-24; the clip to +-119 never bites since |W| <= 119 * s1)
    level 2:  w_i8 = q4 * s + mn, q4 = clip(rint((q8 - mn) / s), 0, 15)
              unclamped:  |q8 - w_i8| <= s / 2
              clamped at 15 (only possible when s < 16): q8 - w_i8 <= span - 15 s, where
              span = max - min of the group and span - 15 s <= 7 because s = rint(span / 15)
              =>  |q8 - w_i8| <= e2(s, span) = max(s / 2, span - 15 s)      (<= 8 overall)
    total:    |W - s1 * w_i8| <= s1 * (1/2 + e2(s, span))

The often-quoted ``s1 * (1/2 + s/2)`` misses the clamp: a group spanning 22 codes gets s = 1
and its top 7 values collapse onto min + 15 (``test_the_bound_without_the_clamp_term_is_false``).
The exhaustive test shows that ``e2`` is attained for every (min, max) pair (tight), and
``test_the_total_bound_is_approached`` shows a weight within 0.01 * s1 of the total bound.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import liquidref as lr
from liquidref.constants import (
    ACT_LIMIT,
    GROUP_SIZE,
    OFFSET_BIAS,
    Q4_MAX,
    Q8_LIMIT,
    STEP_MAX,
)
from liquidref.testing import activations, assert_bit_exact, liquidquant_weights, weight_matrices

from . import mutants as mt
from .mutants import assert_mutant_rejected

LEVEL1_SLACK = Q8_LIMIT * 2.0**-23  # float32 rounding of W / s1 (values up to 119)

# --- the checks ---------------------------------------------------------------------------


def lane_values(w) -> np.ndarray:
    """u = q4 * s + a, int64 [N, K]: the byte lane before the XOR (must be 0..255)."""
    g = w.group_size
    s = np.repeat(w.s.astype(np.int64), g, axis=1)
    a = np.repeat(w.a.astype(np.int64), g, axis=1)
    return w.q4.astype(np.int64) * s + a


def check_weight_invariants(impl, W: np.ndarray, group_size: int = GROUP_SIZE) -> None:
    """Stored values respect their dtypes, shapes and ranges, s1 is the contract's, no carry."""
    w = impl.quantize_weight(W, group_size)
    n, k = W.shape
    assert (w.q4.dtype, w.q4.shape) == (np.uint8, (n, k))
    for field in (w.s, w.a):
        assert (field.dtype, field.shape) == (np.uint8, (n, k // group_size))
    assert (w.s1.dtype, w.s1.shape) == (np.float32, (n,))
    assert w.q4.max() <= Q4_MAX, f"q4 reaches {w.q4.max()}"
    assert w.s.min() >= 1 and w.s.max() <= STEP_MAX, f"s spans {w.s.min()}..{w.s.max()}"
    assert w.a.min() >= OFFSET_BIAS - Q8_LIMIT and w.a.max() <= OFFSET_BIAS + Q8_LIMIT
    amax = np.abs(W.astype(np.float32)).max(axis=1)
    # amax / 119, floored at the smallest subnormal (a row of tiny subnormals must not get 0)
    tiny = np.finfo(np.float32).smallest_subnormal
    expected_s1 = np.where(amax > 0, np.maximum(amax / np.float32(Q8_LIMIT), tiny), np.float32(1))
    expected_s1 = expected_s1.astype(np.float32)
    assert_bit_exact(w.s1, expected_s1, "s1")
    u = lane_values(w)
    assert u.min() >= 0 and u.max() <= 255, f"q4 * s + a reaches {u.max()}: the lane carries"


def check_dequant_is_q4_s_plus_min(impl, w) -> None:
    """Both dequant forms give the int8 ``q4 * s + (a - 128)``, bit for bit."""
    expected = (lane_values(w) - OFFSET_BIAS).astype(np.int8)
    assert_bit_exact(impl.dequantize_int8(w), expected, "lane-wise dequant")
    assert_bit_exact(impl.dequantize_int8_packed(w), expected, "packed (IMAD + XOR) dequant")


def level2_error_bound(s: np.ndarray, span: np.ndarray) -> np.ndarray:
    """e2(s, span) = max(s / 2, span - 15 s): the largest |q8 - w_i8| in a group."""
    return np.maximum(s / 2, span - Q4_MAX * s)


def check_error_bound(impl, W: np.ndarray, group_size: int = GROUP_SIZE) -> None:
    """|W - s1 w_i8| <= s1 (1/2 + e2), checked level by level (see the module docstring)."""
    w = impl.quantize_weight(W, group_size)
    n, k = W.shape
    w_i8 = impl.dequantize_int8(w).astype(np.float64)
    s1 = w.s1.astype(np.float64)[:, None]
    Wd = W.astype(np.float64)
    q8 = np.clip(np.rint(W.astype(np.float32) / w.s1[:, None]), -Q8_LIMIT, Q8_LIMIT)
    level1 = np.abs(Wd / s1 - q8)
    assert level1.max() <= 0.5 + LEVEL1_SLACK, f"level-1 error {level1.max()}"
    groups = q8.reshape(n, k // group_size, group_size)
    span = groups.max(axis=2) - groups.min(axis=2)
    bound2 = np.repeat(level2_error_bound(w.s.astype(np.float64), span), group_size, axis=1)
    level2 = np.abs(q8 - w_i8)
    assert (level2 <= bound2).all(), f"level-2 error {level2.max()} above its bound"
    total = np.abs(Wd - s1 * w_i8)
    assert (total <= s1 * (0.5 + LEVEL1_SLACK + bound2) * (1 + 2.0**-40)).all()


def check_activation_quantization(impl, X: np.ndarray) -> None:
    """s_x is the contract's; x_i8 is X / s_x rounded to nearest (ties to even), |x_i8| <= 127."""
    x_i8, s_x = impl.quantize_activation(X)
    m, k = X.shape
    assert (x_i8.dtype, x_i8.shape, s_x.dtype, s_x.shape) == (np.int8, (m, k), np.float32, (m,))
    Xf = X.astype(np.float32)
    amax = np.abs(Xf).max(axis=1)
    expected_s = np.where(amax > 0, amax / np.float32(ACT_LIMIT), np.float32(1)).astype(np.float32)
    assert_bit_exact(s_x, expected_s, "s_x")
    assert np.abs(x_i8.astype(np.int32)).max(initial=0) <= ACT_LIMIT
    ratio = Xf / s_x[:, None]  # the contract divides in float32
    distance = np.abs(ratio - x_i8)
    assert distance.max(initial=0) <= 0.5, f"x_i8 is {distance.max()} away from X / s_x"
    ties = distance == 0.5
    assert (x_i8[ties] % 2 == 0).all(), "ties must round to even"


# --- the properties, on the oracle --------------------------------------------------------


@given(weight_matrices())
def test_stored_values_respect_their_ranges(W):
    check_weight_invariants(mt.REAL, W)


@given(weight_matrices(group_size=128), st.just(128))
def test_stored_values_respect_their_ranges_group_128(W, group_size):
    check_weight_invariants(mt.REAL, W, group_size)


@given(liquidquant_weights())
def test_dequant_equals_q4_times_s_plus_min_in_both_forms(w):
    check_dequant_is_q4_s_plus_min(mt.REAL, w)


@given(weight_matrices())
def test_two_level_error_bound(W):
    check_error_bound(mt.REAL, W)


@given(activations())
def test_activation_quantization(X):
    check_activation_quantization(mt.REAL, X)


# --- the properties reject the mutants ----------------------------------------------------


@pytest.mark.mutant
@pytest.mark.parametrize("impl", mt.QUANTIZER_MUTANTS, ids=repr)
def test_range_property_rejects_quantizer_mutants(impl):
    assert_mutant_rejected(check_weight_invariants, weight_matrices(), impl)


@pytest.mark.mutant
def test_error_bound_property_rejects_level1_limit_127():
    # (the other quantizer mutants keep the error within their own e2; the range check and
    # the exhaustive test catch them)
    assert_mutant_rejected(check_error_bound, weight_matrices(), mt.LEVEL1_LIMIT_127)


@pytest.mark.mutant
@pytest.mark.parametrize("impl", mt.DEQUANT_MUTANTS, ids=repr)
def test_dequant_property_rejects_dequant_mutants(impl):
    assert_mutant_rejected(check_dequant_is_q4_s_plus_min, liquidquant_weights(), impl)


@pytest.mark.mutant
def test_activation_property_rejects_floor():
    assert_mutant_rejected(check_activation_quantization, activations(), mt.ACTIVATION_FLOOR)


# --- exhaustive: every (min, max) pair of a group -----------------------------------------


def all_min_max_groups(group_size: int = GROUP_SIZE) -> np.ndarray:
    """float32 [R, 2 * group_size]: every q8 value of every group shape, as weights.

    For each pair -119 <= mn <= mx <= 119 (28,680 pairs) and each v in [mn, mx], some row has
    a first group holding mn, mx and v (62 values per row; a pair with a wide span takes
    several rows, the last padded with mx). The second group of every row is a guard
    ``[119, 0, ..., 0]`` so that ``s1 = 119 / 119 = 1`` exactly and ``q8 == W``: the quantizer
    sees exactly the integers we chose.
    """
    values = np.arange(-Q8_LIMIT, Q8_LIMIT + 1)
    mn, mx = np.meshgrid(values, values, indexing="ij")
    keep = mn <= mx
    mn, mx = mn[keep], mx[keep]
    span = mx - mn
    slots = group_size - 2
    rows_per_pair = (span + slots) // slots  # ceil((span + 1) / slots)
    pair = np.repeat(np.arange(mn.size), rows_per_pair)
    first_row = np.repeat(np.cumsum(rows_per_pair) - rows_per_pair, rows_per_pair)
    chunk = np.arange(pair.size) - first_row
    offsets = np.minimum(chunk[:, None] * slots + np.arange(slots), span[pair][:, None])
    group = np.concatenate(
        [mn[pair][:, None], mx[pair][:, None], mn[pair][:, None] + offsets], axis=1
    )
    guard = np.zeros((pair.size, group_size), dtype=np.int64)
    guard[:, 0] = Q8_LIMIT
    return np.concatenate([group, guard], axis=1).astype(np.float32)


def check_all_min_max_pairs(impl, W: np.ndarray) -> dict[int, float]:
    """Range, no carry, reconstruction and the tight level-2 bound on every group shape.

    Returns the largest level-2 error for each step s (for the tightness report).
    """
    check_weight_invariants(impl, W)
    w = impl.quantize_weight(W, GROUP_SIZE)
    check_dequant_is_q4_s_plus_min(impl, w)
    first = slice(0, GROUP_SIZE)
    q8 = W[:, first].astype(np.int64)
    w_i8 = impl.dequantize_int8(w)[:, first].astype(np.int64)
    s = w.s[:, 0].astype(np.int64)
    span = q8.max(axis=1) - q8.min(axis=1)
    error = np.abs(q8 - w_i8)
    worst = error.max(axis=1)
    bound = level2_error_bound(s, span)
    assert (worst <= bound).all(), "level-2 error above e2(s, span)"
    # tight: for each (min, max) pair the worst value over the pair's rows reaches
    # max(floor(s / 2), span - 15 s), the integer part of the bound
    pair_key = (q8[:, 0] + Q8_LIMIT) * 1000 + (q8[:, 1] + Q8_LIMIT)
    order = np.argsort(pair_key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pair_key[order]) != 0])
    worst_per_pair = np.maximum.reduceat(worst[order], starts)
    integer_bound = np.maximum(s // 2, span - Q4_MAX * s)[order][starts]
    assert np.array_equal(worst_per_pair, integer_bound), "the bound e2 is not attained"
    return {int(step): float(worst[s == step].max()) for step in np.unique(s)}


@pytest.fixture(scope="module")
def exhaustive_weight():
    return all_min_max_groups()


def test_every_min_max_pair(exhaustive_weight):
    W = exhaustive_weight
    q8 = W[:, :GROUP_SIZE].astype(np.int64)
    pairs = set(zip(q8[:, 0].tolist(), q8[:, 1].tolist()))
    assert len(pairs) == (2 * Q8_LIMIT + 1) * (2 * Q8_LIMIT + 2) // 2  # 28,680
    worst_per_step = check_all_min_max_pairs(mt.REAL, W)
    assert sorted(worst_per_step) == list(range(1, STEP_MAX + 1))
    assert max(worst_per_step.values()) == STEP_MAX // 2  # the global worst case, 8


@pytest.mark.mutant
@pytest.mark.parametrize("impl", mt.QUANTIZER_MUTANTS + mt.DEQUANT_MUTANTS, ids=repr)
def test_every_min_max_pair_rejects_mutants(impl, exhaustive_weight):
    with pytest.raises(AssertionError):
        check_all_min_max_pairs(impl, exhaustive_weight)


# --- examples that pin the derivation -----------------------------------------------------


def guarded_row(*group_values: float) -> np.ndarray:
    """One row: a group starting with ``group_values`` (zeros after), then the s1 = 1 guard."""
    W = np.zeros((1, 2 * GROUP_SIZE), dtype=np.float32)
    W[0, : len(group_values)] = group_values
    W[0, GROUP_SIZE] = Q8_LIMIT
    return W


def test_the_bound_without_the_clamp_term_is_false():
    # span 22: s = rint(22 / 15) = 1, and 22 - 0 = 22 codes do not fit in 0..15
    W = guarded_row(0, 22)
    w = lr.quantize_weight(W)
    w_i8 = lr.dequantize_int8(w)
    assert w.s[0, 0] == 1 and w_i8[0, 1] == 15
    error = abs(22 - int(w_i8[0, 1]))
    assert error == 7 > 0.5 + w.s[0, 0] / 2  # the naive bound s1 * (1/2 + s/2) = 1
    assert error == level2_error_bound(1, 22)


def test_the_total_bound_is_approached():
    # group span 30 -> s = 2, e2 = 1; the value 1.49 rounds to q8 = 1 (level-1 error 0.49),
    # then (1 - 0) / 2 = 0.5 rounds to the even code 0 (level-2 error 1 = s / 2): 1.49 of 1.5
    W = guarded_row(0, 30, 1.49)
    w = lr.quantize_weight(W)
    w_i8 = lr.dequantize_int8(w)
    assert w.s1[0] == 1 and w.s[0, 0] == 2
    error = abs(1.49 - float(w_i8[0, 2]))
    bound = 0.5 + level2_error_bound(2, 30)
    assert bound - 0.011 < error <= bound


def test_paper_counterexample_needs_the_rotation():
    # LiquidGEMM section 4: q4 = 15, max = 119, min = -104 -> s = 15; 15 * 15 - 104 = 121.
    # Adding min as a byte carries out of the lane; adding a = 128 + min and XOR-ing does not.
    W = guarded_row(-104, 119)
    w = lr.quantize_weight(W)
    assert (w.s[0, 0], w.a[0, 0], w.q4[0, 1]) == (15, OFFSET_BIAS - 104, 15)
    assert 15 * 15 + (-104 & 0xFF) > 255  # the naive byte add carries
    assert lr.dequantize_int8(w)[0, 1] == 121 == lr.dequantize_int8_packed(w)[0, 1]


def test_dequant_word_by_hand():
    # codes 0, 1, 15, 7 with s = 16, a = 15 (min = -113): bytes 15, 31, 255, 127 -> XOR 0x80
    word = np.array([0, 1, 15, 7], dtype=np.uint8).view(np.uint32)
    out = lr.dequant_word(word, 16, 15).view(np.int8)
    assert out.tolist() == [-113, -97, 127, -1]


def test_all_zero_row_and_constant_groups_are_exact_in_int8():
    W = np.zeros((3, 128), dtype=np.float16)
    W[1, :64] = -0.5  # a constant group: span 0 -> s = 1, every code 0
    W[2] = 3.0
    w = lr.quantize_weight(W)
    assert w.s1[0] == 1 and (w.q4[0] == 0).all()
    expected_i8 = np.zeros((3, 128), dtype=np.int8)
    expected_i8[1, :64] = -Q8_LIMIT
    expected_i8[2] = Q8_LIMIT
    assert_bit_exact(lr.dequantize_int8(w), expected_i8)
    # the effective weight is exact up to the float32 rounding of s1 = amax / 119
    effective = lr.dequantize_int8(w).astype(np.float32) * w.s1[:, None]
    np.testing.assert_allclose(effective, W.astype(np.float32), rtol=2.0**-22, atol=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_tiny_subnormal_rows_quantize():
    W = np.zeros((1, GROUP_SIZE), dtype=np.float32)
    W[0, 0] = np.finfo(np.float32).smallest_subnormal
    w = lr.quantize_weight(W)
    check_weight_invariants(mt.REAL, W)
    assert lr.dequantize_int8(w)[0, 0] != 0
