# %% [markdown]
# # 4. The tiled pipeline, and the implicit against the explicit pipeline
#
# **What you will learn**
#
# - how the Hopper kernel cuts a W4A8 GEMM into CTA tiles, k stages and split-K slices, and
#   why `choose_tile_config` picks a different cut for decode (a few tokens) than for prefill
#   (thousands of tokens);
# - what one thread of a compute warpgroup does with its 16 bytes of packed weights in every
#   k stage: unpack the nibbles, dequantize four weights per instruction, and hand them to
#   the tensor core as its A fragment;
# - why the int32 accumulators can be split over K and summed exactly, and why the scales
#   must wait until after that sum;
# - how the implicit fine-grained pipeline (ImFP, the paper's and ours) differs from the
#   explicit three-role pipeline (ExCP), read off simulated timelines;
# - where a W4A8 kernel stops being limited by memory and starts being limited by the tensor
#   core: about 150 tokens on an H100, against about 300 for W8A8.
#
# `liquidref.tiled` is the kernel's dataflow written in NumPy: the same packed bytes, the same
# thread-to-data maps, the same integer operations. It is slow, but every intermediate can be
# printed, and its output is bit-identical to the oracle's. The schedule part
# (`liquidref.schedule`) is a model, not a measurement: it shows *when* each unit is busy
# under the paper's cost model.
#
# ```text
# grid: (row tiles) x (token tiles) x split_k CTAs; each CTA, for each k stage of its split:
#   load warpgroup     bulk-copy packed codes + (s, a) metadata + int8 activations -> smem ring
#   compute WG w       thread t: LDS.128 16 bytes -> unpack -> dequant (IMAD, XOR)
#                      -> A fragment registers -> wgmma m64nNk32 -> int32 accumulators
# split-K partials summed in int32; epilogue float16(float32(acc) * (s1 * s_x)); masked store
# ```

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import liquidref as lr
from liquidref import schedule
from liquidref.constants import BLOCK_BYTES, BLOCK_K, BLOCK_ROWS, BYTES_PER_THREAD, MMA_K
from liquidref.fragments import wgmma_a_fragment, wgmma_accumulator_fragment
from liquidref.tiled import Dataflow, tiled_accumulate, tiled_gemm, unpack_nibbles
from liquidref.tiling import DEFAULT_NUM_SMS, TileConfig

rng = np.random.default_rng(2509_01229)
print(f"packed block: {BLOCK_ROWS} rows x {BLOCK_K} k = {BLOCK_BYTES} bytes, "
      f"{BYTES_PER_THREAD} bytes per thread; wgmma k step = {MMA_K}")

# %% [markdown]
# ## Tiles, stages and split-K: what the kernel launches
#
# A CTA (a thread block, one per SM at a time here) owns a tile of the output `Y^T = W X^T`:
# `rows_per_cta` weight rows (output features) by `tokens_per_cta` tokens. It has three
# warpgroups of 128 threads: one *load* warpgroup that only issues bulk copies, and two
# *compute* warpgroups, each owning 64 of the tile's rows (the `m` of the tensor-core
# instruction `wgmma m64nNk32`). `tokens_per_cta` is that instruction's `n`, so it must be one
# of the `n` values wgmma accepts for int8 (8, 16, 24, 32, 48, 64, 80, ..., 256).
#
# The k dimension runs in *stages* of `k_per_stage` through a ring of `stages` shared-memory
# buffers: while the compute warpgroups work on stage s, the load warpgroup is already
# filling the buffers of stages s+1, s+2, ... With `split_k > 1`, several CTAs share one output
# tile, each summing a contiguous range of k stages.
#
# `choose_tile_config(M, N, K)` is the single place where the kernel's launch is decided; the
# GPU launcher (`gpu/hopper.py`) and this NumPy reference both call it. Here is what it picks for
# two Llama-3-8B layers on an H100/H200 (132 SMs):

