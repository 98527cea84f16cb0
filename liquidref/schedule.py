"""A schedule model of the kernel's k loop: who does what, when, on which unit.

Two pipelines on the same ``TileConfig``, per CTA (one CTA per SM):

ImFP (the paper's implicit fine-grained pipeline, the kernel in ``gpu/kernels/w4a8_hopper.cu``)::

    load WG        | L0 | L1 | L2 | L3 |  ...            bulk copies into a ring of `stages`
    WG0 CUDA cores      |D0 |  |D1 |  |D2 |             dequant stage s (LDS, AND/SHR, IMAD, XOR)
    WG1 CUDA cores      |D0 |  |D1 |  |D2 |
    tensor core             |M0.0|M0.1|M1.0|M1.1|      wgmma of WG0 / WG1, shared, in order
                                                       per warpgroup, no handoff between WGs

  dequant of stage s+1 overlaps the MMA of stage s (two A-register buffers: D[s] waits for
  M[s-2]); ring slot s is released when every WG has finished M[s] and D[s+1] (the kernel arrives
  on empty[s] after ``wgmma.wait_group 1`` in stage s+1).

ExCP (the explicit three-role pipeline it replaces): a dequant WG dequantizes all the CTA's rows,
writes int8 back to shared memory (the extra RF -> SMEM round trip), then hands the stage to an
MMA WG through a barrier (the handoff latency); the MMA WG runs the wgmmas from shared memory.

Costs per stage are parameters (``StageCosts``); ``stage_costs`` derives them from the paper's
cost model (LiquidGEMM section 3.2-3.3, Eqs. 3-6; digest section 2.5) with device throughputs
shared evenly by the SMs: T_LD = bytes / (HBM / SMs), T_MMA = 2 rows tokens k / (TC / SMs),
T_DQ = alpha rows k / (CUDA / SMs). As in the paper's Eq. 3, the load counts the weight codes
only (activations are reused across CTAs; metadata adds 1/16 and is left out by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .constants import BLOCK_ROWS
from .tiling import TileConfig

IMFP, EXCP = "ImFP", "ExCP"


@dataclass(frozen=True)
class Hardware:
    """Device throughputs (per device) and the per-SM constants the ExCP costs need.

    The first four are the paper's Figure 1a numbers (via the digest, section 2.5). The
    shared-memory bandwidth and the handoff latency are not in the paper's model: 128 bytes per
    clock per SM at ``sm_clock_hz`` and a ``handoff_cycles`` mbarrier round trip are our
    assumptions for the ExCP ablation.
    """

    name: str
    hbm_bytes_per_s: float
    int8_tensor_ops_per_s: float
    cuda_int32_ops_per_s: float
    num_sms: int
    sm_clock_hz: float = 1.755e9
    smem_bytes_per_clock: int = 128
    handoff_cycles: int = 200


H100 = Hardware("H100 SXM", 3.3e12, 1978.9e12, 33.5e12, 132)
A100 = Hardware("A100", 2.0e12, 624e12, 19.5e12, 108, sm_clock_hz=1.41e9)

LQQ_ALPHA = 7 / 8  # instructions per dequantized weight: 7 per 8 elements (paper section 5.3)


@dataclass(frozen=True)
class StageCosts:
    """Seconds per k stage of one CTA.

    Attributes:
        load: the load WG's copy of one stage (weights; see the module docstring).
        dequant: one compute WG's dequant of its 64 rows (ImFP).
        mma: one compute WG's wgmmas (64 rows x tokens x k_per_stage).
        excp_dequant: the ExCP dequant WG's dequant of all the CTA's rows.
        excp_writeback: writing the int8 weights of the stage back to shared memory (ExCP).
        excp_handoff: the barrier between the ExCP dequant WG and MMA WG.
    """

    load: float
    dequant: float
    mma: float
    excp_dequant: float
    excp_writeback: float
    excp_handoff: float


def stage_costs(config: TileConfig, hw: Hardware = H100, weight_bits: int = 4,
                alpha: float = LQQ_ALPHA, tokens: float | None = None,
                count_metadata: bool = False) -> StageCosts:
    """The paper's per-stage costs for ``config`` on ``hw``.

    Args:
        config: the tile configuration (rows = 64 x compute_warpgroups, k = k_per_stage).
        hw: device throughputs.
        weight_bits: bits per stored weight (4 for W4A8, 8 for W8A8).
        alpha: instructions per dequantized element (0 for W8A8: no dequant).
        tokens: tokens per CTA; default ``config.tokens_per_cta`` (any positive real number is
            accepted, to locate the knee between valid wgmma n).
        count_metadata: add the 2 metadata bytes per 64 weights to the load.
    """
    tokens = config.tokens_per_cta if tokens is None else tokens
    if tokens <= 0 or weight_bits <= 0 or alpha < 0:
        raise ValueError("tokens and weight_bits must be positive and alpha >= 0")
    rows, kps, cw = config.rows_per_cta, config.k_per_stage, config.compute_warpgroups
    per_sm = lambda rate: rate / hw.num_sms  # noqa: E731
    weight_bytes = rows * kps * weight_bits / 8
    if count_metadata:
        weight_bytes += rows * kps // 64 * 2
    cuda = per_sm(hw.cuda_int32_ops_per_s)
    return StageCosts(
        load=weight_bytes / per_sm(hw.hbm_bytes_per_s),
        dequant=alpha * BLOCK_ROWS * kps / (cuda / cw),  # each WG issues on its share of the SM
        mma=2 * BLOCK_ROWS * tokens * kps / per_sm(hw.int8_tensor_ops_per_s),
        excp_dequant=alpha * rows * kps / cuda,
        excp_writeback=rows * kps / (hw.smem_bytes_per_clock * hw.sm_clock_hz),
        excp_handoff=hw.handoff_cycles / hw.sm_clock_hz,
    )


# --- the event trace ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One operation of the trace: ``kind`` of ``stage`` on ``lane`` over [start, end) seconds."""

    lane: str
    kind: str  # "load", "dequant", "writeback", "mma"
    stage: int
    start: float
    end: float
    warpgroup: int | None = None


