"""The schedule model: its knees match the paper's, its traces obey the pipeline's rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liquidref.schedule import (
    A100,
    EXCP,
    H100,
    IMFP,
    LQQ_ALPHA,
    StageCosts,
    analytic_knee,
    default_traces,
    draw_knee,
    draw_timelines,
    simulate,
    simulate_excp,
    simulate_imfp,
    simulated_knee,
    stage_costs,
    steady_state_stage_seconds,
)
from liquidref.tiling import TileConfig

CONFIG = TileConfig(2, 64, 128, 4, 1)


# --- the paper's numbers (LiquidGEMM section 3.3; digest section 2.5) ---------------------------


def test_analytic_knees_match_the_paper():
    assert analytic_knee(H100, 4) == pytest.approx(150, abs=1)  # W4A8 on H100
    assert analytic_knee(H100, 8) == pytest.approx(300, abs=1)  # W8A8 on H100
    assert analytic_knee(A100, 8) == pytest.approx(156, abs=1)  # W8A8 on A100


@pytest.mark.parametrize("pipeline", [IMFP, EXCP])
def test_simulated_knee_matches_the_paper(pipeline):
    assert simulated_knee(H100, 4, LQQ_ALPHA, pipeline) == pytest.approx(150, rel=0.01)
    assert simulated_knee(H100, 8, 0.0, pipeline) == pytest.approx(300, rel=0.01)


def test_dequant_budget_matches_the_paper():
    # Memory-bound, the dequant hides behind the load while alpha <= 5.07 (paper section 3.3).
    def load_bound(alpha):
        costs = stage_costs(TileConfig(2, 8, 128, 4, 1), H100, 4, alpha)
        return steady_state_stage_seconds(IMFP, costs, CONFIG) <= costs.load * (1 + 1e-9)

    assert load_bound(LQQ_ALPHA) and load_bound(5.0)
    assert not load_bound(5.2)


def test_stage_costs_follow_the_cost_model():
    costs = stage_costs(CONFIG, H100, 4, LQQ_ALPHA)
    sm = H100.num_sms
    assert costs.load == pytest.approx(128 * 128 / 2 / (H100.hbm_bytes_per_s / sm))
    assert costs.mma == pytest.approx(2 * 64 * 64 * 128 / (H100.int8_tensor_ops_per_s / sm))
    per_wg_cuda = H100.cuda_int32_ops_per_s / sm / 2
    assert costs.dequant == pytest.approx(LQQ_ALPHA * 64 * 128 / per_wg_cuda)
    with_meta = stage_costs(CONFIG, H100, 4, LQQ_ALPHA, count_metadata=True)
    assert with_meta.load == pytest.approx(costs.load * (1 + 1 / 16))
    with pytest.raises(ValueError, match="positive"):
        stage_costs(CONFIG, tokens=0)


# --- the rules of the traces -----------------------------------------------------------------


def events(trace, kind, stage, warpgroup=None):
    found = [e for e in trace.events if e.kind == kind and e.stage == stage
             and (warpgroup is None or e.warpgroup == warpgroup)]
    assert len(found) == 1
    return found[0]


def assert_lanes_serial(trace):
    for lane in trace.lanes():
        spans = sorted((e.start, e.end) for e in trace.events if e.lane == lane)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end - 1e-18, f"{lane} runs two operations at once"


costs_strategy = st.builds(
    StageCosts,
    load=st.floats(1e-9, 1e-6), dequant=st.floats(0, 1e-6), mma=st.floats(1e-9, 1e-6),
    excp_dequant=st.floats(0, 1e-6), excp_writeback=st.floats(0, 1e-6),
    excp_handoff=st.floats(0, 1e-6),
)


@given(costs_strategy, st.integers(1, 12), st.sampled_from([1, 2]), st.integers(2, 5))
def test_imfp_trace_obeys_the_pipeline(costs, k_stages, cw, ring):
    config = TileConfig(cw, 64, 128, ring, 1)
    trace = simulate_imfp(costs, k_stages, config)
    assert len(trace.events) == k_stages * (1 + 2 * cw)
    assert_lanes_serial(trace)
    for s in range(k_stages):
        load = events(trace, "load", s)
        for w in range(cw):
            dq, mma = events(trace, "dequant", s, w), events(trace, "mma", s, w)
            assert dq.start >= load.end and mma.start >= dq.end
            if s >= 2:  # two A-register buffers
                assert dq.start >= events(trace, "mma", s - 2, w).end
        if s >= ring:  # ring slot reuse
            for w in range(cw):
                assert load.start >= events(trace, "mma", s - ring, w).end
                assert load.start >= events(trace, "dequant", s - ring + 1, w).end


@given(costs_strategy, st.integers(1, 12), st.integers(2, 5))
def test_excp_trace_obeys_the_pipeline(costs, k_stages, ring):
    config = TileConfig(2, 64, 128, ring, 1)
    trace = simulate_excp(costs, k_stages, config)
    assert len(trace.events) == 4 * k_stages
    assert_lanes_serial(trace)
    for s in range(k_stages):
        dq, wb, mma = (events(trace, kind, s) for kind in ("dequant", "writeback", "mma"))
        assert dq.start >= events(trace, "load", s).end and wb.start >= dq.end
        assert mma.start >= wb.end + costs.excp_handoff * (1 - 1e-12)
        assert mma.end - mma.start == pytest.approx(2 * costs.mma)


def test_imfp_overlaps_dequant_with_the_tensor_core():
    imfp, excp = default_traces(m=128, k_stages=16)
    mmas = [e for e in imfp.events if e.kind == "mma"]
    overlapped = [d for d in imfp.events if d.kind == "dequant"
                  and any(m.start < d.end and d.start < m.end for m in mmas)]
    assert overlapped, "no dequant ran while the tensor core worked"
    # the explicit pipeline pays the round trip and the handoff in latency
    assert excp.makespan > imfp.makespan


def test_more_work_never_finishes_earlier():
    base = stage_costs(CONFIG, H100)
    for pipeline in (IMFP, EXCP):
        t0 = simulate(pipeline, base, 16, CONFIG).makespan
        for field in ("load", "dequant", "mma", "excp_dequant", "excp_writeback", "excp_handoff"):
            slower = replace(base, **{field: getattr(base, field) * 2})
            assert simulate(pipeline, slower, 16, CONFIG).makespan >= t0


def test_unknown_pipeline_raises():
    with pytest.raises(ValueError, match="pipeline"):
        simulate("pingpong", stage_costs(CONFIG), 4, CONFIG)


def test_figures_are_written(tmp_path):
    draw_timelines(default_traces(k_stages=8), tmp_path / "timeline.png", "test")
    draw_knee(tmp_path / "knee.png")
    for name in ("timeline.png", "knee.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
