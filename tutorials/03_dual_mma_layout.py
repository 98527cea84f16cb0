# %% [markdown]
# # 3. The Dual-MMA packed layout
#
# **What you will learn**
#
# - which int8 weights each thread must hold in registers for Hopper's `wgmma m64nNk32` (the
#   A fragment), and why that decides how the 4-bit codes should be stored;
# - the Dual-MMA layout formula (`liquidref.code_position`, `liquidref.meta_position`): which
#   thread, word and nibble holds element `(r, c)` of a 64 x 64 block;
# - how one thread's 16 bytes, fetched with a single `LDS.128`, become the A-fragment registers
#   of *two* consecutive wgmma k32 steps (hence "Dual-MMA");
# - how shared-memory banks serve a warp's loads, and how the emulator counts instructions,
#   wavefronts and bank conflicts for the Dual-MMA layout, a naive row-major layout and QServe's
#   layout;
# - how to unpack and dequantize the packed bytes yourself and land, bit for bit, on
#   `liquidref.dequantize_int8`.
#
# The kernel computes `Y^T = W X^T`: the dequantized weights are the wgmma **A** operand and come
# from registers, the activations are the B operand and come from shared memory. So every
# compute thread must turn its share of 4-bit codes into exactly the int8 bytes the tensor core
# expects in its A registers, with as few instructions as possible. The layout of the codes in
# memory is chosen, offline, to make that cheap.

# %%
import matplotlib.pyplot as plt
import numpy as np

import liquidref as lr
from emulator import isa, layouts, machine, programs
from liquidref.constants import (
    BLOCK_BYTES,
    BLOCK_K,
    BLOCK_ROWS,
    BYTES_PER_THREAD,
    LOW_NIBBLES,
    MMA_K,
    THREADS_PER_WARPGROUP,
)
from liquidref.fragments import wgmma_a_fragment

print(f"block {BLOCK_ROWS} rows x {BLOCK_K} k = {BLOCK_BYTES} bytes = "
      f"{THREADS_PER_WARPGROUP} threads x {BYTES_PER_THREAD} bytes; wgmma k step = {MMA_K}")

# %% [markdown]
# ## What the tensor core wants: the wgmma A fragment
#
# One `wgmma m64nNk32 .s8` multiplies a 64 x 32 int8 tile of A by a 32 x n tile of B. A
# warpgroup (4 warps, 128 threads) holds the A tile in registers: each thread has four 32-bit
# registers `a0..a3`, each four int8 values. `liquidref.fragments.wgmma_a_fragment` maps
# `(thread, register, byte)` to `(row, k)` (the formula was verified bit-exact on an H200):

