"""One compute warpgroup's stage load in three weight layouts, traced bank by bank.

- **Dual-MMA** (``liquidref.layout``): thread t's 16 bytes at ``16 t``: one LDS.128 per thread feeds
  two wgmma k32 steps; a warp's request is 512 contiguous bytes, 4 phases of 8 threads x 16 bytes
  = 128 contiguous bytes each: every bank once per phase, 4 wavefronts, no conflict.
- **naive row-major nibbles** (``byte = 32 r + c // 2``): one LDS.32 per A register (8 per thread
  per block), each word 8 codes of which the thread needs 4; the 8 rows a warp touches are 32
  bytes apart, so rows g and g + 4 share banks: 2 wavefronts per LDS.32.
- **QServe** (``share_to_reg_one_stage_B``, digest section 4.5): one warp per 32 x 32 block,
  lane l's 16 bytes at ``16 l``, plus one LDS.32 each for 4 scales and 4 zero points.

All counts are per thread per 32 codes (= the codes of two wgmma k32 A fragments; for QServe one
k32 step of 32 channels, i.e. the B fragments of four mma.m16n8k32), and wavefronts per warp.
Each program's registers are checked against the weights they should hold before any count is
reported, so a layout that loads fast but wrong cannot win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liquidref import dequantize_int8, pack_weight, quantize_weight
from liquidref.baselines import qoq_dequantize_int8, qoq_scaled_zeros, quantize_qoq
from liquidref.constants import BLOCK_BYTES, BLOCK_K, BLOCK_ROWS, THREADS_PER_WARPGROUP

from . import machine, programs
from .fragments import assemble_block

LAYOUTS = ("dual_mma", "naive_row_major", "qserve")


@dataclass
class LayoutReport:
    """Counts and bank accounting of one layout's stage load.

    Attributes:
        name: one of ``LAYOUTS``.
        program: the block program that ran.
        counts: section -> instructions per thread (``prologue`` once per kernel; the others per
            32 codes per thread).
        shared_loads: LDS instructions per thread per 32 codes (codes and metadata).
        wavefronts: shared-memory wavefronts per warp per 32 codes (max over the warps).
        conflicts: extra wavefronts from bank conflicts, per warp (max over the warps).
        reports: the ``machine.WavefrontReport`` of every LDS of warp 0.
        correct: the registers hold exactly the expected weights.
    """

    name: str
    program: object
    counts: dict
    shared_loads: int
    wavefronts: int
    conflicts: int
    reports: list
    correct: bool

    def row(self) -> dict:
        """JSON-ready summary."""
        return {
            "shared_loads_per_thread": self.shared_loads,
            "instructions_per_thread": {k: v for k, v in self.counts.items()},
            "wavefronts_per_warp": self.wavefronts,
            "bank_conflicts_per_warp": self.conflicts,
            "registers_correct": self.correct,
        }


def _weights(seed: int, rows: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, k)).astype(np.float32)


def naive_row_major_block(q4_block: np.ndarray) -> np.ndarray:
    """A 64 x 64 block of codes row-major, two codes per byte (low nibble = even k): uint8 [2048]."""
    pairs = q4_block.reshape(BLOCK_ROWS, BLOCK_K // 2, 2)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).astype(np.uint8).reshape(-1)


def qserve_block(q4: np.ndarray) -> np.ndarray:
    """QServe's order of a 32-channel x 32-k block of codes: uint8 [512].

    Byte ``16 (4 g + t) + 8 h + 4 b + kk`` holds channel ``8 b + g`` (low nibble) and
    ``16 + 8 b + g`` (high nibble) at k ``16 h + 4 t + kk``.
    """
    g, t, h, b, kk = np.meshgrid(*(np.arange(n) for n in (8, 4, 2, 2, 4)), indexing="ij")
    channel, k = 8 * b + g, 16 * h + 4 * t + kk
    low, high = q4[channel, k], q4[channel + 16, k]
    return (low | (high << 4)).astype(np.uint8).reshape(-1)


def _qserve_meta(values: np.ndarray) -> np.ndarray:
    """Per-channel bytes of one 32-channel block in QServe's order: byte 4 g + i = channel g + 8 i."""
    g, i = np.meshgrid(np.arange(8), np.arange(4), indexing="ij")
    return values[g + 8 * i].reshape(-1)


def _wgmma_setup(name: str, seed: int):
    """(program, shared memory, expected int8 block) for the Dual-MMA or naive layout."""
    w = quantize_weight(_weights(seed, BLOCK_ROWS, BLOCK_K))
    packed = pack_weight(w)
    if name == "dual_mma":
        program = programs.dual_mma_block_program()
        codes = packed.codes[0, 0]
    else:
        program = programs.naive_layout_block_program()
        codes = naive_row_major_block(w.q4)
    shared = np.concatenate([codes, packed.meta[0, 0]])
    return program, shared, dequantize_int8(w)


