"""Does compute-sanitizer racecheck understand a bulk-copy ring ordered by mbarriers?

The smallest stage ring of the Hopper kernel's kind, on one CTA: a producer thread waits for a
slot's "empty" mbarrier, arms its "full" mbarrier with the byte count and issues one
``cp.async.bulk`` into the slot; a consumer warp waits for "full", every lane reads its 16 bytes,
the warp syncs and lane 0 arrives on "empty". Two slots, eight stages, so every slot is refilled
three times. Run it under racecheck in each mode::

    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py correct
    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py fenced
    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py early

    correct  the protocol above: no slot is refilled before every lane has read it
    fenced   the same with ``fence.proxy.async.shared::cta`` after the reads (not required by the
             PTX memory model for this order, added to see whether racecheck then pairs them)
    early    a real race: lane 0 frees the slot *before* the lanes read it

Measured (H200, CUDA 13.0, 2026-11-22): racecheck reports the same "Potential WAR hazard"
between the consumer's LDS and the producer's bulk copy in all three modes, so it does not
model the mbarrier ordering of ``cp.async.bulk`` writes and cannot tell the correct ring from
the racy one. Its reports on ``w4a8_hopper`` (the same pattern) therefore say nothing either
way; the ring protocol is checked by tests/gpu/test_hopper_ring_protocol.py instead.

The script itself checks the sums the consumer read (a wrong result exits with status 1).
"""

from __future__ import annotations

import sys

import numpy as np

MODES = {"correct": (), "fenced": ("-DFENCED",), "early": ("-DEARLY_RELEASE",)}
SLOTS = 2
SLOT_BYTES = 512  # 32 lanes x 16 bytes
STAGES = 8

SOURCE = r"""
constexpr int SLOTS = %(slots)d, SLOT_BYTES = %(slot_bytes)d;

__device__ void wait_parity(unsigned bar, unsigned parity) {
  asm volatile("{\n .reg .pred done;\n WAIT:\n"
               " mbarrier.try_wait.parity.shared::cta.b64 done, [%%0], %%1;\n"
               " @!done bra WAIT;\n}" :: "r"(bar), "r"(parity) : "memory");
}

__device__ void arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%%0];" :: "r"(bar) : "memory");
}

// grid (1), block (64): warp 0 consumes, thread 32 produces. out[lane] = sum of the lane's ints.
extern "C" __global__ void ring(const int4* __restrict__ src, int* __restrict__ out, int stages) {
  __shared__ __align__(128) int4 slots[SLOTS][SLOT_BYTES / 16];
  __shared__ __align__(8) unsigned long long full[SLOTS], empty[SLOTS];
  const unsigned full0 = static_cast<unsigned>(__cvta_generic_to_shared(full));
  const unsigned empty0 = static_cast<unsigned>(__cvta_generic_to_shared(empty));
  if (threadIdx.x == 0) {
    for (int s = 0; s < SLOTS; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%%0], 1;" :: "r"(full0 + 8 * s));
      asm volatile("mbarrier.init.shared::cta.b64 [%%0], 1;" :: "r"(empty0 + 8 * s));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x == 32) {  // producer
    for (int it = 0; it < stages; ++it) {
      const int s = it %% SLOTS;
      if (it >= SLOTS) wait_parity(empty0 + 8 * s, (it / SLOTS - 1) & 1);
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%%0], %%1;"
                   :: "r"(full0 + 8 * s), "r"(SLOT_BYTES) : "memory");
      const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(&slots[s][0]));
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%%0], [%%1], %%2, [%%3];"
                   :: "r"(dst), "l"(src + it * (SLOT_BYTES / 16)), "r"(SLOT_BYTES), "r"(full0 + 8 * s)
                   : "memory");
    }
  } else if (threadIdx.x < 32) {  // consumer warp
    int sum = 0;
    for (int it = 0; it < stages; ++it) {
      const int s = it %% SLOTS;
      wait_parity(full0 + 8 * s, (it / SLOTS) & 1);
#ifdef EARLY_RELEASE
      __syncwarp();
      if (threadIdx.x == 0) arrive(empty0 + 8 * s);
#endif
      const int4 v = slots[s][threadIdx.x];
      sum += v.x + v.y + v.z + v.w;
#ifdef FENCED
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
#ifndef EARLY_RELEASE
      __syncwarp();
      if (threadIdx.x == 0) arrive(empty0 + 8 * s);
#endif
    }
    out[threadIdx.x] = sum;
  }
}
""" % {"slots": SLOTS, "slot_bytes": SLOT_BYTES}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in MODES:
        print(f"usage: racecheck_probe.py {{{'|'.join(MODES)}}}", file=sys.stderr)
        return 2
    import cupy

    mode = argv[0]
    kernel = cupy.RawModule(code=SOURCE, options=("--gpu-architecture=sm_90a", "-std=c++17", *MODES[mode]))
    ints = np.arange(STAGES * SLOT_BYTES // 4, dtype=np.int32)
    out = cupy.zeros(32, cupy.int32)
    kernel.get_function("ring")((1,), (64,), (cupy.asarray(ints), out, np.int32(STAGES)))
    expected = ints.reshape(STAGES, 32, 4).sum(axis=(0, 2), dtype=np.int64).astype(np.int32)
    correct = bool((cupy.asnumpy(out) == expected).all())
    print(f"racecheck_probe {mode}: sums {'correct' if correct else 'WRONG'}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
