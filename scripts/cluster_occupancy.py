"""How many thread block clusters of the Hopper kernel an H100 or H200 runs at once.

For the configurations the tile chooser picks for two decode shapes (70B qkv and o at M = 64),
prints the clusters of 1-4 CTAs (along the split-K axis) the device can keep resident, from
``cuOccupancyMaxActiveClusters`` (``gpu.hopper.cluster_occupancy``). It launches nothing. The
answer decides which cluster sizes a schedule can use in one wave: the tuning log found
clusters of four 200 KB CTAs slower because not all of them fit at once. The last line sums
up both shapes (the GPU session's summary shows it).

    python scripts/cluster_occupancy.py
"""

from __future__ import annotations

import sys

from gpu import hopper
from liquidref.tiling import choose_tile_config

SHAPES = {"70B qkv M=64": (64, 10240, 8192), "70B o M=64": (64, 8192, 8192)}  # (M, N, K)


def main() -> int:
    if not hopper.is_available():
        print("cluster occupancy: needs a Hopper GPU and CuPy", file=sys.stderr)
        return 2
    import cupy

    sms = hopper._multiprocessors(cupy.cuda.Device().id)
    summary = []
    for label, (m, n, k) in SHAPES.items():
        config = choose_tile_config(m, n, k, sms)
        counts = hopper.cluster_occupancy(config)
        shared_kb = hopper.shared_memory_bytes(config) / 1024
        print(f"{label}: {config}, {shared_kb:.0f} KB of shared memory a CTA")
        for size, clusters in counts.items():
            print(f"  clusters of {size}: {clusters} at once = {size * clusters} CTAs on {sms} SMs")
        summary.append(f"{label} " + "/".join(map(str, counts.values())))
    # one short line (the session's summary keeps 150 characters of it)
    sizes = "/".join(map(str, counts))
    print(f"cluster occupancy, clusters of {sizes} CTAs at once ({sms} SMs): " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
