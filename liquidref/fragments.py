"""Fragment coordinate maps of the int8 tensor-core instructions the kernels use.

Each function maps the coordinates a *thread* sees (its index, a register, a byte lane) to the
coordinates of the *matrix* (row, k, token). All are vectorized: pass NumPy integer arrays of one
shape (or broadcastable shapes) and get arrays back. ``tests/liquidref/test_fragments.py`` checks
that every map is a bijection onto its matrix and agrees with the PTX ISA's formulas and figures:

* ``wgmma.mma_async.sync.aligned.m64nNk32.s32.s8.s8`` (Hopper, the main kernel): PTX ISA
  9.7.15.5.1.1.3 "Matrix Fragments for wgmma.mma_async.m64nNk32" (Figures 152, 153: A in
  registers, accumulator D), 9.7.15.5.1.2 "Shared Memory Matrix Layout" (K-major B, canonical
  layouts, leading/stride byte offsets) and 9.7.15.5.1.2.2 "Matrix Descriptor Format".
  The PTX ISA gives the wgmma A/D fragments as figures only; their formulas below were verified
  bit-exact on an H200 (ARCHITECTURE.md section 3). Per warp they equal the mma.sync m16n8k32
  formulas with the rows shifted by 16 * warp, which the tests check.
* ``mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32`` (the portable kernel): PTX ISA 9.7.14.5.10
  "Matrix Fragments for mma.m16n8k32" (Figures 88, 90, 91, 92), which states the formulas.

Conventions: ``thread`` is the index within the warpgroup (0..127, ``warp = thread // 32``,
``lane = thread % 32``); ``reg`` a 32-bit register of the fragment; ``byte`` the byte lane 0..3 of
that register (lane b = bits 8b..8b+7, the little-endian order of ``numpy.uint32.view(int8)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import BLOCK_ROWS, MMA_K, THREADS_PER_WARPGROUP
from .layout import ACT_CORE_BYTES, ACT_CORE_ROWS

WARP_SIZE = 32
WGMMA_M = BLOCK_ROWS  # 64: the m of wgmma m64nNk32
MMA_M, MMA_N = 16, 8  # mma.sync m16n8k32
CORE_MATRIX_BYTES = ACT_CORE_ROWS * ACT_CORE_BYTES  # 128: one 8 x 16-byte core matrix
SWIZZLE_128B_ROW_BYTES = 128  # 128-byte swizzle: one token row of an atom holds 128 k-bytes
SWIZZLE_128B_ATOM_BYTES = ACT_CORE_ROWS * SWIZZLE_128B_ROW_BYTES  # 1024: an 8-row swizzle atom
SWIZZLE_NONE, SWIZZLE_128B = 0, 1  # the descriptor's swizzle-mode field (bits 62-63)


def _check_range(name: str, value, upper: int) -> np.ndarray:
    """``value`` as an int64 array, or a ValueError unless every entry is in [0, upper)."""
    arr = np.asarray(value, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(f"{name} must be in [0, {upper}); got {arr.min()}..{arr.max()}")
    return arr


# --- wgmma m64nNk32 .s8 ----------------------------------------------------------------------


def wgmma_a_fragment(thread, reg, byte):
    """A operand of ``wgmma m64nNk32 .s8`` from registers: (thread, reg, byte) -> (row, k).

    Thread ``t`` holds four registers a0..a3 of 4 int8 each (16 of the 64 x 32 A tile)::

        warp = t // 32, lane = t % 32, g = lane // 4 (groupID), q = lane % 4

        reg | row              | k
        ----+------------------+-------------------
         0  | 16 warp + g      | 4 q + byte
         1  | 16 warp + g + 8  | 4 q + byte
         2  | 16 warp + g      | 4 q + byte + 16
         3  | 16 warp + g + 8  | 4 q + byte + 16

    i.e. ``row = 16 warp + g + 8 (reg & 1)``, ``k = 4 q + byte + 16 (reg >> 1)``.
    """
    thread = _check_range("thread", thread, THREADS_PER_WARPGROUP)
    reg = _check_range("reg", reg, 4)
    byte = _check_range("byte", byte, 4)
    warp, lane = thread // WARP_SIZE, thread % WARP_SIZE
    row = MMA_M * warp + lane // 4 + 8 * (reg & 1)
    k = 4 * (lane % 4) + byte + 16 * (reg >> 1)
    return row, k


def wgmma_accumulator_fragment(thread, reg):
    """int32 accumulator D of ``wgmma m64nNk32 .s32``: (thread, reg) -> (row, token).

    Thread ``t`` holds n/2 registers d0..d(n/2-1), in groups of 4 per 8 tokens::

        reg i | row                         | token (column)
        ------+-----------------------------+------------------------------
        4j+0  | 16 warp + g                 | 8 j + 2 q
        4j+1  | 16 warp + g                 | 8 j + 2 q + 1
        4j+2  | 16 warp + g + 8             | 8 j + 2 q
        4j+3  | 16 warp + g + 8             | 8 j + 2 q + 1

    i.e. ``row = 16 warp + g + 8 ((i >> 1) & 1)``, ``token = 2 q + (i & 1) + 8 (i >> 2)``.
    ``reg`` must be below n/2; the caller checks it against its n.
    """
    thread = _check_range("thread", thread, THREADS_PER_WARPGROUP)
    reg = _check_range("reg", reg, 128)  # n <= 256
    warp, lane = thread // WARP_SIZE, thread % WARP_SIZE
    row = MMA_M * warp + lane // 4 + 8 * ((reg >> 1) & 1)
    token = 2 * (lane % 4) + (reg & 1) + MMA_N * (reg >> 2)
    return row, token


@dataclass(frozen=True)
class WgmmaDescriptor:
    """A wgmma shared-memory matrix descriptor (PTX ISA 9.7.15.5.1.2.2), in bytes.

    Attributes:
        start: byte address of the matrix in shared memory (a multiple of 16).
        leading_byte_offset: K-major, no swizzle: the distance between the two k-adjacent core
            matrices of a k32 step; unused (encoded as 1) with a swizzle.
        stride_byte_offset: K-major: the distance between 8-row groups (of tokens).
        swizzle: ``SWIZZLE_NONE`` (0) or ``SWIZZLE_128B`` (1), the field of bits 62-63.
    """

    start: int
    leading_byte_offset: int
    stride_byte_offset: int
    swizzle: int = SWIZZLE_NONE

    def __post_init__(self) -> None:
        for name in ("start", "leading_byte_offset", "stride_byte_offset"):
            value = getattr(self, name)
            if not 0 <= value < 1 << 18 or value % 16:
                raise ValueError(f"{name} must be a multiple of 16 in [0, 2**18); got {value}")
        if self.swizzle not in (SWIZZLE_NONE, SWIZZLE_128B):
            raise ValueError(f"swizzle must be {SWIZZLE_NONE} (none) or {SWIZZLE_128B} (128 B)")

    def encode(self) -> int:
        """The 64-bit descriptor: start >> 4 in bits 0-13, LBO >> 4 in 16-29, SBO >> 4 in
        32-45, base offset 0 in 49-51 (atoms 1024-byte aligned), swizzle mode in 62-63."""
        return (
            (self.start >> 4)
            | (self.leading_byte_offset >> 4) << 16
            | (self.stride_byte_offset >> 4) << 32
            | self.swizzle << 62
        )

    @classmethod
    def decode(cls, value: int) -> WgmmaDescriptor:
        """Invert ``encode``."""
        field = lambda lo: ((value >> lo) & 0x3FFF) << 4  # noqa: E731
        return cls(field(0), field(16), field(32), (value >> 62) & 0x3)


def wgmma_b_address(token, k, desc: WgmmaDescriptor):
    """Byte address of B element (k, token) of one ``wgmma m64nNk32 .s8`` (K-major, k 0..31).

    No swizzle (the kernel's layout; PTX canonical K-major layout
    ``((8, m), (T, 2k)) : ((1T, SBO), (1, LBO))`` with T = 16 one-byte elements)::

        address = start + (token // 8) SBO + (token % 8) 16 + (k // 16) LBO + k % 16

        core matrix: 8 token rows x 16 k-bytes, 128 contiguous bytes
        +-------------+-------------+
        | k 0..15     | k 16..31    |   tokens 0..7:   at start,       start + LBO
        +-------------+-------------+
        | k 0..15     | k 16..31    |   tokens 8..15:  at start + SBO, start + SBO + LBO
        +-------------+-------------+

    128-byte swizzle (``((8, m), (T, 2k)) : ((8T, SBO), (1, T))`` then Swizzle<3, 4, 3>): a token
    row holds 128 k-bytes; the 16-byte chunk bits 4-6 of the address are XORed with its row
    bits 7-9, so chunk ``c`` of row ``r`` sits at chunk ``c ^ (r % 8)``::

        linear  = start + (token // 8) SBO + (token % 8) 128 + k
        address = linear ^ (((linear >> 7) & 7) << 4)

    (the 1024-byte atoms must be 1024-aligned: base offset 0; a k32 slice j of a 128-k tile
    has ``start = tile + 32 j``).
    """
    token = np.asarray(token, dtype=np.int64)
    k = _check_range("k", k, MMA_K)
    if token.size and token.min() < 0:
        raise ValueError("token must be >= 0")
    if desc.swizzle == SWIZZLE_NONE:
        return (
            desc.start
            + (token // ACT_CORE_ROWS) * desc.stride_byte_offset
            + (token % ACT_CORE_ROWS) * ACT_CORE_BYTES
            + (k // ACT_CORE_BYTES) * desc.leading_byte_offset
            + k % ACT_CORE_BYTES
        )
    linear = (
        desc.start
        + (token // ACT_CORE_ROWS) * desc.stride_byte_offset
        + (token % ACT_CORE_ROWS) * SWIZZLE_128B_ROW_BYTES
        + k
    )
    return linear ^ (((linear >> 7) & 7) << 4)


def activation_stage_descriptor(k_per_stage: int, step: int) -> WgmmaDescriptor:
    """The descriptor of k32 step ``step`` of a no-swizzle activation stage.

    The stage is ``[tokens / 8][k_per_stage / 16][8][16]`` bytes (``liquidref.tile_activation``
    order, copied unchanged): k32 step ``j`` starts at byte 256 j, its two core matrices are 128
    bytes apart (LBO) and 8-token groups ``k_per_stage * 8`` bytes apart (SBO).
    """
    if k_per_stage <= 0 or k_per_stage % MMA_K:
        raise ValueError(f"k_per_stage must be a positive multiple of {MMA_K}; got {k_per_stage}")
    if not 0 <= step < k_per_stage // MMA_K:
        raise ValueError(f"step must be in [0, {k_per_stage // MMA_K}); got {step}")
    return WgmmaDescriptor(
        start=step * (MMA_K // ACT_CORE_BYTES) * CORE_MATRIX_BYTES,
        leading_byte_offset=CORE_MATRIX_BYTES,
        stride_byte_offset=k_per_stage * ACT_CORE_ROWS,
    )


def swizzled_stage_descriptor(tokens: int, step: int) -> WgmmaDescriptor:
    """The descriptor of k32 step ``step`` of a 128-byte-swizzled activation stage.

    The swizzled stage is ``[k_per_stage / 128][tokens / 8]`` atoms of 1024 bytes (8 token rows
    x 128 k-bytes, chunks swizzled); see ``swizzle_activation_stage``. 8-row atoms are 1024 bytes
    apart (SBO); the k32 slice ``j`` of a 128-k tile starts at tile base + 32 j.
    """
    if tokens <= 0 or tokens % ACT_CORE_ROWS:
        raise ValueError(f"tokens must be a positive multiple of {ACT_CORE_ROWS}; got {tokens}")
    steps_per_tile = SWIZZLE_128B_ROW_BYTES // MMA_K
    tile_bytes = tokens * SWIZZLE_128B_ROW_BYTES
    return WgmmaDescriptor(
        start=(step // steps_per_tile) * tile_bytes + (step % steps_per_tile) * MMA_K,
        leading_byte_offset=16,  # unused with a swizzle; PTX "assumed 1" (encoded 16 >> 4 = 1)
        stride_byte_offset=SWIZZLE_128B_ATOM_BYTES,
        swizzle=SWIZZLE_128B,
    )


def swizzle_activation_stage(x_stage: np.ndarray) -> np.ndarray:
    """The 128-byte-swizzled shared-memory image of one activation stage.

    Args:
        x_stage: int8 [tokens, k_per_stage] (tokens a multiple of 8, k_per_stage of 128).

    Returns:
        int8 [tokens * k_per_stage] bytes: 128-k tiles one after the other, each ``tokens`` rows
        of 128 bytes, the 16-byte chunk ``c`` of row ``r`` stored at chunk ``c ^ (r % 8)`` (what a
        TMA copy with ``CU_TENSOR_MAP_SWIZZLE_128B`` writes).
    """
    tokens, kps = x_stage.shape
    if tokens % ACT_CORE_ROWS or kps % SWIZZLE_128B_ROW_BYTES:
        raise ValueError(f"expected [tokens % 8 == 0, k % 128 == 0]; got {x_stage.shape}")
    chunks = SWIZZLE_128B_ROW_BYTES // ACT_CORE_BYTES  # 8 chunks of 16 bytes per row
    # tiles[t, r, c, b] = x_stage[r, 128 t + 16 c + b]
    tiles = x_stage.reshape(tokens, kps // SWIZZLE_128B_ROW_BYTES, chunks, ACT_CORE_BYTES)
    tiles = tiles.transpose(1, 0, 2, 3)
    out = np.empty_like(tiles)
    rows = np.arange(tokens)[:, None]
    out[:, rows, np.arange(chunks)[None, :] ^ (rows % ACT_CORE_ROWS)] = tiles
    return out.reshape(-1)


# --- mma.sync m16n8k32 .s8 (portable kernel) ---------------------------------------------------


def mma_m16n8k32_a_fragment(lane, reg, byte):
    """A of ``mma.sync m16n8k32 .row .s8`` (16 x 32): (lane, reg, byte) -> (row, k).

    PTX ISA 9.7.14.5.10: element ``a_i`` with ``i = 4 reg + byte``::

        row = g       for a_i, 0 <= i < 4 or 8 <= i < 12   (regs 0, 2)
              g + 8   otherwise                            (regs 1, 3)
        k   = 4 q + (i & 3)        for i < 8                (regs 0, 1)
              4 q + (i & 3) + 16   for i >= 8               (regs 2, 3)
    """
    lane = _check_range("lane", lane, WARP_SIZE)
    reg = _check_range("reg", reg, 4)
    byte = _check_range("byte", byte, 4)
    i = 4 * reg + byte
    group, quad = lane // 4, lane % 4
    low_row = ((i >= 0) & (i < 4)) | ((i >= 8) & (i < 12))
    row = np.where(low_row, group, group + 8)
    k = np.where(i < 8, 4 * quad + (i & 3), 4 * quad + (i & 3) + 16)
    return row, k


def mma_m16n8k32_b_fragment(lane, reg, byte):
    """B of ``mma.sync m16n8k32 .col .s8`` (32 x 8): (lane, reg, byte) -> (k, column).

    PTX ISA 9.7.14.5.10: element ``b_i`` with ``i = 4 reg + byte``::

        k      = 4 q + (i & 3)        for i < 4    (reg 0)
                 4 q + (i & 3) + 16   for i >= 4   (reg 1)
        column = g
    """
    lane = _check_range("lane", lane, WARP_SIZE)
    reg = _check_range("reg", reg, 2)
    byte = _check_range("byte", byte, 4)
    i = 4 * reg + byte
    quad = lane % 4
    k = np.where(i < 4, 4 * quad + (i & 3), 4 * quad + (i & 3) + 16)
    return k, lane // 4 + 0 * k


def mma_m16n8k32_c_fragment(lane, reg):
    """C/D of ``mma.sync m16n8k32 .s32`` (16 x 8): (lane, reg) -> (row, column).

    PTX ISA 9.7.14.5.10::

        row    = g for c_i, i < 2;  g + 8 for i >= 2
        column = 2 q + (i & 1)
    """
    lane = _check_range("lane", lane, WARP_SIZE)
    reg = _check_range("reg", reg, 4)
    row = np.where(reg < 2, lane // 4, lane // 4 + 8)
    return row, 2 * (lane % 4) + (reg & 1)


# --- instruction emulation (one instruction, through the maps above) ---------------------------


def _register_bytes(regs: np.ndarray) -> np.ndarray:
    """uint32 [..., R] -> int8 [..., R, 4]: byte lane b of each register (little-endian)."""
    regs = np.ascontiguousarray(regs, dtype="<u4")
    return regs.view(np.int8).reshape(*regs.shape, 4)


def wgmma_m64nNk32(a_regs: np.ndarray, smem: np.ndarray, desc: WgmmaDescriptor, n: int,
                   d_regs: np.ndarray) -> np.ndarray:
    """One ``wgmma.mma_async m64nNk32.s32.s8.s8`` with A from registers, B from shared memory.

    Args:
        a_regs: uint32 [128, 4], each thread's A registers.
        smem: int8 [bytes], the shared memory B is read from through ``desc``.
        desc: the B descriptor.
        n: the instruction's n (tokens).
        d_regs: int32 [128, n/2], the accumulator registers (not modified).

    Returns:
        int32 [128, n/2]: ``d + A @ B`` in the accumulator fragment order (int32 wrap-around).
    """
    t, r, b = np.meshgrid(np.arange(128), np.arange(4), np.arange(4), indexing="ij")
    row, k = wgmma_a_fragment(t, r, b)
    a = np.zeros((WGMMA_M, MMA_K), np.int64)
    a[row, k] = _register_bytes(a_regs)
    token, kk = np.meshgrid(np.arange(n), np.arange(MMA_K), indexing="ij")
    bmat = smem[wgmma_b_address(token, kk, desc)].astype(np.int64)  # [n, 32]
    prod = a @ bmat.T  # [64, n]
    t, i = np.meshgrid(np.arange(128), np.arange(n // 2), indexing="ij")
    drow, dtok = wgmma_accumulator_fragment(t, i)
    return (d_regs.astype(np.int64) + prod[drow, dtok]).astype(np.int32)


def mma_m16n8k32(a_regs: np.ndarray, b_regs: np.ndarray, c_regs: np.ndarray) -> np.ndarray:
    """One ``mma.sync m16n8k32.row.col.s32.s8.s8.s32`` of a warp, through the fragment maps.

    Args:
        a_regs: uint32 [32, 4]; b_regs: uint32 [32, 2]; c_regs: int32 [32, 4].

    Returns:
        int32 [32, 4]: ``D = A @ B + C`` in the C fragment order.
    """
    lane, r, b = np.meshgrid(np.arange(32), np.arange(4), np.arange(4), indexing="ij")
    row, k = mma_m16n8k32_a_fragment(lane, r, b)
    a = np.zeros((MMA_M, MMA_K), np.int64)
    a[row, k] = _register_bytes(a_regs)
    lane, r, b = np.meshgrid(np.arange(32), np.arange(2), np.arange(4), indexing="ij")
    k, col = mma_m16n8k32_b_fragment(lane, r, b)
    bmat = np.zeros((MMA_K, MMA_N), np.int64)
    bmat[k, col] = _register_bytes(b_regs)
    prod = a @ bmat
    lane, r = np.meshgrid(np.arange(32), np.arange(4), indexing="ij")
    crow, ccol = mma_m16n8k32_c_fragment(lane, r)
    return (c_regs.astype(np.int64) + prod[crow, ccol]).astype(np.int32)
