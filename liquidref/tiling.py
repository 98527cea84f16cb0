"""The kernel's tile configuration, shared by the tiled pipeline reference and the GPU kernel.

A CTA computes a tile of ``rows_per_cta`` weight rows (output features) x ``tokens_per_cta``
tokens of ``Y^T = W X^T``. Its ``compute_warpgroups`` warpgroups each own 64 of those rows (the
wgmma m); ``tokens_per_cta`` is the wgmma n. The k loop runs over stages of ``k_per_stage``
(a multiple of one 64-k packed block) through a ring of ``stages`` shared-memory buffers.

The schedule: the work is ``tiles x k_stages`` units, numbered tile-major (tile t holds units
t * k_stages .. (t + 1) * k_stages - 1; tiles are numbered row tile fastest,
``tile = token_tile * row_tiles + row_tile``). CTA c of G takes the contiguous units
``[c U / G, (c + 1) U / G)``, so its work is one or more *segments* (a k-stage range of one
tile)::

    units  |tile 0 .............|tile 1 .............|tile 2 .............|
    G = 3  |CTA 0 ........|CTA 1 ........|CTA 2 .....................|      (stream-K)
    G = 6  |CTA 0  |CTA 1 |CTA 2  |CTA 3 |CTA 4  |CTA 5 |                   (split-K 2)

``split_k = s`` is the classic grid, G = tiles * s (each tile's k stages in s even parts);
``stream_k_ctas = G`` is the persistent stream-K grid, G CTAs (usually one per SM) sharing all
units evenly, so no SM idles when the tiles do not divide among the SMs. A segment that covers
its whole tile is stored directly; the others add exact int32 partials into a workspace and
count their stages on the tile's counter; the segment that completes the count runs the
epilogue. Integer addition is exact and commutative, so every schedule gives the same bits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .constants import BLOCK_BYTES, BLOCK_K, BLOCK_ROWS, META_BYTES_PER_BLOCK

# wgmma.mma_async m64nNk32 with .s8 operands accepts these n (PTX ISA, "Matrix shape" table of
# the wgmma section, for the .s8/.u8 types).
WGMMA_S8_N = (8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256)
CTA_SHARED_MEMORY = 227 * 1024  # bytes of shared memory a Hopper CTA can have, static and dynamic
# The kernels' static __shared__ variables (split-K flag, ExCP's barriers, the epilogue's token
# scales) fit in this; tests/gpu/test_compile.py checks every build with ptxas -v.
STATIC_SHARED_RESERVE = 1024
SHARED_MEMORY_LIMIT = CTA_SHARED_MEMORY - STATIC_SHARED_RESERVE  # dynamic shared memory of a configuration
# Tiles of this wgmma n stage the epilogue's fp16 results in shared memory after the ring, a tile
# of tokens x rows x 2 bytes, and store y in 16-byte chunks (STAGED_STORES_N in
# gpu/kernels/w4a8_hopper.cu, the same value; tests/gpu/test_codegen.py checks it).
STAGED_STORES_TOKENS = 64
# Split-K tiles up to this wgmma n, split into 2..CLUSTER_SPLIT_K_MAX, run as thread block clusters
# of their split_k CTAs and add their partial sums through distributed shared memory: each row
# block's owner CTA receives the others' int32 partials into an exchange buffer after the ring
# (over the staging tile where there is one). Both values are ClusterExchange's in
# gpu/kernels/w4a8_hopper.cu (tests/gpu/test_codegen.py checks them). Clusters of 4 measured
# 40-50 % slower than the workspace on an H200 (8B o and down at M = 1-64: 128 CTAs in clusters
# of 4 do not all fit on the GPCs at once), clusters of 2 faster (docs/performance.md).
CLUSTER_SPLIT_K_MAX = 2
CLUSTER_SPLIT_MAX_TOKENS = 64
# The kernel's shared memory beside the stage ring: its mbarriers, in a 256-byte region.
# gpu/kernels/w4a8_hopper.cu holds the same value; tests/gpu/test_codegen.py checks it.
BARRIER_REGION_BYTES = 256
DEFAULT_NUM_SMS = 132  # H100 SXM and H200
# Compute warpgroups a CTA may have (64 weight rows each). Three share the registers the load
# warpgroup gives up (COMPUTE_WARPGROUP_REGISTERS<CWG> in gpu/kernels/w4a8_hopper.cu).
COMPUTE_WARPGROUPS = (1, 2, 3)


class Segment(NamedTuple):
    """A CTA's work on one tile: k stages [first_stage, last_stage) of tile ``tile``."""

    tile: int
    row_tile: int
    token_tile: int
    first_stage: int
    last_stage: int
    k_stages: int  # the tile's k stages in all

    @property
    def whole(self) -> bool:
        """True when the segment is the tile's whole k range (stored without partials)."""
        return self.first_stage == 0 and self.last_stage == self.k_stages


