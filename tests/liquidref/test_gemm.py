"""The oracle GEMM (liquidref/gemm.py): exact int32 accumulation, the fp16 epilogue, speed.

Why a float64 BLAS matmul is exact: each product x * w is an integer with |x * w| <= 127 * 127,
so every partial sum of at most K = MAX_EXACT_K products is an integer below 2**31, far below
2**53. Every float64 addition, multiplication or FMA of such integers is exact, whatever order
or blocking the BLAS chooses, and the final cast to int32 is exact too. The worst case (all
operands at +-127, K = MAX_EXACT_K) is checked against int64 arithmetic below; a float32
matmul (exact only below 2**24) fails that same check.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import liquidref as lr
from liquidref.constants import ACT_LIMIT, GROUP_SIZE, MAX_EXACT_K, OFFSET_BIAS, Q4_MAX, STEP_MAX
from liquidref.testing import assert_bit_exact, w4a8_problems

from . import mutants as mt
from .mutants import assert_mutant_rejected


def contract_epilogue(acc: np.ndarray, s_x: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """The contract's ``float16(float32(acc) * (s1[n] * s_x[m]))``, written independently.

    A product of two float32 values is exact in float64 (24 + 24 significant bits <= 53), and a
    float32 multiply is that exact product rounded once to float32; so each float32 step
    below is "exact product in float64, then one explicit rounding".
    """
    with np.errstate(over="ignore"):
        scale = (s1.astype(np.float64)[None, :] * s_x.astype(np.float64)[:, None]).astype(
            np.float32
        )
        acc32 = acc.astype(np.float32)
        y32 = (acc32.astype(np.float64) * scale.astype(np.float64)).astype(np.float32)
        return y32.astype(np.float16)


def int8_weight_of(w) -> np.ndarray:
    """The spec of the dequant, ``q4 * s + a - 128``, as int64 [N, K]."""
    g = w.group_size
    s = np.repeat(w.s.astype(np.int64), g, axis=1)
    a = np.repeat(w.a.astype(np.int64), g, axis=1)
    return w.q4.astype(np.int64) * s + a - OFFSET_BIAS


# --- the checks ---------------------------------------------------------------------------


def check_gemm(impl, problem) -> None:
    """gemm == int64 brute force + the contract epilogue, compared as fp16 bit patterns."""
    x_i8, s_x, w = problem
    acc = x_i8.astype(np.int64) @ int8_weight_of(w).T
    assert_bit_exact(impl.gemm(x_i8, s_x, w), contract_epilogue(acc, s_x, w.s1), "gemm")


def check_epilogue(impl, inputs) -> None:
    """The epilogue alone, on int32 accumulators and scales over their whole ranges."""
    acc, s_x, s1 = inputs
    assert_bit_exact(impl.epilogue(acc, s_x, s1), contract_epilogue(acc, s_x, s1), "epilogue")


@st.composite
def epilogue_inputs(draw):
    """(acc int32 [M, N], s_x float32 [M], s1 float32 [N]) with many elements per example.

    Accumulators over the whole int32 range and small ones; scales from 1e-9 to 1e3, so that
    results reach fp16 subnormals, the fp16 rounding boundaries and overflow to inf. Wrong
    rounding orders differ from the contract in roughly one element in 10**4 to 10**5, hence
    the 32k elements per example.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m, n = 128, 256
    limit = draw(st.sampled_from([2**31 - 1, 2**24, 2**15, 127]))
    acc = rng.integers(-limit, limit, (m, n), endpoint=True).astype(np.int32)
    s_x = (10.0 ** rng.uniform(-9, 3, m)).astype(np.float32)
    s1 = (10.0 ** rng.uniform(-9, 3, n)).astype(np.float32)
    return acc, s_x, s1


def check_int32_matmul_worst_case(impl) -> None:
    """M = N = 2 at K = MAX_EXACT_K, every operand +-127: the largest |acc| that fits int32."""
    k = MAX_EXACT_K
    x = np.empty((2, k), dtype=np.int8)
    x[0] = ACT_LIMIT
    x[1] = -ACT_LIMIT
    w = np.empty((2, k), dtype=np.int8)
    w[0] = ACT_LIMIT
    w[1, 0::2] = -ACT_LIMIT  # alternating signs: the partial sums swing through zero
    w[1, 1::2] = ACT_LIMIT
    expected = x.astype(np.int64) @ w.astype(np.int64).T
    assert abs(expected).max() == k * ACT_LIMIT * ACT_LIMIT < 2**31
    assert_bit_exact(impl.int32_matmul(x, w), expected.astype(np.int32), "int32 accumulator")


# --- on the oracle ------------------------------------------------------------------------


@given(w4a8_problems())
def test_gemm_equals_int64_brute_force(problem):
    check_gemm(mt.REAL, problem)


@given(epilogue_inputs())
def test_epilogue_contract(inputs):
    check_epilogue(mt.REAL, inputs)


def test_int32_matmul_is_exact_at_the_worst_case_k():
    check_int32_matmul_worst_case(mt.REAL)


