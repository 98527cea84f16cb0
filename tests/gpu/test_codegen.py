"""The generated wgmma wrappers and the Hopper launch glue agree with their sources."""

from __future__ import annotations

import re
from pathlib import Path

from gpu import codegen, hopper
from liquidref.tiling import BARRIER_REGION_BYTES, WGMMA_S8_N, TileConfig

KERNELS = Path(codegen.__file__).parent / "kernels"


def test_wgmma_header_is_up_to_date():
    assert codegen.HEADER_PATH.read_text() == codegen.wgmma_header(), (
        "gpu/kernels/wgmma_s8.cuh is stale: run `python -m gpu.codegen`"
    )


def test_wgmma_wrappers_pass_n_over_2_accumulators():
    text = codegen.wgmma_header()
    found = re.findall(r"m64n(\d+)k32\.s32\.s8\.s8 \"\s*\"\{([^}]*)\}", text)
    assert [int(n) for n, _ in found] == list(WGMMA_S8_N)
    for n, regs in found:
        assert len(regs.split(",")) == int(n) // 2


def test_barrier_region_matches_the_kernel():
    source = (KERNELS / hopper.SOURCE).read_text()
    match = re.search(r"constexpr unsigned BARRIER_REGION_BYTES = (\d+);", source)
    assert match and int(match.group(1)) == BARRIER_REGION_BYTES


def test_kernel_name_and_shared_memory():
    config = TileConfig(2, 64, 128, 6, 3)
    assert hopper.kernel_name(config) == "liquidref::hopper::w4a8_hopper<2, 64, 128, 6>"
    # 2 warpgroups x 2 blocks x (2048 + 128) + 64 tokens x 128 k, per stage
    assert hopper.shared_memory_bytes(config) == 256 + 6 * (2 * 2 * 2176 + 64 * 128)
    assert hopper.shared_memory_bytes(config) == config.shared_memory_bytes
