"""Baselines (liquidref/baselines.py): QoQ, W8 per channel, RTN int4, and the SCHEMES registry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

import liquidref as lr
from liquidref import baselines as bl
from liquidref.constants import ACT_LIMIT, Q4_MAX, Q8_LIMIT, QOQ_GROUP_SIZE
from liquidref.gemm import gemm_int8
from liquidref.testing import activations, assert_bit_exact, weight_matrices

qoq_weights = weight_matrices(group_size=QOQ_GROUP_SIZE, max_groups=2)

# --- QoQ ----------------------------------------------------------------------------------


def check_qoq_stays_in_int8(protective_range: bool, W: np.ndarray) -> None:
    """The kernel's wrapped int8 dequant equals the exact (q4 - z) * s: no int8 overflow."""
    w = bl.quantize_qoq(W, protective_range=protective_range)
    exact = bl.qoq_dequantize_exact(w)
    assert exact.min() >= -128 and exact.max() <= 127, f"exact values {exact.min()}..{exact.max()}"
    assert_bit_exact(bl.qoq_dequantize_int8(w), exact.astype(np.int8), "QoQ kernel dequant")


def qoq_overflows(W: np.ndarray) -> bool:
    return bl.qoq_int8_headroom(bl.quantize_qoq(W, protective_range=False)) < 0


@given(qoq_weights)
def test_qoq_with_protective_range_never_overflows(W):
    check_qoq_stays_in_int8(True, W)
    w = bl.quantize_qoq(W)
    # exact values lie in [min - s/2, max + s/2] within [-119 - 8, 119 + 8] = [-127, 127]
    assert bl.qoq_int8_headroom(w) >= 0
    exact = bl.qoq_dequantize_exact(w)
    assert exact.min() >= -ACT_LIMIT and exact.max() <= ACT_LIMIT


def test_qoq_without_protective_range_overflows_on_a_found_counterexample():
    W = find(qoq_weights, qoq_overflows, settings=settings(database=None, max_examples=2000))
    with pytest.raises(AssertionError):
        check_qoq_stays_in_int8(False, W)
    check_qoq_stays_in_int8(True, W)  # the same weight is safe with the protective range


def test_qoq_minimal_known_overflow():
    # QServe's example shape: q8 in [-113, 127] (127 sets s1 = 1 without the protective range)
    # s = rint(240 / 15) = 16, z = -rint(-113 / 16) = 7, and 127 -> rint(7.94) + 7 = 15:
    # (15 - 7) * 16 = 128, one past int8; the kernel's byte wraps to -128.
    W = np.zeros((1, QOQ_GROUP_SIZE), dtype=np.float32)
    W[0, :2] = [-113, ACT_LIMIT]
    w = bl.quantize_qoq(W, protective_range=False)
    assert (w.s1[0], w.s[0, 0], w.z[0, 0], w.q4[0, 1]) == (1, 16, 7, 15)
    assert bl.qoq_dequantize_exact(w)[0, 1] == 128
    assert bl.qoq_dequantize_int8(w)[0, 1] == -128
    assert bl.qoq_int8_headroom(w) == -1
    assert qoq_overflows(W)
    check_qoq_stays_in_int8(True, W)


def test_qoq_matches_the_reference_procedure_by_hand():
    # one row, group of 128: q8 (with s1 = 1 via the 119) = [119, -50, 3, 0, ...]
    W = np.zeros((1, QOQ_GROUP_SIZE), dtype=np.float32)
    W[0, :3] = [Q8_LIMIT, -50, 3]
    w = bl.quantize_qoq(W)
    # span 169 -> s = rint(11.27) = 11; z = -rint(-50 / 11) = 5
    # q4(119) = clip(rint(10.8) + 5) = 15 -> (15 - 5) * 11 = 110 (clamped)
    # q4(-50) = rint(-4.55) + 5 = 0 -> -55;  q4(3) = 0 + 5 = 5 -> 0;  q4(0) = 5 -> 0
    assert (w.s[0, 0], w.z[0, 0]) == (11, 5)
    assert w.q4[0, :4].tolist() == [15, 0, 5, 5]
    assert bl.qoq_dequantize_exact(w)[0, :4].tolist() == [110, -55, 0, 0]
    assert bl.qoq_scaled_zeros(w)[0, 0] == -55


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_vadd4_adds_bytes_modulo_256(x, y):
    x_bytes, y_bytes = x.to_bytes(4, "little"), y.to_bytes(4, "little")
    expected = bytes((a + b) & 0xFF for a, b in zip(x_bytes, y_bytes))
    assert int(bl.vadd4(x, y)).to_bytes(4, "little") == expected


