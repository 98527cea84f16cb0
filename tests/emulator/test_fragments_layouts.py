"""Registers -> A fragments -> weights, whole tiles against liquidref; layouts and their banks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import fragments, layouts, programs
from liquidref import (
    dequantize_int8,
    epilogue,
    int32_matmul,
    pack_weight,
    quantize_weight,
)
from liquidref.layout import PackedWeight
from liquidref.testing import assert_bit_exact, liquidquant_weights, quantized_activations
from liquidref.tiled import tiled_gemm


@given(w=liquidquant_weights(n=128, max_groups=3))
def test_emulated_tile_equals_dequantize_int8(w):
    assert_bit_exact(fragments.dequantize_tile(pack_weight(w)), dequantize_int8(w), "tile")


@given(w=liquidquant_weights(n=128, max_groups=2), data=st.data())
def test_emulated_tile_through_the_epilogue_equals_tiled_gemm(w, data):
    x_i8, s_x = data.draw(quantized_activations(k=w.k, max_m=5))
    packed = pack_weight(w)
    weights = fragments.dequantize_tile(packed)
    ours = epilogue(int32_matmul(x_i8, weights), s_x, packed.s1)
    assert_bit_exact(ours, tiled_gemm(x_i8, s_x, packed), "y")


def test_single_group_and_row_block_offset():
    w = quantize_weight(np.random.default_rng(3).standard_normal((192, 128)).astype(np.float32))
    tile = fragments.dequantize_tile(pack_weight(w), row_block=2, groups=1)
    assert_bit_exact(tile, dequantize_int8(w)[128:], "tile")
    with pytest.raises(ValueError, match="outside"):
        fragments.dequantize_tile(pack_weight(w), row_block=2, groups=2)
    with pytest.raises(TypeError, match="PackedWeight"):
        fragments.dequantize_tile(w)
    with pytest.raises(ValueError, match="uint32"):
        fragments.assemble_block(np.zeros((128, 8), np.int32))


def test_128_by_4096_tile_runs_in_under_a_second_after_warm_up():
    w = quantize_weight(np.random.default_rng(0).standard_normal((128, 4096)).astype(np.float32))
    packed = pack_weight(w)
    fragments.dequantize_tile(pack_weight(quantize_weight(np.ones((128, 64), np.float32))))
    start = time.perf_counter()
    tile = fragments.dequantize_tile(packed)
    assert time.perf_counter() - start < 1.0
    assert_bit_exact(tile, dequantize_int8(w), "tile")


def _swapped_nibbles(packed: PackedWeight) -> PackedWeight:
    codes = ((packed.codes >> 4) | (packed.codes << 4)).astype(np.uint8)
    return PackedWeight(codes=codes, meta=packed.meta, s1=packed.s1)


@pytest.mark.mutant
def test_mutants_are_caught():
    w = quantize_weight(np.random.default_rng(5).standard_normal((128, 128)).astype(np.float32))
    packed, expected = pack_weight(w), dequantize_int8(w)
    assert not np.array_equal(fragments.dequantize_tile(_swapped_nibbles(packed)), expected)
    no_xor = programs.dual_mma_block_program(rotate=False)
    assert not np.array_equal(fragments.dequantize_tile(packed, program=no_xor), expected)


@pytest.fixture(scope="module")
def reports():
    return layouts.compare_layouts(seed=1)


def test_layout_counts_and_banks(reports):
    dual, naive, qserve = reports["dual_mma"], reports["naive_row_major"], reports["qserve"]
    assert dual.correct and naive.correct and qserve.correct
    # Dual-MMA: one LDS.128 (+ one metadata LDS.32) per thread feeds two MMAs, no conflicts
    assert dual.counts["load"] == 1 and dual.shared_loads == 2
    assert (dual.wavefronts, dual.conflicts) == (4 + 1, 0)
    assert all((r.bank_words <= 1).all() for r in dual.reports)
    # row-major nibbles: 8 LDS.32 per thread, each a 2-way conflict
    assert naive.counts["load"] == 8 and naive.conflicts == 8
    assert naive.counts["unpack"] > dual.counts["unpack"]
    # QServe's layout reads conflict-free too; it pays in metadata loads and vadd4
    assert qserve.conflicts == 0 and qserve.shared_loads == 3
    assert qserve.counts["dequant"] == 8 * (1 + 5)


@pytest.mark.mutant
def test_mutant_swapped_nibbles_layout_is_caught(monkeypatch):
    original = layouts.pack_weight
    monkeypatch.setattr(layouts, "pack_weight", lambda w: _swapped_nibbles(original(w)))
    assert not layouts.run_layout("dual_mma").correct


def test_unknown_layout_and_figure(reports, tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        layouts.run_layout("swizzled")
    layouts.bank_figure(reports, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000
