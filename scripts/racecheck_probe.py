"""What does compute-sanitizer racecheck see of a bulk-copy ring ordered by mbarriers?

The smallest stage ring of the Hopper kernel's kind, on one CTA: a producer thread waits for a
slot's "empty" mbarrier, arms its "full" mbarrier with the byte count and issues one
asynchronous copy into the slot; a consumer warp waits for "full", every lane reads its 16 bytes,
the warp syncs and lane 0 arrives on "empty". Two slots, eight stages, so every slot is refilled
three times. Run it under racecheck in each mode::

    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py correct
    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py early
    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py tensor
    compute-sanitizer --tool racecheck python scripts/racecheck_probe.py tensor_early

    correct       the protocol above with a raw ``cp.async.bulk`` copy: no slot is refilled
                  before every lane has read it
    fenced        the same with ``fence.proxy.async.shared::cta`` after the reads (not required
                  by the PTX memory model for this order)
    early         a real race: lane 0 frees the slot *before* the lanes read it
    tensor        the correct protocol with a TMA tensor copy (``cp.async.bulk.tensor.2d`` and a
                  tensor map passed as a ``__grid_constant__`` parameter), as w4a8_hopper.cu copies
    tensor_early  the real race with the tensor copy

Measured (CUDA 13.0, compute-sanitizer 2025.3.1; H200 and H100, 2026-11-22): with the raw copy
racecheck reports the same "Potential WAR hazard" between the consumer's LDS and the producer's
copy in correct, fenced and early alike: it does not model the mbarrier ordering of a raw bulk
copy's writes and cannot tell the correct ring from the racy one. With the tensor copy it reports
0 hazards in tensor and in tensor_early: it does not attribute the TMA unit's writes to a thread,
so it does not check them at all. Either way racecheck cannot judge the ring; the kernel uses
tensor copies, so racecheck checks the rest of its shared memory (the epilogue's staging tile,
the ExCP ablation's int8 slots, the scales) without false reports, and the ring protocol is
checked by tests/gpu/test_hopper_ring_protocol.py.

Two more modes ask whether racecheck can run the kernel's split-K exchange between the CTAs of
a thread block cluster at all (two CTAs, one warp each)::

    cluster_barrier   barrier.cluster arrive / wait, then each thread writes its flag
    cluster_st_async  CTA 1 sends 16 bytes per lane into CTA 0's shared memory with
                      ``st.async`` completing on CTA 0's mbarrier (the ClusterExchange pattern);
                      CTA 0 waits on the mbarrier and sums them

Measured (H100, CUDA 13.0, 2026-11-22 12:3x): both are correct when run plainly and under
memcheck and synccheck; under racecheck cluster_barrier finishes (0 hazards) but
cluster_st_async never does (killed after 40 s). So racecheck cannot run a kernel whose CTAs
exchange data with ``st.async``.

Two more ask whether it can run, and judge, the same exchange written with plain remote stores
(the Hopper kernel's racecheck build of 2026-12-07, ``LIQUIDREF_CLUSTER_EXCHANGE_PLAIN_STORES``,
since replaced)::

    cluster_st_remote        CTA 1's lanes store their 16 bytes with ``st.shared::cluster``,
                             then ``fence.acq_rel.cluster`` and ``mbarrier.complete_tx`` of those
                             bytes on CTA 0's mbarrier; CTA 0 waits and sums, as above
    cluster_st_remote_racy   the same, but CTA 0 also reads its buffer once *before* it waits
                             (a real race with CTA 1's stores; the result comes from the read
                             after the wait, so the sums stay right)

Measured (H100, CUDA 13.0, 2026-12-07 20:02 UTC): neither finishes under racecheck (killed after
60 s each), so racecheck cannot run a cross-CTA mbarrier exchange in either form;
scripts/gpu_session.sh runs neither of these two modes.

The last two ask whether racecheck *sees* remote stores at all, with the exchange ordered by the
cluster barrier, which it does run (cluster_barrier above)::

    cluster_barrier_exchange       CTA 1's lanes store their 16 bytes with ``st.shared::cluster``
                                   between two cluster barriers; CTA 0 reads after the second
    cluster_barrier_exchange_racy  the same, but CTA 0 also reads its buffer once *before* the
                                   second barrier (a real race with CTA 1's stores)

Measured (H100, CUDA 13.0, 2026-12-08 00:30 UTC): both finish; racecheck reports 0 hazards in
cluster_barrier_exchange and 1 hazard in cluster_barrier_exchange_racy, and the sums are right in
both. So racecheck tracks remote shared-memory stores and the cluster barrier's ordering of
them; the Hopper kernel's racecheck build (``LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER``,
gpu.hopper.BARRIER_EXCHANGE_DEFINE) orders its exchange this way. scripts/gpu_session.sh runs
both modes under racecheck with SANITIZE=1.

The script itself checks what the consumers read (a wrong result exits with status 1).
"""