@given(qoq_weights, st.booleans())
def test_qoq_packed_dequant_equals_lane_dequant(W, protective_range):
    w = bl.quantize_qoq(W, protective_range=protective_range)
    assert_bit_exact(bl.qoq_dequantize_int8_packed(w), bl.qoq_dequantize_int8(w))


@given(qoq_weights)
def test_qoq_fields_respect_their_ranges(W):
    w = bl.quantize_qoq(W)
    assert w.q4.max() <= Q4_MAX and w.s.min() >= 1 and w.s.max() <= 16
    assert np.abs(w.z.astype(np.int32) * w.s.astype(np.int32)).max() <= ACT_LIMIT


def test_qoq_weight_refuses_bad_fields():
    good = bl.quantize_qoq(np.ones((2, QOQ_GROUP_SIZE), np.float32))
    with pytest.raises(ValueError, match="q4 codes"):
        dataclasses.replace(good, q4=np.full_like(good.q4, 16))
    with pytest.raises(ValueError, match="s must be"):
        dataclasses.replace(good, s=np.zeros_like(good.s))
    with pytest.raises(TypeError, match="int8"):
        dataclasses.replace(good, z=good.z.astype(np.uint8))


# --- W8 -----------------------------------------------------------------------------------


@given(weight_matrices())
def test_w8_is_per_channel_int8_within_half_a_step(W):
    w = bl.quantize_w8(W)
    assert w.w_i8.dtype == np.int8 and np.abs(w.w_i8.astype(np.int32)).max() <= ACT_LIMIT
    error = np.abs(W.astype(np.float64) / w.s1[:, None] - w.w_i8)
    assert error.max() <= 0.5 + ACT_LIMIT * 2.0**-23


# --- RTN ----------------------------------------------------------------------------------


@given(weight_matrices(), st.sampled_from([64, 128]))
def test_rtn_error_is_at_most_half_a_step(W, group_size):
    if W.shape[1] % group_size:
        W = np.concatenate([W, W], axis=1)
    w = bl.quantize_rtn(W, group_size)
    assert w.q4.max() <= Q4_MAX and w.zero.max() <= Q4_MAX and (w.scale > 0).all()
    error = np.abs(W.astype(np.float64) - bl.rtn_dequantize(w))
    step = np.repeat(w.scale.astype(np.float64), group_size, axis=1)
    assert (error <= step * (0.5 + 2.0**-18)).all()


def test_rtn_represents_zero_exactly():
    W = np.array([[0.0] * 64, [0.0] * 32 + [1.0] * 32, [-3.0] * 64], dtype=np.float32)
    w = bl.quantize_rtn(W, 64)
    assert (bl.rtn_dequantize(w)[W == 0] == 0).all()
    assert bl.rtn_dequantize(w)[0].tolist() == [0.0] * 64


# --- the registry -------------------------------------------------------------------------

EXPECTED_SCHEMES = ["lqq-g64", "qoq-g128", "rtn-g64", "rtn-g128", "w8-per-channel"]


