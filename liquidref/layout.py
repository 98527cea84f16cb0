"""The Dual-MMA packed weight layout: the bytes every executor (tiled reference, emulator,
GPU kernels) reads.

A block is 64 output rows x 64 k (one LiquidQuant group) = 2048 bytes = 128 threads x 16 bytes.
Thread ``t`` of a compute warpgroup (``warp = t // 32``, ``lane = t % 32``) loads its 16 bytes
with one LDS.128 and gets the codes of its A fragments for the block's two wgmma k32 steps::

    16 bytes of thread t = 4 words P0 P1 P2 P3 (little-endian uint32)

              low nibbles of Pp            high nibbles of Pp
    P0   row r,   k 4q+0..3  (k32 step 0)   row r+8, k 4q+0..3       -> A regs 0, 1 of step 0
    P1   row r,   k 16+4q..  (k32 step 0)   row r+8, k 16+4q..       -> A regs 2, 3 of step 0
    P2   row r,   k 32+4q..  (k32 step 1)   row r+8, k 32+4q..       -> A regs 0, 1 of step 1
    P3   row r,   k 48+4q..  (k32 step 1)   row r+8, k 48+4q..       -> A regs 2, 3 of step 1

    with r = 16 * warp + lane // 4 and q = lane % 4.

Element (r, c) of a block therefore sits at::

    t    = 32 * (r // 16) + 4 * (r % 8) + (c % 16) // 4
    p    = 2 * (c // 32) + (c % 32) // 16
    byte = 16 * t + 4 * p + c % 4
    nibble: low when (r % 16) // 8 == 0, else high

so ``w & 0x0F0F0F0F`` is the A register of row r and ``(w >> 4) & 0x0F0F0F0F`` that of row r+8.
A warp's 32 LDS.128 cover 512 contiguous bytes: no bank conflicts.

The per-group metadata of a block is 128 bytes = 32 words. Word ``j`` serves the 4 threads with
``8 * warp + lane // 4 == j`` and holds ``[s_r, a_r, s_r+8, a_r+8]`` for ``r = 16 * (j // 8) + j % 8``
(one LDS.32 per thread per block; the 4 threads of a quad read the same word, a broadcast).

Blocks are stored row-block major: ``codes[N/64, K/64, 2048]`` and ``meta[N/64, K/64, 128]``, so a
row block's stream of k stages is contiguous in memory (one bulk copy per stage and row block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate as v
from .constants import (
    ACT_CORE_BYTES,
    ACT_CORE_ROWS,
    BLOCK_BYTES,
    BLOCK_K,
    BLOCK_ROWS,
    GROUP_SIZE,
    META_BYTES_PER_BLOCK,
)
from .quant import LiquidQuantWeight


def code_position(r, c):
    """Where element (r, c) of a 64 x 64 block lives: (byte 0..2047, high nibble 0/1).

    Vectorized: ``r`` and ``c`` may be integer arrays of one shape.
    """
    r = np.asarray(r)
    c = np.asarray(c)
    thread = 32 * (r // 16) + 4 * (r % 8) + (c % 16) // 4
    word = 2 * (c // 32) + (c % 32) // 16
    byte = 16 * thread + 4 * word + c % 4
    return byte, (r % 16) // 8


def meta_position(r):
    """Where row r's (s, a) of a block live: (byte of s 0..127, byte of a = that + 1)."""
    r = np.asarray(r)
    word = 8 * (r // 16) + r % 8
    s_byte = 4 * word + 2 * ((r % 16) // 8)
    return s_byte, s_byte + 1


def _block_maps():
    """Inverse maps: for each byte of a block, the (row, col) of its low nibble (high = row + 8)."""
    r, c = np.meshgrid(np.arange(BLOCK_ROWS), np.arange(BLOCK_K), indexing="ij")
    byte, high = code_position(r, c)
    low = high == 0
    row_of_byte = np.empty(BLOCK_BYTES, np.int64)
    col_of_byte = np.empty(BLOCK_BYTES, np.int64)
    row_of_byte[byte[low]] = r[low]
    col_of_byte[byte[low]] = c[low]
    s_byte, _ = meta_position(np.arange(BLOCK_ROWS))
    row_of_meta = np.empty(META_BYTES_PER_BLOCK // 2, np.int64)
    row_of_meta[s_byte // 2] = np.arange(BLOCK_ROWS)
    return row_of_byte, col_of_byte, row_of_meta


_ROW_OF_BYTE, _COL_OF_BYTE, _ROW_OF_META_PAIR = _block_maps()


@dataclass(frozen=True, eq=False)
class PackedWeight:
    """A LiquidQuant weight in the kernel's Dual-MMA layout.

    Attributes:
        codes: uint8 [N/64, K/64, 2048], the packed 4-bit codes of each 64 x 64 block.
        meta: uint8 [N/64, K/64, 128], each block's (s, a) pairs in thread order.
        s1: float32 [N], level-1 row scales.
    """

    codes: np.ndarray
    meta: np.ndarray
    s1: np.ndarray

    def __post_init__(self) -> None:
        for name, last in (("codes", BLOCK_BYTES), ("meta", META_BYTES_PER_BLOCK)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3:
                raise TypeError(f"{name} must be a uint8 numpy array of 3 dimensions")
            if arr.shape[2] != last:
                raise ValueError(f"{name} must have shape (N/64, K/64, {last}); got {arr.shape}")
        if self.codes.shape[:2] != self.meta.shape[:2]:
            raise ValueError(
                f"codes {self.codes.shape} and meta {self.meta.shape} disagree on the block grid"
            )
        v.as_vector("s1", self.s1, np.float32, self.n)

    @property
    def n(self) -> int:
        """Output features N (a multiple of 64)."""
        return self.codes.shape[0] * BLOCK_ROWS

    @property
    def k(self) -> int:
        """Input features K (a multiple of 64)."""
        return self.codes.shape[1] * BLOCK_K

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K)."""
        return self.n, self.k

    @property
    def nbytes(self) -> int:
        """Bytes the GEMM must read for the weight: codes, metadata and s1."""
        return self.codes.nbytes + self.meta.nbytes + self.s1.nbytes


def pack_weight(w: LiquidQuantWeight) -> PackedWeight:
    """Pack a LiquidQuant weight into the Dual-MMA layout.

    Args:
        w: a ``LiquidQuantWeight`` with group_size 64 and N a multiple of 64.

    Returns:
        ``PackedWeight`` (see its attributes for shapes).
    """
    if not isinstance(w, LiquidQuantWeight):
        raise TypeError(f"expected a LiquidQuantWeight; got {type(w).__name__}")
    if w.group_size != GROUP_SIZE:
        raise ValueError(
            f"the packed layout holds one group per 64-k block: group_size must be {GROUP_SIZE}, "
            f"got {w.group_size}"
        )
    n, k = w.shape
    if n % BLOCK_ROWS != 0:
        raise ValueError(f"N = {n} must be a multiple of {BLOCK_ROWS} to pack")
    nb, kb = n // BLOCK_ROWS, k // BLOCK_K
    # blocks[i, j, r, c] = q4[64 i + r, 64 j + c]
    blocks = w.q4.reshape(nb, BLOCK_ROWS, kb, BLOCK_K).transpose(0, 2, 1, 3)
    low = blocks[:, :, _ROW_OF_BYTE, _COL_OF_BYTE]
    high = blocks[:, :, _ROW_OF_BYTE + 8, _COL_OF_BYTE]
    codes = (low | (high << 4)).astype(np.uint8)

    # s, a per (row block, k block, row): [nb, kb, 64]
    s_rows = w.s.reshape(nb, BLOCK_ROWS, kb).transpose(0, 2, 1)
    a_rows = w.a.reshape(nb, BLOCK_ROWS, kb).transpose(0, 2, 1)
    meta = np.empty((nb, kb, META_BYTES_PER_BLOCK), np.uint8)
    meta[:, :, 0::2] = s_rows[:, :, _ROW_OF_META_PAIR]
    meta[:, :, 1::2] = a_rows[:, :, _ROW_OF_META_PAIR]
    return PackedWeight(codes=np.ascontiguousarray(codes), meta=meta, s1=w.s1.copy())


def unpack_weight(packed: PackedWeight) -> LiquidQuantWeight:
    """Invert ``pack_weight``: the ``LiquidQuantWeight`` (group_size 64) the bytes encode."""
    if not isinstance(packed, PackedWeight):
        raise TypeError(f"expected a PackedWeight; got {type(packed).__name__}")
    nb, kb, _ = packed.codes.shape
    blocks = np.empty((nb, kb, BLOCK_ROWS, BLOCK_K), np.uint8)
    blocks[:, :, _ROW_OF_BYTE, _COL_OF_BYTE] = packed.codes & 0x0F
    blocks[:, :, _ROW_OF_BYTE + 8, _COL_OF_BYTE] = packed.codes >> 4
    q4 = blocks.transpose(0, 2, 1, 3).reshape(nb * BLOCK_ROWS, kb * BLOCK_K)
    s_rows = np.empty((nb, kb, BLOCK_ROWS), np.uint8)
    a_rows = np.empty((nb, kb, BLOCK_ROWS), np.uint8)
    s_rows[:, :, _ROW_OF_META_PAIR] = packed.meta[:, :, 0::2]
    a_rows[:, :, _ROW_OF_META_PAIR] = packed.meta[:, :, 1::2]
    to_rows = lambda m: m.transpose(0, 2, 1).reshape(nb * BLOCK_ROWS, kb)  # noqa: E731
    return LiquidQuantWeight(
        q4=np.ascontiguousarray(q4),
        s=np.ascontiguousarray(to_rows(s_rows)),
        a=np.ascontiguousarray(to_rows(a_rows)),
        s1=packed.s1.copy(),
        group_size=GROUP_SIZE,
    )


# --- the activation operand ---------------------------------------------------------------
# The kernels read int8 activations as the wgmma B operand in the K-major "core matrix" layout
# without swizzle: a core matrix is 8 token rows x 16 k-bytes = 128 contiguous bytes (row i at
# +16 i). The activation quantizer writes X in that order in global memory,
#
#     x_tiled[M_pad / 8, K / 16, 8, 16]     x_tiled[g, c, i, b] = x_i8[8 g + i, 16 c + b]
#
# (M padded with zero rows to a multiple of 8), so one stage of one 8-token group is a single
# contiguous run of k_per_stage * 8 bytes that a bulk copy moves unchanged into shared memory.
# In a stage [tokens / 8][k_per_stage / 16][8][16], the k32 step j starts at byte 256 j; the two
# k-adjacent core matrices of a step are 128 bytes apart (the descriptor's leading byte offset)
# and 8-token groups are k_per_stage * 8 bytes apart (its stride byte offset).


def tile_activation(x_i8: np.ndarray) -> np.ndarray:
    """Reorder int8 activations [M, K] into the core-matrix layout int8 [M_pad/8, K/16, 8, 16].

    K must be a multiple of 16; M is padded with zero rows to a multiple of 8.
    """
    x_i8 = v.as_matrix("x_i8", x_i8, (np.int8,))
    m, k = x_i8.shape
    if k % ACT_CORE_BYTES != 0:
        raise ValueError(f"K = {k} must be a multiple of {ACT_CORE_BYTES}")
    m_pad = -(-m // ACT_CORE_ROWS) * ACT_CORE_ROWS
    padded = np.zeros((m_pad, k), np.int8)
    padded[:m] = x_i8
    tiled = padded.reshape(m_pad // ACT_CORE_ROWS, ACT_CORE_ROWS, k // ACT_CORE_BYTES, ACT_CORE_BYTES)
    return np.ascontiguousarray(tiled.transpose(0, 2, 1, 3))


def untile_activation(x_tiled: np.ndarray, m: int) -> np.ndarray:
    """Invert ``tile_activation``: int8 [M_pad/8, K/16, 8, 16] -> int8 [m, K]."""
    groups, chunks, rows, width = x_tiled.shape
    if (rows, width) != (ACT_CORE_ROWS, ACT_CORE_BYTES) or not 0 <= m <= groups * rows:
        raise ValueError(f"expected [M_pad/8, K/16, 8, 16] with m <= M_pad; got {x_tiled.shape}, m={m}")
    return x_tiled.transpose(0, 2, 1, 3).reshape(groups * rows, chunks * width)[:m].copy()
