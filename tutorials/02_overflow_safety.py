# %% [markdown]
# # 2. Overflow safety in the emulator
#
# **What you will learn**
#
# - how the warp-level emulator (the `emulator` package) runs the kernel's dequant as SASS-like
#   instructions, lane by lane, and records the exact value of every byte lane;
# - how one 32-bit register of packed codes goes through LiquidQuant's `IMAD` + `XOR`, byte by
#   byte, and why no byte ever spills into its neighbour;
# - why the "obvious" dequant `q4 * s + min` is wrong on almost every real group, and the
#   smallest input that breaks it;
# - how QServe's QoQ avoids carries with a per-byte add (`__vadd4`) but still needs its
#   *protective range* to keep every weight inside int8;
# - how to check a whole scheme exhaustively: every `(q4, s, offset)` its quantizer can produce,
#   executed, counted and drawn as a heatmap.
#
# Tutorial 1 derived the rotation by 128 on paper. Here we do not trust the paper: we run the
# instructions. The emulator executes a *program* (a straight-line list of instructions for one
# thread) on many lanes at once, with 32-bit wrap-around exactly as the GPU's integer units.
# Instructions that are meant to work on four independent bytes are marked, and the tracing
# executor records, for each of them, the exact unbounded value of every byte lane. A lane value
# above 255 is a *carry*: in a real 32-bit register its ninth bit lands in the next byte.
#
# ```text
# a 32-bit register, little-endian byte lanes (what numpy's .view(np.uint8) shows, lane 0 first)
#
#   bits   31 ........ 24 | 23 ........ 16 | 15 ......... 8 | 7 .......... 0
#          +--------------+----------------+----------------+---------------+
#          |    lane 3    |     lane 2     |     lane 1     |    lane 0     |
#          +--------------+----------------+----------------+---------------+
#                        ^                ^                ^
#                 a carry out of lane i lands in bit 0 of lane i + 1
# ```

# %%
import matplotlib.pyplot as plt
import numpy as np

import liquidref as lr
from emulator import fragments, instruction_table, isa, machine, overflow, programs
from liquidref.baselines import (
    qoq_dequant_word,
    qoq_dequantize_exact,
    qoq_dequantize_int8,
    qoq_scaled_zeros,
    quantize_qoq,
    vadd4,
)
from liquidref.constants import (
    BYTE_BROADCAST,
    GROUP_SIZE,
    OFFSET_BIAS,
    Q8_LIMIT,
    QOQ_GROUP_SIZE,
    XOR_MASK_BYTE,
)

lqq = programs.lqq_dequant_program()
print(f"{lqq.name}: {len(lqq)} instructions for 8 weights, inputs {list(lqq.inputs)}")
print(lqq.listing())

# %% [markdown]
# That is LiquidQuant's whole dequant of one packed word `P` of eight 4-bit codes: one shift and
# two masks split the eight nibbles into two registers of four bytes (`lo` and `hi`), then
# each register gets one `IMAD` (`codes * s + A`, with `A = a * 0x01010101`, the offset in all
# four bytes) and one `LOP3` that XORs `0x80808080`. `R0` is `P`; `R1`/`R2` are `s` and `A` for
# the low nibbles, `R3`/`R4` for the high nibbles.
#
# ```text
#   P  = [ c7 c6 | c5 c4 | c3 c2 | c1 c0 ]     byte i holds two codes: (low nibble, high nibble)
#   lo = P & 0x0F0F0F0F          -> [ c6 | c4 | c2 | c0 ]   (the low nibbles, one per byte)
#   hi = (P >> 4) & 0x0F0F0F0F   -> [ c7 | c5 | c3 | c1 ]   (the high nibbles)
# ```
#
# ## One register, lane by lane
#
# We quantize a weight matrix (the same heavy-tailed synthetic kind as in tutorial 1), take a
# group with a strongly negative minimum (where the trouble will be), and put eight of its codes
# into one word: the low nibbles hold codes k..k+3 of the row, the high nibbles codes k+4..k+7.
# (The word program does not care which weights the nibbles are; tutorial 3 shows the order the
# real kernel uses.)

