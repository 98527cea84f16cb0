"""The tiled pipeline reference: the GPU kernel's dataflow in NumPy, bit-exact.

``tiled_gemm`` runs the W4A8 GEMM the way the Hopper kernel does, on the same packed bytes and
the same schedule (``liquidref.tiling``: the ``tiles x k_stages`` work units shared among
G = ``config.cta_count(m, n, k)`` CTAs). The Hopper kernel runs the classic grid (one CTA per
tile and split-K part); the reference also runs the persistent stream-K schedule
(``stream_k_ctas``), so a stream-K kernel can be checked against it::

    G CTAs, CTA c runs its segments (config.segments: units [c U / G, (c + 1) U / G)), each
    segment k stages [first, last) of one tile (row tile, token tile):
      for each k stage of the segment (a ring of `stages` shared-memory buffers):
        load warpgroup:  bulk-copy the stage's packed blocks + metadata and the activation
                         stage (tile_activation order) into shared memory
        compute warpgroup w (rows 64 w .. 64 w + 63 of the CTA tile), thread t (0..127),
        for each 64 x 64 block of the stage:
          LDS.128   16 bytes at 16 t             -> words P0..P3
          LDS.32    metadata word of rows r, r+8 -> s_r, a_r, s_r+8, a_r+8
          unpack    lo = P & 0x0F0F0F0F, hi = (P >> 4) & 0x0F0F0F0F
          dequant   IMAD + XOR (liquidref.quant.dequant_word) with (s_r, a_r) / (s_r+8, a_r+8)
          A regs    step p // 2: reg 2 (p % 2) = lo of Pp, reg 2 (p % 2) + 1 = hi of Pp
          wgmma     m64nNk32 x 2 steps, B from shared memory through the stage descriptors,
                    int32 accumulators in registers (the accumulator fragment map)
      finish the segment:
        whole tile (segment.whole)  -> epilogue on its own accumulators, store
        otherwise                   -> add the int32 partials into the tile's workspace, add
                                       last - first to the tile's counter; the segment that
                                       brings the counter to k_stages runs the epilogue on the
                                       workspace sum and stores
      epilogue float16(float32(acc) * (s1 * s_x)); masked store (rows >= N, tokens >= M dropped)

Everything is vectorized over tiles, warpgroups, blocks and threads; only the k stages are a
Python loop: each stage's products are computed for all tiles at once, and each tile's product is
added to the accumulators of the segment that holds (tile, stage). The finish then runs the
segments in CTA order (integer addition is exact, so the order the CTAs arrive in on the GPU
does not change a bit); a tile whose counter does not end at k_stages, or that is not stored
exactly once, is a schedule bug and raises ``RuntimeError``.

The index maps come in through a ``Dataflow``, so tests can swap in a deliberately wrong map and
watch the result change. One map is not swappable: where the tensor core puts its results in the
accumulator registers (``fragments.wgmma_accumulator_fragment``, verified on an H200). The
epilogue's own copy of that formula is (``Dataflow.store_fragment``): in the kernel it is
separate code, and a store map that disagrees with the hardware is a bug to catch.

Padding: row blocks past N and blocks past K are all-zero bytes here (they dequantize to -128,
not 0), activations past M and past K are zero, so the padding adds nothing to any stored
element, and rows/tokens outside the output are never stored. The CUDA kernel instead skips a
warpgroup whose rows lie past N, leaves stale activations past M (masked at the store) and
requires K % k_per_stage == 0; the stored output is the same. This reference also runs a
partial last stage (K not a multiple of k_per_stage), which the kernel's launcher refuses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _validate as v
from .constants import (
    BLOCK_BYTES,
    BLOCK_K,
    BLOCK_ROWS,
    BYTES_PER_THREAD,
    LOW_NIBBLES,
    MAX_EXACT_K,
    META_BYTES_PER_BLOCK,
    MMA_K,
    THREADS_PER_WARPGROUP,
)
from .fragments import (
    activation_stage_descriptor,
    wgmma_a_fragment,
    wgmma_accumulator_fragment,
    wgmma_b_address,
)
from .gemm import epilogue
from .layout import ACT_CORE_BYTES, ACT_CORE_ROWS, PackedWeight, meta_position, tile_activation
from .quant import dequant_word
from .tiling import Segment, TileConfig, choose_tile_config

WORDS_PER_THREAD = BYTES_PER_THREAD // 4  # P0..P3
STEPS_PER_BLOCK = BLOCK_K // MMA_K  # two wgmma k32 steps per 64-k block


def unpack_nibbles(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split packed words into their low and high nibbles, one code per byte lane.

    ``lo = P & 0x0F0F0F0F`` (codes of row r), ``hi = (P >> 4) & 0x0F0F0F0F`` (row r + 8).
    """
    words = np.asarray(words, dtype=np.uint32)
    return words & np.uint32(LOW_NIBBLES), (words >> np.uint32(4)) & np.uint32(LOW_NIBBLES)


