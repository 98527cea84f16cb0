"""The tiled pipeline reference equals the oracle bit for bit, for every valid tile configuration
and schedule (classic, split-K, stream-K); deliberately wrong layouts, maps and schedules
(mutants) are caught by the same property."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import liquidref as lr
from liquidref.constants import Q4_MAX, STEP_MAX
from liquidref.fragments import (
    activation_stage_descriptor,
    wgmma_a_fragment,
    wgmma_accumulator_fragment,
    wgmma_b_address,
)
from liquidref.layout import PackedWeight, code_position
from liquidref.tiling import COMPUTE_WARPGROUPS
import liquidref.tiled as lr_tiled
from liquidref.tiled import (
    _KERNEL_SCHEDULE,
    KERNEL_DATAFLOW,
    _accumulate_padded,
    _Schedule,
    tiled_accumulate,
    tiled_gemm,
    unpack_nibbles,
)
from liquidref.tiling import WGMMA_S8_N, TileConfig

# --- problems -----------------------------------------------------------------------------------


def random_weight(rng: np.random.Generator, n: int, k: int) -> lr.LiquidQuantWeight:
    """Either a quantized Gaussian weight or raw codes with extreme (s, a) (u = q4 s + a <= 255)."""
    if rng.random() < 0.5:
        scale = rng.choice([1e-3, 1.0, 300.0])
        return lr.quantize_weight((rng.standard_normal((n, k)) * scale).astype(np.float32))
    groups = k // 64
    s = rng.integers(1, STEP_MAX + 1, (n, groups)).astype(np.uint8)
    a = rng.integers(0, 256 - Q4_MAX * s.astype(np.int64)).astype(np.uint8)
    q4 = rng.integers(0, Q4_MAX + 1, (n, k)).astype(np.uint8)
    s1 = rng.uniform(1e-4, 1.0, n).astype(np.float32)
    return lr.LiquidQuantWeight(q4=q4, s=s, a=a, s1=s1)


def random_activation(rng: np.random.Generator, m: int, k: int):
    X = (rng.standard_normal((m, k)) * rng.choice([1e-2, 1.0, 50.0])).astype(np.float32)
    return lr.quantize_activation(X)


@st.composite
def tile_configs(draw):
    """A valid TileConfig: half classic / split-K (split_k 1..6), half stream-K (1..40 CTAs, often
    fewer than the tiles, so that CTAs span tiles)."""
    stream_k = draw(st.booleans())
    fields = dict(
        compute_warpgroups=draw(st.sampled_from(COMPUTE_WARPGROUPS)),
        tokens_per_cta=draw(st.sampled_from(WGMMA_S8_N)),
        k_per_stage=draw(st.sampled_from([64, 128, 192, 256])),
        stages=draw(st.integers(2, 16)),
        split_k=1 if stream_k else draw(st.integers(1, 6)),
        stream_k_ctas=draw(st.integers(1, 6) | st.integers(1, 40)) if stream_k else 0,
    )
    try:
        return TileConfig(**fields)
    except ValueError:  # too much shared memory: shrink the ring to what fits
        fields["stages"] = 2
        return TileConfig(**fields)


@st.composite
def problems(draw):
    m = draw(st.integers(1, 300))
    n = 64 * draw(st.integers(1, 5))
    k = 64 * draw(st.integers(1, 8))
    config = draw(tile_configs())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = random_weight(rng, n, k)
    x_i8, s_x = random_activation(rng, m, k)
    return x_i8, s_x, w, config


def check_against_oracle(problem, dataflow=KERNEL_DATAFLOW, packer=lr.pack_weight,
                         schedule=_KERNEL_SCHEDULE):
    x_i8, s_x, w, config = problem
    packed = packer(w)
    if schedule is _KERNEL_SCHEDULE:  # the public API
        acc = tiled_accumulate(x_i8, packed, config, dataflow)
        y = tiled_gemm(x_i8, s_x, packed, config, dataflow)
    else:  # a schedule mutant, through the private seam
        m, n = x_i8.shape[0], packed.n
        acc = _accumulate_padded(x_i8, packed, config, dataflow, schedule)[:m, :n]
        y = lr.epilogue(acc, s_x, packed.s1)
    assert np.array_equal(acc, lr.int32_matmul(x_i8, lr.dequantize_int8(w)))
    assert y.dtype == np.float16
    assert np.array_equal(y.view(np.uint16), lr.gemm(x_i8, s_x, w).view(np.uint16))


@given(problems())
def test_tiled_pipeline_is_bit_exact_for_every_configuration(problem):
    check_against_oracle(problem)


def test_edges_m_and_n_not_multiples_of_the_tile():
    rng = np.random.default_rng(7)
    w = random_weight(rng, 192, 384)  # 3 row blocks: the second CTA has one active warpgroup
    x_i8, s_x = random_activation(rng, 13, 384)  # 13 tokens in 16-token tiles
    check_against_oracle((x_i8, s_x, w, TileConfig(2, 16, 128, 3, 2)))
    check_against_oracle((x_i8, s_x, w, TileConfig(2, 8, 256, 2, 5)))  # partial last stage
    # Stream-K over 2 x 1 tiles x 6 stages of 64 = 12 units: 1 CTA runs both tiles whole; of 5
    # CTAs (units 0-2, 2-4, 4-7, 7-9, 9-12) the middle one ends tile 0 and starts tile 1; 12 and
    # 13 (capped at 12) CTAs run one unit each.
    for ctas in (1, 5, 7, 12, 13):
        check_against_oracle((x_i8, s_x, w, TileConfig(2, 16, 64, 3, 1, ctas)))
    check_against_oracle((x_i8, s_x, w, TileConfig(1, 8, 256, 2, 1, 3)))  # partial last stage


def test_default_configuration_and_empty_m():
    rng = np.random.default_rng(3)
    w = random_weight(rng, 128, 256)
    x_i8, s_x = random_activation(rng, 5, 256)
    packed = lr.pack_weight(w)
    y = tiled_gemm(x_i8, s_x, packed)
    assert np.array_equal(y.view(np.uint16), lr.gemm(x_i8, s_x, w).view(np.uint16))
    empty = tiled_gemm(x_i8[:0], s_x[:0], packed)
    assert empty.shape == (0, 128) and empty.dtype == np.float16


def test_bad_input_raises_clear_errors():
    rng = np.random.default_rng(4)
    w = random_weight(rng, 64, 128)
    packed = lr.pack_weight(w)
    x_i8, s_x = random_activation(rng, 3, 128)
    with pytest.raises(TypeError, match="PackedWeight"):
        tiled_gemm(x_i8, s_x, w)
    with pytest.raises(ValueError, match="K = 64"):
        tiled_gemm(x_i8[:, :64], s_x, packed)
    with pytest.raises(TypeError, match="int8"):
        tiled_gemm(x_i8.astype(np.int16), s_x, packed)
    with pytest.raises(ValueError, match="shape"):
        tiled_gemm(x_i8, s_x[:2], packed)
    with pytest.raises(TypeError, match="TileConfig"):
        tiled_gemm(x_i8, s_x, packed, config=(2, 64, 128, 4, 1))


def test_llama_sized_layer_runs_in_under_10_seconds():
    rng = np.random.default_rng(5)
    n = k = 4096
    w = random_weight(rng, n, k)
    packed = lr.pack_weight(w)
    x_i8, s_x = random_activation(rng, 64, k)
    start = time.perf_counter()
    y = tiled_gemm(x_i8, s_x, packed)
    elapsed = time.perf_counter() - start
    assert np.array_equal(y.view(np.uint16), lr.gemm(x_i8, s_x, w).view(np.uint16))
    assert elapsed < 10.0, f"M = 64, N = K = 4096 took {elapsed:.1f} s"


# --- mutants: each deliberately wrong layout must make the property fail ------------------------


def _pair_bits_swapped(thread, reg):
    reg = np.asarray(reg)
    swapped = (reg & ~3) | ((reg & 1) << 1) | ((reg >> 1) & 1)
    return wgmma_accumulator_fragment(thread, swapped)


def _plus8_dropped(thread, reg, byte):
    row, k = wgmma_a_fragment(thread, reg, byte)
    return row - 8 * (np.asarray(reg) & 1), k


def _swizzled_read(token, k, desc):
    address = wgmma_b_address(token, k, desc)
    return address ^ (((address >> 7) & 7) << 4)  # a 128-byte swizzle the copy never applied


def _start_off_by_one_core_matrix(kps, step):
    desc = activation_stage_descriptor(kps, step)
    return replace(desc, start=desc.start // 2)  # 128 j instead of 256 j


def _stride_short_by_one_core_matrix(kps, step):
    desc = activation_stage_descriptor(kps, step)
    return replace(desc, stride_byte_offset=desc.stride_byte_offset - 128)


def pack_with(code_position_fn, w):
    """Pack ``w`` like ``pack_weight`` but place codes with ``code_position_fn(r, c)``."""
    packed = lr.pack_weight(w)
    nb, kb = packed.codes.shape[:2]
    r, c = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    byte, high = code_position_fn(r, c)
    blocks = w.q4.reshape(nb, 64, kb, 64).transpose(0, 2, 1, 3)  # [nb, kb, 64, 64]
    codes = np.zeros_like(packed.codes)
    low = high == 0
    codes[:, :, byte[low]] = blocks[:, :, r[low], c[low]]
    codes[:, :, byte[~low]] |= blocks[:, :, r[~low], c[~low]] << 4
    return PackedWeight(codes=codes, meta=packed.meta, s1=packed.s1)


def _nibbles_swapped_position(r, c):
    byte, high = code_position(r, c)
    return byte, 1 - high  # row r in the high nibble, row r + 8 in the low one


def _plus8_dropped_position(r, c):
    byte, _ = code_position(r, c)
    return byte, 0 * byte  # rows r and r + 8 collide in the low nibble


def _pack_with_meta_rows_swapped(w):
    packed = lr.pack_weight(w)
    meta = packed.meta.copy()
    meta[:, :, 0::4], meta[:, :, 2::4] = packed.meta[:, :, 2::4], packed.meta[:, :, 0::4]
    return PackedWeight(codes=packed.codes, meta=meta, s1=packed.s1)


def test_generic_packer_with_the_true_layout_is_pack_weight():
    w = random_weight(np.random.default_rng(9), 128, 192)
    assert np.array_equal(pack_with(code_position, w).codes, lr.pack_weight(w).codes)


MUTANTS = {
    # the packed layout (liquidref.layout)
    "layout: nibbles of rows r and r+8 swapped": (
        KERNEL_DATAFLOW, partial(pack_with, _nibbles_swapped_position)),
    "layout: +8 row offset dropped": (KERNEL_DATAFLOW, partial(pack_with, _plus8_dropped_position)),
    "layout: metadata of rows r and r+8 swapped": (KERNEL_DATAFLOW, _pack_with_meta_rows_swapped),
    # the kernel's code
    "unpack: low and high nibbles swapped": (
        replace(KERNEL_DATAFLOW, unpack=lambda words: unpack_nibbles(words)[::-1]), lr.pack_weight),
    "B read: a 128-byte swizzle the copy never applied": (
        replace(KERNEL_DATAFLOW, b_address=_swizzled_read), lr.pack_weight),
    "descriptor: k32 step start off by one core matrix": (
        replace(KERNEL_DATAFLOW, stage_descriptor=_start_off_by_one_core_matrix), lr.pack_weight),
    "descriptor: stride byte offset short by one core matrix": (
        replace(KERNEL_DATAFLOW, stage_descriptor=_stride_short_by_one_core_matrix),
        lr.pack_weight),
    "epilogue: accumulator register pair bits swapped": (
        replace(KERNEL_DATAFLOW, store_fragment=_pair_bits_swapped), lr.pack_weight),
    # the fragment map of the A operand
    "A fragment: +8 row offset dropped": (
        replace(KERNEL_DATAFLOW, a_fragment=_plus8_dropped), lr.pack_weight),
}


def run_property(dataflow, packer, schedule=_KERNEL_SCHEDULE):
    @settings(max_examples=50, database=None, derandomize=True, report_multiple_bugs=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(problems())
    def prop(problem):
        check_against_oracle(problem, dataflow, packer, schedule)

    prop()


@pytest.mark.mutant
@pytest.mark.parametrize("name", list(MUTANTS))
def test_property_rejects_mutant(name):
    dataflow, packer = MUTANTS[name]
    with pytest.raises(AssertionError):
        run_property(dataflow, packer)


def test_property_accepts_the_kernel_layout():
    run_property(KERNEL_DATAFLOW, lr.pack_weight)  # the mutant runs above fail only by mutation


# --- schedule mutants: each deliberately wrong schedule must be rejected -------------------------
# By the bit-exact property where the tile counters still add up, by the finish's RuntimeError
# (a tile whose counter does not end at k_stages, or not stored exactly once) where they do not.


def _last_unit_of_cta_0_dropped(config, cta, m, n, k):
    segments = config.segments(cta, m, n, k)
    if cta != 0 or not segments:
        return segments
    last = segments[-1]
    if last.last_stage - last.first_stage == 1:
        return segments[:-1]
    return [*segments[:-1], last._replace(last_stage=last.last_stage - 1)]


def _last_unit_of_each_cta_repeated(config, cta, m, n, k):
    segments = config.segments(cta, m, n, k)
    if not segments:
        return segments
    last = segments[-1]
    return [*segments, last._replace(first_stage=last.last_stage - 1)]


def _partial_segment_one_stage_late(config, cta, m, n, k):
    # k stages [first + 1, last + 1) where that stays inside the tile: same count, wrong stages.
    return [seg._replace(first_stage=seg.first_stage + 1, last_stage=seg.last_stage + 1)
            if not seg.whole and seg.last_stage < seg.k_stages else seg
            for seg in config.segments(cta, m, n, k)]


def _tile_decoded_token_tile_fastest(config, cta, m, n, k):
    token_tiles = config.grid(m, n)[1]
    return [seg._replace(row_tile=seg.tile // token_tiles, token_tile=seg.tile % token_tiles)
            for seg in config.segments(cta, m, n, k)]


SCHEDULE_MUTANTS = {
    "segments: CTA 0's last unit dropped": (
        _Schedule(segments=_last_unit_of_cta_0_dropped), RuntimeError),
    "segments: each CTA's last unit repeated": (
        _Schedule(segments=_last_unit_of_each_cta_repeated), RuntimeError),
    "segments: a partial segment runs its k stages one stage late": (
        _Schedule(segments=_partial_segment_one_stage_late), AssertionError),
    "segments: tile decoded token tile fastest": (
        _Schedule(segments=_tile_decoded_token_tile_fastest), AssertionError),
    "finish: every segment stored directly, partials never summed": (
        _Schedule(stores_directly=lambda segment: True), RuntimeError),
    "finish: a tile's first partial stored directly instead of summed": (
        _Schedule(stores_directly=lambda segment: segment.first_stage == 0), RuntimeError),
}


@pytest.mark.mutant
@pytest.mark.parametrize("name", list(SCHEDULE_MUTANTS))
def test_property_rejects_schedule_mutant(name):
    schedule, caught_by = SCHEDULE_MUTANTS[name]
    with pytest.raises(caught_by, match="schedule bug" if caught_by is RuntimeError else None):
        run_property(KERNEL_DATAFLOW, lr.pack_weight, schedule)


def test_schedule_bug_names_the_tile():
    rng = np.random.default_rng(11)
    w = random_weight(rng, 128, 256)
    x_i8, s_x = random_activation(rng, 8, 256)
    config = TileConfig(2, 8, 64, 2, 1, 3)  # 1 tile of 4 stages: CTAs of 1, 1 and 2 stages
    schedule = _Schedule(segments=_last_unit_of_cta_0_dropped)
    with pytest.raises(RuntimeError, match=r"tile 0 \(row tile 0, token tile 0\) ended with its "
                                           r"stage counter at 3 \(expected 4 of 4 k stages\) "
                                           r"and was stored 0 times"):
        check_against_oracle((x_i8, s_x, w, config), schedule=schedule)


def test_the_seam_with_the_kernel_schedule_is_the_public_path():
    run_property(KERNEL_DATAFLOW, lr.pack_weight, _Schedule())  # a copy, so the seam path runs


def test_demo_section_agrees_and_writes_figures(tmp_path):
    lines = lr_tiled.demo_section(tmp_path)
    text = "\n".join(lines)
    assert "equal to the oracle's: True" in text
    assert "M = 150 for W4A8" in text and "M = 300 for W8A8" in text
    assert "128 CTAs, split-K 4, over 32 x 1 tiles x 16 k stages of 256" in text
    for name in ("tiled_timeline.png", "tiled_knee.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