# %%
rng = np.random.default_rng(2509_01229)
N, K = 256, 1024
W = (0.02 * np.exp(rng.normal(0, 0.35, (N, 1))) * rng.standard_t(df=5, size=(N, K)))
W = W.astype(np.float16)
w = lr.quantize_weight(W)

mn_all = w.a.astype(np.int64) - OFFSET_BIAS  # group minima, [N, K / 64]
row, group = np.unravel_index(np.argmin(mn_all), mn_all.shape)
s, a = int(w.s[row, group]), int(w.a[row, group])
k0 = GROUP_SIZE * group + 4 * int(np.argmax(w.q4[row, GROUP_SIZE * group:][:GROUP_SIZE:4]))
codes = w.q4[row, k0:k0 + 8]
P = int((codes[:4] | (codes[4:] << 4)).view(np.uint32)[0])  # 4 bytes, lane 0 = k0 and k0+4
print(f"row {row}, group {group}: mn = {a - OFFSET_BIAS}, s = {s}, a = 128 + mn = {a}")
print(f"codes k{k0}..k{k0 + 7}: {codes.tolist()}   packed word P = 0x{P:08x}")

# %% [markdown]
# Now set the program's inputs on one lane, run the tracing executor, and print every
# instruction with the register it wrote, byte by byte (lane 3 on the left, as in the hex
# number). For the two `IMAD`s the trace also gives the *exact* value of each byte lane,
# `code * s + a` computed without any wrap-around: that is the number that must stay below 256.

# %%
def lanes(word: int) -> str:
    """A 32-bit word as its four byte lanes in hex, lane 3 first: 'f9 18 81 90'."""
    return " ".join(f"{(word >> (8 * i)) & 0xFF:02x}" for i in (3, 2, 1, 0))


# The input register holding the per-byte offset: LiquidQuant's A = a * 0x01010101, the naive
# scheme's M = (mn & 0xFF) * 0x01010101, QoQ's Z = (-z * s & 0xFF) * 0x01010101.
OFFSET_INPUT = {"lqq": "A", "naive": "M", "qoq": "Z"}


def set_inputs(program, regs, P, s, offset_byte):
    """Preset a word program's inputs (scalars or one value per lane); same group for lo and hi."""
    broadcast = (np.asarray(offset_byte, np.uint32) * BYTE_BROADCAST).astype(np.uint32)
    regs[:, program.inputs["P"]] = P
    for half in ("lo", "hi"):
        regs[:, program.inputs[f"s_{half}"]] = s
        regs[:, program.inputs[f"{OFFSET_INPUT[program.name]}_{half}"]] = broadcast


def run_word(program, P, s, offset_byte):
    """Run a word program on one lane; return (registers [n_regs], trace)."""
    regs = machine.new_registers(program, 1)
    set_inputs(program, regs, P, s, offset_byte)
    regs, tr = machine.trace(program, regs)
    return regs[0], tr


def show_run(program, regs, tr):
    for i, row_code in enumerate(program.code):
        text = isa.format_instruction(row_code)
        result = int(regs[row_code[isa.F_DST]])
        line = f"  {text:<44} -> {lanes(result)}"
        if row_code[isa.F_CHECK] != isa.CHECK_NONE:
            exact = tr.lane_value[i, 0][::-1].tolist()  # lane 3 first
            line += f"   exact lanes {exact}" + ("  CARRY" if tr.carry[i, 0].any() else "")
        print(line)


print(f"inputs: P = {lanes(P)}, s = {s}, A = {lanes(a * BYTE_BROADCAST)}")
regs, tr = run_word(lqq, P, s, a)
show_run(lqq, regs, tr)
out_lo, out_hi = (int(regs[r]) for r in lqq.outputs["weights"])
got = np.array([out_lo, out_hi], np.uint32).view(np.int8).reshape(2, 4)
intended = codes.reshape(2, 4).astype(int) * s + a - OFFSET_BIAS  # q4 * s + mn
print("weights as int8 (lo, hi; lane 0 first):", got.tolist())
print("q4 * s + mn                           :", intended.tolist())

