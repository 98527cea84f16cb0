"""Deliberately wrong implementations, to prove that the property tests can fail.

``REAL`` bundles the oracle's functions; each mutant is ``REAL`` with one function replaced by
a plausible mistake (the kind a kernel author or a re-implementation actually makes). The
property checks in ``test_quant.py`` and ``test_gemm.py`` take an ``Impl`` and must pass for
``REAL`` and fail for every mutant they are responsible for.

Mutant quantizers return ``UncheckedWeight`` (the fields of a ``LiquidQuantWeight`` without its
constructor's range checks), so that it is the *property* that catches them, not
``LiquidQuantWeight.__post_init__``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import Phase, given, settings

import liquidref as lr
from liquidref.constants import (
    ACT_LIMIT,
    BYTE_BROADCAST,
    OFFSET_BIAS,
    Q4_MAX,
    Q8_LIMIT,
    XOR_MASK_BYTE,
    XOR_MASK_WORD,
)
from liquidref.quant import quantize_rows_int8


@dataclass(frozen=True)
class Impl:
    """One implementation of the oracle's pieces, real or mutant."""

    name: str
    quantize_weight: Callable  # (W, group_size) -> object with q4, s, a, s1, group_size
    dequantize_int8: Callable  # weight -> int8 [N, K], lane by lane
    dequantize_int8_packed: Callable  # weight -> int8 [N, K], through uint32 words
    quantize_activation: Callable  # X -> (x_i8, s_x)
    int32_matmul: Callable  # (x_i8, w_i8) -> int32 [M, N]
    epilogue: Callable  # (acc, s_x, s1) -> float16 [M, N]
    gemm: Callable  # (x_i8, s_x, weight) -> float16 [M, N]

    def __repr__(self) -> str:  # short names in pytest ids and failure messages
        return self.name


@dataclass(frozen=True)
class UncheckedWeight:
    """The fields of a ``LiquidQuantWeight``, with no validation."""

    q4: np.ndarray
    s: np.ndarray
    a: np.ndarray
    s1: np.ndarray
    group_size: int


REAL = Impl(
    name="liquidref",
    quantize_weight=lr.quantize_weight,
    dequantize_int8=lr.dequantize_int8,
    dequantize_int8_packed=lr.dequantize_int8_packed,
    quantize_activation=lr.quantize_activation,
    int32_matmul=lr.int32_matmul,
    epilogue=lr.epilogue,
    gemm=lr.gemm,
)


# --- helpers that accept any weight-like object ------------------------------------------


