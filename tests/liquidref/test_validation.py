"""Bad input gets a clear exception that says what was expected; M = 0 gives an empty result.

Covers the oracle API (quantize_weight, dequantize_int8, quantize_activation, gemm,
w4a8_linear, LiquidQuantWeight) and the baselines (every scheme of SCHEMES and the QoQ, RTN,
W8 functions).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import liquidref as lr
from liquidref import baselines as bl
from liquidref.constants import GROUP_SIZE, QOQ_GROUP_SIZE

K = 2 * QOQ_GROUP_SIZE  # a multiple of every group size in use
QUANTIZERS = {
    "quantize_weight": lr.quantize_weight,
    "quantize_qoq": bl.quantize_qoq,
    "quantize_rtn": bl.quantize_rtn,
    "quantize_w8": bl.quantize_w8,
    **{f"SCHEMES[{name}].quantize": s.quantize for name, s in bl.SCHEMES.items()},
}
SCHEME_NAMES = list(bl.SCHEMES)


def weight(n=4, k=K, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((n, k)).astype(dtype)


# --- non-finite values name the first bad row ---------------------------------------------


@pytest.mark.parametrize("quantize", QUANTIZERS.values(), ids=QUANTIZERS.keys())
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantizers_name_the_first_non_finite_row(quantize, bad):
    W = weight()
    W[2, 5] = bad
    W[3, 0] = np.nan
    message = r"W must be finite; row 2 holds (nan|inf|-inf) at column 5"
    with pytest.raises(ValueError, match=message):
        quantize(W)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_linear_names_the_first_non_finite_activation_row(name):
    scheme = bl.SCHEMES[name]
    X = weight(3, K, np.float16)
    X[1, 7] = np.inf
    with pytest.raises(ValueError, match="X must be finite; row 1 holds inf at column 7"):
        scheme.linear(X, scheme.quantize(weight()))


def test_quantize_activation_names_the_first_non_finite_row():
    X = weight(5, 64)
    X[4, 63] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        lr.quantize_activation(X)


# --- ndim, dtype, type --------------------------------------------------------------------


@pytest.mark.parametrize("quantize", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_quantizers_check_ndim_dtype_and_type(quantize):
    with pytest.raises(ValueError, match="W must be 2-D; got shape"):
        quantize(np.zeros(K, np.float32))
    with pytest.raises(ValueError, match="W must be 2-D"):
        quantize(np.zeros((1, 2, K), np.float32))
    with pytest.raises(TypeError, match="W must have dtype float16 or float32; got float64"):
        quantize(np.zeros((2, K)))
    with pytest.raises(TypeError, match="W must be a numpy.ndarray; got list"):
        quantize([[0.0] * K])


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_linear_checks_activation_dtype_and_ndim(name):
    scheme = bl.SCHEMES[name]
    w = scheme.quantize(weight())
    with pytest.raises(TypeError, match="X must have dtype float16 or float32; got int8"):
        scheme.linear(np.zeros((2, K), np.int8), w)
    with pytest.raises(ValueError, match="X must be 2-D"):
        scheme.linear(np.zeros(K, np.float16), w)


def test_gemm_checks_operand_dtypes():
    w = lr.quantize_weight(weight())
    x_i8, s_x = lr.quantize_activation(weight(2))
    with pytest.raises(TypeError, match="x_i8 must have dtype int8; got int16"):
        lr.gemm(x_i8.astype(np.int16), s_x, w)
    with pytest.raises(TypeError, match="s_x must have dtype float32; got float64"):
        lr.gemm(x_i8, s_x.astype(np.float64), w)
    with pytest.raises(TypeError, match="w must be a LiquidQuantWeight; got ndarray"):
        lr.gemm(x_i8, s_x, lr.dequantize_int8(w))


@pytest.mark.parametrize(
    "dequantize",
    [lr.dequantize_int8, lr.dequantize_int8_packed, bl.qoq_dequantize_int8, bl.rtn_dequantize],
)
def test_dequantizers_check_the_weight_type(dequantize):
    with pytest.raises(TypeError, match="expected an? .*Weight; got ndarray"):
        dequantize(np.zeros((2, K), np.uint8))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_linear_refuses_another_schemes_weight(name):
    other = "w8-per-channel" if name != "w8-per-channel" else "lqq-g64"
    w = bl.SCHEMES[other].quantize(weight())
    with pytest.raises(TypeError, match="Weight; got"):
        bl.SCHEMES[name].linear(weight(2), w)


# --- K and the group size -----------------------------------------------------------------


@pytest.mark.parametrize(
    "quantize, group_size",
    [
        (lr.quantize_weight, GROUP_SIZE),
        (bl.quantize_qoq, QOQ_GROUP_SIZE),
        (bl.quantize_rtn, GROUP_SIZE),
    ],
)
def test_k_must_be_a_multiple_of_the_group_size(quantize, group_size):
    message = f"K = 100 must be a positive multiple of the group size {group_size}"
    with pytest.raises(ValueError, match=message):
        quantize(weight(2, 100))
    with pytest.raises(ValueError, match="K = 0 must be a positive multiple"):
        quantize(weight(2, 0))


def test_qoq_needs_k_multiple_of_128_not_64():
    with pytest.raises(ValueError, match="group size 128"):
        bl.quantize_qoq(weight(2, 64))


@pytest.mark.parametrize("quantize", [lr.quantize_weight, bl.quantize_qoq, bl.quantize_rtn])
def test_group_size_argument_is_checked(quantize):
    bad_values = [
        (0, ValueError), (6, ValueError), (-64, ValueError), (1.5, TypeError), (True, TypeError)
    ]
    for bad, error in bad_values:
        with pytest.raises(error, match="group_size must be"):
            quantize(weight(), bad)


def test_activations_need_columns():
    with pytest.raises(ValueError, match="K > 0"):
        lr.quantize_activation(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="K > 0"):
        bl.quantize_w8(np.zeros((3, 0), np.float32))


# --- mismatched operands ------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_linear_refuses_mismatched_k(name):
    scheme = bl.SCHEMES[name]
    w = scheme.quantize(weight())
    with pytest.raises(ValueError, match=f"K = {K // 2} columns but the weight has K = {K}"):
        scheme.linear(weight(2, K // 2), w)


def test_gemm_refuses_mismatched_operands():
    w = lr.quantize_weight(weight())
    x_i8, s_x = lr.quantize_activation(weight(3))
    with pytest.raises(ValueError, match=f"x_i8 has K = 64 columns but the weight has K = {K}"):
        lr.gemm(x_i8[:, :64], s_x, w)
    with pytest.raises(ValueError, match=r"s_x must have shape \(3,\); got \(2,\)"):
        lr.gemm(x_i8, s_x[:2], w)
    with pytest.raises(ValueError, match="x_i8 has K"):
        lr.int32_matmul(x_i8[:, :64], lr.dequantize_int8(w))


# --- hand-made weights are checked --------------------------------------------------------


def test_liquidquant_weight_refuses_bad_fields():
    good = lr.quantize_weight(weight())
    with pytest.raises(ValueError, match="q4 codes must be 0..15; found 16"):
        dataclasses.replace(good, q4=np.full_like(good.q4, 16))
    with pytest.raises(ValueError, match="s must be 1..16"):
        dataclasses.replace(good, s=np.zeros_like(good.s))
    with pytest.raises(ValueError, match=r"s must have shape \(N, K/group_size\)"):
        dataclasses.replace(good, s=good.s[:, :1])
    with pytest.raises(ValueError, match="within one byte"):
        overflowing = dict(
            q4=np.full_like(good.q4, 15), s=np.full_like(good.s, 16), a=np.full_like(good.a, 16)
        )
        dataclasses.replace(good, **overflowing)
    with pytest.raises(ValueError, match="s1 must be finite and positive"):
        dataclasses.replace(good, s1=np.zeros_like(good.s1))
    with pytest.raises(TypeError, match="s1 must have dtype float32"):
        dataclasses.replace(good, s1=good.s1.astype(np.float64))


def test_rtn_and_w8_weights_refuse_bad_fields():
    rtn = bl.quantize_rtn(weight())
    with pytest.raises(ValueError, match="scale must be finite and positive"):
        dataclasses.replace(rtn, scale=np.zeros_like(rtn.scale))
    w8 = bl.quantize_w8(weight())
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        dataclasses.replace(w8, w_i8=np.full_like(w8.w_i8, -128))


# --- M = 0 --------------------------------------------------------------------------------


def test_m_zero_gives_empty_results():
    x_i8, s_x = lr.quantize_activation(np.zeros((0, K), np.float16))
    assert (x_i8.dtype, x_i8.shape, s_x.dtype, s_x.shape) == (np.int8, (0, K), np.float32, (0,))
    w = lr.quantize_weight(weight())
    for y in (lr.gemm(x_i8, s_x, w), lr.w4a8_linear(np.zeros((0, K), np.float32), w)):
        assert (y.dtype, y.shape) == (np.float16, (0, 4))
    for name, scheme in bl.SCHEMES.items():
        y = scheme.linear(np.zeros((0, K), np.float16), scheme.quantize(weight()))
        assert (y.dtype, y.shape) == (np.float16, (0, 4)), name