# %% [markdown]
# Every exact lane value stays at or below 255, so each `IMAD` is really four independent byte
# operations; the XOR then moves each byte from the unsigned reading `u` to the signed weight
# `u - 128`. The same four bytes come out of `liquidref.dequant_word`, the oracle's model of
# those two instructions:

# %%
for codes4, result in ((codes[:4], out_lo), (codes[4:], out_hi)):
    assert int(lr.dequant_word(codes4.view(np.uint32)[0], s, a)) == result
print("emulated IMAD + LOP3 == liquidref.dequant_word on both registers")

# %% [markdown]
# ## The naive scheme: `q4 * s + min`, no rotation
#
# Why not store the group minimum itself and skip the XOR? `mn` is negative for most groups, so
# in a byte it is the two's-complement pattern `mn & 0xFF = 256 + mn`. The lane computes
# `q4 * s + 256 + mn`, which is at least 256 exactly when the intended weight `q4 * s + mn` is
# `>= 0`. Modulo 256 the lane itself is then still right, but its ninth bit is *not* discarded:
# it is added to the next lane. So the naive scheme is wrong whenever a group with a negative
# minimum holds a non-negative weight in any lane but the top one, which is nearly every group of
# a trained weight.
#
# The emulator's `naive_dequant_program` is LiquidQuant's program minus the XOR, fed the
# two's-complement minimum `M = (mn & 0xFF) * 0x01010101`. Same register as above:

# %%
naive = programs.naive_dequant_program()
mn_byte = (a - OFFSET_BIAS) & 0xFF
regs_naive, tr_naive = run_word(naive, P, s, mn_byte)
show_run(naive, regs_naive, tr_naive)
got_naive = np.array([int(regs_naive[r]) for r in naive.outputs["weights"]], np.uint32)
print("naive weights (lo, hi; lane 0 first):", got_naive.view(np.int8).reshape(2, 4).tolist())
print("intended                            :", intended.tolist())

# %% [markdown]
# Each lane marked `CARRY` went past 255 (its exact value is printed), and the lane above it
# reads one more than intended; a carry out of lane 3 leaves the register and is simply lost.
#
# The exhaustive search below (`emulator.overflow.analyze`) orders the failures and reports the
# smallest one. It is as innocent as a group can be: the group `[-1, 0]`, step 1, code 1, and
# intended weight 0. `1 * 1 + 0xFF = 0x100` in every lane, so each lane passes a 1 to the next:

# %%
results = {name: overflow.analyze(name) for name in overflow.SCHEMES}
ce = results["naive"].counterexample
print(f"minimal naive failure: q4 = {ce['q4']}, s = {ce['s']}, group [{ce['group_min']}, "
      f"{ce['group_max']}], min byte 0x{ce['offset_byte']:02x}, intended weight "
      f"{ce['intended_weight']}")
regs_min, tr_min = run_word(naive, ce["q4"] * 0x11111111, ce["s"], ce["offset_byte"])
show_run(naive, regs_min, tr_min)
print(f"result {lanes(int(regs_min[naive.outputs['weights'][0]]))}   "
      f"intended {ce['intended_register'][2:]}  (lanes 1..3 are off by one)")

# %% [markdown]
# How often does this bite on a real weight? Run both programs over *every* word of our
# 256 x 1024 matrix (32 768 words, one per emulator lane) and compare with the oracle:

# %%
def pack_rows(q4):
    """uint8 [N, K] codes -> uint32 [N, K / 8] words: low nibbles k..k+3, high nibbles k+4..k+7."""
    eight = q4.reshape(q4.shape[0], -1, 2, 4).astype(np.uint32)
    words = eight[:, :, 0] | (eight[:, :, 1] << 4)
    return (words << (8 * np.arange(4, dtype=np.uint32))).sum(axis=2, dtype=np.uint32)


