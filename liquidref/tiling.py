"""The kernel's tile configuration, shared by the tiled pipeline reference and the GPU kernel.

A CTA computes a tile of ``rows_per_cta`` weight rows (output features) x ``tokens_per_cta``
tokens of ``Y^T = W X^T``. Its ``compute_warpgroups`` warpgroups each own 64 of those rows (the
wgmma m); ``tokens_per_cta`` is the wgmma n. The k loop runs over stages of ``k_per_stage``
(a multiple of one 64-k packed block) through a ring of ``stages`` shared-memory buffers, and
``split_k`` CTAs share one output tile, each summing a contiguous range of k stages into exact
int32 partials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import BLOCK_BYTES, BLOCK_K, BLOCK_ROWS, META_BYTES_PER_BLOCK

# wgmma.mma_async m64nNk32 with .s8 operands accepts these n (PTX ISA, "Matrix shape" table of
# the wgmma section, for the .s8/.u8 types).
WGMMA_S8_N = (8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256)
SHARED_MEMORY_LIMIT = 227 * 1024  # bytes of dynamic shared memory a Hopper CTA can opt into
# The kernel's shared memory beside the stage ring: its mbarriers, in a 256-byte region.
# gpu/kernels/w4a8_hopper.cu holds the same value; tests/gpu/test_codegen.py checks it.
BARRIER_REGION_BYTES = 256
DEFAULT_NUM_SMS = 132  # H100 SXM and H200


@dataclass(frozen=True)
class TileConfig:
    """One tile configuration of the W4A8 kernel (see the module docstring)."""

    compute_warpgroups: int = 2
    tokens_per_cta: int = 64
    k_per_stage: int = 128
    stages: int = 4
    split_k: int = 1

    def __post_init__(self) -> None:
        if self.compute_warpgroups not in (1, 2):
            raise ValueError(f"compute_warpgroups must be 1 or 2; got {self.compute_warpgroups}")
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
        if self.shared_memory_bytes > SHARED_MEMORY_LIMIT:
            raise ValueError(
                f"{self} needs {self.shared_memory_bytes} bytes of shared memory, more than "
                f"the {SHARED_MEMORY_LIMIT} a CTA can have"
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
    def shared_memory_bytes(self) -> int:
        """Dynamic shared memory of one CTA: the barrier region and the stage ring."""
        return BARRIER_REGION_BYTES + self.stages * (self.weight_stage_bytes + self.activation_stage_bytes)

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        """CTAs along (weight rows, tokens, split-K) for an [M, K] x [N, K] problem."""
        return (
            -(-n // self.rows_per_cta),
            -(-m // self.tokens_per_cta),
            self.split_k,
        )

    def k_stage_range(self, split: int, k: int) -> tuple[int, int]:
        """The [first, last) k stages that split ``split`` of ``split_k`` sums."""
        total = -(-k // self.k_per_stage)
        return split * total // self.split_k, (split + 1) * total // self.split_k


def choose_tile_config(m: int, n: int, k: int, num_sms: int = DEFAULT_NUM_SMS) -> TileConfig:
    """The configuration the GPU kernel launches for an M x N x K problem.

    Decode (small M) takes the smallest wgmma n that covers M, so no token is padded beyond the
    next valid n; when there are fewer CTA tiles than SMs, split-K spreads K over more CTAs
    (each keeping enough stages of work). M = 0 gets the configuration of M = 1.
    """
    for name, value, low in (("m", m, 0), ("n", n, 1), ("k", k, 1), ("num_sms", num_sms, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    m = max(int(m), 1)
    # Measured on an H200 (graph-timed sweeps, docs/performance.md): 256-k stages win on every
    # shape (fewer barrier round trips per byte and per MAC); decode takes the smallest wgmma n
    # that covers M; mid M takes n = 64 (n = 32 when that leaves most SMs idle); M >= 129 takes
    # n = 128, and M >= 2048 n = 192 (1.1-1.25 POP/s at M = 4096 against 0.95 for cuBLAS int8).
    if m <= 32:
        tokens = next(t for t in (8, 16, 32) if t >= m)
    elif m <= 128:
        tokens = 64
        if -(-n // 128) * -(-m // 64) < num_sms // 2:
            tokens = 32
    else:
        tokens = 128 if m < 2048 else 192
    if k % 256 == 0:
        k_per_stage = 256
    else:
        k_per_stage = 128 if k % 128 == 0 else 64
    stages = 2
    for candidate in range(8, 2, -1):
        try:
            stages = TileConfig(2, tokens, k_per_stage, candidate, 1).stages
            break
        except ValueError:  # that many stages do not fit in shared memory
            continue
    base = TileConfig(2, tokens, k_per_stage, stages, 1)
    rows_tiles, token_tiles, _ = base.grid(m, n)
    tiles = rows_tiles * token_tiles
    k_stages = -(-k // k_per_stage)
    # Split-K when the tiles leave SMs idle, while each split keeps enough stages: its int32
    # partials cost atomics that grow with the tile's tokens (4 stages suffice for n <= 16;
    # wider tiles split only when fewer than half the SMs have a tile, into >= 16 stages).
    split = 1
    if tokens <= 16 and tiles < num_sms:
        split = max(1, min(num_sms // tiles, k_stages // 4))
    elif tiles < num_sms // 2:
        split = max(1, min(num_sms // tiles, k_stages // 16))
    return TileConfig(2, tokens, k_per_stage, stages, split)
