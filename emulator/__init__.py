"""The warp-level emulator: LiquidGEMM's load and dequant paths, executed lane by lane.

Programs (``emulator.programs``) are straight-line SASS-like instruction sequences built once in
Python (``emulator.isa``); two executors run them (``emulator.machine``): ``execute`` for values
and ``trace`` for values plus every memory access (lane, address, bank, phase) and every byte
lane's exact value. On top of them:

- ``emulator.overflow``: every valid (q4, s, offset) of LiquidQuant, the naive scheme and QoQ,
  executed; carries and wrong weights counted, minimal counterexamples, heatmaps;
- ``emulator.layouts``: one compute warpgroup's stage load in the Dual-MMA, row-major and QServe
  layouts: instructions per thread, wavefronts and bank conflicts per warp, bank heatmaps;
- ``emulator.fragments``: registers -> wgmma A fragments -> int8 weight tiles, bit-exact against
  ``liquidref``.

What the emulator does NOT model: latency, issue, scheduling and overlap (no timing at all), the
tensor core itself (wgmma operands are checked; the product is ``liquidref``'s), TMA/bulk copies
and mbarriers (a stage copy is LDG.128 + STS.128 or plain bytes), caches and DRAM, predication
and divergence, register banks and the reuse cache, and the finer rules of shared-memory
arbitration beyond "one distinct word per bank per wavefront within a phase".
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["demo_section", "instruction_table", "report", "report_lines"]


def instruction_table() -> dict[str, dict[str, int]]:
    """Instructions per 8 weights (one packed word: unpack + dequant) of each scheme's program."""
    from . import programs

    table = {}
    for name, program in (("lqq", programs.lqq_dequant_program()),
                          ("qoq", programs.qoq_dequant_program()),
                          ("naive", programs.naive_dequant_program()),
                          ("qoq_iadd", programs.qoq_dequant_program(use_vadd4=False))):
        unpack = program.counts("unpack")["total"]
        dequant = program.counts("dequant")["total"]
        table[name] = {"unpack": unpack, "dequant": dequant, "total": unpack + dequant}
    return table


def report(out_dir, *, figures: bool = True) -> dict:
    """Run every emulator experiment; write the figures into ``out_dir``; return the findings.

    The dict has at least: ``lqq_carries``, ``naive_carries``, ``qoq_unprotected_carries``
    (failing (q4, s, offset) triples: lane carries or wrong weights), ``dual_mma_bank_conflicts``
    and ``naive_layout_bank_conflicts`` (extra wavefronts per warp per stage),
    ``instructions_per_8_weights`` (scheme -> count), and ``checks_passed`` (every executed
    result agreed with ``liquidref``).
    """
    import numpy as np

    from liquidref import dequantize_int8, pack_weight, quantize_weight

    from . import fragments, layouts, overflow

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: overflow.analyze(name) for name in overflow.SCHEMES}
    layout_reports = layouts.compare_layouts()
    rng = np.random.default_rng(0)
    w = quantize_weight(rng.standard_normal((128, 4096)).astype(np.float32))
    tile_exact = bool(np.array_equal(fragments.dequantize_tile(pack_weight(w)), dequantize_int8(w)))
    written = []
    if figures:
        written.append(overflow.heatmap_figure(results, out / "overflow_heatmaps.png"))
        written.append(layouts.bank_figure(layout_reports, out / "bank_conflicts.png"))
    table = instruction_table()
    checks = (results["lqq"].failure_count == 0 and results["qoq"].failure_count == 0
              and all(r.correct for r in layout_reports.values()) and tile_exact)
    return {
        "lqq_carries": results["lqq"].failure_count,
        "naive_carries": results["naive"].failure_count,
        "qoq_carries": results["qoq"].failure_count,
        "qoq_unprotected_carries": results["qoq_unprotected"].failure_count,
        "qoq_iadd_carries": results["qoq_iadd"].failure_count,
        "dual_mma_bank_conflicts": layout_reports["dual_mma"].conflicts,
        "naive_layout_bank_conflicts": layout_reports["naive_row_major"].conflicts,
        "qserve_layout_bank_conflicts": layout_reports["qserve"].conflicts,
        "instructions_per_8_weights": {name: row["total"] for name, row in table.items()},
        "instruction_table": table,
        "overflow": overflow.summary(results),
        "layouts": {name: r.row() for name, r in layout_reports.items()},
        "tile_128x4096_bit_exact": tile_exact,
        "checks_passed": bool(checks),
        "figures": written,
        "seconds": round(time.perf_counter() - start, 3),
    }


def report_lines(result: dict) -> list[str]:
    """Human-readable lines of a ``report`` result."""
    ov = result["overflow"]
    lines = [
        "warp-level emulator (every number below was executed lane by lane)",
        f"  byte-lane failures over every valid (q4, s, offset): LiquidQuant {result['lqq_carries']} "
        f"of {ov['lqq']['triples']}, naive {result['naive_carries']}, QoQ {result['qoq_carries']}, "
        f"QoQ without protective range {result['qoq_unprotected_carries']} of "
        f"{ov['qoq_unprotected']['triples']}, QoQ with IADD for vadd4 {result['qoq_iadd_carries']}",
        f"  LiquidQuant's largest lane value q4*s + a = {ov['lqq']['max_lane_value']} (<= 255)",
    ]
    for name in ("naive", "qoq_unprotected"):
        ce = ov[name]["counterexample"]
        if ce:
            lines.append(
                f"  minimal {name} failure: q4={ce['q4']} s={ce['s']} offset byte {ce['offset_byte']} "
                f"(group [{ce['group_min']}, {ce['group_max']}]): codes {ce['codes_register']} -> "
                f"{ce['result_register']}, intended weight {ce['intended_weight']}")
    table = result["instruction_table"]
    lines.append("  instructions per 8 weights (unpack + dequant): " + ", ".join(
        f"{name} {row['unpack']}+{row['dequant']}={row['total']}" for name, row in table.items()))
    for name, row in result["layouts"].items():
        counts = row["instructions_per_thread"]
        lines.append(
            f"  {name:<16} per thread per 32 codes: {row['shared_loads_per_thread']} LDS, "
            f"{counts.get('unpack', 0)} unpack + {counts.get('dequant', 0)} dequant; per warp "
            f"{row['wavefronts_per_warp']} wavefronts, {row['bank_conflicts_per_warp']} from conflicts")
    lines.append(f"  128 x 4096 tile through LDG/STS/LDS.128 + IMAD/XOR + wgmma A map: "
                 f"{'bit-exact' if result['tile_128x4096_bit_exact'] else 'MISMATCH'} vs dequantize_int8")
    if result["figures"]:
        lines.append("  figures: " + ", ".join(result["figures"]))
    return lines


def demo_section(out_dir) -> list[str]:
    """The emulator's part of ``liquidref demo``: run ``report``, write figures into ``out_dir``,
    return the printed lines."""
    return report_lines(report(out_dir))