def test_scheme_names_are_exactly_these():
    assert list(bl.SCHEMES) == EXPECTED_SCHEMES
    for name, scheme in bl.SCHEMES.items():
        assert scheme.name == name and scheme.description
        assert [f.name for f in dataclasses.fields(scheme)] == [
            "name",
            "description",
            "quantize",
            "dequantize",
            "linear",
            "bits_per_weight",
        ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bl.SCHEMES["lqq-g64"].name = "x"


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(7)
    W = (rng.standard_t(5, (96, 256)) * 0.02).astype(np.float16)
    X = rng.standard_normal((6, 256)).astype(np.float16)
    return W, X


@pytest.mark.parametrize("name", EXPECTED_SCHEMES)
def test_every_scheme_has_the_uniform_interface(name, layer):
    W, X = layer
    scheme = bl.SCHEMES[name]
    weight = scheme.quantize(W)
    W_hat = scheme.dequantize(weight)
    assert (W_hat.dtype, W_hat.shape) == (np.float32, W.shape)
    y = scheme.linear(X, weight)
    assert (y.dtype, y.shape) == (np.float16, (6, 96))
    reference = X.astype(np.float32) @ W.astype(np.float32).T
    relative = np.linalg.norm(y - reference) / np.linalg.norm(reference)
    assert relative < (0.03 if name == "w8-per-channel" else 0.2)
    empty = scheme.linear(np.zeros((0, 256), np.float16), weight)
    assert (empty.dtype, empty.shape) == (np.float16, (0, 96))


def test_bits_per_weight_count_the_metadata(layer):
    W, _ = layer
    k = W.shape[1]
    expected = {
        "lqq-g64": 4 + 16 / 64 + 32 / k,
        "qoq-g128": 4 + 16 / 128 + 32 / k,
        "rtn-g64": 4 + 36 / 64,
        "rtn-g128": 4 + 36 / 128,
        "w8-per-channel": 8 + 32 / k,
    }
    for name, scheme in bl.SCHEMES.items():
        bits = scheme.bits_per_weight(scheme.quantize(W))
        assert isinstance(bits, float) and bits == expected[name]


def test_lqq_scheme_is_the_oracle(layer):
    W, X = layer
    scheme = bl.SCHEMES["lqq-g64"]
    w = scheme.quantize(W)
    assert_bit_exact(w.q4, lr.quantize_weight(W).q4)
    assert_bit_exact(scheme.linear(X, w), lr.w4a8_linear(X, w))
    assert_bit_exact(scheme.dequantize(w), lr.dequantize_int8(w).astype(np.float32) * w.s1[:, None])


@given(activations(k=256, max_m=4))
def test_int8_schemes_use_the_exact_gemm_and_contract_epilogue(X):
    W = (np.random.default_rng(3).standard_normal((24, 256))).astype(np.float32)
    x_i8, s_x = lr.quantize_activation(X)
    qoq = bl.SCHEMES["qoq-g128"].quantize(W)
    expected = gemm_int8(x_i8, s_x, bl.qoq_dequantize_int8(qoq), qoq.s1)
    assert_bit_exact(bl.SCHEMES["qoq-g128"].linear(X, qoq), expected)
    w8 = bl.SCHEMES["w8-per-channel"].quantize(W)
    expected = gemm_int8(x_i8, s_x, w8.w_i8, w8.s1)
    assert_bit_exact(bl.SCHEMES["w8-per-channel"].linear(X, w8), expected)


def test_rtn_linear_is_float32_matmul_rounded_once(layer):
    W, X = layer
    for name in ("rtn-g64", "rtn-g128"):
        scheme = bl.SCHEMES[name]
        w = scheme.quantize(W)
        expected = (X.astype(np.float32) @ scheme.dequantize(w).T).astype(np.float16)
        assert_bit_exact(scheme.linear(X, w), expected)


def test_qoq_effective_weight_is_the_kernel_int8_times_s1(layer):
    W, _ = layer
    scheme = bl.SCHEMES["qoq-g128"]
    w = scheme.quantize(W)
    assert_bit_exact(
        scheme.dequantize(w), bl.qoq_dequantize_int8(w).astype(np.float32) * w.s1[:, None]
    )
