# %% [markdown]
# # 6. Testing your own kernel against liquidref with Hypothesis
#
# **What you will learn**
#
# - what the public Hypothesis strategies of `liquidref.testing` generate (`shapes`,
#   `weight_matrices`, `activations`, `liquidquant_weights`, `quantized_activations`,
#   `w4a8_problems`), and why they look like real LLM layers *and worse*;
# - how to write a property test that checks a kernel of your own against the oracle,
#   bit for bit, with `assert_bit_exact`;
# - how to convince yourself that the test can fail: run it on deliberately broken kernels and
#   read the minimal counterexample Hypothesis shrinks to;
# - why a test's power depends on how many output elements each example checks.
#
# `liquidref.testing` needs Hypothesis, which comes with the `test` extra:
# `pip install 'liquidref[test]'` (the rest of `liquidref` needs only NumPy). The "kernel" on
# this page is NumPy, so that it runs anywhere, but nothing below depends on that: a CUDA kernel
# called through CuPy is tested the same way, with its output copied back to the host.

# %%
import matplotlib.pyplot as plt
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liquidref as lr
from liquidref.constants import BLOCK_K, BLOCK_ROWS, Q4_MAX, XOR_MASK_BYTE
from liquidref.testing import (
    activations,
    assert_bit_exact,
    liquidquant_weights,
    quantized_activations,
    shapes,
    w4a8_problems,
    weight_matrices,
)

