# %% [markdown]
# # 1. LiquidQuant from scratch
#
# **What you will learn**
#
# - how LiquidQuant turns a float weight matrix into 4-bit codes in two levels: an int8 scale per
#   output row (level 1), then an unsigned 4-bit step and offset per group of 64 weights
#   (level 2);
# - why the stored offset is the group minimum *plus 128* (the "rotation"), and why a single XOR
#   with `0x80` turns each reconstructed byte back into the right int8 weight;
# - why the level-1 range stops at 119 and not at 127;
# - how the kernel dequantizes four weights at once with one multiply-add and one XOR on a
#   32-bit register, with no carry from one byte into the next;
# - how to check an implementation of your own against the oracle, bit for bit.
#
# Everything runs in NumPy on the CPU. The algorithm, for a weight `W` of shape `[N, K]`:
#
# ```text
# level 1, per row n:           s1[n] = max|W[n, :]| / 119
#                               q8    = clip(rint(W / s1), -119, 119)          int8 codes
# level 2, per row and group:   mn, mx = min(q8), max(q8)                      64 k per group
#                               s     = max(1, rint((mx - mn) / 15))           step 1..16
#                               q4    = clip(rint((q8 - mn) / s), 0, 15)       4-bit codes
#                               a     = 128 + mn                               stored offset
# dequant, in the kernel:       w_i8  = (q4 * s + a) XOR 0x80                  == q4 * s + mn
# GEMM:                         y     = float16(float32(x_i8 @ w_i8.T) * (s1 * s_x))
# ```

# %%
import matplotlib.pyplot as plt
import numpy as np

import liquidref as lr
from liquidref.constants import (
    ACT_LIMIT,
    GROUP_SIZE,
    OFFSET_BIAS,
    Q4_MAX,
    Q8_LIMIT,
    STEP_MAX,
    XOR_MASK_BYTE,
)

print(f"group size {GROUP_SIZE}, level-1 limit {Q8_LIMIT}, codes 0..{Q4_MAX}, steps 1..{STEP_MAX}")

# %% [markdown]
# ## A weight matrix that looks like a trained one
#
# Trained LLM weights are not uniform noise: the values of a row are heavy-tailed (a few weights
# are many standard deviations out), rows have different scales, and a handful of input
# channels carry much larger values than the rest. The matrix below is synthetic, built to have
# those three features: Student-t values (5 degrees of freedom), log-normal row scales, and four
# outlier input channels.

# %%
rng = np.random.default_rng(2509_01229)
N, K = 256, 1024
row_scale = np.exp(rng.normal(0.0, 0.35, size=(N, 1)))
W = 0.02 * row_scale * rng.standard_t(df=5, size=(N, K))
outlier_columns = rng.choice(K, size=4, replace=False)
W[:, outlier_columns] *= 6.0
W = W.astype(np.float16)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
left.hist(W.astype(np.float32).ravel(), bins=200, color="tab:blue", log=True)
left.set(title="all weights (log count)", xlabel="weight value", ylabel="count")
right.plot(np.abs(W.astype(np.float32)).max(axis=0), lw=0.6, color="tab:red")
right.set(title="max |W| of each input channel", xlabel="input channel k", ylabel="max |W[:, k]|")
fig.suptitle("A synthetic weight matrix with heavy tails and outlier channels")
plt.show()

# %% [markdown]
# ## Level 1: one int8 scale per output row
#
# Each row gets the symmetric scale `s1 = max|W[n, :]| / 119` and its weights become integers in
# `[-119, 119]`. The contract fixes the arithmetic: float32 division, `rint` (ties to even),
# and `s1 = 1` for a row of zeros. Here it is from scratch:

# %%
W32 = W.astype(np.float32)
amax = np.abs(W32).max(axis=1)
s1 = np.where(amax > 0, amax / np.float32(Q8_LIMIT), np.float32(1.0)).astype(np.float32)
q8 = np.clip(np.rint(W32 / s1[:, None]), -Q8_LIMIT, Q8_LIMIT).astype(np.int32)
print("q8 range:", q8.min(), "..", q8.max())
print("share of q8 codes with |q8| <= 20:", f"{np.mean(np.abs(q8) <= 20):.1%}")

# %% [markdown]
# Most of the int8 range is spent on the tails: the bulk of a row sits in a narrow band around
# zero. Level 2 exploits that. Each group of 64 consecutive weights of a row only needs to cover
# *its own* range `[mn, mx]`, which is usually much narrower than `[-119, 119]`.