from __future__ import annotations

import sys

import numpy as np

from gpu import runtime

MODES = {"correct": (), "fenced": ("-DFENCED",), "early": ("-DEARLY_RELEASE",), "tensor": ("-DTENSOR",),
         "tensor_early": ("-DTENSOR", "-DEARLY_RELEASE")}
CLUSTER_MODES = ("cluster_barrier", "cluster_st_async", "cluster_st_remote", "cluster_st_remote_racy",
                 "cluster_barrier_exchange", "cluster_barrier_exchange_racy")
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

struct alignas(%(tensor_map_alignment)d) TensorMap { unsigned long long opaque[%(tensor_map_words)d]; };  // CUtensorMap

// grid (1), block (64): warp 0 consumes, thread 32 produces. out[lane] = sum of the lane's ints.
// src_map: src as rows of SLOT_BYTES, a box of one row (used with -DTENSOR).
extern "C" __global__ void ring(const int4* __restrict__ src, int* __restrict__ out, int stages,
                                const __grid_constant__ TensorMap src_map) {
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
#ifdef TENSOR
      asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                   " [%%0], [%%1, {%%2, %%3}], [%%4];"
                   :: "r"(dst), "l"(&src_map), "r"(0), "r"(it), "r"(full0 + 8 * s) : "memory");
#else
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%%0], [%%1], %%2, [%%3];"
                   :: "r"(dst), "l"(src + it * (SLOT_BYTES / 16)), "r"(SLOT_BYTES), "r"(full0 + 8 * s)
                   : "memory");
#endif
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
""" % {"slots": SLOTS, "slot_bytes": SLOT_BYTES, "tensor_map_alignment": runtime.TENSOR_MAP_ALIGNMENT,
       "tensor_map_words": runtime.TENSOR_MAP_BYTES // 8}


CLUSTER_SOURCE = r"""
// grid (2), block (32), clusters of 2. out[32 * rank + lane]
__device__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
}

__device__ unsigned cluster_rank() {
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// the shared::cluster address of CTA 0's copy of a shared::cta address
__device__ unsigned in_cta0(unsigned addr) {
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(0));
  return remote;
}

// CTA 1's lane l: {1, 2, 3, l} into CTA 0's buf[l] with a plain remote store
__device__ void store_lane_in_cta0(unsigned remote) {
  asm volatile("st.shared::cluster.v4.s32 [%0], {%1, %2, %3, %4};"
               :: "r"(remote), "r"(1), "r"(2), "r"(3), "r"(static_cast<int>(threadIdx.x)) : "memory");
}

// CTA 0's racy read of buf[lane] (before it may), into out[32 + lane] (not checked)
__device__ void read_early(const int4* buf, int* out) {
  const volatile int* early = reinterpret_cast<const volatile int*>(buf + threadIdx.x);
  out[32 + threadIdx.x] = early[0] + early[1] + early[2] + early[3];
}

// CTA 0's read of buf[lane] after the exchange: out[lane] = 6 + lane
__device__ void read_and_sum(const int4* buf, int* out) {
  const int4 v = buf[threadIdx.x];
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

extern "C" __global__ void cluster_barrier(int* out) {
  cluster_sync();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

// CTA 1's lanes send into CTA 0's buf; CTA 0 reads and sums. ST_ASYNC: with st.async completing
// on CTA 0's mbarrier (the ClusterExchange pattern); STORES: with st.shared::cluster, then
// fence.acq_rel.cluster and mbarrier.complete_tx of the 16 bytes (the kernel's racecheck build
// until 2026-12-08); STORES_RACY: the same, but CTA 0 also reads buf[lane] before it waits.
enum Send { ST_ASYNC, STORES, STORES_RACY };

template <Send SEND>
__device__ void exchange(int* out) {
  __shared__ __align__(16) int4 buf[32];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned bar_addr = static_cast<unsigned>(__cvta_generic_to_shared(&bar));
  const unsigned buf_addr = static_cast<unsigned>(__cvta_generic_to_shared(buf));
  const unsigned rank = cluster_rank();
  if (threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar_addr));
    if (rank == 0)
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar_addr), "r"(512) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  asm volatile("barrier.cluster.arrive.release;" ::: "memory");
  if (rank == 1) {
    const unsigned remote = in_cta0(buf_addr + 16 * threadIdx.x), remote_bar = in_cta0(bar_addr);
    asm volatile("barrier.cluster.wait.acquire;" ::: "memory");  // CTA 0's barrier is initialized
    if (SEND == ST_ASYNC) {
      asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.s32 [%0], {%1, %2, %3, %4}, [%5];"
                   :: "r"(remote), "r"(1), "r"(2), "r"(3), "r"(static_cast<int>(threadIdx.x)), "r"(remote_bar)
                   : "memory");
    } else {
      store_lane_in_cta0(remote);
      asm volatile("fence.acq_rel.cluster;" ::: "memory");
      asm volatile("mbarrier.complete_tx.relaxed.cluster.shared::cluster.b64 [%0], %1;"
                   :: "r"(remote_bar), "r"(16) : "memory");
    }
  } else {
    if (SEND == STORES_RACY) read_early(buf, out);
    asm volatile("{\n.reg .pred done;\nWAIT:\n"
                 "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT;\n}\n" :: "r"(bar_addr), "r"(0) : "memory");
    read_and_sum(buf, out);
  }
}