def test_gemm_is_exact_at_the_largest_group_aligned_k():
    # LiquidQuant weights at their extremes: 127 (q4 15, s 16, min -113) and -119 (min -119)
    k = MAX_EXACT_K - MAX_EXACT_K % GROUP_SIZE
    groups = k // GROUP_SIZE
    q4 = np.zeros((2, k), dtype=np.uint8)
    q4[0] = Q4_MAX
    s = np.full((2, groups), STEP_MAX, dtype=np.uint8)
    a = np.empty((2, groups), dtype=np.uint8)
    a[0] = OFFSET_BIAS - 113
    a[1] = OFFSET_BIAS - 119
    w = lr.LiquidQuantWeight(q4=q4, s=s, a=a, s1=np.ones(2, np.float32))
    assert lr.dequantize_int8(w)[:, 0].tolist() == [127, -119]
    x_i8 = np.full((2, k), ACT_LIMIT, dtype=np.int8)
    x_i8[1] = -ACT_LIMIT
    s_x = np.ones(2, np.float32)
    check_gemm(mt.REAL, (x_i8, s_x, w))


def test_k_beyond_the_exact_range_is_refused():
    x = np.zeros((1, MAX_EXACT_K + 1), dtype=np.int8)
    with pytest.raises(ValueError, match="exceeds"):
        lr.int32_matmul(x, x)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_accumulator_overflow_is_refused_not_wrapped():
    k = MAX_EXACT_K - MAX_EXACT_K % GROUP_SIZE
    w = lr.LiquidQuantWeight(
        q4=np.zeros((1, k), np.uint8),
        s=np.ones((1, k // GROUP_SIZE), np.uint8),
        a=np.zeros((1, k // GROUP_SIZE), np.uint8),
        s1=np.ones(1, np.float32),
    )
    x_i8 = np.full((1, k), -ACT_LIMIT, dtype=np.int8)
    with pytest.raises(ValueError):
        lr.gemm(x_i8, np.ones(1, np.float32), w)


def test_gemm_of_m_zero_is_empty():
    w = lr.quantize_weight(np.ones((3, 64), np.float16))
    y = lr.gemm(np.zeros((0, 64), np.int8), np.zeros(0, np.float32), w)
    assert (y.dtype, y.shape) == (np.float16, (0, 3))
    y = lr.w4a8_linear(np.zeros((0, 64), np.float32), w)
    assert (y.dtype, y.shape) == (np.float16, (0, 3))


def test_epilogue_overflows_to_inf_and_rounds_to_even():
    acc = np.array([[65504, 65520, 2049, -65520]], dtype=np.int32)
    y = lr.epilogue(acc, np.ones(1, np.float32), np.ones(4, np.float32))
    # 65520 is the midpoint between 65504 and the next (absent) fp16 step: ties-to-even -> inf;
    # 2049 lies halfway between 2048 and 2050 and rounds to the even 2048
    assert y.tolist() == [[65504.0, np.inf, 2048.0, -np.inf]]


def test_w4a8_linear_is_quantize_activation_then_gemm():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 128)).astype(np.float16)
    X = rng.standard_normal((5, 128)).astype(np.float16)
    w = lr.quantize_weight(W)
    x_i8, s_x = lr.quantize_activation(X)
    assert_bit_exact(lr.w4a8_linear(X, w), lr.gemm(x_i8, s_x, w))


def test_gemm_is_fast():
    # M = 256, N = K = 4096 (a Llama-3-8B attention projection at a 256-token batch): the float64
    # BLAS path takes about 0.15 s on two cores; an integer matmul would take minutes.
    rng = np.random.default_rng(0)
    n = k = 4096
    w = lr.LiquidQuantWeight(
        q4=rng.integers(0, Q4_MAX + 1, (n, k)).astype(np.uint8),
        s=np.full((n, k // GROUP_SIZE), 8, np.uint8),
        a=rng.integers(OFFSET_BIAS - 119, OFFSET_BIAS, (n, k // GROUP_SIZE)).astype(np.uint8),
        s1=np.ones(n, np.float32),
    )
    x_i8 = rng.integers(-ACT_LIMIT, ACT_LIMIT + 1, (256, k)).astype(np.int8)
    s_x = np.full(256, 1e-3, np.float32)
    lr.gemm(x_i8[:8], s_x[:8], w)  # warm-up (BLAS threads)
    start = time.perf_counter()
    y = lr.gemm(x_i8, s_x, w)
    elapsed = time.perf_counter() - start
    assert y.shape == (256, n)
    assert elapsed < 1.0, f"gemm took {elapsed:.2f} s"


# --- the properties reject the mutants ----------------------------------------------------


@pytest.mark.mutant
@pytest.mark.parametrize("impl", mt.EPILOGUE_MUTANTS, ids=repr)
def test_epilogue_property_rejects_mutants(impl):
    assert_mutant_rejected(check_epilogue, epilogue_inputs(), impl)


@pytest.mark.mutant
def test_gemm_property_rejects_dequant_without_xor():
    assert_mutant_rejected(check_gemm, w4a8_problems(), mt.NO_XOR)


@pytest.mark.mutant
def test_worst_case_check_rejects_a_float32_matmul():
    with pytest.raises(AssertionError):
        check_int32_matmul_worst_case(mt.MATMUL_FLOAT32)