# %%
def describe(m: int, n: int, k: int) -> list[str]:
    """One table row: the config chosen for an M x N x K problem and what it launches."""
    config = lr.choose_tile_config(m, n, k)
    rows, tokens, splits = config.grid(m, n)
    ctas = rows * tokens * splits
    stages_total = -(-k // config.k_per_stage)
    first, last = config.k_stage_range(0, k)
    padded = tokens * config.tokens_per_cta
    return [f"{m:>5}", f"{config.tokens_per_cta:>4}", f"{config.k_per_stage:>4}",
            f"{config.stages:>3}", f"{config.split_k:>3}", f"{rows:>3} x {tokens:>2} x {splits}",
            f"{ctas:>5}", f"{ctas / DEFAULT_NUM_SMS:>5.2f}",
            f"{last - first:>3} of {stages_total:<3}",
            f"{config.shared_memory_bytes / 1024:>5.0f}", f"{1 - m / padded:>5.0%}"]


header = ["    M", "   n", " kps", "stg", " sk", "grid       ", " CTAs", "waves",
          "stages/CTA", "  KiB", "  pad"]
for name, (n, k) in {"llama3-8b qkv": (6144, 4096), "llama3-8b down": (4096, 14336)}.items():
    print(f"{name}: N = {n}, K = {k}")
    print("  " + "  ".join(header))
    for m in (1, 16, 64, 128, 256, 1024, 4096):
        print("  " + "  ".join(describe(m, n, k)))

# %% [markdown]
# How to read the table (`n` = tokens per CTA, `kps` = k per stage, `stg` = ring buffers,
# `sk` = split-K, `waves` = CTAs per SM, `pad` = share of the token tile that is padding):
#
# - **Decode (M <= 32).** The weight must be read once whatever M is, so the only goal is to
#   stream it at full bandwidth. The smallest wgmma `n` that covers M keeps padding low (at
#   M = 1 an `n = 8` tile is still 88% padding, but the tensor core is nearly idle anyway).
#   With 128 rows per CTA, N = 6144 gives only 48 tiles for 132 SMs, so **split-K** cuts K into
#   slices and launches 2-4 CTAs per tile; each keeps at least 4 stages so that the pipeline
#   fills. The price is an int32 reduction of the partial sums: each slice but the last to
#   finish stores its registers into a workspace, and the last adds them to its own. (The GPU
#   kernel runs split-K 2 as a thread block cluster instead: the two CTAs of a tile each own
#   one 64-row block and send the other's partials into its shared memory, no workspace; the
#   sum, and so the bytes, are the same.)
# - **Mid M (33-128).** Tiles of 64 tokens (one token tile up to M = 64, so the weights are
#   read once), split-K by the same rule as decode while tiles leave SMs idle.
# - **Prefill (M >= 256).** Wide tiles (128, and 176-224 from M = 2048) reuse each dequantized
#   weight for many tokens. From M = 1024 there are enough tiles to fill the GPU without
#   split-K; at M = 256 the down projection (only 64 tiles) still splits K in two.
#   From M = 2048 the width is the one whose tiles fill the SMs' waves best, a wider tile
#   counting as cheaper per token (`liquidref.tiling.prefill_tokens`): a last wave that leaves
#   SMs idle costs as much as a full one.
#
# Every configuration takes as many ring stages (up to 8) as fit in the 227 KiB of shared
# memory a CTA can have (wider token tiles need more activation bytes per stage, so fewer
# stages fit). `k_per_stage = 256` won in the H200 sweeps (fewer barrier round trips per
# byte). `TileConfig` refuses what the hardware cannot run:

# %%
for bad in (dict(tokens_per_cta=100), dict(stages=12, tokens_per_cta=256)):
    try:
        TileConfig(**bad)
    except ValueError as error:
        print(f"TileConfig({', '.join(f'{k}={v}' for k, v in bad.items())}): {error}")

# %% [markdown]
# ## One thread, one stage: from 16 bytes to the tensor core
#
# Now follow the data. We quantize a small layer and pack it into the kernel's Dual-MMA layout
# (tutorial 3 explains the layout; here we only use it). A packed 64 x 64 block is 2048 bytes:
# exactly 16 bytes for each of the 128 threads of a compute warpgroup, so each thread loads its
# share of a block with a single 128-bit shared-memory load (`LDS.128`).

# %%
N, K = 256, 1024
W = (0.02 * rng.standard_t(df=5, size=(N, K))).astype(np.float32)
w = lr.quantize_weight(W)
packed = lr.pack_weight(w)
w_i8 = lr.dequantize_int8(w)  # the oracle's int8 weights, to check every step against

thread = 37  # warp 1, lane 5
block_row, block_k = 1, 3  # rows 64..127, k 192..255
raw = packed.codes[block_row, block_k, BYTES_PER_THREAD * thread:BYTES_PER_THREAD * (thread + 1)]
words = raw.view("<u4")  # P0..P3: four little-endian 32-bit registers
print(f"thread {thread}: 16 bytes {raw.tobytes().hex(' ')}")
print("  as words P0..P3:", " ".join(f"0x{int(p):08x}" for p in words))

# %% [markdown]
# Each byte holds two 4-bit codes. The layout puts the code of row `r` in the low nibble and the
# code of row `r + 8` in the high nibble of the *same* byte, because those are the two rows a
# thread needs for its wgmma A fragment. So two masks separate them, four codes per register,
# one code per byte lane:
#
# ```text
# P          = h3 l3 | h2 l2 | h1 l1 | h0 l0        (byte lanes 3..0, nibbles high/low)
# lo = P & 0x0F0F0F0F        -> 0 l3 | 0 l2 | 0 l1 | 0 l0     codes of row r
# hi = (P >> 4) & 0x0F0F0F0F -> 0 h3 | 0 h2 | 0 h1 | 0 h0     codes of row r + 8
# ```
#
# Which rows are `r` and `r + 8`? The wgmma fragment map answers: register 0 of the A fragment
# holds row `16 warp + lane // 4`, register 1 the row 8 below. The thread reads those rows'
# `(s, a)` from the block's 128 metadata bytes (one 32-bit load), and `dequant_word` does the
# LiquidQuant dequant on all four lanes at once: one multiply-add and one XOR.

# %%
lo, hi = unpack_nibbles(words)
row_r, _ = wgmma_a_fragment(thread, 0, 0)
row_r8, _ = wgmma_a_fragment(thread, 1, 0)
meta = packed.meta[block_row, block_k]
s_byte_r, a_byte_r = lr.meta_position(row_r)
s_byte_r8, a_byte_r8 = lr.meta_position(row_r8)
s_r, a_r = int(meta[s_byte_r]), int(meta[a_byte_r])
s_r8, a_r8 = int(meta[s_byte_r8]), int(meta[a_byte_r8])
deq_lo = lr.dequant_word(lo, s_r, a_r)  # (lo * s + a * 0x01010101) ^ 0x80808080
deq_hi = lr.dequant_word(hi, s_r8, a_r8)
print(f"rows r = {int(row_r)} (s = {s_r}, a = {a_r}) and "
      f"r + 8 = {int(row_r8)} (s = {s_r8}, a = {a_r8})")
for p in range(4):
    lanes_lo = deq_lo[p:p + 1].view(np.int8).tolist()  # the 4 int8 weights, lane 0 first
    lanes_hi = deq_hi[p:p + 1].view(np.int8).tolist()
    print(f"  P{p}: lo 0x{int(lo[p]):08x} -> 0x{int(deq_lo[p]):08x} {lanes_lo}   "
          f"hi 0x{int(hi[p]):08x} -> 0x{int(deq_hi[p]):08x} {lanes_hi}")

# %% [markdown]
# The dequantized words go straight into the A-operand registers of the two `wgmma` k32 steps
# of the block, with no trip through shared memory: word `Pp` feeds step `p // 2`, its low half
# register `2 (p % 2)`, its high half register `2 (p % 2) + 1`. The fragment map
# `wgmma_a_fragment(thread, reg, byte) -> (row, k)` says which weight the tensor core takes each
# byte to be. If the layout is right, every byte is the oracle's int8 weight at that position:

# %%
a_regs = np.empty((2, 4), np.uint32)  # [k32 step, register]
a_regs[:, 0::2] = deq_lo.reshape(2, 2)
a_regs[:, 1::2] = deq_hi.reshape(2, 2)
checked = 0
for step in range(2):
    for reg in range(4):
        for byte in range(4):
            row, k = wgmma_a_fragment(thread, reg, byte)
            value = int(a_regs[step, reg:reg + 1].view(np.int8)[byte])
            expected = w_i8[BLOCK_ROWS * block_row + row, BLOCK_K * block_k + MMA_K * step + k]
            assert value == expected
            checked += 1
print(f"all {checked} weights thread {thread} hands to the tensor core equal the oracle's int8")

# %% [markdown]
# The figure shows the rows of warp 1 (rows 16-31 of the block: 32 threads, 16 rows x 64 k),
# the warp our thread belongs to. Top: the thread that dequantizes each weight. Bottom: in
# which of that thread's registers the weight arrives (`step.reg`). Each thread owns two rows
# (r and r + 8) times four runs of 4 consecutive k: rows r in registers 0 and 2, rows r + 8 in
# 1 and 3, the first 32 k in step 0 and the next 32 in step 1. Its 16 bytes are contiguous in
# the packed block, so the 32 `LDS.128` of a warp read 512 consecutive bytes, touching every
# shared-memory bank exactly as often: no bank conflicts.

# %%
warp = thread // 32
owner = np.empty((BLOCK_ROWS, BLOCK_K), int)
register = np.empty((BLOCK_ROWS, BLOCK_K), int)
t, reg, byte = np.meshgrid(np.arange(128), np.arange(4), np.arange(4), indexing="ij")
for step in range(2):
    row, k = wgmma_a_fragment(t, reg, byte)
    owner[row, MMA_K * step + k] = t
    register[row, MMA_K * step + k] = 4 * step + reg
band = slice(16 * warp, 16 * warp + 16)
fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.4), sharex=True)
top.imshow(owner[band], cmap="tab20", interpolation="nearest", aspect="auto",
           extent=(-0.5, BLOCK_K - 0.5, band.stop - 0.5, band.start - 0.5))
