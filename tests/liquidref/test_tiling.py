"""TileConfig validation and derived sizes, the schedule (split-K and stream-K segments),
choose_tile_config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liquidref.tiling import (
    BARRIER_REGION_BYTES,
    CLUSTER_SPLIT_K_MAX,
    CLUSTER_SPLIT_MAX_TOKENS,
    COMPUTE_WARPGROUPS,
    DEFAULT_NUM_SMS,
    PREFILL_TOKEN_COST,
    SHARED_MEMORY_LIMIT,
    THREE_WARPGROUP_MAX_TOKENS,
    THREE_WARPGROUP_WAVE_COST,
    THREE_WARPGROUP_WIDE_K_PER_STAGE,
    WGMMA_S8_N,
    Segment,
    TileConfig,
    choose_compute_warpgroups,
    choose_tile_config,
    most_stages,
    prefill_tokens,
    waves,
)


def test_defaults_and_derived_sizes():
    c = TileConfig()
    assert (c.compute_warpgroups, c.tokens_per_cta, c.k_per_stage, c.stages, c.split_k,
            c.stream_k_ctas) == (2, 64, 128, 4, 1, 0)
    assert c.rows_per_cta == 128
    assert c.blocks_per_stage == 2
    assert c.weight_stage_bytes == 2 * 2 * (2048 + 128)
    assert c.activation_stage_bytes == 64 * 128
    assert c.epilogue_staging_bytes == 64 * 128 * 2  # n = 64 stages its fp16 tile for the stores
    assert c.shared_memory_bytes == BARRIER_REGION_BYTES + 4 * (8704 + 8192) + 64 * 128 * 2
    assert TileConfig(2, 32, 128, 4).epilogue_staging_bytes == 0
    assert c.grid(65, 200) == (2, 2, 1)


def test_cluster_split_and_its_exchange_buffer():
    """Split-K 2..CLUSTER_SPLIT_K_MAX at n <= CLUSTER_SPLIT_MAX_TOKENS runs as clusters: the
    exchange buffer holds CLUSTER_SPLIT_K_MAX - 1 slices (the most senders) of 64 rows x n int32
    partials, over the staging tile at n = 64 (the larger of the two counts)."""
    def ring(c):
        return BARRIER_REGION_BYTES + c.stages * (c.weight_stage_bytes + c.activation_stage_bytes)

    assert CLUSTER_SPLIT_K_MAX >= 2
    for tokens in (8, 16, 32, 64):
        for split in range(1, CLUSTER_SPLIT_K_MAX + 2):
            c = TileConfig(2, tokens, 256, 3, split)
            cluster = 2 <= split <= CLUSTER_SPLIT_K_MAX and tokens <= CLUSTER_SPLIT_MAX_TOKENS
            assert c.cluster_split == cluster
            assert c.split_exchange_bytes == ((CLUSTER_SPLIT_K_MAX - 1) * 64 * tokens * 4 if cluster else 0)
            assert c.shared_memory_bytes == ring(c) + max(c.epilogue_staging_bytes, c.split_exchange_bytes)
    assert TileConfig(2, 64, 256, 3, 2).split_exchange_bytes == TileConfig(2, 64, 256, 3, 2).epilogue_staging_bytes
    assert not TileConfig(2, 128, 256, 3, 2).cluster_split  # wider tiles: the workspace
    assert not TileConfig(3, 64, 256, 3, 2).cluster_split  # a CTA would own two row blocks
    assert not TileConfig(2, 16, 256, 3, 1, stream_k_ctas=7).cluster_split


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(compute_warpgroups=4), "compute_warpgroups"),
        (dict(tokens_per_cta=40), "tokens_per_cta"),
        (dict(k_per_stage=96), "k_per_stage"),
        (dict(stages=1), "stages"),
        (dict(split_k=0), "split_k"),
        (dict(stream_k_ctas=-1), "stream_k_ctas must be >= 0"),
        (dict(split_k=2, stream_k_ctas=3), "choose one schedule"),
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


# --- the schedule ---------------------------------------------------------------------------


@st.composite
def scheduled_problems(draw):
    """(config, m, n, k): a classic / split-K or a stream-K config and a problem it tiles."""
    stream_k_ctas = draw(st.sampled_from([0, 0, 1, 2, 3]) | st.integers(1, 200))
    config = TileConfig(
        compute_warpgroups=draw(st.sampled_from(COMPUTE_WARPGROUPS)),
        tokens_per_cta=draw(st.sampled_from([8, 16, 24, 64])),
        k_per_stage=draw(st.sampled_from([64, 128, 256])),
        stages=2,
        split_k=1 if stream_k_ctas else draw(st.integers(1, 9)),
        stream_k_ctas=stream_k_ctas,
    )
    m = draw(st.integers(1, 100))
    n = draw(st.integers(1, 600))
    k = draw(st.integers(1, 3000))
    return config, m, n, k


def all_segments(config, m, n, k):
    """Every CTA's segments, CTA by CTA."""
    return [config.segments(cta, m, n, k) for cta in range(config.cta_count(m, n, k))]


