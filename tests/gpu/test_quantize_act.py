"""The GPU activation quantizer (gpu/kernels/quantize_act.cu) is bit-exact with liquidref.

``check_quantizer`` compares any quantizer with ``liquidref.quantize_activation`` and
``liquidref.tile_activation`` byte for byte. On the CPU it runs against deliberately wrong NumPy
quantizers (mutants) to show that the drawn data catch each kind of mistake, including
round-half-away-from-zero (the "ties" rows make X / s_x land exactly on .5); on a GPU it runs
the real kernel, both output layouts, into poisoned buffers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import liquidref
from gpu import api

ROW_KINDS = ("normal", "ties", "zero", "subnormal", "extreme")


@st.composite
def activations(draw, max_m=300, max_k=2048):
    """fp16 X [M, K] (K a multiple of 16) mixing row kinds; never all zero."""
    m = draw(st.integers(1, max_m))
    k = 16 * draw(st.integers(1, max_k // 16))
    seed = draw(st.integers(0, 2**32 - 1))
    kinds = draw(st.lists(st.sampled_from(ROW_KINDS), min_size=1, max_size=4))
    rng = np.random.default_rng(seed)
    X = np.empty((m, k), np.float32)
    for row in range(m):
        kind = kinds[row % len(kinds)] if row else "normal"
        if kind == "normal":
            X[row] = rng.standard_normal(k) * 10.0 ** rng.uniform(-4, 4)
        elif kind == "ties":
            # s_x = 2^e exactly, so X / s_x = j + 0.5 exactly: rounding must go to even
            scale = 2.0 ** rng.integers(-6, 6)
            X[row] = (rng.integers(-127, 127, k) + 0.5) * scale
            X[row, rng.integers(k)] = 127 * scale * rng.choice([-1, 1])
        elif kind == "zero":
            X[row] = 0.0
        elif kind == "subnormal":
            X[row] = rng.integers(-1023, 1024, k) * 2.0**-24  # fp16 subnormals
        else:
            X[row] = rng.choice([-65504.0, 65504.0, 0.0, 1e-3, -7.0], k)
    return X.astype(np.float16)


def reference(X):
    x_i8, s_x = liquidref.quantize_activation(X)
    return x_i8, s_x, liquidref.tile_activation(x_i8)


def check_quantizer(quantize, X):
    """Assert ``quantize(X) -> (x_i8, s_x, x_tiled, s_x_tiled)`` equals liquidref byte for byte."""
    x_i8, s_x, x_tiled, s_x_tiled = quantize(X)
    want_x, want_s, want_tiled = reference(X)
    assert np.array_equal(s_x.view(np.uint32), want_s.view(np.uint32)), "s_x differs"
    assert np.array_equal(x_i8, want_x), f"x_i8 differs at {np.argwhere(x_i8 != want_x)[:5].tolist()}"
    assert x_tiled.shape == want_tiled.shape, f"tiled shape {x_tiled.shape} != {want_tiled.shape}"
    assert np.array_equal(x_tiled, want_tiled), "tiled layout differs"
    assert np.array_equal(s_x_tiled.view(np.uint32), want_s.view(np.uint32)), "s_x (tiled call) differs"


# --- mutants: wrong quantizers the property must catch (CPU) --------------------------------


def _quantize_with(X, divide, round_, zero_scale=1.0, pad_value=0, scale_divide=None):
    Xf = X.astype(np.float32)
    amax = np.abs(Xf).max(axis=1)
    scaled = (scale_divide or _true_divide)(amax, np.float32(127))
    s_x = np.where(amax > 0, scaled, np.float32(zero_scale)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(round_(divide(Xf, s_x[:, None])), -127, 127)
    x_i8 = np.nan_to_num(q).astype(np.int8)
    tiled = liquidref.tile_activation(x_i8)
    m = X.shape[0]
    if m % 8:
        rows = tiled.transpose(0, 2, 1, 3).reshape(-1, X.shape[1])
        rows[m:] = pad_value
        tiled = np.ascontiguousarray(rows.reshape(tiled.shape[0], 8, -1, 16).transpose(0, 2, 1, 3))
    return x_i8, s_x, tiled, s_x


def _true_divide(a, b):
    return a / b


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


MUTANTS = {
    "correct": lambda X: _quantize_with(X, _true_divide, np.rint),
    "round_half_away_from_zero": lambda X: _quantize_with(X, _true_divide, _round_half_away),
    # what a compiler's division-by-constant shortcut (fast math) would do to s_x = amax / 127
    "scale_times_reciprocal": lambda X: _quantize_with(
        X, _true_divide, np.rint, scale_divide=lambda a, b: a * (np.float32(1) / b)
    ),
    "zero_row_scale_0": lambda X: _quantize_with(X, _true_divide, np.rint, zero_scale=0.0),
    "padding_rows_not_zeroed": lambda X: _quantize_with(X, _true_divide, np.rint, pad_value=0x5A),
}


def test_reference_harness_accepts_the_correct_quantizer():
    @settings(max_examples=20)
    @given(X=activations(max_m=40, max_k=256))
    def run(X):
        check_quantizer(MUTANTS["correct"], X)

    run()


@pytest.mark.mutant
@pytest.mark.parametrize("mutant", [name for name in MUTANTS if name != "correct"])
def test_property_catches_mutant(mutant):
    @settings(max_examples=200, database=None)
    @given(X=activations(max_m=40, max_k=256))
    def run(X):
        check_quantizer(MUTANTS[mutant], X)

    with pytest.raises(AssertionError):
        run()


# --- the GPU kernel -------------------------------------------------------------------------


def gpu_quantizer(cp, poisoned):
    """The kernel in both layouts, writing into poisoned buffers, results back on the host."""

    def quantize(X):
        m, k = X.shape
        Xd = cp.asarray(X)
        x_out, s_out = poisoned((m, k), np.int8), poisoned((m,), np.float32)
        api.quantize_activation(Xd, out=(x_out, s_out))
        m_pad = api.padded_tokens(m)
        tiled_out = poisoned((m_pad // 8, k // 16, 8, 16), np.int8)
        s_tiled = poisoned((m,), np.float32)
        api.quantize_activation_tiled(Xd, out=(tiled_out, s_tiled))
        return tuple(cp.asnumpy(a) for a in (x_out, s_out, tiled_out, s_tiled))

    return quantize


@pytest.mark.gpu
@given(X=activations())
def test_gpu_quantizer_is_bit_exact(cp, poisoned, X):
    check_quantizer(gpu_quantizer(cp, poisoned), X)


@pytest.mark.gpu
def test_gpu_quantizer_allocates_its_outputs(cp):
    X = np.arange(-64, 64, dtype=np.float16).reshape(2, 64)
    x_i8, s_x = api.quantize_activation(cp.asarray(X))
    want_x, want_s = liquidref.quantize_activation(X)
    assert np.array_equal(cp.asnumpy(x_i8), want_x)
    assert np.array_equal(cp.asnumpy(s_x).view(np.uint32), want_s.view(np.uint32))
    x_tiled, _ = api.quantize_activation_tiled(cp.asarray(X))
    assert np.array_equal(cp.asnumpy(x_tiled), liquidref.tile_activation(want_x))