# %% [markdown]
# ## Level 2: an unsigned 4-bit step per group
#
# Shift each group so its minimum becomes 0 (`q8 - mn` lies in `[0, mx - mn]`), then quantize
# that unsigned range with 16 levels of step `s = rint((mx - mn) / 15)`, at least 1. Because
# `mx - mn <= 238`, the step is at most 16. No zero point is needed: the shift is stored instead,
# as `a = 128 + mn`.

# %%
groups = q8.reshape(N, K // GROUP_SIZE, GROUP_SIZE)
mn = groups.min(axis=2)
mx = groups.max(axis=2)
s = np.maximum(1, np.rint((mx - mn) / Q4_MAX)).astype(np.int32)
q4 = np.clip(np.rint((groups - mn[..., None]) / s[..., None]), 0, Q4_MAX).astype(np.int32)
a = OFFSET_BIAS + mn

print("row 0, first 6 groups:")
print("  mn  ", mn[0, :6])
print("  mx  ", mx[0, :6])
print("  s   ", s[0, :6])
print("  a   ", a[0, :6])

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [2, 1]})
row, k_shown = 0, 2 * GROUP_SIZE
k = np.arange(k_shown)
left.plot(k, q8[row, :k_shown], ".", ms=3, color="tab:blue", label="q8 (level 1)")
recon = (q4 * s[..., None] + mn[..., None]).reshape(N, K)
left.step(k, recon[row, :k_shown], where="mid", lw=0.8, color="tab:orange", label="q4 * s + mn")
for g in range(k_shown // GROUP_SIZE):
    span = slice(g * GROUP_SIZE, (g + 1) * GROUP_SIZE)
    left.hlines([mn[row, g], mx[row, g]], span.start, span.stop - 1, colors="gray", lw=0.8)
    left.axvline(span.start, color="lightgray", lw=0.8)
left.set(title="row 0: each group covers only its own [mn, mx]", xlabel="k", ylabel="int8 value")
left.legend(loc="upper right", fontsize=8)
right.hist(s.ravel(), bins=np.arange(0.5, STEP_MAX + 1.5), color="tab:green", rwidth=0.9)
right.set(title="level-2 steps s over all groups", xlabel="s", ylabel="groups")
plt.show()

# %% [markdown]
# Our from-scratch quantizer should agree with the oracle, `liquidref.quantize_weight`, on every
# byte:

# %%
w = lr.quantize_weight(W)
assert np.array_equal(w.q4, q4.reshape(N, K).astype(np.uint8))
assert np.array_equal(w.s, s.astype(np.uint8)) and np.array_equal(w.a, a.astype(np.uint8))
assert np.array_equal(w.s1.view(np.uint32), s1.view(np.uint32))
print(w.shape, "codes", w.q4.dtype, "| steps/offsets", w.s.shape, "| bits per weight:",
      f"{w.bits_per_weight():.3f}")

# %% [markdown]
# ## Dequantization, and why the naive version breaks
#
# The kernel must turn `q4` back into the int8 weight `q4 * s + mn` on the GPU's 32-bit integer
# units, four weights (four bytes) per register. The multiplication is harmless:
# `q4 * s <= 15 * 16 = 240` fits a byte. The addition of a *negative* `mn` is not. The paper's
# own example is a group with `mn = -104`, `mx = 119`, so `s = rint(223 / 15) = 15`, and a
# code `q4 = 15`. The right answer is `15 * 15 - 104 = 121`. In a byte lane, `-104` is the bit
# pattern of 152, and `225 + 152 = 377` does not fit in 8 bits: the ninth bit carries into the
# neighbouring weight.
#
# LiquidQuant stores `a = 128 + mn = 24` instead of `mn`. Then `u = q4 * s + a = 249` stays an
# unsigned byte, and flipping bit 7 (`XOR 0x80`, i.e. subtracting 128 modulo 256) leaves the
# byte whose two's-complement reading is `249 - 128 = 121`.

# %%
def bits(value: int) -> str:
    """A value as 9 bits: the carry bit, a space, then the byte."""
    text = format(value & 0x1FF, "09b")
    return f"{text[0]} {text[1:]}"


example_q4, example_mn, example_mx = 15, -104, 119
example_s = max(1, round((example_mx - example_mn) / Q4_MAX))
product = example_q4 * example_s
naive = product + (example_mn & 0xFF)
u = product + OFFSET_BIAS + example_mn
print(f"s = {example_s}, q4 * s = {product}, expected weight {product + example_mn}")
print(f"naive:   {bits(product)}  (q4*s)  + {bits(example_mn & 0xFF)}  (mn as a byte)"
      f"  = {bits(naive)}  <- carry out of the lane")
print(f"LQQ:     {bits(product)}  (q4*s)  + {bits(OFFSET_BIAS + example_mn)}  (a = 128 + mn)"
      f"  = {bits(u)}  (u = {u}, no carry)")
flipped = u ^ XOR_MASK_BYTE
print(f"u ^ 0x80 = {bits(flipped)} -> as int8: {np.array([flipped], np.uint8).view(np.int8)[0]}")

# %% [markdown]
# ### Why the XOR works for every byte
#
# Think of the 256 byte values as a ring. Reading a byte as unsigned (0..255) or as
# two's-complement signed (-128..127) are two labellings of the same ring, and they differ by
# a rotation of 128: flipping bit 7 of `u` gives the byte whose *signed* value is `u - 128`,
# for every `u` in `[0, 255]`. So as long as `u = q4 * s + a` stays inside `[0, 255]`, the XOR
# returns exactly `q4 * s + a - 128 = q4 * s + mn`. The whole method rests on that one
# condition, and the check is cheap, so here it is for all 256 bytes:

# %%
all_u = np.arange(256)
as_int8 = (all_u ^ XOR_MASK_BYTE).astype(np.uint8).view(np.int8).astype(np.int32)
assert np.array_equal(as_int8, all_u - OFFSET_BIAS)

fig, (ring, line) = plt.subplots(1, 2, figsize=(10, 4), subplot_kw={})
ring.remove()
ring = fig.add_subplot(1, 2, 1, projection="polar")
angle = 2 * np.pi * all_u / 256
ring.scatter(angle, np.full(256, 1.0), c=all_u, cmap="viridis", s=12, label="unsigned u")
ring.scatter(angle, np.full(256, 0.7), c=as_int8, cmap="viridis", s=12, label="signed u ^ 0x80")
ring.set_yticks([]), ring.set_xticks(2 * np.pi * np.arange(0, 256, 32) / 256)
ring.set_xticklabels([str(v) for v in range(0, 256, 32)])
ring.set_title("the byte ring: outer = u, inner = int8(u ^ 0x80)\n(same colour = same value)",
               fontsize=9)
line.plot(all_u, as_int8, color="tab:purple")
line.set(title="int8(u ^ 0x80) = u - 128 on [0, 255]", xlabel="u = q4 * s + a (unsigned byte)",
         ylabel="weight as int8")
line.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ### Why 119: the condition holds for every possible group
#
# `u` is largest for the top code: `u_max = q4_max * s + 128 + mn`. Rounding `q4` to nearest
# can overshoot `mx` by up to `s / 2 <= 8`, so `u_max <= mx + 8 + 128`, which is at most 255
# exactly when `mx <= 119`. That is where the level-1 limit comes from: `119 = 127 - 16 / 2`.
# The figure computes `u_max` for every pair `(mn, mx)` of a group, once with the limit 119 and
# once with the full int8 range, and colours the headroom `255 - u_max`.

# %%
def worst_u(limit: int) -> np.ndarray:
    """u_max = q4_max * s + 128 + mn for every (mn, mx) with -limit <= mn <= mx <= limit."""
    values = np.arange(-limit, limit + 1)
    grid_mn, grid_mx = np.meshgrid(values, values, indexing="ij")
    step = np.maximum(1, np.rint((grid_mx - grid_mn) / Q4_MAX))
    top_code = np.clip(np.rint((grid_mx - grid_mn) / step), 0, Q4_MAX)
    u_max = top_code * step + OFFSET_BIAS + grid_mn
    return np.where(grid_mn <= grid_mx, u_max, np.nan)


ZOOM_FROM = 96  # u_max only gets near 255 for large mx: show mx >= 96
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
for ax, limit in zip(axes, (Q8_LIMIT, ACT_LIMIT)):
    headroom = 255 - worst_u(limit)[:, ZOOM_FROM + limit:]
    image = ax.imshow(headroom, origin="lower", cmap="RdBu", vmin=-12, vmax=12, aspect="auto",
                      extent=(ZOOM_FROM - 0.5, limit + 0.5, -limit - 0.5, limit + 0.5))
    over = int(np.sum(headroom < 0))
    ax.set(title=f"level-1 limit {limit}: {over} (mn, mx) pairs carry", xlabel="group max mx",
           ylabel="group min mn")
fig.colorbar(image, ax=axes, label="255 - u_max (red: the lane carries)")
plt.show()
print("worst u with limit 119:", int(np.nanmax(worst_u(Q8_LIMIT))))
print("worst u with limit 127:", int(np.nanmax(worst_u(ACT_LIMIT))))
assert np.nanmax(worst_u(Q8_LIMIT)) <= 255 < np.nanmax(worst_u(ACT_LIMIT))

# %% [markdown]
# ## Four weights per instruction
#
# On the GPU a 32-bit register holds four codes, one per byte lane. Multiply the register by
# `s`, add `a` replicated into all four bytes (`a * 0x01010101`), and XOR with `0x80808080`:
# since no lane ever exceeds 255, no lane carries into the next, and the four bytes are the four
# int8 weights. `liquidref.dequant_word` is that computation in uint32 arithmetic:

# %%
codes = w.q4[0, :4]
word = np.ascontiguousarray(codes).view(np.uint32)[0]
g_s, g_a = int(w.s[0, 0]), int(w.a[0, 0])
out = lr.dequant_word(word, g_s, g_a)
print(f"codes (lane 0 first)  {codes.tolist()}   s = {g_s}, a = {g_a}")
print(f"word                  0x{int(word):08x}")
print(f"word * s              0x{int(word) * g_s:08x}")
print(f"  + a * 0x01010101    0x{int(word) * g_s + g_a * 0x01010101:08x}")
print(f"  ^ 0x80808080        0x{int(out):08x}")
print("bytes as int8        ", np.array([out], np.uint32).view(np.int8).tolist())
print("q4 * s + mn          ", (codes.astype(int) * g_s + g_a - OFFSET_BIAS).tolist())

# %% [markdown]
# `liquidref.dequantize_int8_packed` runs that word-level dequant over the whole matrix;
# `liquidref.dequantize_int8` computes it byte by byte. They agree because no lane carries.

# %%
w_i8 = lr.dequantize_int8(w)
assert np.array_equal(lr.dequantize_int8_packed(w), w_i8)
assert np.array_equal(w_i8.astype(np.int32), recon)  # == q4 * s + mn everywhere
print("int8 weight range after dequant:", w_i8.min(), "..", w_i8.max())

# %% [markdown]
# ## What the two levels cost in accuracy
#
# The float weight the GEMM effectively uses is `w_i8 * s1`. Its error against `W` has two
# sources: level-1 rounding (step `s1`) and level-2 rounding (step `s * s1`, up to `s / 2` codes
# off). Below, the error of one group, and the error of a whole GEMM output against float math.

# %%
W_hat = w_i8.astype(np.float32) * w.s1[:, None]
error = W_hat - W32
relative = np.linalg.norm(error) / np.linalg.norm(W32)
print(f"weight error ||W_hat - W|| / ||W|| = {relative:.4f}")

X = rng.standard_normal((16, K)).astype(np.float16)
y = lr.w4a8_linear(X, w)
y_float = X.astype(np.float32) @ W32.T
print(f"GEMM error  ||y - X W^T|| / ||X W^T|| = "
      f"{np.linalg.norm(y.astype(np.float32) - y_float) / np.linalg.norm(y_float):.4f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
group = slice(0, GROUP_SIZE)
left.plot(W32[0, group], "o", ms=3, label="W")
left.plot(W_hat[0, group], "x", ms=4, label="w_i8 * s1")
left.set(title="row 0, group 0: original and reconstructed", xlabel="k in the group",
         ylabel="weight")
left.legend(fontsize=8)
right.hist((error / w.s1[:, None]).ravel(), bins=np.arange(-9, 9.01, 0.25), color="tab:gray")
right.set(title="error in units of s1 (all weights)", xlabel="(W_hat - W) / s1", ylabel="count")
plt.show()

# %% [markdown]
# ## Check against the oracle
#
# The last step of every tutorial: compare with `liquidref`, bit for bit. Here the whole W4A8
# linear layer, written from scratch on top of our own level-1/level-2 codes: per-token int8
# activations, an exact integer GEMM, and the float32 epilogue with one rounding to float16.
# The comparison is on the float16 *bytes*, not `allclose`.

# %%
X32 = X.astype(np.float32)
x_amax = np.abs(X32).max(axis=1)
s_x = np.where(x_amax > 0, x_amax / np.float32(ACT_LIMIT), np.float32(1.0)).astype(np.float32)
x_i8 = np.clip(np.rint(X32 / s_x[:, None]), -ACT_LIMIT, ACT_LIMIT).astype(np.int64)
acc = x_i8 @ recon.astype(np.int64).T  # exact integers
y_ours = (acc.astype(np.float32) * (s1[None, :] * s_x[:, None])).astype(np.float16)

assert np.array_equal(y_ours.view(np.uint16), lr.w4a8_linear(X, w).view(np.uint16))
print("from-scratch LiquidQuant W4A8 == liquidref.w4a8_linear, bit for bit:", y_ours.shape)