@dataclass(frozen=True)
class Dataflow:
    """The index maps the pipeline runs through (the kernel's by default).

    Attributes:
        a_fragment: (thread, reg, byte) -> (row, k) of the wgmma A operand (also picks each
            thread's metadata rows: those of its registers 0 and 1).
        b_address: (token, k, descriptor) -> byte address of the B operand in a stage.
        stage_descriptor: (k_per_stage, step) -> the descriptor of k32 step ``step``.
        unpack: packed words -> (low-nibble codes, high-nibble codes).
        store_fragment: (thread, reg) -> (row, token): where the epilogue stores accumulator
            register ``reg`` of ``thread``.
    """

    a_fragment: Callable = wgmma_a_fragment
    b_address: Callable = wgmma_b_address
    stage_descriptor: Callable = activation_stage_descriptor
    unpack: Callable = unpack_nibbles
    store_fragment: Callable = wgmma_accumulator_fragment


KERNEL_DATAFLOW = Dataflow()


@dataclass(frozen=True)
class _Maps:
    """Index arrays of one (config, dataflow), computed once per call."""

    a_dest: np.ndarray  # [blocks, 128, steps, 4 regs, 4 bytes] -> flat index into [64, kps]
    meta_bytes: tuple[np.ndarray, ...]  # (s_lo, a_lo, s_hi, a_hi) byte per thread, each [128]
    b_index: np.ndarray  # [tokens, kps] -> byte of the activation stage
    d_index: np.ndarray  # [128, tokens / 2] -> flat index into [64, tokens] (the hardware's)
    store_row: np.ndarray  # [128, tokens / 2] (the epilogue's)
    store_token: np.ndarray  # [128, tokens / 2]