@dataclass(frozen=True)
class TileConfig:
    """One tile configuration of the W4A8 kernel (see the module docstring)."""

    compute_warpgroups: int = 2
    tokens_per_cta: int = 64
    k_per_stage: int = 128
    stages: int = 4
    split_k: int = 1
    stream_k_ctas: int = 0

    def __post_init__(self) -> None:
        if self.compute_warpgroups not in COMPUTE_WARPGROUPS:
            raise ValueError(f"compute_warpgroups must be one of {COMPUTE_WARPGROUPS}; got {self.compute_warpgroups}")
        if self.tokens_per_cta not in WGMMA_S8_N:
            raise ValueError(
                f"tokens_per_cta must be a wgmma .s8 n {WGMMA_S8_N}; got {self.tokens_per_cta}"
            )
        if self.k_per_stage <= 0 or self.k_per_stage % BLOCK_K != 0:
            raise ValueError(f"k_per_stage must be a positive multiple of {BLOCK_K}")
        if not 2 <= self.stages <= 16:
            raise ValueError(f"stages must be 2..16; got {self.stages}")
        if self.split_k < 1:
            raise ValueError(f"split_k must be >= 1; got {self.split_k}")
        if self.stream_k_ctas < 0:
            raise ValueError(f"stream_k_ctas must be >= 0 (0: no stream-K); got {self.stream_k_ctas}")
        if self.stream_k_ctas and self.split_k != 1:
            raise ValueError(
                f"split_k = {self.split_k} and stream_k_ctas = {self.stream_k_ctas}: choose one "
                "schedule (stream-K needs split_k = 1)"
            )
        if self.shared_memory_bytes > SHARED_MEMORY_LIMIT:
            raise ValueError(
                f"{self} needs {self.shared_memory_bytes} bytes of dynamic shared memory, more than "
                f"the {SHARED_MEMORY_LIMIT} a CTA can have beside the kernels' static variables"
            )

    @property
    def rows_per_cta(self) -> int:
        """Weight rows (output features) per CTA tile."""
        return BLOCK_ROWS * self.compute_warpgroups

    @property
    def blocks_per_stage(self) -> int:
        """Packed 64 x 64 blocks per compute warpgroup per stage."""
        return self.k_per_stage // BLOCK_K

    @property
    def weight_stage_bytes(self) -> int:
        """Codes plus metadata of one stage for the whole CTA."""
        return self.compute_warpgroups * self.blocks_per_stage * (BLOCK_BYTES + META_BYTES_PER_BLOCK)

    @property
    def activation_stage_bytes(self) -> int:
        """int8 activations of one stage: tokens_per_cta x k_per_stage."""
        return self.tokens_per_cta * self.k_per_stage

    @property
    def epilogue_staging_bytes(self) -> int:
        """The epilogue's fp16 staging tile (tokens x rows) at n = STAGED_STORES_TOKENS, else 0."""
        if self.tokens_per_cta != STAGED_STORES_TOKENS:
            return 0
        return self.tokens_per_cta * self.rows_per_cta * 2

    @property
    def cluster_split(self) -> bool:
        """True when the split-K CTAs of a tile form a thread block cluster and add their
        partials through distributed shared memory (2 <= split_k <= CLUSTER_SPLIT_K_MAX, n <=
        CLUSTER_SPLIT_MAX_TOKENS, and each CTA owns at most one row block: compute_warpgroups <=
        split_k); otherwise split-K partials go through a global workspace."""
        return (2 <= self.split_k <= CLUSTER_SPLIT_K_MAX and self.tokens_per_cta <= CLUSTER_SPLIT_MAX_TOKENS
                and self.compute_warpgroups <= self.split_k and not self.stream_k_ctas)

    @property
    def split_exchange_bytes(self) -> int:
        """The cluster split's exchange buffer, else 0: room for the most senders a cluster split
        has, CLUSTER_SPLIT_K_MAX - 1 slices of one 64-row block's int32 partials (64 x
        tokens_per_cta each), as ClusterExchange::BYTES in the kernel."""
        if not self.cluster_split:
            return 0
        return (CLUSTER_SPLIT_K_MAX - 1) * BLOCK_ROWS * self.tokens_per_cta * 4

    @property
    def shared_memory_bytes(self) -> int:
        """Dynamic shared memory of one CTA: the barrier region, the stage ring and after it the
        epilogue's staging tile and the cluster split's exchange buffer (the same bytes: the
        kernel reads the exchange before it writes the staging tile)."""
        return (BARRIER_REGION_BYTES + self.stages * (self.weight_stage_bytes + self.activation_stage_bytes)
                + max(self.epilogue_staging_bytes, self.split_exchange_bytes))

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        """Tiles along (weight rows, tokens) and ``split_k``, for an [M, K] x [N, K] problem.

        The classic grid has the product of these CTAs; see ``cta_count`` for every schedule.
        """
        return (
            -(-n // self.rows_per_cta),
            -(-m // self.tokens_per_cta),
            self.split_k,
        )

    def k_stages(self, k: int) -> int:
        """k stages of one tile (the kernel needs K % k_per_stage == 0; the reference pads)."""
        return -(-k // self.k_per_stage)

    def work_units(self, m: int, n: int, k: int) -> int:
        """U = tiles x k stages, the units the schedule shares among the CTAs."""
        row_tiles, token_tiles, _ = self.grid(m, n)
        return row_tiles * token_tiles * self.k_stages(k)

    def cta_count(self, m: int, n: int, k: int) -> int:
        """G, the CTAs the kernel launches (a 1-D grid): tiles x split_k, or for stream-K
        ``stream_k_ctas`` (never more than the units)."""
        row_tiles, token_tiles, _ = self.grid(m, n)
        if self.stream_k_ctas:
            return max(1, min(self.stream_k_ctas, self.work_units(m, n, k)))
        return row_tiles * token_tiles * self.split_k

    def unit_range(self, cta: int, m: int, n: int, k: int) -> tuple[int, int]:
        """The [first, last) units of CTA ``cta``: [c U / G, (c + 1) U / G)."""
        units, ctas = self.work_units(m, n, k), self.cta_count(m, n, k)
        if not 0 <= cta < ctas:
            raise ValueError(f"cta must be in [0, {ctas}); got {cta}")
        return cta * units // ctas, (cta + 1) * units // ctas

    def segments(self, cta: int, m: int, n: int, k: int) -> list[Segment]:
        """CTA ``cta``'s work, in the order it runs it: one ``Segment`` per tile it touches."""
        row_tiles = self.grid(m, n)[0]
        k_stages = self.k_stages(k)
        first, last = self.unit_range(cta, m, n, k)
        out = []
        unit = first
        while unit < last:
            tile, stage = divmod(unit, k_stages)
            end = min(last, (tile + 1) * k_stages)
            out.append(Segment(tile, tile % row_tiles, tile // row_tiles, stage, stage + end - unit, k_stages))
            unit = end
        return out

    def k_stage_range(self, split: int, k: int) -> tuple[int, int]:
        """The [first, last) k stages that split ``split`` of ``split_k`` sums (classic grid)."""
        total = self.k_stages(k)
        return split * total // self.split_k, (split + 1) * total // self.split_k


def most_stages(config: TileConfig, most: int = 8, fits=None) -> TileConfig:
    """``config`` with the most ring stages, from ``most`` down to 2, that fit in a CTA's shared
    memory (and for which ``fits(candidate)`` is true, when given).

    Raises ``ValueError`` when no number of stages from 2 up fits.
    """
    for stages in range(most, 1, -1):
        try:
            candidate = dataclasses.replace(config, stages=stages)
        except ValueError:  # that many stages do not fit in shared memory
            continue
        if fits is None or fits(candidate):
            return candidate
    raise ValueError(f"no number of stages from 2 to {most} of {config} fits in shared memory")


# Prefill (M >= 2048): relative time per token of a 128 x n tile, n = 192 as 1. Wider tiles reuse
# each dequantized weight for more tokens. Measured on an H100 (docs/performance.md, tuning log:
# 70B gate_up at M = 4096, where the waves are nearly full for every n: time / (waves x n)).
PREFILL_TOKEN_COST = {176: 1.042, 192: 1.0, 208: 0.95, 224: 0.916}


def prefill_tokens(m: int, n: int, num_sms: int = DEFAULT_NUM_SMS) -> int:
    """The wgmma n of a prefill tile (M >= 2048): the one of ``PREFILL_TOKEN_COST`` with the
    least estimated time, waves x n x cost per token, where waves = ceil(tiles / SMs). A last
    wave that leaves SMs idle costs a whole wave, so the n whose tiles fill the waves best can
    win although its tile is not the cheapest per token (8B down at M = 4096: n = 208 gives 640
    tiles, 4.85 waves, against n = 192's 704 tiles, 5.33 waves, and measured 11 % faster).
    Ties go to the smaller n."""

    def estimated_time(tokens: int) -> float:
        row_tiles, token_tiles, _ = TileConfig(2, tokens, BLOCK_K, 2).grid(m, n)
        waves = -(-row_tiles * token_tiles // num_sms)
        return waves * tokens * PREFILL_TOKEN_COST[tokens]

    return min(sorted(PREFILL_TOKEN_COST), key=estimated_time)


# Three compute warpgroups (192-row tiles): how many times as long one wave of them takes as a
# wave of 128-row tiles, by wgmma n (the key: the largest n it holds for; none above it).
# Measured on an H100 (docs/performance.md, tuning log; per wave, same run): 1.39-1.45 up to
# n = 64 (70B gate_up M = 1: 4 waves of 128-row tiles 91.7 us, 3 waves of 192-row tiles 95.4 us;
# 70B qkv M = 128: 2 waves 44.1 us, 1 wave 31.9 us; 70B gate_up M = 128: 7 waves 189.9 us, 5
# waves 191.3 us) and about 1.57 at n = 128 with 128-k stages (70B o M = 320: 2 waves 62.2 us, 1
# wave 49.0; down 197.7 -> 154.5). Rounded up, so the rule takes them only where they save waves
# by a clear margin: in practice one wave of 192-row tiles instead of two of 128.
THREE_WARPGROUP_WAVE_COST = {64: 1.5, 128: 1.8}
THREE_WARPGROUP_MAX_TOKENS = max(THREE_WARPGROUP_WAVE_COST)
# Wider three-warpgroup tiles (n > 64) take stages of at most this many k: with 256-k stages the
# n = 128 build has too few registers for the wgmma pipeline and ptxas serializes its wgmmas.
THREE_WARPGROUP_WIDE_K_PER_STAGE = 128


def waves(config: TileConfig, m: int, n: int, num_sms: int = DEFAULT_NUM_SMS) -> int:
    """Waves of CTAs of the classic grid of ``config`` for an [M, K] x [N, K] problem, one CTA per
    SM: ceil(tiles x split_k / SMs)."""
    row_tiles, token_tiles, split_k = config.grid(m, n)
    return -(-row_tiles * token_tiles * split_k // num_sms)


def choose_compute_warpgroups(m: int, n: int, tokens: int, num_sms: int = DEFAULT_NUM_SMS) -> int:
    """2, or 3 where 192-row tiles of ``tokens`` (unsplit) need so many fewer waves than 128-row
    tiles that, at ``THREE_WARPGROUP_WAVE_COST`` a wave, they take less time: 70B qkv (N = 10240)
    at M = 65-256, 70B o and down (N = 8192) at M = 257-384 (n = 128: 192 tiles of 128 rows, two
    waves; 129 of 192 rows, one), 8B qkv (N = 6144) at M = 257-512, 8B o and down (N = 4096) at
    M = 513-768. Where 128-row tiles
    fit in one wave (the split-K shapes among them) three warpgroups can only lose: each SM's
    tile is longer and no wave goes away."""
    if tokens > THREE_WARPGROUP_MAX_TOKENS:
        return 2
    cost = THREE_WARPGROUP_WAVE_COST[min(t for t in THREE_WARPGROUP_WAVE_COST if t >= tokens)]
    two, three = (waves(TileConfig(cwg, tokens, BLOCK_K, 2), m, n, num_sms) for cwg in (2, 3))
    return 3 if three * cost < two else 2


def choose_tile_config(m: int, n: int, k: int, num_sms: int = DEFAULT_NUM_SMS,
                       compute_warpgroups: int | None = None) -> TileConfig:
    """The configuration the GPU kernel launches for an M x N x K problem.

    Decode and mid M (M <= 128) take the smallest wgmma n of 8..64 that covers M, so no token is
    padded beyond the next valid n; when there are fewer CTA tiles than SMs, split-K spreads K
    over more CTAs (each keeping enough stages of work). Two compute warpgroups (128-row tiles),
    or three (192 rows) where ``choose_compute_warpgroups`` finds they save a wave;
    ``compute_warpgroups`` (1..3) overrides that. The classic grid throughout (``stream_k_ctas`` = 0):
    the Hopper kernel built with the stream-K schedule measured slower (docs/performance.md).
    M = 0 gets the configuration of M = 1.
    """
    for name, value, low in (("m", m, 0), ("n", n, 1), ("k", k, 1), ("num_sms", num_sms, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    if compute_warpgroups is not None and (isinstance(compute_warpgroups, bool) or not isinstance(
            compute_warpgroups, (int, np.integer)) or compute_warpgroups not in COMPUTE_WARPGROUPS):
        raise ValueError(f"compute_warpgroups must be None or one of {COMPUTE_WARPGROUPS}; got {compute_warpgroups!r}")
    m = max(int(m), 1)
    # Measured on an H200 (graph-timed sweeps, docs/performance.md): 256-k stages win on every
    # shape (fewer barrier round trips per byte and per MAC); up to M = 128 the smallest wgmma n
    # of 8, 16, 32, 64 that covers M (one token tile up to M = 64); 129 <= M < 2048 takes
    # n = 128, and M >= 2048 the widest tiles, n by prefill_tokens (waves and reuse).
    if k % 256 == 0:
        k_per_stage = 256
    else:
        k_per_stage = 128 if k % 128 == 0 else 64
    if m <= 64:
        tokens = next(t for t in (8, 16, 32, 64) if t >= m)
    elif m <= 128:
        tokens = 64
    elif m < 2048:
        tokens = 128
    else:
        tokens = prefill_tokens(m, n, num_sms)
    if compute_warpgroups is None:
        compute_warpgroups = choose_compute_warpgroups(m, n, tokens, num_sms)
    if compute_warpgroups == 3 and tokens > 64:
        k_per_stage = min(k_per_stage, THREE_WARPGROUP_WIDE_K_PER_STAGE)
    base = TileConfig(compute_warpgroups, tokens, k_per_stage, 2, 1)
    rows_tiles, token_tiles, _ = base.grid(m, n)
    tiles = rows_tiles * token_tiles
    k_stages = base.k_stages(k)
    # Split-K when the tiles leave SMs idle, each split keeping >= 4 stages. Up to M = 128 the
    # splits' partial sums are cheap (plain stores of each split's registers, summed by the last
    # one): 70B down at M = 64 76 -> 54 us with split 2. Wider tiles split only when fewer than
    # half the SMs have a tile, into >= 16 stages.
    split = 1
    if tokens <= 64 and tiles < num_sms:
        split = max(1, min(num_sms // tiles, k_stages // 4))
    elif tiles < num_sms // 2:
        split = max(1, min(num_sms // tiles, k_stages // 16))
    return most_stages(dataclasses.replace(base, split_k=split))