def _lane_sums(w) -> np.ndarray:
    n, k = w.q4.shape
    g = w.group_size
    q4 = w.q4.reshape(n, k // g, g).astype(np.int32)
    return (q4 * w.s[..., None].astype(np.int32) + w.a[..., None].astype(np.int32)).reshape(n, k)


def lane_dequant(w) -> np.ndarray:
    """The correct lane-wise dequant, for weight-like objects (mutant quantizers' outputs)."""
    return ((_lane_sums(w) ^ XOR_MASK_BYTE) & 0xFF).astype(np.uint8).view(np.int8)


def _packed_dequant_with(word_fn: Callable) -> Callable:
    def dequant(w) -> np.ndarray:
        n, k = w.q4.shape
        g = w.group_size
        words = np.ascontiguousarray(w.q4).view(np.uint32).reshape(n, k // g, g // 4)
        out = word_fn(words, w.s[..., None], w.a[..., None])
        return np.ascontiguousarray(out, dtype=np.uint32).view(np.int8).reshape(n, k)

    return dequant


packed_dequant = _packed_dequant_with(lr.dequant_word)


def _gemm_from_parts(impl_parts: dict) -> Callable:
    def gemm(x_i8, s_x, w):
        acc = impl_parts["int32_matmul"](x_i8, impl_parts["dequantize_int8"](w))
        return impl_parts["epilogue"](acc, s_x, w.s1)

    return gemm


def mutant(name: str, **replaced) -> Impl:
    """``REAL`` with some functions replaced; the GEMM is rebuilt from the (mutant) parts."""
    parts = {f.name: getattr(REAL, f.name) for f in dataclasses.fields(Impl)}
    if "quantize_weight" in replaced:  # it returns UncheckedWeight: dequants that accept those
        parts.update(dequantize_int8=lane_dequant, dequantize_int8_packed=packed_dequant)
    parts.update(replaced)
    parts["name"] = name
    parts["gemm"] = _gemm_from_parts(parts)
    return Impl(**parts)


# --- mutant quantizers --------------------------------------------------------------------


def _quantize_weight_with(*, limit: int, clamp_q4: bool, step_at_least_one: bool) -> Callable:
    """A LiquidQuant quantizer with one of its safety details switched off."""

    def quantize(W: np.ndarray, group_size: int = lr.GROUP_SIZE) -> UncheckedWeight:
        n, k = W.shape
        s1, q8 = quantize_rows_int8(W, limit)
        groups = q8.reshape(n, k // group_size, group_size)
        mn = groups.min(axis=2)
        mx = groups.max(axis=2)
        s = np.rint((mx - mn) / Q4_MAX)
        if step_at_least_one:
            s = np.maximum(1, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            q4 = np.rint((groups - mn[..., None]) / s[..., None])
        q4 = np.nan_to_num(q4, nan=0.0, posinf=255.0)
        if clamp_q4:
            q4 = np.clip(q4, 0, Q4_MAX)
        return UncheckedWeight(
            q4=q4.reshape(n, k).astype(np.uint8),
            s=s.astype(np.uint8),
            a=(OFFSET_BIAS + mn).astype(np.uint8),
            s1=s1,
            group_size=group_size,
        )

    return quantize


def _dequant_word_without_xor(word, s, a):
    word = np.asarray(word, dtype=np.uint32)
    return word * np.asarray(s, np.uint32) + np.asarray(a, np.uint32) * np.uint32(BYTE_BROADCAST)


def _dequant_word_offset_in_low_lane_only(word, s, a):
    """Forgets to broadcast a to all four lanes (adds a, not a * 0x01010101)."""
    word = np.asarray(word, dtype=np.uint32)
    return (word * np.asarray(s, np.uint32) + np.asarray(a, np.uint32)) ^ np.uint32(XOR_MASK_WORD)


def _lane_dequant_without_xor(w) -> np.ndarray:
    return (_lane_sums(w) & 0xFF).astype(np.uint8).view(np.int8)


# --- mutant epilogues and GEMMs -----------------------------------------------------------


def _epilogue_scales_in_wrong_order(acc, s_x, s1):
    """``(acc * s1) * s_x``: two float32 roundings instead of ``acc * (s1 * s_x)``."""
    with np.errstate(over="ignore"):
        partial = acc.astype(np.float32) * s1[None, :]
        return (partial * s_x[:, None]).astype(np.float16)


def _epilogue_in_float64(acc, s_x, s1):
    """The whole epilogue in float64, then one rounding to float16."""
    scale = s1.astype(np.float64)[None, :] * s_x.astype(np.float64)[:, None]
    with np.errstate(over="ignore"):
        return (acc.astype(np.float64) * scale).astype(np.float16)


def _int32_matmul_in_float32(x_i8, w_i8):
    """A float32 matmul: exact only while partial sums stay below 2**24."""
    return (x_i8.astype(np.float32) @ w_i8.astype(np.float32).T).astype(np.int64).astype(np.int32)


# --- mutant activation quantizer ----------------------------------------------------------


def _quantize_activation_with_floor(X):
    Xf = X.astype(np.float32)
    amax = np.abs(Xf).max(axis=1)
    s_x = np.where(amax > 0, amax / np.float32(ACT_LIMIT), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.floor(Xf / s_x[:, None]), -ACT_LIMIT, ACT_LIMIT)
    return q.astype(np.int8), s_x


# --- the catalogue ------------------------------------------------------------------------

NO_XOR = mutant(
    "dequant-without-xor",
    dequantize_int8=_lane_dequant_without_xor,
    dequantize_int8_packed=_packed_dequant_with(_dequant_word_without_xor),
)
OFFSET_NOT_BROADCAST = mutant(
    "packed-offset-not-broadcast",
    dequantize_int8_packed=_packed_dequant_with(_dequant_word_offset_in_low_lane_only),
)
Q4_NOT_CLAMPED = mutant(
    "q4-not-clamped",
    quantize_weight=_quantize_weight_with(limit=Q8_LIMIT, clamp_q4=False, step_at_least_one=True),
)
STEP_MAY_BE_ZERO = mutant(
    "step-without-max-1",
    quantize_weight=_quantize_weight_with(limit=Q8_LIMIT, clamp_q4=True, step_at_least_one=False),
)
LEVEL1_LIMIT_127 = mutant(
    "level1-limit-127",
    quantize_weight=_quantize_weight_with(limit=ACT_LIMIT, clamp_q4=True, step_at_least_one=True),
)
EPILOGUE_WRONG_ORDER = mutant("epilogue-wrong-order", epilogue=_epilogue_scales_in_wrong_order)
EPILOGUE_FLOAT64 = mutant("epilogue-float64", epilogue=_epilogue_in_float64)
MATMUL_FLOAT32 = mutant("matmul-float32", int32_matmul=_int32_matmul_in_float32)
ACTIVATION_FLOOR = mutant("activation-floor", quantize_activation=_quantize_activation_with_floor)

QUANTIZER_MUTANTS = (Q4_NOT_CLAMPED, STEP_MAY_BE_ZERO, LEVEL1_LIMIT_127)
DEQUANT_MUTANTS = (NO_XOR, OFFSET_NOT_BROADCAST)
EPILOGUE_MUTANTS = (EPILOGUE_WRONG_ORDER, EPILOGUE_FLOAT64)
ALL_MUTANTS = (
    QUANTIZER_MUTANTS
    + DEQUANT_MUTANTS
    + EPILOGUE_MUTANTS
    + (MATMUL_FLOAT32, ACTIVATION_FLOOR)
)


# --- running a property against an implementation -----------------------------------------

# Runs of a property against a mutant only need to fail: no shrinking, no example database.
MUTANT_RUN = settings(database=None, phases=[Phase.generate], report_multiple_bugs=False)


def run_property(check: Callable, strategy, impl: Impl) -> None:
    """Run ``check(impl, example)`` for examples of ``strategy`` under the active profile."""

    @given(strategy)
    def run(example):
        check(impl, example)

    if impl is not REAL:
        run = MUTANT_RUN(run)
    run()


def assert_mutant_rejected(check: Callable, strategy, impl: Impl) -> None:
    """The property must find a counterexample for the mutant (an AssertionError)."""
    with pytest.raises(AssertionError):
        run_property(check, strategy, impl)