@dataclass
class Trace:
    """The schedule of one CTA's k loop."""

    pipeline: str
    events: list[Event] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max((e.end for e in self.events), default=0.0)

    def lanes(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.events:
            seen.setdefault(e.lane, None)
        return list(seen)

    def busy(self, lane: str) -> float:
        return sum(e.end - e.start for e in self.events if e.lane == lane)


@dataclass
class _Op:
    name: tuple
    lane: str
    kind: str
    stage: int
    duration: float
    deps: list
    resource: str
    warpgroup: int | None = None
    lags: dict = field(default_factory=dict)  # dependency -> extra latency (a barrier handoff)


def _list_schedule(pipeline: str, ops: list[_Op]) -> Trace:
    """Non-preemptive list scheduling: repeatedly start the ready op that can start earliest
    (ties in program order) on its resource. Ops of one lane are chained by dependencies."""
    by_name = {op.name: op for op in ops}
    order = {op.name: i for i, op in enumerate(ops)}
    waiting = {op.name: sum(d in by_name for d in op.deps) for op in ops}
    users: dict[tuple, list] = {}
    for op in ops:
        for d in op.deps:
            if d in by_name:
                users.setdefault(d, []).append(op.name)
    end: dict[tuple, float] = {}
    free: dict[str, float] = {}
    ready = [op.name for op in ops if waiting[op.name] == 0]
    trace = Trace(pipeline)
    while ready:
        def earliest(name):
            op = by_name[name]
            after = max((end[d] + op.lags.get(d, 0.0) for d in op.deps if d in end), default=0.0)
            return max(after, free.get(op.resource, 0.0))
        best = min(ready, key=lambda nm: (earliest(nm), order[nm]))
        ready.remove(best)
        op = by_name[best]
        start = earliest(best)
        end[best] = start + op.duration
        free[op.resource] = end[best]
        trace.events.append(Event(op.lane, op.kind, op.stage, start, end[best], op.warpgroup))
        for user in users.get(best, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(end) != len(ops):
        raise RuntimeError("the dependency graph has a cycle")
    return trace


def simulate_imfp(costs: StageCosts, k_stages: int, config: TileConfig) -> Trace:
    """The ImFP schedule of ``k_stages`` stages (one load WG, ``compute_warpgroups`` compute WGs
    sharing one tensor core, a ring of ``config.stages`` buffers)."""
    cw, ring = config.compute_warpgroups, config.stages
    ops = []
    for s in range(k_stages):
        deps = [("L", s - 1)]
        if s >= ring:  # slot reuse: every WG retired M[j] and finished D[j + 1]
            j = s - ring
            deps += [("M", w, j) for w in range(cw)] + [("D", w, j + 1) for w in range(cw)]
        ops.append(_Op(("L", s), "load WG", "load", s, costs.load, deps, "load"))
        for w in range(cw):
            ops.append(_Op(("D", w, s), f"WG{w} CUDA cores", "dequant", s, costs.dequant,
                           [("L", s), ("D", w, s - 1), ("M", w, s - 2)], f"cuda{w}", w))
        for w in range(cw):
            ops.append(_Op(("M", w, s), "tensor core", "mma", s, costs.mma,
                           [("D", w, s), ("M", w, s - 1)], "tensor", w))
    return _list_schedule(IMFP, ops)


def simulate_excp(costs: StageCosts, k_stages: int, config: TileConfig,
                  int8_buffers: int = 2) -> Trace:
    """The ExCP schedule: load WG -> dequant WG (dequant, int8 write-back to shared memory) ->
    handoff barrier -> MMA WG (all the CTA's rows), ``int8_buffers`` staging buffers."""
    ring, cw = config.stages, config.compute_warpgroups
    ops = []
    for s in range(k_stages):
        deps = [("L", s - 1)]
        if s >= ring:
            deps += [("W", s - ring), ("M", s - ring)]
        ops.append(_Op(("L", s), "load WG", "load", s, costs.load, deps, "load"))
        ops.append(_Op(("D", s), "dequant WG", "dequant", s, costs.excp_dequant,
                       [("L", s), ("W", s - 1), ("M", s - int8_buffers)], "dequant"))
        ops.append(_Op(("W", s), "dequant WG", "writeback", s, costs.excp_writeback,
                       [("D", s)], "dequant"))
        ops.append(_Op(("M", s), "tensor core", "mma", s, cw * costs.mma,
                       [("W", s), ("M", s - 1)], "tensor", lags={("W", s): costs.excp_handoff}))
    return _list_schedule(EXCP, ops)


def simulate(pipeline: str, costs: StageCosts, k_stages: int, config: TileConfig) -> Trace:
    """``simulate_imfp`` or ``simulate_excp`` by name (``IMFP`` / ``EXCP``)."""
    if pipeline == IMFP:
        return simulate_imfp(costs, k_stages, config)
    if pipeline == EXCP:
        return simulate_excp(costs, k_stages, config)
    raise ValueError(f"pipeline must be {IMFP!r} or {EXCP!r}; got {pipeline!r}")


def steady_state_stage_seconds(pipeline: str, costs: StageCosts, config: TileConfig,
                               stages: tuple[int, int] = (24, 48)) -> float:
    """Seconds per k stage once the pipeline is full: the slope of the makespan."""
    a, b = (simulate(pipeline, costs, n, config).makespan for n in stages)
    return (b - a) / (stages[1] - stages[0])


# --- the memory-to-compute knee ------------------------------------------------------------------


def analytic_knee(hw: Hardware = H100, weight_bits: int = 4) -> float:
    """Tokens at which T_LD = T_MMA (paper section 3.3): ``TC * bytes_per_weight / (2 HBM)``."""
    return hw.int8_tensor_ops_per_s * (weight_bits / 8) / (2 * hw.hbm_bytes_per_s)


def simulated_knee(hw: Hardware = H100, weight_bits: int = 4, alpha: float = LQQ_ALPHA,
                   pipeline: str = IMFP, config: TileConfig = TileConfig(),
                   tolerance: float = 0.01) -> float:
    """The smallest token count at which the simulated steady state is no longer load-bound.

    Bisects tokens (a real number) over ``steady_state_stage_seconds``: below the knee the stage
    time equals the load time, above it grows with the tensor core's work.
    """
    def compute_bound(tokens: float) -> bool:
        costs = stage_costs(config, hw, weight_bits, alpha, tokens)
        return steady_state_stage_seconds(pipeline, costs, config) > costs.load * (1 + 1e-9)

    low, high = 1.0, 4096.0
    if compute_bound(low) or not compute_bound(high):
        raise ValueError("no memory-to-compute transition between 1 and 4096 tokens")
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (low, mid) if compute_bound(mid) else (mid, high)
    return (low + high) / 2


# --- figures -------------------------------------------------------------------------------------

_COLORS = {"load": "#4c72b0", "dequant": "#dd8452", "writeback": "#c44e52", "mma": "#55a868"}


def draw_timelines(traces: list[Trace], path, title: str = "", max_stages: int = 10) -> None:
    """Draw each trace as a Gantt chart (one row per lane, time in microseconds) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lane_count = sum(len(t.lanes()) for t in traces)
    fig, axes = plt.subplots(len(traces), 1, figsize=(11, 1.2 + 0.55 * lane_count), squeeze=False)
    horizon = max(max((e.end for e in t.events if e.stage < max_stages), default=0) for t in traces)
    for ax, trace in zip(axes[:, 0], traces):
        lanes = trace.lanes()
        for e in trace.events:
            if e.stage >= max_stages:
                continue
            y = len(lanes) - 1 - lanes.index(e.lane)
            shade = 0.55 if e.warpgroup == 1 else 1.0
            ax.broken_barh([(e.start * 1e6, (e.end - e.start) * 1e6)], (y - 0.4, 0.8),
                           facecolors=_COLORS[e.kind], alpha=shade, edgecolor="white",
                           linewidth=0.5)
            if e.end - e.start > 0.04 * horizon:
                label = f"{e.stage}" if e.warpgroup is None else f"{e.stage}.{e.warpgroup}"
                ax.text((e.start + e.end) / 2 * 1e6, y, label, ha="center", va="center", fontsize=7)
        ax.set_yticks(range(len(lanes)), lanes[::-1])
        ax.set_xlim(0, horizon * 1e6)
        ax.set_title(f"{trace.pipeline}: first {max_stages} k stages", fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("time (µs)")
    fig.legend(handles=[Patch(color=c, label=k) for k, c in _COLORS.items()], loc="upper right",
               ncol=4, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_knee(path, hw: Hardware = H100, config: TileConfig = TileConfig()) -> None:
    """Steady-state seconds per stage against tokens for W4A8 and W8A8, knees marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    tokens = [8] + [16 * i for i in range(1, 33)]
    for bits, alpha, color in ((4, LQQ_ALPHA, "#55a868"), (8, 0.0, "#4c72b0")):
        times = [steady_state_stage_seconds(IMFP, stage_costs(config, hw, bits, alpha, t), config,
                                            stages=(8, 16)) * 1e9 for t in tokens]
        ax.plot(tokens, times, color=color, label=f"W{bits}A8")
        knee = analytic_knee(hw, bits)
        ax.axvline(knee, color=color, linestyle=":", linewidth=1)
        ax.text(knee, max(times) * 0.95, f" knee {knee:.0f}", color=color, fontsize=8)
    ax.set_xlabel("tokens per CTA (M; the cost model runs past wgmma's n <= 256)")
    ax.set_ylabel("ns per 128-row k stage")
    ax.set_title(f"{hw.name}: load-bound until the tensor core's work exceeds the load", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_traces(m: int = 64, k_stages: int = 12, hw: Hardware = H100,
                   config: TileConfig | None = None) -> list[Trace]:
    """ImFP and ExCP traces of one CTA for ``m`` tokens (the demo's figure)."""
    config = config or TileConfig(2, max(8, min(256, 8 * math.ceil(m / 8))), 128, 4, 1)
    costs = stage_costs(config, hw, tokens=m)
    return [simulate_imfp(costs, k_stages, config), simulate_excp(costs, k_stages, config)]


__all__ = [
    "A100", "EXCP", "H100", "IMFP", "LQQ_ALPHA", "Event", "Hardware", "StageCosts", "Trace",
    "analytic_knee", "default_traces", "draw_knee", "draw_timelines", "simulate",
    "simulate_excp", "simulate_imfp", "simulated_knee", "stage_costs",
    "steady_state_stage_seconds",
]