@given(scheduled_problems())
def test_segments_partition_the_units_once_and_in_order(problem):
    config, m, n, k = problem
    k_stages = config.k_stages(k)
    units = []
    for cta, segments in enumerate(all_segments(config, m, n, k)):
        cta_units = [seg.tile * k_stages + stage
                     for seg in segments for stage in range(seg.first_stage, seg.last_stage)]
        assert cta_units == list(range(*config.unit_range(cta, m, n, k)))
        units.extend(cta_units)
    assert units == list(range(config.work_units(m, n, k)))


@given(scheduled_problems())
def test_segment_fields_are_consistent(problem):
    config, m, n, k = problem
    row_tiles, token_tiles, _ = config.grid(m, n)
    k_stages = config.k_stages(k)
    for segments in all_segments(config, m, n, k):
        tiles = [seg.tile for seg in segments]
        assert tiles == sorted(set(tiles))  # one segment per tile touched, in tile order
        for seg in segments:
            assert isinstance(seg, Segment)
            assert 0 <= seg.tile < row_tiles * token_tiles
            assert (seg.row_tile, seg.token_tile) == (seg.tile % row_tiles, seg.tile // row_tiles)
            assert seg.k_stages == k_stages
            assert 0 <= seg.first_stage < seg.last_stage <= k_stages
            assert seg.whole == (seg.first_stage == 0 and seg.last_stage == k_stages)
        # Only a CTA's first and last segments can be partial: the ones between are whole.
        assert all(seg.whole for seg in segments[1:-1])


@given(scheduled_problems())
def test_classic_grid_gives_the_k_stage_ranges(problem):
    config, m, n, k = problem
    if config.stream_k_ctas:
        config = TileConfig(config.compute_warpgroups, config.tokens_per_cta,
                            config.k_per_stage, config.stages, 1 + config.stream_k_ctas % 9)
    row_tiles, token_tiles, splits = config.grid(m, n)
    assert config.cta_count(m, n, k) == row_tiles * token_tiles * splits
    for cta, segments in enumerate(all_segments(config, m, n, k)):
        tile, split = divmod(cta, splits)  # CTA = tile * split_k + split
        first, last = config.k_stage_range(split, k)
        expected = [] if first == last else [
            Segment(tile, tile % row_tiles, tile // row_tiles, first, last, config.k_stages(k))]
        assert segments == expected


@given(scheduled_problems())
def test_stream_k_shares_the_units_evenly(problem):
    config, m, n, k = problem
    if not config.stream_k_ctas:
        config = TileConfig(config.compute_warpgroups, config.tokens_per_cta,
                            config.k_per_stage, config.stages, 1, config.split_k * 17)
    units, ctas = config.work_units(m, n, k), config.cta_count(m, n, k)
    assert ctas == min(config.stream_k_ctas, units) and 1 <= ctas <= units
    counts = [last - first for first, last in
              (config.unit_range(cta, m, n, k) for cta in range(ctas))]
    assert sum(counts) == units
    assert max(counts) - min(counts) <= 1 and min(counts) >= 1


def test_stream_k_example_from_the_module_docstring():
    # 3 tiles (one 128-row tile x 3 token tiles) of 4 stages, 3 stream-K CTAs of 4 units each.
    config = TileConfig(2, 8, 64, 2, 1, 3)
    m, n, k = 24, 128, 4 * 64
    assert all_segments(config, m, n, k) == [
        [Segment(0, 0, 0, 0, 4, 4)],
        [Segment(1, 0, 1, 0, 4, 4)],
        [Segment(2, 0, 2, 0, 4, 4)],
    ]
    # 2 CTAs of 6 units: tile 1 is split between them at stage 2.
    config = TileConfig(2, 8, 64, 2, 1, 2)
    assert all_segments(config, m, n, k) == [
        [Segment(0, 0, 0, 0, 4, 4), Segment(1, 0, 1, 0, 2, 4)],
        [Segment(1, 0, 1, 2, 4, 4), Segment(2, 0, 2, 0, 4, 4)],
    ]


@pytest.mark.parametrize("config", [TileConfig(split_k=3), TileConfig(stream_k_ctas=5)])
def test_unit_range_rejects_a_cta_outside_the_grid(config):
    m, n, k = 64, 256, 1024
    ctas = config.cta_count(m, n, k)
    assert ctas == (2 * 3 if config.split_k == 3 else 5)
    for cta in (-1, ctas):
        with pytest.raises(ValueError, match=rf"cta must be in \[0, {ctas}\)"):
            config.unit_range(cta, m, n, k)
        with pytest.raises(ValueError, match="cta must be in"):
            config.segments(cta, m, n, k)


# --- choose_tile_config ---------------------------------------------------------------------


@given(st.integers(0, 5000), st.integers(1, 512), st.integers(1, 512),
       st.sampled_from([DEFAULT_NUM_SMS, 114, 78, 8, 1]))
def test_choose_tile_config_is_always_valid(m, n_blocks, k_blocks, num_sms):
    n, k = 64 * n_blocks, 64 * k_blocks
    c = choose_tile_config(m, n, k, num_sms)
    assert c.tokens_per_cta in WGMMA_S8_N
    assert k % c.k_per_stage == 0  # the kernel runs whole stages
    assert c.shared_memory_bytes <= SHARED_MEMORY_LIMIT  # the exchange buffer of a cluster split included
    assert c.stream_k_ctas == 0  # the Hopper kernel runs the classic grid
    rows, tokens, splits = c.grid(max(m, 1), n)  # M = 0 is configured as M = 1
    tiles, k_stages = rows * tokens, c.k_stages(k)
    if m <= 64:  # decode and M <= 64 are never padded past the next of 8, 16, 32, 64 tokens
        assert c.tokens_per_cta == next(t for t in (8, 16, 32, 64) if t >= max(m, 1))
    if splits > 1:
        # split-K only while tiles leave SMs idle, never more CTAs than SMs, each split with
        # >= 4 stages (n <= 64) or >= 16 stages (wider tiles, whose partials cost more)
        assert tiles * splits <= num_sms
        assert k_stages // splits >= (4 if c.tokens_per_cta <= 64 else 16)
        if c.tokens_per_cta > 64:
            assert tiles < num_sms // 2
    elif c.tokens_per_cta <= 64 and tiles < num_sms // 2 and k_stages >= 8:
        assert False, f"{c}: {tiles} tiles leave most SMs idle but K is not split"


def test_decode_uses_split_k_and_small_n():
    c = choose_tile_config(1, 4096, 4096)
    # 32 row tiles x 16 stages of 256: split in 4, 128 CTAs of 4 stages each.
    assert (c.tokens_per_cta, c.k_per_stage, c.split_k, c.stream_k_ctas) == (8, 256, 4, 0)
    assert c.cta_count(1, 4096, 4096) == 128
    assert choose_tile_config(0, 4096, 4096) == choose_tile_config(1, 4096, 4096)
    assert choose_tile_config(16, 57344, 8192).split_k == 1  # 448 tiles: every SM busy already
    mid = choose_tile_config(64, 8192, 28672)  # 64 tiles of n = 64, each K split in two
    assert (mid.tokens_per_cta, mid.split_k) == (64, 2)
    assert choose_tile_config(4096, 4096, 4096).tokens_per_cta == 208  # prefill_tokens, below
    assert choose_tile_config(4096, 4096, 4096).k_per_stage == 256


def _waves_of(rows_per_cta, m, n, tokens, num_sms):
    """ceil(row tiles x token tiles / SMs), from the sizes alone."""
    return -(-(-(-n // rows_per_cta) * -(-m // tokens)) // num_sms)


def _check_three_warpgroup_choice(m, n_blocks, num_sms, chooser=choose_tile_config):
    n = 64 * n_blocks
    c = chooser(m, n, 8192, num_sms)
    tokens = c.tokens_per_cta
    assert waves(c, max(m, 1), n, num_sms) == -(-c.cta_count(max(m, 1), n, 8192) // num_sms)
    if tokens > THREE_WARPGROUP_MAX_TOKENS:
        assert c.compute_warpgroups == 2
        return
    cost = THREE_WARPGROUP_WAVE_COST[64 if tokens <= 64 else 128]
    two = _waves_of(128, max(m, 1), n, tokens, num_sms)
    three = _waves_of(192, max(m, 1), n, tokens, num_sms)
    assert c.compute_warpgroups == (3 if three * cost < two else 2)
    if c.compute_warpgroups == 3:
        assert two >= 2 and c.split_k == 1 and not c.cluster_split
        assert tokens <= 64 or c.k_per_stage <= THREE_WARPGROUP_WIDE_K_PER_STAGE  # not serialized


@given(st.integers(0, 5000), st.integers(1, 1024), st.sampled_from([DEFAULT_NUM_SMS, 114, 78, 8]))
def test_three_warpgroups_only_where_they_save_waves(m, n_blocks, num_sms):
    """192-row tiles are chosen exactly where n <= 128 and their waves, at the measured cost of
    such a wave, take less time than the waves of 128-row tiles; then unsplit (they never make
    a one-wave grid of 128-row tiles, where split-K would go, longer)."""
    _check_three_warpgroup_choice(m, n_blocks, num_sms)


def _mutant_choosers():
    """Wrong rules the property above must reject: three warpgroups wherever they need fewer
    waves (no cost per wave), never, and at n = 128 without the 128-k stages."""
    import dataclasses

    def fewer_waves(m, n, k, num_sms=DEFAULT_NUM_SMS):
        c = choose_tile_config(m, n, k, num_sms, compute_warpgroups=2)
        three = choose_tile_config(m, n, k, num_sms, compute_warpgroups=3)
        return three if c.tokens_per_cta <= 128 and waves(three, m, n, num_sms) < waves(c, m, n, num_sms) else c

    def never(m, n, k, num_sms=DEFAULT_NUM_SMS):
        return choose_tile_config(m, n, k, num_sms, compute_warpgroups=2)

    def wide_stages(m, n, k, num_sms=DEFAULT_NUM_SMS):
        c = choose_tile_config(m, n, k, num_sms)
        if c.compute_warpgroups == 3 and c.tokens_per_cta > 64:
            return most_stages(dataclasses.replace(c, k_per_stage=256, stages=2))
        return c

    return {"fewer_waves": fewer_waves, "never": never, "wide_stages": wide_stages}


@pytest.mark.mutant
@pytest.mark.parametrize("name", sorted(_mutant_choosers()))
def test_three_warpgroup_property_rejects_wrong_rules(name):
    chooser = _mutant_choosers()[name]
    failures = 0
    for m in (1, 64, 100, 128, 300, 320, 500, 700, 1000):
        for n_blocks in (96, 128, 160, 200, 320, 400):
            try:
                _check_three_warpgroup_choice(m, n_blocks, DEFAULT_NUM_SMS, chooser)
            except AssertionError:
                failures += 1
    assert failures > 0, f"the property accepts the wrong rule {name!r}"


def test_three_warpgroups_on_the_measured_shapes():
    """H100, same run each (docs/performance.md, tuning log): 70B qkv (N = 10240) at M = 65-256,
    70B o and down (N = 8192) at M = 320 and 384, N = 20480 at decode, 8B qkv (N = 6144) at
    M = 384 and 512, 8B o and down (N = 4096) at M = 640 and 768 were faster with 192-row tiles
    (one wave instead of two); 70B qkv at M <= 64 and 320-1024, 8B qkv at M <= 256 and 1024, 70B
    gate_up at every M were not."""
    for m, n, k in ((65, 10240, 8192), (96, 10240, 8192), (128, 10240, 8192), (160, 10240, 8192),
                    (192, 10240, 8192), (256, 10240, 8192), (320, 8192, 8192), (384, 8192, 28672),
                    (1, 20480, 4096), (64, 20480, 4096), (384, 6144, 4096), (512, 6144, 4096),
                    (640, 4096, 4096), (768, 4096, 4096), (640, 4096, 14336), (768, 4096, 14336)):
        assert choose_tile_config(m, n, k).compute_warpgroups == 3, (m, n)
    for m, n, k in ((1, 10240, 8192), (64, 10240, 8192), (320, 10240, 8192), (512, 10240, 8192),
                    (1024, 10240, 8192), (64, 6144, 4096), (256, 6144, 4096),
                    (1024, 6144, 4096), (1, 57344, 8192),
                    (128, 57344, 8192), (256, 57344, 8192), (128, 8192, 8192), (4096, 10240, 8192)):
        assert choose_tile_config(m, n, k).compute_warpgroups == 2, (m, n)
    assert choose_compute_warpgroups(128, 10240, 64) == 3
    assert choose_compute_warpgroups(4096, 10240, 208) == 2  # prefill widths: two warpgroups only


def test_compute_warpgroups_can_be_forced():
    c = choose_tile_config(64, 10240, 8192, compute_warpgroups=3)
    assert (c.compute_warpgroups, c.tokens_per_cta, c.split_k) == (3, 64, 2)  # 54 tiles: split in two
    assert not c.cluster_split  # a CTA would own two row blocks: the workspace
    assert choose_tile_config(128, 10240, 8192, compute_warpgroups=2).compute_warpgroups == 2
    for bad in (0, 4, 2.0, "3"):
        with pytest.raises(ValueError, match="compute_warpgroups must be None or one of"):
            choose_tile_config(64, 10240, 8192, compute_warpgroups=bad)


def _prefill_estimate(m, n, tokens, num_sms):
    rows, token_tiles, _ = TileConfig(2, tokens, 64, 2).grid(m, n)
    return -(-rows * token_tiles // num_sms) * tokens * PREFILL_TOKEN_COST[tokens]


@given(st.integers(2048, 20000), st.integers(1, 1024), st.sampled_from([DEFAULT_NUM_SMS, 114, 78, 8]))
def test_prefill_tokens_takes_the_least_estimated_time(m, n_blocks, num_sms):
    """No candidate width has a smaller estimate (waves x n x cost per token), and the chooser
    launches the chosen width at M >= 2048 with 256-k stages, three of which fit."""
    n = 64 * n_blocks
    tokens = prefill_tokens(m, n, num_sms)
    assert tokens in PREFILL_TOKEN_COST
    best = _prefill_estimate(m, n, tokens, num_sms)
    assert all(best <= _prefill_estimate(m, n, t, num_sms) for t in PREFILL_TOKEN_COST)
    config = choose_tile_config(m, n, 4096, num_sms)
    assert (config.tokens_per_cta, config.k_per_stage, config.stages) == (tokens, 256, 3)


def test_prefill_tokens_fills_the_waves():
    """The measured cases (H100, docs/performance.md): Llama-3-8B down at M = 4096 has 32 row
    tiles; n = 192 makes 704 tiles (5.33 waves on 132 SMs, the last a third full), n = 208 makes
    640 (4.85 waves) and was 11 % faster; 70B gate_up (448 row tiles) fills its waves with any n
    and takes the cheapest tile per token, n = 224; at M = 2048 8B down takes n = 176 (384 tiles,
    2.9 waves, against 352 = 2.67 waves of n = 192: three waves either way, narrower tiles)."""
    assert prefill_tokens(4096, 4096) == 208
    assert prefill_tokens(4096, 57344) == 224
    assert prefill_tokens(2048, 4096) == 176
    assert prefill_tokens(2048, 10240) == 192  # 70B qkv: 880 tiles of n = 192, 6.67 waves


@given(st.sampled_from(WGMMA_S8_N), st.sampled_from([64, 128, 256]), st.integers(2, 16),
       st.integers(0, 400_000))
def test_most_stages_takes_the_most_that_fit(tokens, kps, most, budget):
    """The result fits (and passes ``fits``); one stage more, up to ``most``, would not."""
    fits = lambda c: c.shared_memory_bytes <= budget  # noqa: E731
    base = TileConfig(2, tokens, kps, 2, 1)
    try:
        got = most_stages(base, most, fits)
    except ValueError:
        assert not fits(base)  # not even 2 stages
        return
    assert got.stages <= most and fits(got)
    assert (got.tokens_per_cta, got.k_per_stage, got.split_k) == (tokens, kps, 1)
    if got.stages < most:
        try:
            more = TileConfig(2, tokens, kps, got.stages + 1, 1)
        except ValueError:
            return  # one more stage exceeds the shared memory of a CTA
        assert not fits(more)


@pytest.mark.parametrize("args", [(-1, 64, 64), (1, 0, 64), (1, 64, 0), (1.5, 64, 64)])
def test_choose_tile_config_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="must be an int"):
        choose_tile_config(*args)
