"""The public strategies and assertions (liquidref/testing.py) produce what they promise.

Each feature a strategy claims (heavy tails, outlier channels, zero rows, constant groups, the
extreme offsets of hand-made weights, M = 0, ...) must actually be reachable: ``find`` has to
come back with an example that shows it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given, settings

import liquidref as lr
from liquidref.constants import ACT_LIMIT, GROUP_SIZE, OFFSET_BIAS, Q8_LIMIT
from liquidref.testing import (
    activations,
    assert_bit_exact,
    liquidquant_weights,
    quantized_activations,
    shapes,
    w4a8_problems,
    weight_matrices,
)

SEARCH = settings(database=None, max_examples=1000)


def reachable(strategy, condition):
    return find(strategy, condition, settings=SEARCH)


# --- shapes and weight matrices -----------------------------------------------------------


@given(shapes(min_m=1, max_m=3, max_n=5, max_groups=2, group_size=128))
def test_shapes_respect_their_bounds(shape):
    m, n, k = shape
    assert 1 <= m <= 3 and 1 <= n <= 5 and k in (128, 256)


@given(weight_matrices())
def test_weight_matrices_are_finite_2d_float(W):
    assert W.ndim == 2 and W.dtype in (np.float16, np.float32)
    assert W.shape[1] % GROUP_SIZE == 0 and 1 <= W.shape[0] <= 16
    assert np.isfinite(W).all()
    if W.dtype == np.float32:  # float32 weights are never subnormal
        nonzero = np.abs(W[W != 0])
        assert (nonzero >= np.finfo(np.float32).tiny).all()


@given(weight_matrices(3, 192, dtype=np.float16))
def test_weight_matrices_honour_a_given_shape_and_dtype(W):
    assert (W.shape, W.dtype) == ((3, 192), np.float16)


def kurtosis(W) -> float:
    values = W.astype(np.float64).ravel()
    centered = values - values.mean()
    second = np.mean(centered**2)
    return float(np.mean(centered**4) / second**2) if second > 0 else 0.0


@pytest.mark.parametrize(
    "feature, condition",
    [
        ("heavy tails", lambda W: W.size >= 1024 and kurtosis(W) > 20),
        ("an all-zero row", lambda W: W.shape[0] > 1 and (W == 0).all(axis=1).any() and W.any()),
        (
            "a constant non-zero group",
            lambda W: any(
                (g == g[0]).all() and g[0] != 0 for g in W.reshape(-1, GROUP_SIZE)
            ),
        ),
        (
            "an outlier input channel",
            lambda W: W.shape[0] >= 4
            and np.abs(W).max(axis=0).max() > 20 * np.median(np.abs(W).max(axis=0)) > 0,
        ),
        ("float16", lambda W: W.dtype == np.float16),
        ("float32", lambda W: W.dtype == np.float32),
        ("exact .5 ties after level 1", lambda W: _has_level1_tie(W)),
    ],
)
def test_weight_matrix_features_are_reachable(feature, condition):
    reachable(weight_matrices(), condition)


def _has_level1_tie(W) -> bool:
    amax = np.abs(W.astype(np.float32)).max(axis=1)
    s1 = np.where(amax > 0, amax / np.float32(Q8_LIMIT), np.float32(1)).astype(np.float32)
    ratio = W.astype(np.float32) / s1[:, None]
    return bool((np.abs(ratio - np.floor(ratio)) == 0.5).any())


def test_weight_matrices_refuse_other_dtypes():
    with pytest.raises(ValueError, match="float16 or float32"):
        reachable(weight_matrices(dtype=np.float64), lambda W: True)


# --- activations --------------------------------------------------------------------------


@given(activations())
def test_activations_are_finite(X):
    assert X.ndim == 2 and X.dtype in (np.float16, np.float32) and np.isfinite(X).all()


def test_activations_reach_m_zero_and_outlier_channels():
    assert reachable(activations(), lambda X: X.shape[0] == 0).shape[1] % GROUP_SIZE == 0
    reachable(
        activations(max_m=8),
        lambda X: X.shape[0] >= 4
        and np.abs(X).max(axis=0).max() > 15 * np.median(np.abs(X).max(axis=0)) > 0,
    )


# --- LiquidQuant weights and quantized activations ----------------------------------------


@given(liquidquant_weights(n=5, k=128))
def test_liquidquant_weights_are_valid(w):
    assert isinstance(w, lr.LiquidQuantWeight) and w.shape == (5, 128)
    lanes = lr.dequantize_int8(w).view(np.uint8) ^ np.uint8(0x80)
    assert int(lanes.max()) <= 255  # checked again by the constructor


@pytest.mark.parametrize(
    "feature, condition",
    [
        ("offset a = 0 (an int8 weight of -128)", lambda w: (lr.dequantize_int8(w) == -128).any()),
        (
            "a lane at 255",
            lambda w: (lr.dequantize_int8(w).view(np.uint8) == (255 ^ OFFSET_BIAS)).any(),
        ),
        ("the largest step", lambda w: (w.s == 16).any()),
    ],
)
def test_hand_made_weights_reach_the_edges(feature, condition):
    reachable(liquidquant_weights(from_float=False), condition)


def test_liquidquant_weights_from_float_match_quantize_weight():
    w = reachable(liquidquant_weights(from_float=True), lambda w: w.n > 2)
    assert (w.a >= OFFSET_BIAS - Q8_LIMIT).all() and (w.a <= OFFSET_BIAS + Q8_LIMIT).all()


@given(quantized_activations())
def test_quantized_activations_are_in_range(pair):
    x_i8, s_x = pair
    assert x_i8.dtype == np.int8 and s_x.dtype == np.float32 and s_x.shape == (x_i8.shape[0],)
    assert np.abs(x_i8.astype(np.int32)).max(initial=0) <= ACT_LIMIT and (s_x > 0).all()


def test_quantized_activations_reach_the_extremes():
    reachable(
        quantized_activations(),
        lambda p: p[0].size > 0 and (np.abs(p[0].astype(np.int32)) == ACT_LIMIT).all(),
    )


@given(w4a8_problems())
def test_w4a8_problems_are_consistent(problem):
    x_i8, s_x, w = problem
    assert x_i8.shape[1] == w.k and s_x.shape == (x_i8.shape[0],)
    lr.gemm(x_i8, s_x, w)  # accepted by the oracle


def test_w4a8_problems_reach_m_zero():
    reachable(w4a8_problems(), lambda p: p[0].shape[0] == 0)


# --- assert_bit_exact ---------------------------------------------------------------------


def test_assert_bit_exact_passes_equal_bytes_including_nan():
    a = np.array([1.0, np.nan, -np.inf], dtype=np.float16)
    assert_bit_exact(a, a.copy())


@pytest.mark.mutant
def test_assert_bit_exact_tells_where_and_how_it_differs():
    a = np.array([[1.0, 0.0]], dtype=np.float16)
    b = np.array([[1.0, -0.0]], dtype=np.float16)
    expected_message = r"1 of 2 elements differ; first at \(0, 1\).*0x0000.*0x8000"
    with pytest.raises(AssertionError, match=expected_message):
        assert_bit_exact(a, b, "y")
    with pytest.raises(AssertionError, match="dtype float32, expected float16"):
        assert_bit_exact(a.astype(np.float32), a)
    with pytest.raises(AssertionError, match=r"shape \(2, 1\), expected \(1, 2\)"):
        assert_bit_exact(a.reshape(2, 1), a)
    with pytest.raises(AssertionError, match="first at"):
        assert_bit_exact(np.array([1, 2], np.int32), np.array([1, 3], np.int32))