top.contour(np.arange(BLOCK_K), np.arange(band.start, band.stop), owner[band] == thread,
            levels=[0.5], colors="black", linewidths=1.5)
bottom.imshow(register[band], cmap="Set2", interpolation="nearest", aspect="auto",
              extent=(-0.5, BLOCK_K - 0.5, band.stop - 0.5, band.start - 0.5))
for row in range(band.start, band.stop):
    for k in range(0, BLOCK_K, 4):  # one label per run of 4 k (one register's 4 bytes)
        top.text(k + 1.5, row, str(owner[row, k]), ha="center", va="center", fontsize=6)
        step, reg = divmod(int(register[row, k]), 4)
        bottom.text(k + 1.5, row, f"{step}.{reg}", ha="center", va="center", fontsize=6)
top.set(title=f"thread that dequantizes each weight of warp {warp} (outlined: thread {thread})",
        ylabel="row in block")
bottom.set(title="the thread's A register holding it (k32 step.register)", xlabel="k in block",
           ylabel="row in block")
fig.suptitle("The Dual-MMA layout: which thread and register each weight of a block reaches")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## int32 accumulation, split-K and the epilogue
#
# The tensor core multiplies the 64 x 32 int8 A tile by a 32 x n int8 activation tile (read
# from shared memory through a descriptor) and adds the products into int32 accumulators held
# in registers: thread t owns n / 2 of the 64 x n results, spread over rows r, r + 8 and pairs
# of tokens (`wgmma_accumulator_fragment`). With activations in [-127, 127] and the weights
# `quantize_weight` produces, every product is at most 127 * 127 in magnitude, so for K up to
# `MAX_EXACT_K` = 133 144 the int32 sums never overflow and are **exact**, in any order.
#
# Exactness is what makes split-K free of error: each slice of k stages produces an exact
# int32 partial sum, and adding the partials in int32 gives exactly the full sum. The scales
# are applied only once, after that reduction. Here is split-K by hand with the kernel's own
# `k_stage_range`, for a configuration with 3 slices:

# %%
M = 13
x_i8, s_x = lr.quantize_activation(rng.standard_normal((M, K)).astype(np.float32))
config = TileConfig(compute_warpgroups=2, tokens_per_cta=16, k_per_stage=128, stages=4,
                    split_k=3)
partials = []
for split in range(config.split_k):
    first, last = config.k_stage_range(split, K)
    ks = slice(first * config.k_per_stage, last * config.k_per_stage)
    partials.append(lr.int32_matmul(x_i8[:, ks], w_i8[:, ks]))
    print(f"split {split}: k stages [{first}, {last}) = k {ks.start}..{ks.stop - 1}")
acc_full = lr.int32_matmul(x_i8, w_i8)
assert np.array_equal(sum(partials), acc_full)
assert np.array_equal(tiled_accumulate(x_i8, packed, config), acc_full)
print("sum of the int32 partials == full int32 accumulator == tiled pipeline's accumulator")

accumulator_registers = np.arange(config.tokens_per_cta // 2)
thread_rows, thread_tokens = wgmma_accumulator_fragment(thread, accumulator_registers)
print(f"thread {thread} holds accumulators of rows {sorted(set(thread_rows.tolist()))}, "
      f"tokens {sorted(set(thread_tokens.tolist()))}")

# %% [markdown]
# What if each split applied the scales itself and the fp16 results were added? The epilogue
# `float16(float32(acc) * (s1 * s_x))` rounds, so the sum of rounded pieces is not the
# rounding of the sum. A kernel that did this would be *close*, and wrong:

# %%
y_oracle = lr.gemm(x_i8, s_x, w)
y_per_split = sum(lr.epilogue(p, s_x, w.s1).astype(np.float32) for p in partials).astype(np.float16)
wrong = np.count_nonzero(y_per_split.view(np.uint16) != y_oracle.view(np.uint16))
print(f"epilogue per split, then sum: {wrong} of {y_oracle.size} fp16 outputs differ "
      "from the oracle")
assert wrong > 0

# %% [markdown]
# ## The whole tiled pipeline against the oracle
#
# `tiled_gemm` runs all of the above for every CTA, warpgroup, block and thread at once
# (vectorized in NumPy; only the k stages are a Python loop): the load of each stage, the
# unpack, the word-level dequant, the A fragments, the int32 wgmma accumulation through the
# accumulator fragment map, the split-K reduction, the epilogue and the masked store.
# The thread-to-data maps come in as a `Dataflow`, so a deliberately wrong map can be swapped
# in; swapping the low and high nibbles (rows r and r + 8) must break the result:

# %%
start = time.perf_counter()
y_tiled = tiled_gemm(x_i8, s_x, packed)
print(f"tiled_gemm {M} x {N} x {K}, {lr.choose_tile_config(M, N, K)}: "
      f"{1e3 * (time.perf_counter() - start):.0f} ms")
print("bit-exact with liquidref.gemm:",
      np.array_equal(y_tiled.view(np.uint16), y_oracle.view(np.uint16)))

swapped = Dataflow(unpack=lambda words: unpack_nibbles(words)[::-1])
y_swapped = tiled_gemm(x_i8, s_x, packed, dataflow=swapped)
print("with the nibbles swapped, outputs that differ:",
      np.count_nonzero(y_swapped.view(np.uint16) != y_oracle.view(np.uint16)), "of", y_oracle.size)

# %% [markdown]
# ## Split-K and stream-K: one schedule, two grids
#
# `TileConfig` writes the schedule down once. The work is `tiles x k_stages` *units*, numbered
# tile after tile; CTA c of the G that `cta_count` launches takes units `[c U / G, (c + 1) U / G)`,
# which `segments` cuts at tile boundaries. `split_k = s` is the classic grid (G = tiles x s, one
# slice of one tile per CTA); `stream_k_ctas = G` is the persistent stream-K grid, G CTAs (one
# per SM) sharing all units evenly, so a CTA may finish one tile and go on with the next. A
# segment short of its whole tile adds an exact int32 partial; the one that completes the tile's
# stage count runs the epilogue: the same bits, whatever the grid.
# Here are 5 tiles of 8 stages, on a pretend GPU of 3 SMs:

# %%
M, N, K = 1, 640, 2048  # 640 rows = 5 tiles of 128; K = 8 stages of 256
schedules = {
    "split-K 2": TileConfig(2, 8, 256, 4, split_k=2),
    "stream-K, 3 CTAs": TileConfig(2, 8, 256, 4, stream_k_ctas=3),
}
for name, cfg in schedules.items():
    print(f"{name}: {cfg.work_units(M, N, K)} units on {cfg.cta_count(M, N, K)} CTAs")
for cta in range(schedules["stream-K, 3 CTAs"].cta_count(M, N, K)):
    parts = [f"tile {seg.tile} stages [{seg.first_stage}, {seg.last_stage})"
             + ("" if seg.whole else " partial")
             for seg in schedules["stream-K, 3 CTAs"].segments(cta, M, N, K)]
    print(f"  stream-K CTA {cta}: " + ", ".join(parts))

row_tiles, k_stages = schedules["split-K 2"].grid(M, N)[0], schedules["split-K 2"].k_stages(K)
colors = plt.get_cmap("tab10")
fig, ax = plt.subplots(figsize=(9, 2.0))
for y, (name, cfg) in enumerate(reversed(schedules.items())):
    for cta in range(cfg.cta_count(M, N, K)):
        for seg in cfg.segments(cta, M, N, K):
            start = seg.tile * seg.k_stages + seg.first_stage  # the segment's first unit
            length = seg.last_stage - seg.first_stage
            ax.broken_barh([(start, length)], (y - 0.35, 0.7), facecolors=colors(cta % 10),
                           edgecolor="white")
            ax.text(start + length / 2, y, str(cta), ha="center", va="center", fontsize=8)
for tile in range(row_tiles + 1):
    ax.axvline(tile * k_stages, color="black", lw=1.5)
ax.set_xlim(0, row_tiles * k_stages)
ax.set_xticks([(tile + 0.5) * k_stages for tile in range(row_tiles)],
              [f"tile {tile}" for tile in range(row_tiles)])
ax.set_yticks(range(len(schedules)), list(schedules)[::-1])
ax.set_xlabel(f"{row_tiles} tiles x {k_stages} k stages = {row_tiles * k_stages} units, "
              "tile-major (black lines: tile boundaries)")
ax.set_title(f"Which CTA runs each unit (M = {M}, N = {N}, K = {K}, 256-k stages)", fontsize=10)
plt.show()

# %% [markdown]
# Split-K's 10 CTAs fill 3 SMs in four waves, the last with a single CTA; stream-K's 3 CTAs
# take 13 or 14 units each, and CTA 1 runs pieces of three tiles. The tiled pipeline runs
# either schedule, workspace and tile counters included, and lands on the oracle's bytes:

# %%
w = lr.quantize_weight((0.02 * rng.standard_t(df=5, size=(N, K))).astype(np.float32))
x_i8, s_x = lr.quantize_activation(rng.standard_normal((M, K)).astype(np.float32))
y_oracle = lr.gemm(x_i8, s_x, w)
packed = lr.pack_weight(w)
for name, cfg in schedules.items():
    y_tiled = tiled_gemm(x_i8, s_x, packed, cfg)
    assert np.array_equal(y_tiled.view(np.uint16), y_oracle.view(np.uint16))
    print(f"{name}: tiled_gemm == liquidref.gemm, bit for bit")

# %% [markdown]
# The GPU kernel runs only the classic grid (`choose_tile_config` never picks stream-K, and
# `gpu.hopper.run` refuses `stream_k_ctas`): a stream-K build of it ran slower on an H200, as the
# tuning log on the [performance](../performance.md) page records.

# %% [markdown]
# ## Who is busy when: the implicit against the explicit pipeline
#
# The dataflow says *what* is computed; the schedule says *when*. A k stage has three kinds of
# work: the **load** (HBM to shared memory, by the load warpgroup's bulk copies), the
# **dequant** (integer instructions on the CUDA cores) and the **MMA** (the tensor core). The
# paper compares two ways to arrange them.
#
# - **ExCP**, the explicit pipeline: a dedicated dequant warpgroup turns the 4-bit codes into
#   int8, *writes them back to shared memory*, and signals an MMA warpgroup through a barrier;
#   the MMA warpgroup then runs wgmma with both operands from shared memory. Three roles, one
#   extra shared-memory round trip and a handoff per stage.
# - **ImFP**, the implicit fine-grained pipeline (the paper's, and `gpu/kernels/w4a8_hopper.cu`):
#   each compute warpgroup dequantizes its own rows *into registers* and issues its wgmma from
#   there. The two compute warpgroups never wait for each other; the tensor core interleaves
#   one warpgroup's MMA with the other's dequant, and within a warpgroup the dequant of stage
#   s + 1 overlaps the asynchronous wgmma of stage s.
#
# `liquidref.schedule` simulates both with the per-stage costs of the paper's cost model (H100
# throughputs shared evenly by the 132 SMs; the shared-memory bandwidth and the handoff
# latency of ExCP are our assumptions). For a 128-row x 64-token CTA and 128-k stages:

# %%
hw = schedule.H100
config_64 = TileConfig(2, 64, 128, 4, 1)
costs = schedule.stage_costs(config_64, hw)
print(f"{hw.name}, {config_64}")
print(f"  load {costs.load * 1e9:.0f} ns | dequant per WG {costs.dequant * 1e9:.0f} ns | "
      f"wgmma per WG {costs.mma * 1e9:.0f} ns | ExCP write-back {costs.excp_writeback * 1e9:.0f} ns"
      f" + handoff {costs.excp_handoff * 1e9:.0f} ns")
imfp, excp = schedule.default_traces(m=64, k_stages=12, hw=hw)
for trace in (imfp, excp):
    print(f"  {trace.pipeline}: 12 stages in {trace.makespan * 1e6:.2f} us, tensor core busy "
          f"{trace.busy('tensor core') / trace.makespan:.0%}")

# %% [markdown]
# A `Trace` is a list of `Event`s (lane, kind, stage, start, end); drawing one is a few lines
# of matplotlib. In the timelines, the numbers are `stage.warpgroup`:

# %%
COLORS = {"load": "tab:blue", "dequant": "tab:orange", "writeback": "tab:red", "mma": "tab:green"}


def draw_trace(ax, trace, max_stages: int = 6) -> None:
    """A Gantt chart of the first ``max_stages`` stages of ``trace`` on ``ax`` (time in ns)."""
    lanes = trace.lanes()
    for event in trace.events:
        if event.stage >= max_stages:
            continue
        y = len(lanes) - 1 - lanes.index(event.lane)
        ax.broken_barh([(event.start * 1e9, (event.end - event.start) * 1e9)], (y - 0.4, 0.8),
                       facecolors=COLORS[event.kind], edgecolor="white",
                       alpha=0.6 if event.warpgroup == 1 else 1.0)
        label = str(event.stage) if event.warpgroup is None else f"{event.stage}.{event.warpgroup}"
        ax.text((event.start + event.end) / 2 * 1e9, y, label, ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(lanes)), lanes[::-1])
    ax.set_title(f"{trace.pipeline}: first {max_stages} k stages", loc="left", fontsize=10)


