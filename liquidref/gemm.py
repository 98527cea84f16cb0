"""The oracle W4A8 GEMM: exact int32 accumulation and the fp16 epilogue.

``acc[m, n] = sum_k x_i8[m, k] * w_i8[n, k]`` exactly, then
``y[m, n] = float16(float32(acc[m, n]) * (s1[n] * s_x[m]))`` with the scale product in float32
first and one rounding to fp16 (nearest even, overflow to inf).

Exactness on the CPU: every product is an integer of magnitude <= 127 * 127 and every partial
sum of K of them is an integer below 2**31 (K <= ``MAX_EXACT_K``), far below 2**53, so a float64
BLAS matmul performs only exact operations whatever its summation order or use of FMA; the cast
back to int32 is exact. ``tests/liquidref/test_gemm.py`` checks this against int64 arithmetic at
the worst-case K.
"""

from __future__ import annotations

import numpy as np

from . import _validate as v
from .constants import MAX_EXACT_K
from .quant import LiquidQuantWeight, dequantize_int8, quantize_activation


def int32_matmul(x_i8: np.ndarray, w_i8: np.ndarray) -> np.ndarray:
    """Exact ``x_i8 @ w_i8.T`` as int32 [M, N].

    Args:
        x_i8: int8 [M, K] activations (values -127..127 for W4A8; any int8 is accepted).
        w_i8: int8 [N, K] weights, K <= ``MAX_EXACT_K``.
    """
    x_i8 = v.as_matrix("x_i8", x_i8, (np.int8,))
    w_i8 = v.as_matrix("w_i8", w_i8, (np.int8,))
    if x_i8.shape[1] != w_i8.shape[1]:
        raise ValueError(
            f"x_i8 has K = {x_i8.shape[1]} columns but the weight has K = {w_i8.shape[1]}"
        )
    if x_i8.shape[1] > MAX_EXACT_K:
        raise ValueError(
            f"K = {x_i8.shape[1]} exceeds {MAX_EXACT_K}, the largest K whose int32 "
            "accumulator cannot overflow"
        )
    acc = x_i8.astype(np.float64) @ w_i8.astype(np.float64).T
    # -128 in both operands (outside the contract's ranges, but representable) can push a sum
    # past int32 even for K <= MAX_EXACT_K; refuse rather than wrap.
    if acc.size and np.abs(acc).max() > np.iinfo(np.int32).max:
        raise ValueError(
            "the int32 accumulator overflows: some |sum_k x * w| exceeds 2**31 - 1 "
            "(int8 values of -128 are outside the W4A8 contract's ranges)"
        )
    return acc.astype(np.int32)


def epilogue(acc: np.ndarray, s_x: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """``float16(float32(acc) * (s1[n] * s_x[m]))``: int32 [M, N] -> float16 [M, N]."""
    scale = s1[None, :] * s_x[:, None]  # float32 * float32, rounded once
    with np.errstate(over="ignore"):  # fp16 overflow to inf is part of the contract
        return (acc.astype(np.float32) * scale).astype(np.float16)


def gemm_int8(x_i8: np.ndarray, s_x: np.ndarray, w_i8: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """W8A8 GEMM with the contract's epilogue, for any int8 weight with per-row scales.

    Args:
        x_i8: int8 [M, K]; s_x: float32 [M]; w_i8: int8 [N, K]; s1: float32 [N].

    Returns:
        float16 [M, N].
    """
    x_i8 = v.as_matrix("x_i8", x_i8, (np.int8,))
    w_i8 = v.as_matrix("w_i8", w_i8, (np.int8,))
    v.as_vector("s_x", s_x, np.float32, x_i8.shape[0])
    v.as_vector("s1", s1, np.float32, w_i8.shape[0])
    return epilogue(int32_matmul(x_i8, w_i8), s_x, s1)


def gemm(x_i8: np.ndarray, s_x: np.ndarray, w: LiquidQuantWeight) -> np.ndarray:
    """The W4A8 GEMM oracle.

    Args:
        x_i8: int8 [M, K] quantized activations (from ``quantize_activation``), M >= 0.
        s_x: float32 [M] per-token scales.
        w: a ``LiquidQuantWeight`` of shape [N, K].

    Returns:
        float16 [M, N]: ``y = float16(float32(x_i8 @ dequantize_int8(w).T) * (s1 * s_x))``.
    """
    if not isinstance(w, LiquidQuantWeight):
        raise TypeError(f"w must be a LiquidQuantWeight; got {type(w).__name__}")
    x_i8 = v.as_matrix("x_i8", x_i8, (np.int8,))
    if x_i8.shape[1] != w.k:
        raise ValueError(f"x_i8 has K = {x_i8.shape[1]} columns but the weight has K = {w.k}")
    return gemm_int8(x_i8, s_x, dequantize_int8(w), w.s1)


def w4a8_linear(X: np.ndarray, w: LiquidQuantWeight) -> np.ndarray:
    """Quantize activations per token and run the W4A8 GEMM.

    Args:
        X: float16 or float32 [M, K], finite.
        w: a ``LiquidQuantWeight`` of shape [N, K].

    Returns:
        float16 [M, N].
    """
    x_i8, s_x = quantize_activation(X)
    return gemm(x_i8, s_x, w)