def run_matrix(program, offset_bytes):
    """Run a word program over every word of w; return the int8 weights [N, K]."""
    words = pack_rows(w.q4).ravel()
    per_word = np.repeat(np.arange(w.s.size), GROUP_SIZE // 8)  # group of each word
    regs = machine.new_registers(program, words.size)
    set_inputs(program, regs, words, w.s.ravel()[per_word], offset_bytes.ravel()[per_word])
    machine.execute(program, regs)
    lo, hi = (np.ascontiguousarray(regs[:, r]).view(np.int8).reshape(-1, 4)
              for r in program.outputs["weights"])
    return np.stack([lo, hi], axis=1).reshape(w.shape)  # k..k+3 then k+4..k+7


expected = lr.dequantize_int8(w)
emulated_lqq = run_matrix(lqq, w.a)
emulated_naive = run_matrix(naive, w.a ^ XOR_MASK_BYTE)  # a ^ 0x80 = (mn & 0xFF)
wrong = emulated_naive != expected
error = emulated_naive.astype(int) - expected
assert np.array_equal(emulated_lqq, expected)
print(f"LiquidQuant program: all {expected.size} weights equal liquidref.dequantize_int8")
print(f"naive program: {wrong.mean():.1%} of weights wrong, in "
      f"{wrong.reshape(N, -1, GROUP_SIZE).any(axis=2).mean():.1%} of groups; errors "
      f"{dict(zip(*map(np.ndarray.tolist, np.unique(error[wrong], return_counts=True))))}")

# %% [markdown]
# Every group straddles zero, so every group is hit, and every error is `+1`: a carry arrived
# from the lane below. (Only a lane holding 127 would wrap to -128 instead.) An off-by-one in a
# large share of the weights is the kind of bug that shows up as "slightly worse perplexity",
# never as a crash; the emulator makes it visible.
#
# ## QoQ: a per-byte add, and a protective range
#
# QServe's QoQ quantizes the groups differently: an asymmetric 4-bit code with a zero point `z`,
# dequantized as `(q4 - z) * s = q4 * s - z * s`. Its kernel multiplies four codes with one
# `IMUL` (each lane `q4 * s <= 240`, no carry) and then adds the stored *scaled zero*
# `-z * s` to every byte with `__vadd4`, a per-byte add that wraps each lane modulo 256 and never
# carries. That avoids the naive scheme's bug, but `__vadd4` is not a hardware instruction on
# Hopper: `ptxas` expands it into five.

# %%
qoq = programs.qoq_dequant_program()
print(qoq.listing())
print("instructions per 8 weights (unpack + dequant): " + ", ".join(
    f"{name} {row['unpack']} + {row['dequant']} = {row['total']}"
    for name, row in instruction_table().items()))

# %% [markdown]
# The emulator's ISA spells `__vadd4` the way `cuobjdump` shows it: mask the low seven bits of
# both operands (`0x7f7f7f7f`), add them (each lane at most 254, so *this* add cannot carry),
# and XOR bit 7 of each lane back in. Eight weights cost 15 instructions instead of
# LiquidQuant's 7. Replacing it with one 32-bit `IADD` (the `qoq_iadd` row) is as cheap as
# LiquidQuant but carries like the naive scheme.
#
# The per-byte add keeps the lanes apart, but it cannot make a value outside `[-128, 127]` fit:
# it just wraps it. QoQ's zero point is *rounded*, so the reconstruction can overshoot the group's
# maximum (or undershoot its minimum) by up to `s / 2`. QServe therefore limits level 1 to
# `[-119, 119]` (the protective range), leaving 8 codes of headroom. Without it, a group whose
# level-1 values span `[-113, 127]` gets `s = 16`, `z = 7`, and the top code gives
# `(15 - 7) * 16 = 128`:

# %%
row_values = np.zeros((1, QOQ_GROUP_SIZE), np.float32)
row_values[0, :16] = np.linspace(-113, 127, 16)  # level-1 scale is exactly 1 with limit 127
for protective in (False, True):
    q = quantize_qoq(row_values, protective_range=protective)
    exact = qoq_dequantize_exact(q)
    kernel = qoq_dequantize_int8(q)
    top = int(np.argmax(exact))
    print(f"protective range {protective!s:<5}: s = {int(q.s[0, 0])}, z = {int(q.z[0, 0])}, "
          f"exact weights {exact.min()}..{exact.max()}, kernel's int8 at the top code "
          f"{kernel[0, top]} (exact {exact[0, top]})")

# %% [markdown]
# Without the protective range the intended weight 128 comes out of `vadd4` as -128: the
# largest positive weight of the group turns into the most negative one. Here is that lane
# through `liquidref.baselines.qoq_dequant_word` and `vadd4` directly:

# %%
q = quantize_qoq(row_values, protective_range=False)
zero_byte = int(qoq_scaled_zeros(q).view(np.uint8)[0, 0])
word = 15 * BYTE_BROADCAST  # the top code in all four lanes
product = word * int(q.s[0, 0])
print(f"codes {lanes(word)} * s {int(q.s[0, 0])} = {lanes(product)}; "
      f"scaled zero -z*s = {-int(q.z[0, 0]) * int(q.s[0, 0])} = byte 0x{zero_byte:02x}")
summed = int(vadd4(product, zero_byte * BYTE_BROADCAST))
assert summed == int(qoq_dequant_word(word, int(q.s[0, 0]), zero_byte))
print(f"vadd4 -> {lanes(summed)} = int8 {np.array([summed], np.uint32).view(np.int8).tolist()}"
      f" instead of 128 (not representable)")

# %% [markdown]
# ## Every case, executed
#
# `emulator.overflow` does not sample. For LiquidQuant it runs `liquidref.quantize_weight` on
# every group `(mn, mx)` the contract allows (`-119 <= mn <= mx <= 119`), collects every code the
# group can produce, and runs every distinct `(q4, s, offset)` triple through the scheme's
# program, one triple per emulator lane, with the code in all eight nibbles. QoQ's domain comes
# from `liquidref.baselines.quantize_qoq` the same way (over `[-127, 127]` without the protective
# range). A triple *fails* if some byte lane carries or the output byte is not the intended
# weight.

# %%
print(f"{'scheme':<17}{'triples':>8}{'carries':>9}{'wrong':>7}{'max lane':>10}")
for name, r in results.items():
    print(f"{name:<17}{len(r.triples):>8}{r.carry_count:>9}{int(r.wrong.sum()):>7}"
          f"{int(r.max_lane.max()):>10}")
ce = results["qoq_unprotected"].counterexample
print(f"minimal QoQ failure without the protective range: q4 = {ce['q4']}, s = {ce['s']}, "
      f"group [{ce['group_min']}, {ce['group_max']}], intended {ce['intended_weight']}, "
      f"kernel byte {ce['result_register'][-2:]} = "
      f"{np.int8(int(ce['result_register'], 16) & 0xFF)}")

# %% [markdown]
# Reading the table:
#
# - **LiquidQuant**: no failure out of all 30 284 triples; the largest lane value is 254, one
#   below the limit. This is the proof of tutorial 1's bound, by execution.
# - **naive**: 8 224 triples carry, and every carry is a wrong weight.
# - **QoQ** (with `vadd4`, protective range): no failure, but 15 instructions per 8 weights.
#   Its "max lane" is that of the `IMUL`, `q4 * s <= 225`.
# - **QoQ without the protective range**: no lane carries (vadd4 keeps lanes apart), but 17
#   triples give a weight outside int8, some below -128 (the rounded zero point overshoots the
#   minimum) and some above 127.
# - **QoQ with a plain IADD**: the cheap version of QoQ carries just like the naive scheme.
#
# ## Heatmaps over the group plane
#
# Each group is a point `(mn, mx)` of its level-1 values. The four panels colour that plane:
# LiquidQuant's headroom `255 - max(q4 * s + a)` over the group's codes (never negative), and,
# for the failing schemes, how many of the group's codes fail. `OverflowResult.per_pair` reduces
# the per-triple results to one number per group.

# %%
def group_image(result, values):
    """Per-group values on the (mn, mx) plane: [mx, mn] image with NaN outside the domain."""
    limit = result.domain.limit
    image = np.full((2 * limit + 1, 2 * limit + 1), np.nan)
    image[result.domain.mx + limit, result.domain.mn + limit] = values
    return image, (-limit - 0.5, limit + 0.5, -limit - 0.5, limit + 0.5)


fig, axes = plt.subplots(2, 2, figsize=(11, 10), layout="constrained")
r = results["lqq"]
headroom = 255 - r.per_pair(r.max_lane, np.maximum)
image, extent = group_image(r, headroom)
shown = axes[0, 0].imshow(image, origin="lower", extent=extent, cmap="viridis")
axes[0, 0].set_title(f"LiquidQuant: headroom 255 - max(q4*s + a)\nsmallest {int(headroom.min())}"
                     f" (>= 0: no carry anywhere)", fontsize=10)
fig.colorbar(shown, ax=axes[0, 0], shrink=0.8, label="headroom")
panels = (("naive", "naive q4*s + min (no rotation)"),
          ("qoq_iadd", "QoQ with a 32-bit IADD instead of vadd4"))
for ax, (name, title) in zip((axes[0, 1], axes[1, 1]), panels):
    r = results[name]
    image, extent = group_image(r, r.per_pair(r.failures.astype(np.int64)))
    shown = ax.imshow(image, origin="lower", extent=extent, cmap="magma_r", vmin=0, vmax=16)
    ax.set_title(f"{title}\n{r.failure_count} of {len(r.triples)} triples fail", fontsize=10)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="failing codes of the group")
