"""Hypothesis strategies and assertions for testing W4A8 code against the oracle.

This is the module to import when you test your own kernel (or quantizer) against liquidref::

    from hypothesis import given
    import liquidref as lr
    from liquidref.testing import w4a8_problems, assert_bit_exact

    @given(w4a8_problems())
    def test_my_kernel(problem):
        x_i8, s_x, w = problem
        assert_bit_exact(my_kernel(x_i8, s_x, lr.pack_weight(w)), lr.gemm(x_i8, s_x, w))

Every strategy draws all of its randomness through Hypothesis (large arrays come from a NumPy
generator whose seed Hypothesis draws), so failures replay and shrink. The weights look like
real LLM layers on purpose: heavy tails, outlier input channels, all-zero rows and constant
groups are where quantizers and kernels break.

Strategies:

- ``shapes()``: (M, N, K) with K a multiple of the group size and M possibly 0.
- ``weight_matrices(n, k)``: finite float16/float32 weights [N, K].
- ``activations(m, k)``: finite float16/float32 activations [M, K].
- ``liquidquant_weights(n, k)``: valid ``LiquidQuantWeight`` objects, either quantized from
  ``weight_matrices`` or drawn field by field over the whole valid range (every ``q4, s, a``
  with ``q4 * s + a <= 255``), which is wider than what ``quantize_weight`` produces.
- ``quantized_activations(m, k)``: (``x_i8`` int8 [M, K] in [-127, 127], ``s_x`` float32 [M]).
- ``w4a8_problems()``: consistent (``x_i8``, ``s_x``, ``w``) triples for the GEMM.

Assertions: ``assert_bit_exact(actual, expected)`` compares dtype, shape and bytes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .constants import ACT_LIMIT, GROUP_SIZE, Q4_MAX, STEP_MAX
from .quant import LiquidQuantWeight, quantize_weight

FLOAT_DTYPES = (np.float16, np.float32)
WEIGHT_KINDS = ("normal", "student_t", "uniform", "integer_grid", "elementwise")
"""Base distributions of ``weight_matrices``: Gaussian; Student-t with 1.5..8 degrees of
freedom (the heavy tails of real LLM weights); uniform; small integers times a power of two
(exact ties for every rounding step); and values drawn one by one by Hypothesis (small
matrices only; shrinks to minimal counterexamples)."""

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def shapes(
    *,
    min_m: int = 0,
    max_m: int = 8,
    max_n: int = 16,
    max_groups: int = 4,
    group_size: int = GROUP_SIZE,
):
    """GEMM shapes (M, N, K).

    Args:
        min_m, max_m: token count range (M = 0 is a valid, empty problem).
        max_n: largest number of output features (N >= 1).
        max_groups: largest K / group_size (K >= group_size).
        group_size: K is always a multiple of it.

    Generates:
        ``(m, n, k)`` tuples of ints.

    Example:
        ``shapes(max_m=4).example()`` might be ``(3, 7, 128)``.
    """
    return st.tuples(
        st.integers(min_m, max_m),
        st.integers(1, max_n),
        st.integers(1, max_groups).map(lambda g: g * group_size),
    )


def _dtype(draw, dtype):
    if dtype is None:
        return draw(st.sampled_from(FLOAT_DTYPES))
    dtype = np.dtype(dtype).type
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float16 or float32; got {np.dtype(dtype).name}")
    return dtype


def _to_finite(values: np.ndarray, dtype) -> np.ndarray:
    """Clip to the finite range of ``dtype`` and cast (float16 overflows at 65504)."""
    if dtype is np.float16:
        values = np.clip(values, -_FLOAT16_MAX, _FLOAT16_MAX)
    return values.astype(dtype)


@st.composite
def weight_matrices(
    draw,
    n: int | None = None,
    k: int | None = None,
    *,
    dtype=None,
    group_size: int = GROUP_SIZE,
    max_n: int = 16,
    max_groups: int = 4,
    kinds: tuple[str, ...] = WEIGHT_KINDS,
):
    """Finite weight matrices that look like (and worse than) real LLM layers.

    Args:
        n, k: the shape [N, K]; drawn when None (N in 1..max_n, K = group_size * 1..max_groups).
        dtype: ``np.float16`` or ``np.float32``; drawn when None.
        group_size: K is drawn as a multiple of it.
        max_n, max_groups: bounds for drawn shapes.
        kinds: the base distributions to choose from (see ``WEIGHT_KINDS``).

    Generates:
        ``np.ndarray`` [N, K] of ``dtype``, every value finite (float16 values are clipped to
        +-65504; float32 values are never subnormal unless 0). A base distribution from
        ``WEIGHT_KINDS`` at a drawn scale (1e-6, for float16 1e-4, up to 1e2), then, each drawn
        independently: a few outlier input channels (columns scaled by 10..100), one huge
        spike (up to 1000x the scale), all-zero rows, and constant groups (one value, possibly
        0, over a whole group).

    Example:
        ``weight_matrices(4, 128, dtype=np.float16)`` draws float16 [4, 128] weights.
    """
    n = draw(st.integers(1, max_n)) if n is None else n
    k = draw(st.integers(1, max_groups)) * group_size if k is None else k
    dtype = _dtype(draw, dtype)
    kind = draw(st.sampled_from(kinds))
    if kind == "elementwise":
        magnitude = draw(st.sampled_from([2.0**-10, 1.0, 2.0**10]))
        elements = st.floats(
            -magnitude,
            magnitude,
            width=16 if dtype is np.float16 else 32,
            allow_subnormal=dtype is np.float16,
        )
        return draw(hnp.arrays(dtype, (n, k), elements=elements))

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-4 if dtype is np.float16 else -6, 2))
    if kind == "normal":
        W = rng.standard_normal((n, k))
    elif kind == "student_t":
        W = rng.standard_t(draw(st.sampled_from([1.5, 2.5, 4.0, 8.0])), (n, k))
    elif kind == "uniform":
        W = rng.uniform(-1.0, 1.0, (n, k))
    else:  # integer_grid: exact ties at every rounding step
        W = rng.integers(-300, 301, (n, k)) / 64.0
    W = W * scale
    if k and draw(st.booleans()):  # outlier input channels (as in LLM.int8 / SmoothQuant)
        columns = rng.choice(k, size=min(k, draw(st.integers(1, 4))), replace=False)
        W[:, columns] *= draw(st.sampled_from([10.0, 30.0, 100.0]))
    if k and draw(st.booleans()):  # one huge spike
        W[rng.integers(n), rng.integers(k)] = scale * draw(st.sampled_from([-1e3, 1e3, 50.0]))
    if draw(st.booleans()):  # all-zero rows
        W[rng.random(n) < draw(st.sampled_from([0.2, 0.5, 1.0]))] = 0.0
    if k and draw(st.booleans()):  # constant groups
        grouped = W.reshape(n, k // group_size, group_size)
        chosen = rng.random(grouped.shape[:2]) < 0.3
        value = draw(st.sampled_from([0.0, scale, -scale, 0.37 * scale]))
        grouped[chosen] = value
    W = _to_finite(W, dtype)
    return W


@st.composite
def activations(
    draw,
    m: int | None = None,
    k: int | None = None,
    *,
    dtype=None,
    max_m: int = 8,
    group_size: int = GROUP_SIZE,
    max_groups: int = 4,
):
    """Finite activation matrices [M, K] with LLM-like outlier channels.

    Args:
        m, k: the shape; drawn when None (M in 0..max_m, K = group_size * 1..max_groups).
        dtype: ``np.float16`` or ``np.float32``; drawn when None.

    Generates:
        ``np.ndarray`` [M, K] of ``dtype``: Gaussian or Student-t tokens at a drawn scale, with
        optional outlier channels (a few columns scaled by 20..100, as in SmoothQuant's
        observations), all-zero rows (padding tokens) and, for small shapes, values drawn
        one by one. M may be 0.
    """
    m = draw(st.integers(0, max_m)) if m is None else m
    k = draw(st.integers(1, max_groups)) * group_size if k is None else k
    dtype = _dtype(draw, dtype)
    if m * k <= 512 and draw(st.integers(0, 4)) == 0:
        elements = st.floats(
            -128, 128, width=16 if dtype is np.float16 else 32, allow_subnormal=dtype is np.float16
        )
        return draw(hnp.arrays(dtype, (m, k), elements=elements))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-3, 2))
    if draw(st.booleans()):
        X = rng.standard_normal((m, k))
    else:
        X = rng.standard_t(3.0, (m, k))
    X = X * scale
    if draw(st.booleans()):
        columns = rng.choice(k, size=min(k, draw(st.integers(1, 4))), replace=False)
        X[:, columns] *= draw(st.sampled_from([20.0, 100.0]))
    if m and draw(st.booleans()):
        X[rng.random(m) < 0.3] = 0.0
    return _to_finite(X, dtype)


@st.composite
def liquidquant_weights(
    draw,
    n: int | None = None,
    k: int | None = None,
    *,
    group_size: int = GROUP_SIZE,
    max_n: int = 16,
    max_groups: int = 4,
    from_float: bool | None = None,
):
    """Valid ``LiquidQuantWeight`` objects.

    Args:
        n, k: the shape [N, K]; drawn when None.
        group_size: the LiquidQuant group size (64 for the kernel).
        from_float: True: ``quantize_weight(weight_matrices(...))``; False: fields drawn
            directly over the whole valid range; None: either.

    Generates:
        ``LiquidQuantWeight``. Drawn directly, each group gets a step ``s`` in 1..16 and an
        offset ``a`` in 0..255 (including the edges that ``quantize_weight`` never produces,
        e.g. ``a = 0`` so that a weight dequantizes to -128), and codes ``q4`` with
        ``q4 * s + a <= 255``; in "saturated" draws every code sits at its largest allowed
        value, so the byte lanes reach 255. A kernel must handle every such weight.
    """
    n = draw(st.integers(1, max_n)) if n is None else n
    k = draw(st.integers(1, max_groups)) * group_size if k is None else k
    if from_float is None:
        from_float = draw(st.booleans())
    if from_float:
        return quantize_weight(draw(weight_matrices(n, k, group_size=group_size)), group_size)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = k // group_size
    if draw(st.booleans()):
        s = rng.integers(1, STEP_MAX + 1, (n, groups))
        a = rng.integers(0, 256, (n, groups))
    else:  # the extremes: largest steps, smallest and largest offsets
        s = rng.choice([1, STEP_MAX - 1, STEP_MAX], (n, groups))
        a = rng.choice([0, 1, 127, 128, 255 - STEP_MAX * Q4_MAX, 255], (n, groups))
    top = np.minimum(Q4_MAX, (255 - a) // s)  # the largest code that keeps q4 * s + a <= 255
    top_per_element = np.repeat(top, group_size, axis=1)
    if draw(st.booleans()):
        q4 = rng.integers(0, top_per_element + 1)
    else:  # saturated: every lane at its top
        q4 = top_per_element
    s1 = (10.0 ** rng.uniform(-4, 1, n)).astype(np.float32)
    return LiquidQuantWeight(
        q4=q4.astype(np.uint8),
        s=s.astype(np.uint8),
        a=a.astype(np.uint8),
        s1=s1,
        group_size=group_size,
    )


@st.composite
def quantized_activations(
    draw, m: int | None = None, k: int | None = None, *, max_m: int = 8, max_groups: int = 4
):
    """Per-token int8 activations as the kernel receives them.

    Args:
        m, k: the shape [M, K]; drawn when None (M in 0..max_m, K = 64 * 1..max_groups).

    Generates:
        ``(x_i8, s_x)``: int8 [M, K] in [-127, 127] (uniform, small, or all at the extremes
        +-127, the accumulator's worst case) and float32 [M] positive scales spanning 1e-6..1e2.
    """
    m = draw(st.integers(0, max_m)) if m is None else m
    k = draw(st.integers(1, max_groups)) * GROUP_SIZE if k is None else k
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    style = draw(st.sampled_from(["uniform", "small", "extreme"]))
    if style == "uniform":
        x = rng.integers(-ACT_LIMIT, ACT_LIMIT + 1, (m, k))
    elif style == "small":
        x = rng.integers(-3, 4, (m, k))
    else:
        x = rng.choice([-ACT_LIMIT, ACT_LIMIT], (m, k))
    s_x = (10.0 ** rng.uniform(-6, 2, m)).astype(np.float32)
    return x.astype(np.int8), s_x


@st.composite
def w4a8_problems(draw, *, max_m: int = 8, max_n: int = 16, max_groups: int = 4):
    """Consistent GEMM inputs ``(x_i8, s_x, w)`` for ``liquidref.gemm``.

    Generates:
        ``x_i8`` int8 [M, K], ``s_x`` float32 [M] from ``quantized_activations`` and ``w`` a
        ``LiquidQuantWeight`` [N, K] from ``liquidquant_weights``, with M in 0..max_m.
    """
    m, n, k = draw(shapes(max_m=max_m, max_n=max_n, max_groups=max_groups))
    x_i8, s_x = draw(quantized_activations(m, k))
    w = draw(liquidquant_weights(n, k))
    return x_i8, s_x, w


def assert_bit_exact(actual: np.ndarray, expected: np.ndarray, name: str = "result") -> None:
    """Assert that two arrays have the same dtype, shape and bytes.

    Floats are compared as their bit patterns, so -0.0 differs from 0.0 and an inf where a
    finite value was expected is a mismatch; that is what "bit-exact" means here.

    Raises:
        AssertionError: naming the number of differing elements and the first one (index,
            both values and, for floats, both bit patterns in hex).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{name}: dtype {actual.dtype}, expected {expected.dtype}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape}, expected {expected.shape}")
    as_bits = np.dtype(f"u{actual.dtype.itemsize}") if actual.dtype.kind in "fiub" else None
    if as_bits is None:
        raise TypeError(f"{name}: cannot compare bytes of dtype {actual.dtype}")
    a_bits = np.ascontiguousarray(actual).view(as_bits)
    e_bits = np.ascontiguousarray(expected).view(as_bits)
    differ = a_bits != e_bits
    if differ.any():
        index = tuple(int(i) for i in np.argwhere(differ)[0])
        width = 2 * actual.dtype.itemsize
        raise AssertionError(
            f"{name}: {int(differ.sum())} of {differ.size} elements differ; first at {index}: "
            f"{actual[index]!r} (0x{int(a_bits[index]):0{width}x}), expected "
            f"{expected[index]!r} (0x{int(e_bits[index]):0{width}x})"
        )