# %%
print("thread  reg  ->  (row, k) of its 4 bytes")
for thread, reg in ((0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (4, 0), (33, 0), (33, 1)):
    row, k = wgmma_a_fragment(np.full(4, thread), reg, np.arange(4))
    print(f"  T{thread:<4} a{reg}       row {int(row[0]):>2}, k {k.tolist()}")

# %% [markdown]
# Warp `w` owns rows `16w .. 16w + 15`. Inside a warp, lane `l` has groupID `g = l // 4` and
# `q = l % 4`: registers `a0`/`a2` hold row `g`, `a1`/`a3` row `g + 8`, and each register is a run
# of four consecutive k, `4q + byte` (plus 16 for `a2`/`a3`). For warp 0:
#
# ```text
#             k 0..3  4..7   8..11  12..15 | 16..19 20..23 24..27 28..31
#   row 0     T0 a0   T1 a0  T2 a0  T3 a0  | T0 a2  T1 a2  T2 a2  T3 a2
#   row 1     T4 a0   T5 a0  T6 a0  T7 a0  | T4 a2  T5 a2  T6 a2  T7 a2
#   ...
#   row 7     T28 a0  T29 a0 T30 a0 T31 a0 | T28 a2 ...
#   row 8     T0 a1   T1 a1  T2 a1  T3 a1  | T0 a3  T1 a3  T2 a3  T3 a3
#   ...
#   row 15    T28 a1  T29 a1 T30 a1 T31 a1 | T28 a3 ...
# ```
#
# So per k32 step a thread needs 16 codes: four k-runs of 4, from rows `r = 16w + g` and
# `r + 8`. At 4 bits that is 8 bytes, half of what one 128-bit load (`LDS.128`) brings. The
# Dual-MMA layout stores the codes of **two consecutive k32 steps** of a thread contiguously, so
# one `LDS.128` per thread feeds two wgmmas. A 64 x 64 block (one LiquidQuant group of 64 k per
# row) is then exactly 128 threads x 16 bytes.
#
# ## The layout formula
#
# For element `(r, c)` of a block (`liquidref.code_position`):
#
# ```text
#   t      = 32 (r // 16) + 4 (r % 8) + (c % 16) // 4      thread that loads it
#   p      = 2 (c // 32) + (c % 32) // 16                   its word P0..P3 in the thread's 16 bytes
#   byte   = 16 t + 4 p + c % 4                             byte in the 2048-byte block
#   nibble = low if (r % 16) < 8 else high                  rows r and r + 8 share each byte
# ```
#
# Here is where a few elements land:

# %%
print(" (r,  c)   byte  nibble  thread  word  byte-in-word")
for r, c in ((0, 0), (0, 1), (0, 4), (8, 0), (1, 0), (0, 16), (0, 32), (0, 48), (16, 0),
             (63, 63)):
    byte, high = lr.code_position(r, c)
    t, p = int(byte) // BYTES_PER_THREAD, (int(byte) % BYTES_PER_THREAD) // 4
    print(f" ({r:>2}, {c:>2})  {int(byte):>5}  {'high' if high else 'low':>6}  {t:>6}  "
          f"  P{p}  {int(byte) % 4:>12}")

# %% [markdown]
# Reading the table: `(0, 1)` sits right next to `(0, 0)` (same word, next byte), because both
# go into the same A register. `(8, 0)` shares the byte of `(0, 0)`, in the high nibble: the same
# thread needs rows `r` and `r + 8`, and QServe's unpack (`w & 0x0F0F0F0F` and
# `(w >> 4) & 0x0F0F0F0F`) splits one word into the two registers. `(0, 4)` belongs to the next
# thread, `(1, 0)` four threads further. `(0, 16)` is the same thread's word P1 (register
# `a2`), `(0, 32)` and `(0, 48)` its P2 and P3: the second k32 step. The whole 64 x 64 block:

# %%
r_grid, c_grid = np.meshgrid(np.arange(BLOCK_ROWS), np.arange(BLOCK_K), indexing="ij")
byte_grid, high_grid = lr.code_position(r_grid, c_grid)
thread_grid = byte_grid // BYTES_PER_THREAD
word_grid = (byte_grid % BYTES_PER_THREAD) // 4

fig, ax = plt.subplots(figsize=(13, 4.2), layout="constrained")
warp0 = thread_grid[:16]  # warp 0's band: rows 0..15
ax.imshow(warp0 % 4, cmap="Pastel1", vmin=0, vmax=8, aspect="auto", interpolation="nearest")
for r in range(16):
    for c in range(0, BLOCK_K, 4):  # one label per run of 4 k (one register's 4 bytes)
        reg = 2 * ((c % MMA_K) // 16) + r // 8  # the A register of that run
        ax.text(c + 1.5, r, f"T{warp0[r, c]} a{reg}", ha="center", va="center", fontsize=6.5)
for edge in range(3, BLOCK_K - 1, 4):
    ax.axvline(edge + 0.5, color="white", lw=0.6)
ax.axhline(7.5, color="gray", lw=1)
for edge in (15.5, 31.5, 47.5):
    ax.axvline(edge, color="black", lw=1.2 if edge == 31.5 else 0.6)
ax.set(title="thread and A register of element (r, c), warp 0's rows 0..15 (k32 step 0 | step 1)",
       xlabel="k in the block (c)", ylabel="row r", yticks=range(16))
plt.show()

fig, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
labels = [f"P{p} {'high' if h else 'low'}" for p in range(4) for h in (0, 1)]
shown = ax.imshow(2 * word_grid + high_grid, cmap="tab10", vmin=-0.5, vmax=9.5,
                  interpolation="nearest")
for edge in (15.5, 31.5, 47.5):
    ax.axhline(edge, color="white", lw=0.8)
ax.axvline(31.5, color="white", lw=0.8)
ax.set(title="word P0..P3 and nibble of element (r, c), whole block",
       xlabel="k in the block (c)", ylabel="row in the block (r)")
bar = fig.colorbar(shown, ax=ax, shrink=0.8, ticks=range(8))
bar.ax.set_yticklabels(labels)
bar.ax.set_ylim(-0.5, 7.5)
plt.show()

# %% [markdown]
# The first map is the A-fragment picture again, now as storage: rows `g` and `g + 8` go to the
# same thread, each thread owns a run of 4 k in every 16 k, and the pattern repeats for the
# second k32 step. (The other warps own rows 16..31, 32..47, 48..63 the same way, threads
# 32..127.) In the second map, the k32 step (left or right half) picks the word pair (P0, P1)
# or (P2, P3), the 16-k half of the step picks P0 or P1, and the row half (`r % 16 < 8` or not)
# picks the nibble.
#
# The per-group metadata follows the same idea (`liquidref.meta_position`): the 128 metadata
# bytes of a block are 32 words `[s_r, a_r, s_r+8, a_r+8]`, and word `t // 4` serves the four
# threads of a quad (lanes `4g .. 4g+3` need the same two rows), one `LDS.32` per thread per
# block:

# %%
for r in (0, 8, 1, 16):
    s_byte, a_byte = lr.meta_position(r)
    print(f"row {r:>2}: s at metadata byte {int(s_byte):>3}, a at {int(a_byte):>3} "
          f"(word {int(s_byte) // 4}, read by threads {4 * (int(s_byte) // 4)}.."
          f"{4 * (int(s_byte) // 4) + 3})")

# %% [markdown]
# ## One thread's 16 bytes
#
# Quantize and pack a weight, then follow thread 5 of the first block (warp 0, lane 5: `g = 1`,
# `q = 1`, so rows 1 and 9, k runs `4..7`, `20..23`, `36..39`, `52..55`):
#
# ```text
#   one LDS.128 of thread t:  16 bytes = four little-endian words
#
#   bytes   0 .. 3      4 .. 7      8 .. 11     12 .. 15
#           P0          P1          P2          P3
#   low     step 0 a0   step 0 a2   step 1 a0   step 1 a2     row r,     k = 4q + byte (+16) (+32)
#   high    step 0 a1   step 0 a3   step 1 a1   step 1 a3     row r + 8
#
#   lo = P & 0x0F0F0F0F,  hi = (P >> 4) & 0x0F0F0F0F,  then IMAD + XOR with (s, a) of that row
# ```

# %%
rng = np.random.default_rng(2509_01229)
N, K = 128, 512
W = (0.02 * np.exp(rng.normal(0, 0.35, (N, 1))) * rng.standard_t(df=5, size=(N, K)))
w = lr.quantize_weight(W.astype(np.float16))
packed = lr.pack_weight(w)
print("packed codes", packed.codes.shape, packed.codes.dtype, "| metadata", packed.meta.shape)

thread = 5
mine = packed.codes[0, 0, BYTES_PER_THREAD * thread:BYTES_PER_THREAD * (thread + 1)]
P = mine.view(np.uint32)  # P0..P3
r = int(wgmma_a_fragment(thread, 0, 0)[0])  # the thread's rows are r and r + 8
meta = packed.meta[0, 0]
s_lo, a_lo = (int(meta[i]) for i in lr.meta_position(r))
s_hi, a_hi = (int(meta[i]) for i in lr.meta_position(r + 8))
print("16 bytes:", " ".join(f"{b:02x}" for b in mine))
print(f"metadata of rows {r} and {r + 8}: s_r = {s_lo}, a_r = {a_lo}, s_r+8 = {s_hi}, "
      f"a_r+8 = {a_hi}")

expected = lr.dequantize_int8(w)
for p in range(4):
    step, reg = p // 2, 2 * (p % 2)
    lo_codes, hi_codes = P[p] & LOW_NIBBLES, (P[p] >> 4) & LOW_NIBBLES
    regs = (lr.dequant_word(lo_codes, s_lo, a_lo), lr.dequant_word(hi_codes, s_hi, a_hi))
    for offset, value in enumerate(regs):
        row, k = wgmma_a_fragment(np.full(4, thread), reg + offset, np.arange(4))
        weights = np.array([value], np.uint32).view(np.int8)
        assert np.array_equal(weights, expected[row, k + MMA_K * step])
        print(f"P{p} = 0x{int(P[p]):08x}  {'lo' if offset == 0 else 'hi'} codes "
              f"0x{int(lo_codes if offset == 0 else hi_codes):08x} -> step {step} "
              f"a{reg + offset} = {weights.tolist()}  (row {int(row[0])}, "
              f"k {int(k[0]) + MMA_K * step}..{int(k[-1]) + MMA_K * step})")

# %% [markdown]
# Every register matches the oracle's int8 weights at the coordinates the A fragment says. The
# thread never moves a byte across registers: one shift and two masks per word, one `IMAD` and
# one `XOR` per register, and the low/high-nibble split *is* the `a0`/`a1` (row `r` / row
# `r + 8`) split.
#
# ## Shared-memory banks
#
# Shared memory is 32 *banks*, each 4 bytes wide: byte address `x` lives in bank
# `(x // 4) % 32`. In one *wavefront* each bank delivers one 4-byte word (several lanes reading
# the same word get it together, a broadcast). A warp's request is split into phases: an
# `LDS.32` is one phase of 32 lanes, an `LDS.128` four phases of 8 lanes (8 x 16 bytes = 128
# bytes = all 32 banks once). A phase costs as many wavefronts as the busiest bank has distinct
# words; anything above one per phase is a *bank conflict*.
#
# ```text
#   Dual-MMA, LDS.128, phase 0 (lanes 0..7):    lane 0 -> bytes 0..15   (banks 0..3)
#                                               lane 1 -> bytes 16..31  (banks 4..7)
#                                               ...
#                                               lane 7 -> bytes 112..127 (banks 28..31)  1 wavefront
#
#   row-major nibbles (32 bytes per row), LDS.32, one phase of 32 lanes: lanes 4g..4g+3 read
#   8 bytes of row g at 32 g (+ offset), lanes 4g and 4g+1 the same word (broadcast):
#               rows 0, 1, 2, 3 -> banks 0-1, 8-9, 16-17, 24-25
#               rows 4, 5, 6, 7 -> the same banks again (128 bytes later)   2 wavefronts
# ```
#
# The emulator checks that by running the real programs: one compute warpgroup (128 lanes)
# loads one stage in each layout, the tracing executor records the address of every lane's
# access, and `machine.shared_wavefronts` counts distinct words per bank per phase. Here are the
# addresses of warp 0's first code load in the Dual-MMA and the row-major layout:

# %%
def trace_block(program, shared):
    """Run a block program on one warpgroup; return the Trace."""
    regs = machine.new_registers(program, THREADS_PER_WARPGROUP)
    regs[:, program.inputs["codes_base"]] = 0
    regs[:, program.inputs["meta_base"]] = BLOCK_BYTES
    return machine.trace(program, regs, shared)[1]


meta0 = packed.meta[0, 0]
dual = trace_block(programs.dual_mma_block_program(),
                   np.concatenate([packed.codes[0, 0], meta0]))
row_major = trace_block(programs.naive_layout_block_program(),
                        np.concatenate([layouts.naive_row_major_block(w.q4[:64, :64]), meta0]))
def first_load(tr):
    """Row of the first instruction of the program's "load" section (the first code load)."""
    return tr.program.sections["load"][0]


def show_lanes(tr, lanes, note):
    addresses = tr.mem_address[first_load(tr)]
    print(f"  {note:<26}" + "  ".join(f"{lane}:{int(addresses[lane])}({addresses[lane] // 4 % 32})"
                                     for lane in lanes))


print(f"Dual-MMA   `{isa.format_instruction(dual.program.code[first_load(dual)])}`"
      "   lane:address(first bank of its 16 bytes)")
show_lanes(dual, range(8), "phase 0, lanes 0..7")
show_lanes(dual, range(8, 12), "phase 1, lanes 8..")
print(f"row-major  `{isa.format_instruction(row_major.program.code[first_load(row_major)])}`"
      "    lane:address(bank)")
show_lanes(row_major, range(8), "one phase, lanes 0..7")
show_lanes(row_major, range(16, 24), "           lanes 16..23")

# %% [markdown]
# In the Dual-MMA layout the eight lanes of a phase read 128 consecutive bytes,
# every bank once. In the row-major layout lanes 0 and 1 share a word (a free broadcast), but
# row 4 (lane 16) starts 128 bytes after row 0 and lands on bank 0 again: the 8 banks in use
# must each serve two different words while the other 24 idle, so every one of these loads takes
# two wavefronts to deliver 64 useful bytes (a phase of the `LDS.128` delivers 128 in one).
# Worse, the thread needs only 4 of the 8 codes in each word it loads, so it needs 8 `LDS.32`
# per block instead of one `LDS.128`, and 5 instructions per register to shift and spread its 4
# nibbles into 4 bytes.
#
# ## Instructions and wavefronts, three layouts
#
# `emulator.layouts.compare_layouts` runs each layout's block program on one warpgroup, checks
# that the registers hold exactly the right weights (a layout that loads fast but wrong cannot
# win), and reports per thread the instructions of each part of the program per 32 codes, and
# per warp the wavefronts. The third layout is QServe's (its per-group W4A8 kernel, one warp
# per 32 x 32 block of `mma.m16n8k32` B fragments), with its QoQ dequant (`IMUL` + `vadd4`) and
# separate scale and zero loads.

# %%
reports = layouts.compare_layouts()
print(f"{'layout':<16}{'LDS':>5}{'metadata':>10}{'unpack':>8}{'dequant':>9}{'total':>7}"
      f"{'wavefronts':>12}{'conflicts':>11}")
for name, rep in reports.items():
    assert rep.correct  # the registers hold exactly the oracle's weights
    per_block = {k: v for k, v in rep.counts.items() if k != "prologue"}  # prologue: once
    print(f"{name:<16}{rep.shared_loads:>5}{per_block['metadata']:>10}{per_block['unpack']:>8}"
          f"{per_block['dequant']:>9}{sum(per_block.values()):>7}{rep.wavefronts:>12}"
          f"{rep.conflicts:>11}")

# %% [markdown]
# Per thread and per 32 codes (two k32 steps' worth of A registers):
#
# - **Dual-MMA**: 2 shared loads (one `LDS.128` for the codes, one `LDS.32` for the metadata of
#   rows `r` and `r + 8`), 5 wavefronts per warp (4 phases of the `LDS.128` plus one broadcast
#   `LDS.32`), no conflict, and 12 + 16 ALU instructions to unpack and dequantize.
# - **row-major nibbles**: 9 shared loads, every code load a 2-way bank conflict (17
#   wavefronts, 8 of them from conflicts), and 40 instructions just to move nibbles into place.
# - **QServe**: its layout is conflict-free too (it also gives each lane 16 contiguous bytes),
#   but it loads scales and zero points separately, and QoQ's dequant (`IMUL` + the 5-instruction
#   `vadd4`, tutorial 2) costs 48 instructions where LiquidQuant's `IMAD` + `XOR` costs 16.
#
# ## Bank heatmaps
#
# The emulator keeps, for each shared-memory instruction of warp 0, how many distinct words each
# bank served in each phase (`WavefrontReport.bank_words`). One row per (instruction, phase), one
# column per bank: white is an idle bank, light red one word (conflict-free), dark red two words
# (a 2-way conflict). Rows are labelled with the instruction and its row in the program.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 5.5), layout="constrained")
titles = {"dual_mma": "Dual-MMA packed", "naive_row_major": "row-major nibbles",
          "qserve": "QServe B layout"}
for ax, (name, rep) in zip(axes, reports.items()):
    rows, labels = [], []
    for wave in rep.reports:
        op = layouts.programs_listing_name(rep.program, wave.instruction)
        for phase in range(wave.phases):
            rows.append(wave.bank_words[phase])
            labels.append(f"{op} #{wave.instruction} p{phase}")
    shown = ax.imshow(np.array(rows), cmap="Reds", vmin=0, vmax=2, aspect="auto",
                      interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("bank")
    ax.set_title(f"{titles[name]}\n{rep.wavefronts} wavefronts/warp, {rep.conflicts} from "
                 "conflicts", fontsize=10)
fig.colorbar(shown, ax=axes, shrink=0.7, ticks=[0, 1, 2], label="distinct words per bank")
fig.suptitle("Shared-memory bank accesses of warp 0 loading one stage")
plt.show()

# %% [markdown]
# The Dual-MMA panel is the ideal picture: each `LDS.128` phase touches all 32 banks exactly
# once, and the metadata `LDS.32` touches 8 banks (eight quads, one word each, broadcast to the
# four lanes of a quad). In the row-major panel every code load uses a quarter of the banks,
# twice each. The stripes stay put for the loads of rows `r` and `r + 8` (256 bytes apart, the
# same banks) and move two banks along for the next 8 bytes of the row.
# QServe's code load is as clean as Dual-MMA's; its cost is in the extra metadata load and the
# dequant arithmetic, not in the banks.
#
# ## Check against the oracle
#
# Finally, the whole path by hand, for every block of the weight: read each thread's four
# words and its metadata word, unpack the nibbles, dequantize each register with
# `liquidref.dequant_word`, and scatter the register bytes to `(row, k)` through the wgmma
# A-fragment map. No emulator, no `unpack_weight`: only the layout and fragment formulas. The
# result must equal `liquidref.dequantize_int8`, bit for bit.

# %%
def dequantize_from_packed(packed: lr.PackedWeight) -> np.ndarray:
    """int8 [N, K]: unpack + dequant of the Dual-MMA bytes, placed through the A-fragment map."""
    n_blocks, k_blocks, _ = packed.codes.shape
    threads = np.arange(THREADS_PER_WARPGROUP)
    words = packed.codes.view(np.uint32).reshape(n_blocks, k_blocks, THREADS_PER_WARPGROUP, 4)
    r = wgmma_a_fragment(threads, 0, 0)[0]  # each thread's rows: r and r + 8
    s_lo_byte, a_lo_byte = lr.meta_position(r)
    s_hi_byte, a_hi_byte = lr.meta_position(r + 8)
    s_lo, a_lo, s_hi, a_hi = (packed.meta[:, :, byte][..., None]  # [nb, kb, 128, 1]
                              for byte in (s_lo_byte, a_lo_byte, s_hi_byte, a_hi_byte))
    lo = lr.dequant_word(words & LOW_NIBBLES, s_lo, a_lo)  # [nb, kb, 128, 4 words]: row r
    hi = lr.dequant_word((words >> 4) & LOW_NIBBLES, s_hi, a_hi)  # row r + 8
    # word p -> k32 step p // 2, registers a(2 (p % 2)) (lo) and a(2 (p % 2) + 1) (hi)
    frag = np.stack([lo, hi], axis=-1).reshape(n_blocks, k_blocks, THREADS_PER_WARPGROUP, 2, 4)
    t, step, reg, byte = np.meshgrid(threads, np.arange(2), np.arange(4), np.arange(4),
                                     indexing="ij")
    row, k = wgmma_a_fragment(t, reg, byte)
    block_bytes = frag.view(np.int8).reshape(n_blocks, k_blocks, THREADS_PER_WARPGROUP, 2, 4, 4)
    blocks = np.empty((n_blocks, k_blocks, BLOCK_ROWS, BLOCK_K), np.int8)
    blocks[:, :, row, k + MMA_K * step] = block_bytes
    return blocks.transpose(0, 2, 1, 3).reshape(packed.n, packed.k)


mine = dequantize_from_packed(packed)
assert np.array_equal(mine, lr.dequantize_int8(w))
print(f"unpack + dequant of the packed bytes through the A-fragment map == "
      f"liquidref.dequantize_int8 for all {mine.size} weights ({N} x {K}), bit for bit")