# One settings object for every property on this page: reproducible (derandomize), no example
# database on disk, no per-example deadline (the first call of a NumPy function is slower).
PAGE_SETTINGS = dict(derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# %% [markdown]
# ## What the strategies draw
#
# A strategy is a recipe for random test inputs. `@given(strategy)` runs a test function on
# many inputs drawn from it; when the test fails, Hypothesis *shrinks* the input to a simpler
# one that still fails, and replays it. Every strategy in `liquidref.testing` takes its
# randomness from Hypothesis (large arrays come from a NumPy generator whose seed Hypothesis
# draws), so shrinking and replay work for them too.
#
# To look at what a strategy produces, run a tiny "test" that only records its inputs:

# %%
def draw_examples(strategy, count: int) -> list:
    """``count`` values of ``strategy``, drawn the way a property test draws them."""
    seen = []

    @settings(max_examples=count, **PAGE_SETTINGS)
    @given(strategy)
    def record(value):
        seen.append(value)

    record()
    return seen


print("shapes():", [tuple(s) for s in draw_examples(shapes(), 8)])
for W in draw_examples(weight_matrices(4, 128), 6):
    absolute = np.abs(W.astype(np.float64))
    print(f"weight_matrices(4, 128): {str(W.dtype):<7}  max |W| {absolute.max():8.3g}  "
          f"median |W| {np.median(absolute):8.3g}  "
          f"zero rows {int((absolute.max(axis=1) == 0).sum())}")
for X in draw_examples(activations(3, 64), 3):
    per_token = np.abs(X.astype(np.float64)).max(axis=1)
    print(f"activations(3, 64): {X.dtype}, max |X| per token {per_token}")

# %% [markdown]
# The weight strategy mixes Gaussian, heavy-tailed Student-t, uniform and exact-tie grids, at
# scales from 1e-6 to 1e2, with outlier input channels, a single huge spike, all-zero rows and
# constant groups: each one a place where quantizers have been seen to break.
#
# `liquidquant_weights` goes one step further. Half of its draws are `quantize_weight` of such a
# matrix; the other half set the fields directly, over *everything the format allows*: any step
# `s` in 1..16, any offset `a` in 0..255 and any code with `q4 * s + a <= 255`, including
# "saturated" weights where every byte lane reaches its top. `quantize_weight` never stores an
# offset below 9 (its group minimum is at least -119), so it never makes the bytes 0..8, i.e.
# the weights -128..-120. A kernel reading the packed format must still handle every byte,
# since nothing stops someone from writing such a file. The figure compares the dequant bytes
# `u = q4 * s + a` the two kinds of draws reach:

# %%
def dequant_bytes(w: lr.LiquidQuantWeight) -> np.ndarray:
    """u = q4 * s + a for every weight: the byte the kernel's multiply-add produces."""
    steps = np.repeat(w.s.astype(int), w.group_size, axis=1)
    offsets = np.repeat(w.a.astype(int), w.group_size, axis=1)
    return (w.q4.astype(int) * steps + offsets).ravel()


from_float = np.concatenate([dequant_bytes(w) for w in
                             draw_examples(liquidquant_weights(16, 128, from_float=True), 40)])
direct = np.concatenate([dequant_bytes(w) for w in
                         draw_examples(liquidquant_weights(16, 128, from_float=False), 40)])
print(f"u from quantize_weight: {from_float.min()}..{from_float.max()}; "
      f"drawn field by field: {direct.min()}..{direct.max()}")

fig, ax = plt.subplots(figsize=(8, 3.2))
bins = np.arange(0, 257)
ax.hist(direct, bins=bins, color="tab:red", alpha=0.6, label="drawn field by field", log=True)
ax.hist(from_float, bins=bins, color="tab:blue", alpha=0.6, label="quantize_weight(W)", log=True)
ax.set(title="liquidquant_weights: dequant bytes u = q4 * s + a reached by its two kinds of draw",
       xlabel="u (the byte before the XOR)", ylabel="count (log)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# `quantized_activations(m, k)` gives the kernel's other input directly: int8 activations in
# [-127, 127] (uniform, small, or all at +-127, the accumulator's worst case) with float32 scales
# from 1e-6 to 1e2. `w4a8_problems()` bundles a consistent `(x_i8, s_x, w)` triple for
# `liquidref.gemm`.

# %%
for x_i8, s_x, w in draw_examples(w4a8_problems(), 5):
    print(f"w4a8_problems(): x_i8 {x_i8.shape} in [{x_i8.min(initial=0)}, {x_i8.max(initial=0)}], "
          f"s_x {s_x.min(initial=1):.1e}..{s_x.max(initial=1):.1e}, w {w.shape}, "
          f"steps {w.s.min()}..{w.s.max()}, offsets {w.a.min()}..{w.a.max()}")

# %% [markdown]
# ## A kernel of our own
#
# Here is the kernel to test, written like a GPU kernel would be: it never sees the
# `LiquidQuantWeight`, only the packed bytes the GPU reads (`lr.pack_weight`: 64 x 64 blocks of
# 2048 bytes of codes and 128 bytes of `(s, a)` metadata). It walks the blocks, decodes each one
# with the layout's public position functions `code_position` and `meta_position`,
# dequantizes with the LiquidQuant multiply-add and XOR, accumulates exactly in int32, and
# applies the scales once at the end.

# %%
# Where each weight of a 64 x 64 block lives in the packed bytes (computed once).
ROWS, COLS = np.meshgrid(np.arange(BLOCK_ROWS), np.arange(BLOCK_K), indexing="ij")
CODE_BYTE, CODE_IS_HIGH = lr.code_position(ROWS, COLS)  # byte 0..2047, low/high nibble
STEP_BYTE, OFFSET_BYTE = lr.meta_position(np.arange(BLOCK_ROWS))  # per row of the block


def dequant_block(codes: np.ndarray, meta: np.ndarray) -> np.ndarray:
    """One packed block (uint8 [2048] codes, uint8 [128] meta) -> int8 weights [64, 64]."""
    q4 = (codes[CODE_BYTE] >> (4 * CODE_IS_HIGH)) & Q4_MAX  # the nibble: a code 0..15
    s = meta[STEP_BYTE].astype(np.uint16)[:, None]
    a = meta[OFFSET_BYTE].astype(np.uint16)[:, None]
    u = (q4 * s + a).astype(np.uint8)  # never above 255 for a valid weight: no wrap
    return (u ^ np.uint8(XOR_MASK_BYTE)).view(np.int8)  # flip bit 7: u - 128 as int8


def scale_epilogue(acc: np.ndarray, s_x: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """int32 [M, N] -> fp16: float32(acc) * (s1 * s_x), the scale product rounded in float32."""
    scale = s1[None, :] * s_x[:, None]
    with np.errstate(over="ignore"):  # overflow to inf is part of the contract
        return (acc.astype(np.float32) * scale).astype(np.float16)


def my_gemm(x_i8, s_x, packed, dequant=dequant_block, epilogue=scale_epilogue) -> np.ndarray:
    """A blocked W4A8 GEMM on the packed layout: int8 [M, K], float32 [M] -> fp16 [M, N]."""
    acc = np.zeros((x_i8.shape[0], packed.n), np.int32)
    for i in range(packed.codes.shape[0]):  # a row block of 64 output features
        rows = slice(BLOCK_ROWS * i, BLOCK_ROWS * (i + 1))
        for j in range(packed.codes.shape[1]):  # a k block of 64 (one LiquidQuant group)
            w_block = dequant(packed.codes[i, j], packed.meta[i, j])
            x_block = x_i8[:, BLOCK_K * j:BLOCK_K * (j + 1)]
            acc[:, rows] += x_block.astype(np.int32) @ w_block.astype(np.int32).T
    return epilogue(acc, s_x, packed.s1)


# %% [markdown]
# ## The property test
#
# The property: for every valid input, `my_gemm` on the packed weight returns exactly the bytes
# of `lr.gemm` on the unpacked one. `w4a8_problems()` draws N from 1 to 16, but our kernel (like
# the GPU's) needs N to be a multiple of 64 to pack, so we build our own problem strategy from
# the public pieces with `st.composite`. The `min_m`/`max_m`/`n_choices` parameters will
# matter later.
#
# `assert_bit_exact(actual, expected)` compares dtype, shape and the raw bytes (so `-0.0` is not
# `0.0` and `inf` is not a large number), and says which element differs first.

# %%
@st.composite
def packable_problems(draw, min_m=0, max_m=8, n_choices=(64, 128)):
    """(x_i8, s_x, w) with N a multiple of 64, so that lr.pack_weight accepts w."""
    m, _, k = draw(shapes(min_m=min_m, max_m=max_m, max_groups=4))
    n = draw(st.sampled_from(n_choices))
    x_i8, s_x = draw(quantized_activations(m, k))
    return x_i8, s_x, draw(liquidquant_weights(n, k))


def run_property(kernel, problems, max_examples: int) -> dict:
    """Run the bit-exactness property of ``kernel`` on ``problems``; report what happened."""
    report = {"calls": 0, "first_failure": None, "error": None, "last": None}

    @settings(max_examples=max_examples, **PAGE_SETTINGS)
    @given(problems)
    def test_kernel_matches_oracle(problem):
        report["calls"] += 1
        report["last"] = problem  # after a failure, the last call is the shrunk example
        x_i8, s_x, w = problem
        try:
            assert_bit_exact(kernel(x_i8, s_x, lr.pack_weight(w)), lr.gemm(x_i8, s_x, w), "y")
        except AssertionError:
            report["first_failure"] = report["first_failure"] or report["calls"]
            raise

    try:
        test_kernel_matches_oracle()
    except AssertionError as error:
        report["error"] = error
    return report


def describe(name: str, report: dict) -> None:
    """Print the outcome of ``run_property``, with the shrunk counterexample if it failed."""
    if report["error"] is None:
        print(f"{name}: passed ({report['calls']} examples)")
        return
    x_i8, s_x, w = report["last"]
    print(f"{name}: FAILED at example {report['first_failure']}, "
          f"shrunk in {report['calls'] - report['first_failure']} more calls")
    print(f"  minimal counterexample: M = {x_i8.shape[0]}, N = {w.n}, K = {w.k}")
    print(f"  {str(report['error']).splitlines()[0]}")


good = run_property(my_gemm, packable_problems(), max_examples=100)
describe("my_gemm", good)

# %% [markdown]
# In a project this is a test file; the function is the test and pytest runs it (the
# repository's own `tests/conftest.py` sets the number of examples through Hypothesis
# profiles, `dev` and `ci`):
#
# ```python
# # tests/test_my_kernel.py
# from hypothesis import given
# import liquidref as lr
# from liquidref.testing import assert_bit_exact
#
# @given(packable_problems())
# def test_my_gemm_matches_oracle(problem):
#     x_i8, s_x, w = problem
#     assert_bit_exact(my_gemm(x_i8, s_x, lr.pack_weight(w)), lr.gemm(x_i8, s_x, w))
# ```
#
# ## A test must be able to fail: two broken kernels
#
# A passing test proves little until it has been seen to fail. Two plausible mistakes:
#
# 1. **The missing XOR.** Reading `u = q4 * s + a` as the int8 weight without flipping bit 7.
#    Every byte below 128 comes out 128 too large, and every byte from 128 up reads as a
#    negative number: the result is wrong almost everywhere.
# 2. **The scale product in float64.** Computing `acc * (s1 * s_x)` in float64 and rounding
#    once to fp16 looks *more* accurate than the contract's float32 product, but it is not the
#    contract: where the float32 path rounds twice (scale, then product) and lands on the
#    other side of an fp16 rounding boundary, the bytes differ. That happens to about one
#    output in 20 000.

# %%
def dequant_block_without_xor(codes: np.ndarray, meta: np.ndarray) -> np.ndarray:
    """BROKEN: forgets the XOR with 0x80 (the rotation back from a = 128 + min)."""
    q4 = (codes[CODE_BYTE] >> (4 * CODE_IS_HIGH)) & Q4_MAX
    u = q4 * meta[STEP_BYTE].astype(np.uint16)[:, None] + meta[OFFSET_BYTE][:, None]
    return u.astype(np.uint8).view(np.int8)


def scale_epilogue_float64(acc: np.ndarray, s_x: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """BROKEN: the scale product and the multiply in float64, one rounding to fp16."""
    scale = s1.astype(np.float64)[None, :] * s_x.astype(np.float64)[:, None]
    with np.errstate(over="ignore"):
        return (acc.astype(np.float64) * scale).astype(np.float16)


def kernel_without_xor(x_i8, s_x, packed):
    return my_gemm(x_i8, s_x, packed, dequant=dequant_block_without_xor)


def kernel_float64_scales(x_i8, s_x, packed):
    return my_gemm(x_i8, s_x, packed, epilogue=scale_epilogue_float64)


small = {name: run_property(kernel, packable_problems(), max_examples=100)
         for name, kernel in (("missing XOR", kernel_without_xor),
                              ("float64 scales", kernel_float64_scales))}
for name, report in small.items():
    describe(name, report)

# %% [markdown]
# The missing XOR is caught as soon as an example has a token, and Hypothesis shrinks the
# failure to the smallest problem it can find: one token, one 64 x 64 block. The message of
# `assert_bit_exact` names the first differing element and both values with their fp16 bit
# patterns.
#
# The float64 epilogue is the instructive case: its counterexample cannot shrink far, because
# only one output in thousands is wrong and a smaller problem rarely contains one. For the same
# reason it is found late, if at all. With problems of at most 8 tokens x 128 outputs, an example
# checks at most ~1000 outputs, and many of those are 0 (`M = 0`, zero rows) or overflow to inf,
# where both paths agree. How often does one example expose each bug?

# %%
def share_failing(kernel, problems, count: int) -> float:
    """The share of ``count`` drawn problems on which ``kernel`` differs from the oracle."""
    failing = 0
    for x_i8, s_x, w in draw_examples(problems, count):
        y = kernel(x_i8, s_x, lr.pack_weight(w))
        failing += not np.array_equal(y.view(np.uint16), lr.gemm(x_i8, s_x, w).view(np.uint16))
    return failing / count


wide_problems = packable_problems(min_m=16, max_m=64, n_choices=(128, 192, 256))
for label, problems in (("small problems (M <= 8, N <= 128)", packable_problems()),
                        ("wide problems (M 16..64, N 128..256)", wide_problems)):
    print(f"{label}: examples exposing the missing XOR "
          f"{share_failing(kernel_without_xor, problems, 60):.0%}, "
          f"the float64 scales {share_failing(kernel_float64_scales, problems, 60):.0%}")

# %% [markdown]
# A bug that only one example in many exposes may slip through a run of 100 examples, and a
# change elsewhere (in the strategy, in Hypothesis) can decide whether it does. The cure is not
# more luck but more outputs per example: the same property on wide problems.

# %%
wide = {name: run_property(kernel, wide_problems, max_examples=60)
        for name, kernel in (("my_gemm", my_gemm), ("float64 scales", kernel_float64_scales))}
for name, report in wide.items():
    describe(name, report)

# %% [markdown]
# Keep both: the small problems explore the edges (M = 0, a single token, one group) and shrink
# to readable counterexamples; the wide ones give rare rounding differences enough chances to
# show. The repository's own tests follow the same pattern, with every mutant kept as a fixture
# that the properties must catch (`tests/liquidref/mutants.py`).
#
# ## Check against the oracle
#
# The correct kernel passed every property; each broken one was caught by at least one; and,
# directly, on a layer of a realistic size:

# %%
assert good["error"] is None and wide["my_gemm"]["error"] is None
assert small["missing XOR"]["error"] is not None
assert wide["float64 scales"]["error"] is not None

rng = np.random.default_rng(2509_01229)
w = lr.quantize_weight((0.02 * rng.standard_t(df=5, size=(512, 1024))).astype(np.float16))
x_i8, s_x = lr.quantize_activation(rng.standard_normal((24, 1024)).astype(np.float16))
assert_bit_exact(my_gemm(x_i8, s_x, lr.pack_weight(w)), lr.gemm(x_i8, s_x, w))
print("my_gemm == liquidref.gemm, bit for bit, on 24 x 512 x 1024")