def _index_maps(config: TileConfig, flow: Dataflow) -> _Maps:
    kps, tokens = config.k_per_stage, config.tokens_per_cta
    blk, t, step, reg, byte = np.meshgrid(
        np.arange(config.blocks_per_stage),
        np.arange(THREADS_PER_WARPGROUP),
        np.arange(STEPS_PER_BLOCK),
        np.arange(4),
        np.arange(4),
        indexing="ij",
    )
    row, k = flow.a_fragment(t, reg, byte)
    a_dest = row * kps + BLOCK_K * blk + MMA_K * step + k

    # Each thread's metadata: (s, a) of the rows of its registers 0 (row r) and 1 (row r + 8).
    threads = np.arange(THREADS_PER_WARPGROUP)
    row_lo, _ = flow.a_fragment(threads, 0, 0)
    row_hi, _ = flow.a_fragment(threads, 1, 0)
    s_lo, a_lo = meta_position(row_lo)
    s_hi, a_hi = meta_position(row_hi)

    token, kk = np.meshgrid(np.arange(tokens), np.arange(MMA_K), indexing="ij")
    b_index = np.concatenate(
        [flow.b_address(token, kk, flow.stage_descriptor(kps, q)) for q in range(kps // MMA_K)],
        axis=1,
    )
    stage_bytes = tokens * kps
    if b_index.min() < 0 or b_index.max() >= stage_bytes:
        raise ValueError(
            f"the B descriptors read bytes {b_index.min()}..{b_index.max()}, outside the "
            f"{stage_bytes}-byte activation stage"
        )

    t, i = np.meshgrid(threads, np.arange(tokens // 2), indexing="ij")
    d_row, d_token = wgmma_accumulator_fragment(t, i)
    store_row, store_token = flow.store_fragment(t, i)
    return _Maps(a_dest, (s_lo, a_lo, s_hi, a_hi), b_index, d_row * tokens + d_token,
                 store_row, store_token)


def _check_inputs(x_i8, packed, config) -> tuple[np.ndarray, TileConfig]:
    x_i8 = v.as_matrix("x_i8", x_i8, (np.int8,))
    if not isinstance(packed, PackedWeight):
        raise TypeError(
            f"packed must be a PackedWeight (see pack_weight); got {type(packed).__name__}"
        )
    if x_i8.shape[1] != packed.k:
        raise ValueError(f"x_i8 has K = {x_i8.shape[1]} columns but the weight has K = {packed.k}")
    if packed.k > MAX_EXACT_K:
        raise ValueError(f"K = {packed.k} exceeds {MAX_EXACT_K}, where int32 could overflow")
    if config is None:
        config = choose_tile_config(x_i8.shape[0], packed.n, packed.k)
    if not isinstance(config, TileConfig):
        raise TypeError(f"config must be a TileConfig; got {type(config).__name__}")
    return x_i8, config


@dataclass(frozen=True)
class _Schedule:
    """The schedule the pipeline runs (the kernel's by default); a seam for the tests' mutants.

    Attributes:
        segments: (config, cta, m, n, k) -> CTA ``cta``'s list of ``Segment``s, in run order.
        stores_directly: segment -> True when the segment stores its own accumulators (no
            workspace, no counter).
    """

    segments: Callable = TileConfig.segments
    stores_directly: Callable = lambda segment: segment.whole


_KERNEL_SCHEDULE = _Schedule()


def _schedule_segments(config: TileConfig, m: int, n: int, k: int,
                       schedule: _Schedule) -> list[Segment]:
    """Every CTA's segments, CTA by CTA in run order; a segment outside the tiles raises."""
    row_tiles, token_tiles, _ = config.grid(m, n)
    k_stages = config.k_stages(k)
    segments = []
    for cta in range(config.cta_count(m, n, k)):
        for seg in schedule.segments(config, cta, m, n, k):
            if not (0 <= seg.tile < row_tiles * token_tiles and 0 <= seg.row_tile < row_tiles
                    and 0 <= seg.token_tile < token_tiles
                    and 0 <= seg.first_stage < seg.last_stage <= k_stages):
                raise RuntimeError(
                    f"schedule bug: CTA {cta} has {seg}, outside the {row_tiles} x {token_tiles} "
                    f"tiles of {k_stages} k stages"
                )
            segments.append(seg)
    return segments


def _finish(segments: list[Segment], seg_acc: np.ndarray, row_tiles: int, tiles: int,
            k_stages: int, schedule: _Schedule) -> np.ndarray:
    """Each segment's finish, in CTA order; returns the stored int32 accumulators [tiles, ...].

    ``seg_acc[j]`` holds segment j's accumulators. A segment that stores directly writes them to
    its tile; any other adds them into the tile's int32 workspace and its stage count to the
    tile's counter, and the one that brings the counter to ``k_stages`` stores the workspace.
    """
    stored = np.zeros((tiles, *seg_acc.shape[1:]), np.int32)
    workspace = np.zeros_like(stored)
    counter = np.zeros(tiles, np.int64)
    stores = np.zeros(tiles, np.int64)
    direct = np.zeros(tiles, bool)
    for j, seg in enumerate(segments):
        if schedule.stores_directly(seg):
            stored[seg.tile] = seg_acc[j]
            stores[seg.tile] += 1
            direct[seg.tile] = True
            continue
        workspace[seg.tile] += seg_acc[j]  # int32 partials: exact (K <= MAX_EXACT_K)
        counter[seg.tile] += seg.last_stage - seg.first_stage
        if counter[seg.tile] == k_stages:
            stored[seg.tile] = workspace[seg.tile]
            stores[seg.tile] += 1
    expected_counter = np.where(direct, 0, k_stages)  # a directly stored tile has no partials
    bad_tiles = np.flatnonzero((counter != expected_counter) | (stores != 1))
    if bad_tiles.size:
        tile = bad_tiles[0]
        raise RuntimeError(
            f"schedule bug: tile {tile} (row tile {tile % row_tiles}, token tile "
            f"{tile // row_tiles}) ended with its stage counter at {counter[tile]} (expected "
            f"{expected_counter[tile]} of {k_stages} k stages) and was stored {stores[tile]} "
            "times (expected once)"
        )
    return stored


def _accumulate_padded(x_i8: np.ndarray, packed: PackedWeight, config: TileConfig,
                       flow: Dataflow, schedule: _Schedule = _KERNEL_SCHEDULE) -> np.ndarray:
    """Run the schedule; return the stored int32 accumulators [M_pad, N_pad] (tile padding)."""
    m, k = x_i8.shape
    n = packed.n
    cw, tokens, kps = config.compute_warpgroups, config.tokens_per_cta, config.k_per_stage
    bps = config.blocks_per_stage
    row_tiles, token_tiles, _ = config.grid(m, n)
    total_stages = config.k_stages(k)
    maps = _index_maps(config, flow)

    # Global memory as the kernel sees it, padded to whole tiles and stages.
    nb, kb = packed.codes.shape[:2]
    codes = np.zeros((row_tiles * cw, total_stages * bps, BLOCK_BYTES), np.uint8)
    meta = np.zeros((row_tiles * cw, total_stages * bps, META_BYTES_PER_BLOCK), np.uint8)
    codes[:nb, :kb] = packed.codes
    meta[:nb, :kb] = packed.meta
    codes = codes.reshape(row_tiles, cw, total_stages * bps, BLOCK_BYTES)
    meta = meta.reshape(row_tiles, cw, total_stages * bps, META_BYTES_PER_BLOCK)
    x_tiled = tile_activation(x_i8)  # [ceil(M/8), K/16, 8, 16]
    act = np.zeros(
        (token_tiles * tokens // ACT_CORE_ROWS, total_stages * kps // ACT_CORE_BYTES,
         ACT_CORE_ROWS, ACT_CORE_BYTES),
        np.int8,
    )
    act[: x_tiled.shape[0], : x_tiled.shape[1]] = x_tiled
    act = act.reshape(token_tiles, tokens // ACT_CORE_ROWS, total_stages, kps // ACT_CORE_BYTES,
                      ACT_CORE_ROWS, ACT_CORE_BYTES)

    # The schedule: segment j is k stages [first[j], last[j]) of tile (seg_rt[j], seg_tt[j]).
    segments = _schedule_segments(config, m, n, k, schedule)
    seg_rt, seg_tt, seg_first, seg_last = (
        np.array([getattr(seg, field) for seg in segments], np.int64).reshape(-1)
        for field in ("row_tile", "token_tile", "first_stage", "last_stage")
    )
    seg_acc = np.zeros((len(segments), cw, THREADS_PER_WARPGROUP, tokens // 2), np.int32)

    s_lo, a_lo, s_hi, a_hi = maps.meta_bytes
    for stage in range(total_stages):
        # The segments that run this stage (one per tile in a correct schedule).
        running = np.flatnonzero((seg_first <= stage) & (stage < seg_last))
        if running.size == 0:
            continue
        # Load warpgroup: one stage of weights (codes + metadata) and activations.
        blocks = slice(stage * bps, (stage + 1) * bps)
        smem_codes = codes[:, :, blocks]  # [RT, CW, BPS, 2048]
        smem_meta = meta[:, :, blocks]  # [RT, CW, BPS, 128]
        smem_act = act[:, :, stage].reshape(token_tiles, tokens * kps)  # [TT, bytes]

        # Compute warpgroups, every thread at once: LDS.128 -> 4 words P0..P3.
        words = np.ascontiguousarray(smem_codes).reshape(
            row_tiles, cw, bps, THREADS_PER_WARPGROUP, BYTES_PER_THREAD
        ).view("<u4")  # [RT, CW, BPS, 128, 4]
        lo, hi = flow.unpack(words)
        step_lo, offset_lo = smem_meta[..., s_lo, None], smem_meta[..., a_lo, None]
        step_hi, offset_hi = smem_meta[..., s_hi, None], smem_meta[..., a_hi, None]
        deq_lo = dequant_word(lo, step_lo, offset_lo)  # IMAD + XOR, rows r
        deq_hi = dequant_word(hi, step_hi, offset_hi)  # rows r + 8
        # Word p feeds k32 step p // 2: register 2 (p % 2) from lo, 2 (p % 2) + 1 from hi.
        a_regs = np.empty((row_tiles, cw, bps, THREADS_PER_WARPGROUP, STEPS_PER_BLOCK, 4),
                          np.dtype("<u4"))
        a_regs[..., 0::2] = deq_lo.reshape(*deq_lo.shape[:-1], STEPS_PER_BLOCK, 2)
        a_regs[..., 1::2] = deq_hi.reshape(*deq_hi.shape[:-1], STEPS_PER_BLOCK, 2)

        # The A tile [64, kps] each warpgroup's registers hold, through the fragment map.
        a_tile = np.zeros((row_tiles, cw, BLOCK_ROWS * kps), np.int8)
        a_tile[:, :, maps.a_dest.ravel()] = a_regs.view(np.int8).reshape(row_tiles, cw, -1)
        # The B operand [tokens, kps] the descriptors read from the activation stage.
        b_tile = smem_act[:, maps.b_index]  # [TT, tokens, kps]

        # wgmma: int8 x int8 products summed exactly (float64 holds every partial sum of one
        # stage exactly: |sum| <= kps * 128 * 128 << 2**53), added to int32 accumulators.
        prod = a_tile.reshape(-1, kps).astype(np.float64) @ b_tile.reshape(-1, kps).astype(
            np.float64
        ).T  # [RT * CW * 64, TT * tokens]
        prod = prod.reshape(row_tiles, cw, BLOCK_ROWS, token_tiles, tokens)
        prod = prod.transpose(0, 1, 3, 2, 4).reshape(row_tiles, cw, token_tiles, -1)
        prod = prod[..., maps.d_index].astype(np.int32)  # [RT, CW, TT, 128, tokens / 2]
        # Each running segment adds its tile's product (the indices in `running` are distinct).
        seg_acc[running] += prod[seg_rt[running], :, seg_tt[running]]

    # Finish: direct stores, or int32 partials summed in the workspace under the tile counters.
    total = _finish(segments, seg_acc, row_tiles, row_tiles * token_tiles, total_stages,
                    schedule)
    # tile = token_tile * row_tiles + row_tile -> [RT, CW, TT, 128, tokens / 2]
    total = total.reshape(token_tiles, row_tiles, cw, THREADS_PER_WARPGROUP, tokens // 2)
    total = total.transpose(1, 2, 0, 3, 4)

    # Store: register (thread, i) of warpgroup w in tile (rt, tt) -> Y[token, row].
    rt, w, tt = np.meshgrid(np.arange(row_tiles), np.arange(cw), np.arange(token_tiles),
                            indexing="ij")
    out_row = (rt * cw + w)[..., None, None] * BLOCK_ROWS + maps.store_row
    out_token = tt[..., None, None] * tokens + maps.store_token
    stored = np.zeros((token_tiles * tokens, row_tiles * cw * BLOCK_ROWS), np.int32)
    stored[out_token, out_row] = total
    return stored


def tiled_accumulate(x_i8: np.ndarray, packed: PackedWeight, config: TileConfig | None = None,
                     dataflow: Dataflow = KERNEL_DATAFLOW) -> np.ndarray:
    """The kernel's int32 accumulators, masked to the output.

    Args:
        x_i8: int8 [M, K] activations.
        packed: the Dual-MMA packed weight [N, K] (``pack_weight``).
        config: the tile configuration (default: ``choose_tile_config(M, N, K)``); its
            schedule (classic or split-K grid, or stream-K) runs as the kernel runs it.
        dataflow: the index maps (default: the kernel's).

    Returns:
        int32 [M, N], equal to ``liquidref.int32_matmul(x_i8, dequantize_int8(w))``.
    """
    x_i8, config = _check_inputs(x_i8, packed, config)
    m, n = x_i8.shape[0], packed.n
    if m == 0:
        return np.zeros((0, n), np.int32)
    return _accumulate_padded(x_i8, packed, config, dataflow)[:m, :n].copy()


def tiled_gemm(x_i8: np.ndarray, s_x: np.ndarray, packed: PackedWeight,
               config: TileConfig | None = None,
               dataflow: Dataflow = KERNEL_DATAFLOW) -> np.ndarray:
    """The W4A8 GEMM through the kernel's tiled pipeline.

    Args:
        x_i8: int8 [M, K] activations; s_x: float32 [M] per-token scales.
        packed: the Dual-MMA packed weight [N, K] with s1 float32 [N].
        config: the tile configuration (default: ``choose_tile_config(M, N, K)``).
        dataflow: the index maps (default: the kernel's).

    Returns:
        float16 [M, N], bit-identical to ``liquidref.gemm(x_i8, s_x, unpack_weight(packed))``.
    """
    x_i8, config = _check_inputs(x_i8, packed, config)
    v.as_vector("s_x", s_x, np.float32, x_i8.shape[0])
    acc = tiled_accumulate(x_i8, packed, config, dataflow)
    return epilogue(acc, s_x, packed.s1)


def _schedule_kind(config: TileConfig) -> str:
    """The schedule of ``config`` in words: stream-K, split-K s, or one CTA per tile."""
    if config.stream_k_ctas:
        return "stream-K"
    if config.split_k > 1:
        return f"split-K {config.split_k}"
    return "one CTA per tile"


def demo_section(out_dir) -> list[str]:
    """The tiled pipeline and schedule model part of ``liquidref demo``.

    Runs the tiled pipeline on a Llama-3-8B-sized layer (N = K = 4096, M = 16 tokens) against the
    oracle, then the schedule model's knee (H100, the paper's cost model) and the ImFP/ExCP
    timelines. Writes ``tiled_timeline.png`` and ``tiled_knee.png`` into ``out_dir``.

    Returns:
        The lines to print.
    """
    from pathlib import Path

    from . import schedule
    from .gemm import gemm
    from .layout import pack_weight
    from .quant import quantize_activation, quantize_weight

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2509_01229)
    m, n, k = 16, 4096, 4096
    w = quantize_weight((rng.standard_normal((n, k)) * 0.02).astype(np.float32))
    x_i8, s_x = quantize_activation(rng.standard_normal((m, k)).astype(np.float32))
    packed = pack_weight(w)
    config = choose_tile_config(m, n, k)
    start = time.perf_counter()
    y_tiled = tiled_gemm(x_i8, s_x, packed, config)
    tiled_ms = 1e3 * (time.perf_counter() - start)
    same = np.array_equal(y_tiled.view(np.uint16), gemm(x_i8, s_x, w).view(np.uint16))
    rows, tokens, _ = config.grid(m, n)
    lines = [
        f"tiled pipeline, M x N x K = {m} x {n} x {k}, {config}",
        (f"  {config.cta_count(m, n, k)} CTAs, {_schedule_kind(config)}, over {rows} x {tokens} "
         f"tiles x {config.k_stages(k)} k stages of {config.k_per_stage} "
         f"({config.work_units(m, n, k)} units), "
         f"{config.shared_memory_bytes // 1024} KiB shared memory per CTA"),
        f"  fp16 output bytes equal to the oracle's: {same} ({tiled_ms:.0f} ms in NumPy)",
    ]

    hw = schedule.H100
    knee4 = schedule.simulated_knee(hw, 4, schedule.LQQ_ALPHA)
    knee8 = schedule.simulated_knee(hw, 8, 0.0)
    lines.append(
        f"schedule model ({hw.name}, paper cost model): memory-to-compute knee at "
        f"M = {knee4:.0f} for W4A8 (paper: 150), M = {knee8:.0f} for W8A8 (paper: 300)"
    )
    traces = schedule.default_traces(m=64, k_stages=32, hw=hw)
    costs = schedule.stage_costs(TileConfig(2, 64, 128, 4, 1), hw)
    lines.append(
        f"  per 128 x 128 stage at M = 64: load {costs.load * 1e9:.0f} ns, dequant per WG "
        f"{costs.dequant * 1e9:.0f} ns, wgmma per WG {costs.mma * 1e9:.0f} ns"
    )
    imfp, excp = traces
    lines.append(
        f"  32 stages: ImFP {imfp.makespan * 1e6:.2f} us, ExCP {excp.makespan * 1e6:.2f} us "
        f"(tensor core busy {imfp.busy('tensor core') / imfp.makespan:.0%} / "
        f"{excp.busy('tensor core') / excp.makespan:.0%})"
    )
    schedule.draw_timelines(traces, out / "tiled_timeline.png",
                            f"{hw.name}, M = 64, W4A8, TileConfig(2, 64, 128, 4, 1)")
    schedule.draw_knee(out / "tiled_knee.png", hw)
    lines.append(f"  figures: {out / 'tiled_timeline.png'}, {out / 'tiled_knee.png'}")
    return lines