// The same data, ordered by the cluster barrier instead of an mbarrier: a first barrier (CTA 0 has
// started), CTA 1's lanes store with st.shared::cluster, a second barrier (arrive.release after
// the stores, wait.acquire before the reads), CTA 0 reads and sums. RACY: CTA 0 also reads
// buf[lane] before the second barrier.
template <bool RACY>
__device__ void barrier_exchange(int* out) {
  __shared__ __align__(16) int4 buf[32];
  const unsigned buf_addr = static_cast<unsigned>(__cvta_generic_to_shared(buf));
  const unsigned rank = cluster_rank();
  cluster_sync();
  if (rank == 1) store_lane_in_cta0(in_cta0(buf_addr + 16 * threadIdx.x));
  else if (RACY) read_early(buf, out);
  cluster_sync();
  if (rank == 0) read_and_sum(buf, out);
}

extern "C" __global__ void cluster_st_async(int* out) { exchange<ST_ASYNC>(out); }
extern "C" __global__ void cluster_st_remote(int* out) { exchange<STORES>(out); }
extern "C" __global__ void cluster_st_remote_racy(int* out) { exchange<STORES_RACY>(out); }
extern "C" __global__ void cluster_barrier_exchange(int* out) { barrier_exchange<false>(out); }
extern "C" __global__ void cluster_barrier_exchange_racy(int* out) { barrier_exchange<true>(out); }
"""


def run_cluster_mode(mode: str) -> bool:
    """Launch a cluster mode's kernel; True when what it wrote is right."""
    import cupy

    kernel = cupy.RawModule(code=CLUSTER_SOURCE, options=("--gpu-architecture=sm_90a", "-std=c++17"))
    out = cupy.zeros(64, cupy.int32)
    runtime.launch(kernel.get_function(mode), (2,), (32,), (out,), cluster=(2, 1, 1))
    got = cupy.asnumpy(out)
    if mode == "cluster_barrier":
        return bool((got == 1).all())
    return bool((got[:32] == np.arange(32) + 6).all())


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in (*MODES, *CLUSTER_MODES):
        print(f"usage: racecheck_probe.py {{{'|'.join((*MODES, *CLUSTER_MODES))}}}", file=sys.stderr)
        return 2
    mode = argv[0]
    if mode in CLUSTER_MODES:
        correct = run_cluster_mode(mode)
        print(f"racecheck_probe {mode}: {'correct' if correct else 'WRONG'}")
        return 0 if correct else 1
    import cupy

    kernel = cupy.RawModule(code=SOURCE, options=("--gpu-architecture=sm_90a", "-std=c++17", *MODES[mode]))
    ints = np.arange(STAGES * SLOT_BYTES // 4, dtype=np.int32)
    out = cupy.zeros(32, cupy.int32)
    src = cupy.asarray(ints)
    src_map = runtime.tensor_map(src.data.ptr, SLOT_BYTES, (STAGES,), (SLOT_BYTES,), (1,))
    runtime.launch(kernel.get_function("ring"), (1,), (64,), (src, out, np.int32(STAGES), src_map))
    expected = ints.reshape(STAGES, 32, 4).sum(axis=(0, 2), dtype=np.int64).astype(np.int32)
    correct = bool((cupy.asnumpy(out) == expected).all())
    print(f"racecheck_probe {mode}: sums {'correct' if correct else 'WRONG'}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