def run_layout(name: str, seed: int = 0) -> LayoutReport:
    """Trace one compute warpgroup (128 lanes) loading and dequantizing one stage in ``name``."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; expected one of {LAYOUTS}")
    if name == "qserve":
        return _run_qserve(seed)
    program, shared, expected = _wgmma_setup(name, seed)
    regs = machine.new_registers(program, THREADS_PER_WARPGROUP)
    regs[:, program.inputs["codes_base"]] = 0
    regs[:, program.inputs["meta_base"]] = BLOCK_BYTES
    regs, tr = machine.trace(program, regs, shared)
    block = assemble_block(np.ascontiguousarray(regs[:, program.outputs["frag"]]))
    return _report(name, program, tr, np.array_equal(block, expected))


def _run_qserve(seed: int) -> LayoutReport:
    channels, k = 4 * 32, 32  # 4 warps, one 32 x 32 block each (k 0..31 of a 128-k group)
    w = quantize_qoq(_weights(seed, channels, 128))
    weights = qoq_dequantize_int8(w)[:, :k]
    zeros = qoq_scaled_zeros(w).view(np.uint8)[:, 0]
    code_bytes = [qserve_block(w.q4[32 * b:32 * (b + 1), :k]) for b in range(4)]
    scale_bytes = [_qserve_meta(w.s[32 * b:32 * (b + 1), 0]) for b in range(4)]
    zero_bytes = [_qserve_meta(zeros[32 * b:32 * (b + 1)]) for b in range(4)]
    shared = np.concatenate(code_bytes + scale_bytes + zero_bytes).astype(np.uint8)
    program = programs.qserve_layout_block_program()
    regs = machine.new_registers(program, THREADS_PER_WARPGROUP)
    regs[:, program.inputs["codes_base"]] = 0
    regs[:, program.inputs["scales_base"]] = 2048
    regs[:, program.inputs["zeros_base"]] = 2048 + 128
    regs, tr = machine.trace(program, regs, shared)
    frag = np.ascontiguousarray(regs[:, program.outputs["frag"]]).view(np.int8).reshape(128, 8, 4)
    tid, index, byte = np.meshgrid(np.arange(128), np.arange(8), np.arange(4), indexing="ij")
    warp, lane = tid // 32, tid % 32
    channel = 32 * warp + lane // 4 + 8 * (index // 2)
    k_of = 16 * (index % 2) + 4 * (lane % 4) + byte
    correct = np.array_equal(frag, weights[channel, k_of])
    return _report("qserve", program, tr, correct)


def _report(name, program, tr, correct) -> LayoutReport:
    counts = {section: program.counts(section)["total"] for section in program.sections}
    reports = machine.shared_wavefronts(tr)
    warps = sorted({r.warp for r in reports})
    per_warp = [sum(r.wavefronts for r in reports if r.warp == w) for w in warps]
    conflicts = [sum(r.conflicts for r in reports if r.warp == w) for w in warps]
    loads = sum(program.counts(s)["loads"] for s in program.sections if s != "prologue")
    return LayoutReport(name, program, counts, loads, max(per_warp), max(conflicts),
                        [r for r in reports if r.warp == 0], bool(correct))


def compare_layouts(seed: int = 0) -> dict[str, LayoutReport]:
    """``run_layout`` for every layout."""
    return {name: run_layout(name, seed) for name in LAYOUTS}


def bank_figure(reports: dict[str, LayoutReport], path) -> str:
    """Bank-access heatmaps: for warp 0 of each layout, one row per (LDS, phase), one column per
    bank, colour = distinct 4-byte words the bank must serve in that phase (1 = conflict-free,
    2 = a 2-way conflict, 0 = idle). PNG at ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 6), layout="constrained")
    axes = fig.subplots(1, len(reports))
    titles = {"dual_mma": "Dual-MMA packed (LDS.128)", "naive_row_major": "row-major nibbles (LDS.32)",
              "qserve": "QServe B layout (LDS.128)"}
    for ax, (name, report) in zip(axes, reports.items()):
        rows, labels = [], []
        for r in report.reports:
            op = programs_listing_name(report.program, r.instruction)
            for phase in range(r.phases):
                rows.append(r.bank_words[phase])
                labels.append(f"{op} #{r.instruction} p{phase}")
        image = np.array(rows)
        shown = ax.imshow(image, cmap="Reds", vmin=0, vmax=max(2, int(image.max())), aspect="auto")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xlabel("bank")
        ax.set_title(f"{titles[name]}\n{report.wavefronts} wavefronts/warp, "
                     f"{report.conflicts} from conflicts", fontsize=10)
        fig.colorbar(shown, ax=ax, label="words per bank per phase", shrink=0.7)
    fig.suptitle("Shared-memory banks per phase, warp 0 of a compute warpgroup, one stage")
    fig.savefig(path, dpi=90)
    return str(path)


def programs_listing_name(program, row: int) -> str:
    """``LDS.128`` etc. for an instruction row."""
    from .isa import F_IMM2, F_OP, OPCODE_NAMES

    return f"{OPCODE_NAMES[int(program.code[row, F_OP])]}.{int(program.code[row, F_IMM2])}"
