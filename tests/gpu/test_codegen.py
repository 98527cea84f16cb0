"""The generated wgmma wrappers and the Hopper launch glue agree with their sources."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gpu import codegen, hopper, runtime
from liquidref.tiling import (
    BARRIER_REGION_BYTES,
    CLUSTER_SPLIT_K_MAX,
    CLUSTER_SPLIT_MAX_TOKENS,
    SHARED_MEMORY_LIMIT,
    STAGED_STORES_TOKENS,
    WGMMA_S8_N,
    TileConfig,
    choose_tile_config,
)

KERNELS = Path(codegen.__file__).parent / "kernels"


def test_wgmma_header_is_up_to_date():
    assert codegen.HEADER_PATH.read_text() == codegen.wgmma_header(), (
        "gpu/kernels/wgmma_s8.cuh is stale: run `python -m gpu.codegen`"
    )


def test_wgmma_wrappers_pass_n_over_2_accumulators():
    text = codegen.wgmma_header()
    found = re.findall(r"m64n(\d+)k32\.s32\.s8\.s8 \"\s*\"\{([^}]*)\}", text)
    # two wrappers per n: A from registers (mma) and A from shared memory (mma_ss)
    assert [int(n) for n, _ in found] == [n for n in WGMMA_S8_N for _ in range(2)]
    for n, regs in found:
        assert len(regs.split(",")) == int(n) // 2


def test_barrier_region_matches_the_kernel():
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"constexpr unsigned BARRIER_REGION_BYTES = (\d+);", source)
    assert match and int(match.group(1)) == BARRIER_REGION_BYTES


def test_tensor_map_struct_matches_cuda_h():
    """The kernel's TensorMap (a __grid_constant__ parameter) has CUtensorMap's size and
    alignment, which gpu.runtime holds and tests/gpu/test_runtime.py compares with cuda.h."""
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"struct alignas\((\d+)\) TensorMap \{\s*unsigned long long opaque\[(\d+)\];", source)
    assert match, "struct TensorMap not found in the kernel"
    assert int(match.group(1)) == runtime.TENSOR_MAP_ALIGNMENT
    assert 8 * int(match.group(2)) == runtime.TENSOR_MAP_BYTES


def test_staged_stores_n_matches_the_kernel():
    """The kernel stages its epilogue at the n that liquidref.tiling budgets shared memory for."""
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"constexpr int STAGED_STORES_N = (\d+);", source)
    assert match and int(match.group(1)) == STAGED_STORES_TOKENS
    assert re.search(r"STAGING_BYTES = BN == STAGED_STORES_N \? BN \* CWG \* BLOCK_ROWS \* 2 : 0;", source)


def test_kernel_name_and_shared_memory():
    config = TileConfig(2, 64, 128, 6, 1)
    assert hopper.kernel_name(config) == "liquidref::hopper::w4a8_hopper<2, 64, 128, 6>"
    split = dataclasses.replace(config, split_k=2)
    assert hopper.kernel_name(split, cluster_split=True) == "liquidref::hopper::w4a8_hopper<2, 64, 128, 6, true>"
    assert (hopper.kernel_name(split, "hopper_excp", cluster_split=True)
            == "liquidref::hopper::w4a8_hopper_excp<64, 128, 6, true>")
    with pytest.raises(ValueError, match="has no cluster-split build"):
        hopper.kernel_name(config, cluster_split=True)
    # 2 warpgroups x 2 blocks x (2048 + 128) + 64 tokens x 128 k, per stage; n = 64 adds the
    # epilogue's fp16 staging tile, 64 tokens x 128 rows
    ring = 256 + 6 * (2 * 2 * 2176 + 64 * 128)
    assert hopper.shared_memory_bytes(config) == ring + 64 * 128 * 2
    assert hopper.shared_memory_bytes(config) == config.shared_memory_bytes
    # split-K 2 as a cluster: the exchange buffer (one slice of 64 rows x 64 tokens of int32)
    # lies over the staging tile, the same 16 KiB; split-K 3 goes through the workspace
    assert hopper.shared_memory_bytes(dataclasses.replace(config, split_k=2)) == ring + 64 * 64 * 4
    assert hopper.shared_memory_bytes(dataclasses.replace(config, split_k=3)) == ring + 64 * 128 * 2
    assert hopper.shared_memory_bytes(TileConfig(2, 32, 128, 6, 2)) == 256 + 6 * (2 * 2 * 2176 + 32 * 128) + 64 * 32 * 4


def test_cluster_split_limits_match_the_kernel():
    """liquidref.tiling sizes the exchange buffer for the cluster splits the kernel runs."""
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"constexpr int CLUSTER_SPLIT_K_MAX = (\d+);", source)
    assert match and int(match.group(1)) == CLUSTER_SPLIT_K_MAX
    match = re.search(r"constexpr int CLUSTER_SPLIT_MAX_N = (\d+);", source)
    assert match and int(match.group(1)) == CLUSTER_SPLIT_MAX_TOKENS
    # a slice: 64 rows x BN tokens of int32; the buffer: room for CLUSTER_SPLIT_K_MAX - 1 of
    # them, as TileConfig.split_exchange_bytes counts it (ExCP places its int8 slots after it)
    assert "static constexpr unsigned SLOT_BYTES = BLOCK_ROWS * BN * 4;" in source
    assert "static constexpr unsigned BYTES = (CLUSTER_SPLIT_K_MAX - 1) * SLOT_BYTES;" in source
    assert "mbarrier_arrive_expect_tx(barrier, (split_k - 1) * SLOT_BYTES)" in source
    for tokens in (8, 64):
        config = TileConfig(2, tokens, 256, 2, 2)
        assert config.split_exchange_bytes == (CLUSTER_SPLIT_K_MAX - 1) * 64 * tokens * 4


def test_split_k_workspace_size():
    """One slice of 128 threads x n/2 int32 partials per (token tile, 64-row block, split)."""
    config = TileConfig(2, 16, 128, 3, 2)
    # 13 tokens -> 1 token tile of 16; N = 192 -> 3 row blocks; 2 splits
    assert hopper.split_k_workspace_ints(config, 13, 192) == 2 * 1 * 3 * 128 * (16 // 2)
    assert hopper.split_k_workspace_ints(config, 17, 192) == 2 * 2 * 3 * 128 * (16 // 2)
    assert hopper.split_k_workspace_ints(TileConfig(2, 16, 128, 3, 1), 13, 192) == 0


def test_excp_names_buffers_and_configs():
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"constexpr int EXCP_A_SLOTS = (\d+);", source)
    assert match and int(match.group(1)) == hopper.EXCP_A_SLOTS
    match = re.search(r'static_assert\(BN <= (\d+), "one MMA warpgroup holds', source)
    assert match and int(match.group(1)) == hopper.EXCP_MAX_TOKENS
    config = TileConfig(2, 64, 256, 4, 2)
    assert hopper.kernel_name(config, "hopper_excp") == "liquidref::hopper::w4a8_hopper_excp<64, 256, 4>"
    # the int8 weight buffers between the dequant and MMA warpgroups: 2 slots x 128 rows x 256 k
    assert hopper.shared_memory_bytes(config, "hopper_excp") == config.shared_memory_bytes + 2 * 128 * 256
    for m in (1, 16, 64, 256, 4096):
        for n, k in ((4096, 4096), (57344, 8192), (8192, 28672), (320, 192)):
            excp = hopper.excp_config(choose_tile_config(m, n, k))
            assert excp.tokens_per_cta <= hopper.EXCP_MAX_TOKENS and excp.compute_warpgroups == 2
            assert hopper.shared_memory_bytes(excp, "hopper_excp") <= SHARED_MEMORY_LIMIT
    with pytest.raises(ValueError, match="variant"):
        hopper.kernel_name(config, "nope")


def test_two_load_warps_rule_and_the_kernels_default():
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"#define LIQUIDREF_SPLIT_LOADERS_MIN_N (\d+)", source)
    assert match and int(match.group(1)) == hopper.SPLIT_LOADERS_MIN_N
    k = 256 * hopper.TWO_LOADERS_MIN_STAGES
    assert hopper.two_load_warps(TileConfig(2, 8, 256, 8, 1), k)  # a long unsplit k range
    assert not hopper.two_load_warps(TileConfig(2, 8, 256, 8, 1), k - 256)  # one stage short
    assert not hopper.two_load_warps(TileConfig(2, 16, 256, 8, 2), 2 * k)  # split-K
    assert hopper.two_load_warps(TileConfig(2, 64, 256, 5, 4), 1024)  # n >= 64: always
    # the 70B decode tiles: qkv and gate_up unsplit (32 stages), o and down split
    assert [hopper.two_load_warps(choose_tile_config(1, n, k), k)
            for n, k in ((10240, 8192), (57344, 8192), (8192, 8192), (8192, 28672))] == [True, True, False, False]


def test_kernel_accumulator_map_is_liquidref_fragments():
    """The Hopper kernel's row and token of each wgmma accumulator register (its epilogue, split-K
    and early scales index with them) are those of liquidref.fragments.wgmma_accumulator_fragment:
    the CUDA expressions are evaluated here for every thread and register."""
    from liquidref.fragments import wgmma_accumulator_fragment

    source = (KERNELS / hopper.SOURCE).read_text()
    row = re.search(r"#define LIQUIDREF_ACCUMULATOR_ROW\(block_row, warp, lane, h\) (.+)", source)
    base = re.search(r"const int token_base = blockIdx\.y \* BN \+ (.+);", source)
    token = re.search(r"auto token_of = \[&\]\(int i\) \{ return token_base \+ (.+); \};", source)
    assert row and base and token, "the accumulator map's expressions moved: update this test"

    def evaluate(expression: str, **names: int) -> int:
        return eval(expression.replace(" / ", " // "), {}, names)  # C++ int division of non-negatives

    for thread in range(128):
        warp, lane = thread // 32, thread % 32
        for i in range(128):  # n = 256
            h = (i >> 1) & 1
            want_row, want_token = wgmma_accumulator_fragment(thread, i)
            assert evaluate(row.group(1), block_row=0, warp=warp, lane=lane, h=h) == want_row
            assert evaluate(base.group(1), lane=lane) + evaluate(token.group(1), i=i) == want_token
