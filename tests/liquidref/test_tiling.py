"""TileConfig validation and derived sizes, split-K stage ranges, choose_tile_config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liquidref.tiling import (
    BARRIER_REGION_BYTES,
    SHARED_MEMORY_LIMIT,
    WGMMA_S8_N,
    TileConfig,
    choose_tile_config,
)


def test_defaults_and_derived_sizes():
    c = TileConfig()
    assert (c.compute_warpgroups, c.tokens_per_cta, c.k_per_stage, c.stages, c.split_k) == (
        2, 64, 128, 4, 1)
    assert c.rows_per_cta == 128
    assert c.blocks_per_stage == 2
    assert c.weight_stage_bytes == 2 * 2 * (2048 + 128)
    assert c.activation_stage_bytes == 64 * 128
    assert c.shared_memory_bytes == BARRIER_REGION_BYTES + 4 * (8704 + 8192)
    assert c.grid(65, 200) == (2, 2, 1)


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(compute_warpgroups=3), "compute_warpgroups"),
        (dict(tokens_per_cta=40), "tokens_per_cta"),
        (dict(k_per_stage=96), "k_per_stage"),
        (dict(stages=1), "stages"),
        (dict(split_k=0), "split_k"),
        (dict(tokens_per_cta=256, k_per_stage=512, stages=4), "shared memory"),
    ],
)
def test_invalid_configurations_raise(fields, message):
    with pytest.raises(ValueError, match=message):
        TileConfig(**fields)


@given(st.integers(1, 64), st.integers(1, 20), st.sampled_from([64, 128, 256]))
def test_split_k_ranges_partition_the_k_stages(total_stages, split_k, kps):
    config = TileConfig(2, 8, kps, 2, split_k)
    k = total_stages * kps
    covered = []
    for split in range(split_k):
        first, last = config.k_stage_range(split, k)
        assert first <= last
        covered.extend(range(first, last))
    assert covered == list(range(total_stages))


@given(st.integers(0, 5000), st.integers(1, 512), st.integers(1, 512))
def test_choose_tile_config_is_always_valid(m, n_blocks, k_blocks):
    n, k = 64 * n_blocks, 64 * k_blocks
    c = choose_tile_config(m, n, k)
    assert c.tokens_per_cta in WGMMA_S8_N
    if m <= 32:  # decode is never padded past the next of 8, 16, 32 tokens
        assert c.tokens_per_cta == next(t for t in (8, 16, 32) if t >= max(m, 1))
    assert k % c.k_per_stage == 0  # the kernel runs whole stages
    assert c.shared_memory_bytes <= SHARED_MEMORY_LIMIT
    rows, tokens, splits = c.grid(m, n)
    if splits > 1:
        assert rows * tokens * splits <= 132
        assert -(-k // c.k_per_stage) // splits >= 4


def test_decode_uses_split_k_and_small_n():
    c = choose_tile_config(1, 4096, 4096)
    assert c.tokens_per_cta == 8 and c.split_k > 1
    assert choose_tile_config(0, 4096, 4096) == choose_tile_config(1, 4096, 4096)
    assert choose_tile_config(4096, 4096, 4096).tokens_per_cta == 192
    assert choose_tile_config(4096, 4096, 4096).k_per_stage == 256


@pytest.mark.parametrize("args", [(-1, 64, 64), (1, 0, 64), (1, 64, 0), (1.5, 64, 64)])
def test_choose_tile_config_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="must be an int"):
        choose_tile_config(*args)