ax = axes[1, 0]
r = results["qoq_unprotected"]
failing = r.per_pair(r.failures.astype(np.int64)) > 0
image, extent = group_image(r, np.ones(r.domain.mn.size))  # the domain, in light grey
ax.imshow(image, origin="lower", extent=extent, cmap="Greys", vmin=0, vmax=8)
ax.scatter(r.domain.mn[failing], r.domain.mx[failing], s=4, color="tab:red",
           label=f"{int(failing.sum())} groups with a weight outside int8")
ax.add_patch(plt.Rectangle((-Q8_LIMIT, -Q8_LIMIT), 2 * Q8_LIMIT, 2 * Q8_LIMIT, fill=False,
                           ls="--", color="tab:blue", label="protective range [-119, 119]"))
ax.legend(loc="lower right", fontsize=8)
ax.set_title(f"QoQ (vadd4) without the protective range\n{r.failure_count} of {len(r.triples)} "
             "triples fail, all outside the dashed box", fontsize=10)
for ax in axes.ravel():
    ax.set(xlabel="group min mn (level-1 value)", ylabel="group max mx (level-1 value)")
fig.suptitle("Byte-lane failures of every valid (q4, s, offset), executed by the emulator")
plt.show()

# %% [markdown]
# The naive scheme's panel is the picture of the argument above: every group that
# straddles zero (`mn < 0 <= mx`, the upper-left quadrant) loses codes, and the larger the part
# of its range above zero, the more of its codes fail. Groups with `mn >= 0` are safe (the byte
# of a non-negative `mn` is small), and so are all-negative groups (no weight reaches zero). QoQ
# with `IADD` fails in the same region, for the same reason (the scaled zero `-z * s` is a large
# byte whenever `z > 0`). The QoQ-without-protection failures hug the edges of the plane: only
# groups whose minimum or maximum lies within `s / 2` of +-127 can round past int8, which is
# exactly the strip the protective range cuts off.
#
# ## Check against the oracle
#
# Last, the full load path of the emulated kernel on a real tile: `emulator.fragments.
# dequantize_tile` copies each stage's packed bytes from global to shared memory with
# `LDG.128` + `STS.128`, runs the Dual-MMA block program (one `LDS.128`, unpack, `IMAD`, `XOR`)
# on 2 x 128 lanes, and places the registers into the weight tile through the wgmma A-fragment
# map (tutorial 3 takes that map apart). The result must be `liquidref.dequantize_int8`, byte
# for byte.

# %%
packed = lr.pack_weight(w)
tile = fragments.dequantize_tile(packed, row_block=0, groups=2)
assert np.array_equal(tile, lr.dequantize_int8(w)[:tile.shape[0]])
print(f"emulated kernel dequant of a {tile.shape[0]} x {tile.shape[1]} tile "
      "== liquidref.dequantize_int8, bit for bit")
