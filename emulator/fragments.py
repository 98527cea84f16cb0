"""From registers to weights: the dequantized A fragments of whole tiles, executed.

A compute warpgroup (128 threads) runs ``programs.dual_mma_block_program`` on each 64 x 64 block of
its stage; thread ``t``'s output register ``frag[4 j + reg]`` is wgmma A-fragment register ``reg`` of
k32 step ``j``. ``liquidref.fragments.wgmma_a_fragment`` (the H200-verified map) says which (row, k)
each byte is, so the registers assemble into the int8 weight block the tensor core multiplies.

``dequantize_tile`` runs a whole tile of ``2 x 64`` rows (the kernel's two compute warpgroups) and
all its k stages: per stage, ``programs.stage_copy_program`` copies the two 2048-byte code blocks and
their metadata from global to shared memory with LDG.128 + STS.128 (the kernel uses a bulk copy
instead; the bytes are the same), then 256 lanes run the block program.
"""

from __future__ import annotations

import numpy as np

from liquidref.constants import (
    BLOCK_BYTES,
    BLOCK_K,
    BLOCK_ROWS,
    BYTES_PER_THREAD,
    META_BYTES_PER_BLOCK,
    MMA_K,
    THREADS_PER_WARPGROUP,
)
from liquidref.fragments import wgmma_a_fragment
from liquidref.layout import PackedWeight

from . import machine, programs

REGS_PER_STEP = 4  # A-fragment registers per thread per wgmma k32 step
STEPS_PER_BLOCK = BLOCK_K // MMA_K  # 2: the "dual" of Dual-MMA


def _block_maps():
    """row, k int64 [128 threads, 8 registers, 4 bytes] of the assembled 64 x 64 block."""
    thread, index, byte = np.meshgrid(np.arange(THREADS_PER_WARPGROUP),
                                      np.arange(REGS_PER_STEP * STEPS_PER_BLOCK), np.arange(4),
                                      indexing="ij")
    step, reg = index // REGS_PER_STEP, index % REGS_PER_STEP
    row, k = wgmma_a_fragment(thread, reg, byte)
    return row, k + MMA_K * step


_ROW, _K = _block_maps()


def assemble_block(frag: np.ndarray) -> np.ndarray:
    """Place a warpgroup's dequantized registers into the int8 weight block they represent.

    Args:
        frag: uint32 [128, 8], ``frag[t, 4 j + reg]`` = A register ``reg`` of k32 step ``j``.

    Returns:
        int8 [64, 64] (rows of the block x k of the block).
    """
    frag = np.asarray(frag)
    if frag.dtype != np.uint32 or frag.shape != (THREADS_PER_WARPGROUP, 8):
        raise ValueError(f"frag must be uint32 [128, 8]; got {frag.dtype} {frag.shape}")
    block = np.empty((BLOCK_ROWS, BLOCK_K), np.int8)
    block[_ROW, _K] = frag.view(np.uint8).reshape(THREADS_PER_WARPGROUP, 8, 4).view(np.int8)
    return block


def stage_shared_bytes(groups: int) -> int:
    """Shared-memory bytes of one stage for ``groups`` compute warpgroups: codes then metadata."""
    return groups * (BLOCK_BYTES + META_BYTES_PER_BLOCK)


def _copy(copy_program, regs_cache, global_, src, shared, dst, lanes):
    regs = regs_cache.setdefault(lanes, machine.new_registers(copy_program, lanes))
    regs[:, copy_program.inputs["src"]] = src
    regs[:, copy_program.inputs["dst"]] = dst
    machine.execute(copy_program, regs, shared, global_)


def dequantize_tile(packed: PackedWeight, row_block: int = 0, groups: int = 2,
                    program=None) -> np.ndarray:
    """The int8 weights of a ``64 groups x K`` tile, as the emulated kernel dequantizes them.

    Args:
        packed: the Dual-MMA packed weight (``liquidref.pack_weight``).
        row_block: the first 64-row block of the tile.
        groups: compute warpgroups (64-row blocks) in the tile; the kernel uses 2.
        program: the block program (default ``programs.dual_mma_block_program()``; tests pass
            mutants).

    Returns:
        int8 [64 groups, K], to compare with ``liquidref.dequantize_int8`` rows of the tile.
    """
    if not isinstance(packed, PackedWeight):
        raise TypeError(f"expected a liquidref.PackedWeight; got {type(packed).__name__}")
    n_blocks, k_blocks, _ = packed.codes.shape
    if groups < 1 or not 0 <= row_block <= n_blocks - groups:
        raise ValueError(f"row blocks {row_block}..{row_block + groups - 1} are outside the "
                         f"weight's {n_blocks} row blocks")
    program = programs.dual_mma_block_program() if program is None else program
    copy_program = programs.stage_copy_program()
    codes = packed.codes.reshape(-1)  # global memory: [N/64][K/64][2048] bytes
    meta = packed.meta.reshape(-1)
    lanes = groups * THREADS_PER_WARPGROUP
    regs = machine.new_registers(program, lanes)
    meta_base = groups * BLOCK_BYTES
    regs[:, program.inputs["codes_base"]] = 0
    regs[:, program.inputs["meta_base"]] = meta_base
    frag_columns = program.outputs["frag"]
    shared = np.zeros(stage_shared_bytes(groups), np.uint8)
    copy_regs = {}
    out = np.empty((groups * BLOCK_ROWS, k_blocks * BLOCK_K), np.int8)
    for stage in range(k_blocks):
        for g in range(groups):
            block = (row_block + g) * k_blocks + stage
            _copy(copy_program, copy_regs, codes, block * BLOCK_BYTES, shared, g * BLOCK_BYTES,
                  BLOCK_BYTES // BYTES_PER_THREAD)
            _copy(copy_program, copy_regs, meta, block * META_BYTES_PER_BLOCK, shared,
                  meta_base + g * META_BYTES_PER_BLOCK, META_BYTES_PER_BLOCK // BYTES_PER_THREAD)
        machine.execute(program, regs, shared)
        for g in range(groups):
            frag = regs[g * THREADS_PER_WARPGROUP:(g + 1) * THREADS_PER_WARPGROUP, frag_columns]
            out[g * BLOCK_ROWS:(g + 1) * BLOCK_ROWS,
                stage * BLOCK_K:(stage + 1) * BLOCK_K] = assemble_block(np.ascontiguousarray(frag))
    return out