fig, axes = plt.subplots(2, 1, figsize=(11, 4.8), sharex=True)
for ax, trace in zip(axes, (imfp, excp)):
    draw_trace(ax, trace)
axes[1].set_xlabel("time (ns)")
fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c, label=k) for k, c in COLORS.items()],
           ncol=4, fontsize=8, loc="lower center")
fig.suptitle(f"ImFP against ExCP on one CTA ({hw.name} cost model, M = 64, 128-k stages)")
fig.tight_layout(rect=(0, 0.06, 1, 1))
plt.show()

# %% [markdown]
# At M = 64 both pipelines are limited by the load: the load warpgroup is busy all the time and
# everything else waits for it. The difference is the *path* of one stage from its load to the
# end of its MMA: ImFP goes load -> dequant -> MMA, ExCP load -> dequant -> write-back ->
# handoff -> MMA. Once the pipeline is full, that latency hides behind the next loads, and in
# this model both reach the same throughput (the model does not reproduce the paper's
# small-batch slowdown of ExCP; see the limits page). It is paid in full when the pipeline
# fills and drains, which matters when each CTA has only a few stages: exactly the decode
# case, where split-K leaves 4-8 stages per CTA.

# %%
stage_counts = [2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
fig, ax = plt.subplots(figsize=(7, 3.4))
for tokens in (16, 64, 256):
    cfg = TileConfig(2, tokens, 128, 4, 1)
    cost = schedule.stage_costs(cfg, hw)
    ratio = [schedule.simulate_excp(cost, s, cfg).makespan
             / schedule.simulate_imfp(cost, s, cfg).makespan for s in stage_counts]
    ax.plot(stage_counts, ratio, "-o", ms=3, label=f"M = {tokens}")
    print(f"M = {tokens:>3}: ExCP / ImFP time at 4 stages {ratio[2]:.3f}, "
          f"at 64 stages {ratio[-1]:.3f}")
ax.axhline(1.0, color="gray", lw=0.6)
ax.set_xscale("log", base=2)
ax.set(title="ExCP / ImFP time of one CTA against its k stages", xlabel="k stages per CTA",
       ylabel="ExCP time / ImFP time")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# This is a model of where the time goes, not a measurement. The GPU has both pipelines as
# backends (`hopper` is ImFP, `hopper_excp` is ExCP, on the same packed bytes and bit-exact with
# each other), and tutorial 5 reads their measured time ratio from the recorded benchmark;
# where model and measurement disagree, the limits page lists what the model leaves out.

# %% [markdown]
# ## The memory-to-compute knee
#
# Per stage, the load moves `rows * k * bits / 8` bytes and the tensor core does
# `2 * rows * tokens * k` operations. With the device's HBM bandwidth and int8 tensor
# throughput shared by the SMs, the two times are equal at
#
# ```text
# tokens_knee = TC_ops_per_s * (bits / 8) / (2 * HBM_bytes_per_s)
#             = 1978.9e12 * 0.5 / (2 * 3.3e12) ~ 150 for W4A8 on an H100, ~ 300 for W8A8
# ```
#
# Below the knee the kernel is memory-bound and its time does not grow with M: every extra
# token is free. Above it, the tensor core sets the pace. Halving the weight bytes halves the
# knee: W4A8 reaches the compute limit at half the batch of W8A8, so the dequant must stay
# cheap enough not to become the bottleneck on the way (at 7/8 instruction per weight it is
# far from it here). The simulated steady state finds the same knees as the formula:

# %%
knees = {}
fig, ax = plt.subplots(figsize=(7, 3.6))
token_counts = [8] + list(range(16, 513, 16))
for bits, alpha, color in ((4, schedule.LQQ_ALPHA, "tab:green"), (8, 0.0, "tab:blue")):
    per_stage = [schedule.steady_state_stage_seconds(
        schedule.IMFP, schedule.stage_costs(config_64, hw, bits, alpha, tokens), config_64,
        stages=(8, 16)) * 1e9 for tokens in token_counts]
    knees[bits] = (schedule.analytic_knee(hw, bits), schedule.simulated_knee(hw, bits, alpha))
    ax.plot(token_counts, per_stage, color=color, label=f"W{bits}A8")
    ax.axvline(knees[bits][0], color=color, ls=":", lw=1)
    ax.text(knees[bits][0], per_stage[-1] * 0.9, f" knee {knees[bits][0]:.0f}", color=color,
            fontsize=8)
    print(f"W{bits}A8: analytic knee {knees[bits][0]:.1f} tokens, simulated {knees[bits][1]:.1f}")
ax.set(title=f"{hw.name}: ns per 128-row stage against tokens per CTA (ImFP model)",
       xlabel="tokens per CTA (the model runs past wgmma's n <= 256)", ylabel="ns per stage")
ax.legend(fontsize=8)
plt.show()
assert abs(knees[4][1] - 150) < 5 and abs(knees[8][1] - 300) < 5

# %% [markdown]
# The measured kernel (tutorial 5) shows the same shape: its advantage over 16-bit GEMMs is
# largest at decode, where the 4-bit weight is a quarter of the bytes, and it shrinks where
# the tensor core takes over.
#
# ## Check against the oracle
#
# The tiled pipeline must equal `liquidref.gemm` bit for bit, also on a ragged shape: M not a
# multiple of the token tile, N not a multiple of the 128-row CTA tile, K not a multiple of the
# stage, and split-K over uneven slices.

# %%
# M = 29: two 16-token tiles, 3 padding tokens; N = 320: three 128-row tiles, the last one
# half empty; K = 1600: 12.5 stages of 128, the last one partial; split-K into 3 uneven slices.
M, N, K = 29, 320, 1600
w = lr.quantize_weight((0.02 * rng.standard_t(df=4, size=(N, K))).astype(np.float16))
x_i8, s_x = lr.quantize_activation(rng.standard_normal((M, K)).astype(np.float16))
config = TileConfig(compute_warpgroups=2, tokens_per_cta=16, k_per_stage=128, stages=4, split_k=3)
print(config, "grid", config.grid(M, N),
      "slices", [config.k_stage_range(split, K) for split in range(config.split_k)])
y_tiled = tiled_gemm(x_i8, s_x, lr.pack_weight(w), config)
assert np.array_equal(y_tiled.view(np.uint16), lr.gemm(x_i8, s_x, w).view(np.uint16))
print(f"tiled_gemm == liquidref.gemm, bit for bit, {M} x {N} x {K} with split-K = {config.split_k}")
