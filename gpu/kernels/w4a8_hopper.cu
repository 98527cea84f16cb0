// LiquidGEMM W4A8 GEMM for Hopper (sm_90a): the implicit fine-grained pipeline (ImFP).
//
// nvcc-arch: sm_90a
// SASS must contain: IGMMA UTMALDG SYNCS
// SASS must not contain: LDL STL
//
// Computes Y^T = W X^T so that the weights are the wgmma A operand (from registers, after the
// in-register LiquidQuant dequant) and the tokens sit on the flexible wgmma n (8..256):
//
//   acc[n, m] = sum_k w_i8[n, k] * x_i8[m, k]                     exact int32
//   y[m, n]   = fp16( float(acc) * (s1[n] * s_x[m]) )             one rounding, RN
//
// CTA = 1 load warpgroup + CWG compute warpgroups, tile = (64 * CWG) weight rows x BN tokens.
//
//   load WG (n >= 64: warp 0 weights,      compute WG c (128 threads, rows 64c .. 64c+63)
//            warp 1 X; else warp 0 both)
//   ------------------------------------   ------------------------------------------------
//   w: wait empty_w[s]                     wait full_w[s]
//      expect_tx(full_w[s], bytes)         per 64-k block: LDS.128 codes, LDS.32 (s, a) word,
//      TMA copy codes, meta (per WG)         AND/SHR + IMAD + XOR -> 8 A registers (2 k32 steps)
//   x: wait empty_x[s]                     wait full_x[s]
//      expect_tx(full_x[s], bytes)         wgmma m64nBNk32 x (KS/32), commit
//      TMA copy X core matrices            wait_group 1 -> the previous stage is retired:
//   (ring of STAGES slots, each slot         each warp: arrive empty_w[s - 1], empty_x[s - 1]
//    with both halves)
//
// The two compute warpgroups never synchronize with each other: while one dequantizes, the
// other's wgmma keeps the tensor core busy (the hardware interleaves them), and inside one
// warpgroup the dequant of stage s+1 overlaps the asynchronous wgmma of stage s (two A-register
// buffers). The split-K CTAs of a tile (split_k = 2, n <= 64) run as one thread block cluster:
// each row block's partials go from the other CTA's registers into its owner's shared memory
// (ClusterExchange). Other split-K CTAs store their exact int32 partials into their own workspace
// slices; the last CTA of a tile to finish adds the others' slices and runs the epilogue.
//
// Data formats: liquidref/layout.py (weights: codes[N/64][K/64][2048], meta[N/64][K/64][128];
// activations: x_tiled[M_pad/8][K/16][8][16]); tile configuration: liquidref/tiling.py.

#include <cuda_fp16.h>

#include "liquidref_constants.cuh"
#include "wgmma_s8.cuh"

namespace liquidref {
namespace hopper {

constexpr unsigned BARRIER_REGION_BYTES = 256;  // full[] and empty[] mbarriers, padded
constexpr unsigned LOAD_WARPGROUP_REGISTERS = 40;
constexpr unsigned SM_REGISTERS = 65536;
constexpr unsigned SETMAXNREG_MAX = 256;  // setmaxnreg takes 24..256 registers, a multiple of 8
// setmaxnreg of a compute warpgroup with CWG of them beside the load warpgroup (one CTA per SM):
// the registers the load warpgroup gives up, shared out, rounded down to setmaxnreg's multiple
// of 8 and at most its maximum (CWG = 2: 232; CWG = 3: 152).
__host__ __device__ constexpr unsigned compute_warpgroup_registers(int cwg) {
  const unsigned shared_out = (SM_REGISTERS / THREADS_PER_WARPGROUP - LOAD_WARPGROUP_REGISTERS) / cwg / 8 * 8;
  return shared_out < SETMAXNREG_MAX ? shared_out : SETMAXNREG_MAX;
}
template <int CWG>
constexpr unsigned COMPUTE_WARPGROUP_REGISTERS = compute_warpgroup_registers(CWG);
constexpr unsigned CORE_MATRIX_BYTES = ACT_CORE_ROWS * ACT_CORE_BYTES;  // 128: 8 token rows x 16 k-bytes
constexpr unsigned SPLIT_K_BARRIER_ID = 1;   // named barrier among the compute warpgroups
constexpr unsigned LOADERS_BARRIER_ID = 2;   // named barrier between the two load warps
constexpr unsigned EPILOGUE_BARRIER_ID = 3;  // + compute warpgroup (0 .. CWG - 1): its epilogue's barrier
constexpr unsigned WARP_LANES = 32;
constexpr unsigned WARPS_PER_WARPGROUP = THREADS_PER_WARPGROUP / WARP_LANES;

// ---- PTX wrappers ---------------------------------------------------------------------------

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbarrier_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

// Spin on a try_wait form (PTX, its operands: done, [bar], parity) until the phase with `parity`
// has completed.
#define LIQUIDREF_MBARRIER_WAIT_LOOP(TRY_WAIT) \
  "{\n.reg .pred done;\nWAIT:\n" TRY_WAIT " done, [%0], %1;\n@!done bra WAIT;\n}\n"

__device__ __forceinline__ void mbarrier_wait(unsigned bar, unsigned parity) {
  asm volatile(LIQUIDREF_MBARRIER_WAIT_LOOP("mbarrier.try_wait.parity.shared::cta.b64") ::"r"(bar), "r"(parity)
               : "memory");
}

// A CUDA tensor map (cuda.h's CUtensorMap: 128 opaque bytes, 128-byte aligned), encoded on the
// host by gpu.runtime.tensor_map and passed as a __grid_constant__ kernel parameter. The maps
// here view an array as rows of 8-byte elements and copy whole rows (see Loader).
struct alignas(128) TensorMap {
  unsigned long long opaque[16];
};

// One TMA copy global -> shared of the map's box at element coordinates {0, c1} (a 2D map) or
// {0, c1, c2} (3D), the box's bytes in row-major order, contiguous in shared memory, completing
// the box's bytes on the mbarrier (parts of the box outside the array are filled with zeros and
// count too). A tensor copy rather than a raw cp.async.bulk: compute-sanitizer's racecheck does
// not model the mbarrier ordering of a raw bulk copy's writes and reports every slot reuse of a
// correct ring as a hazard, while it does not attribute a tensor copy's writes to a thread
// (scripts/racecheck_probe.py shows both), so it then checks the kernel's other shared memory.
__device__ __forceinline__ void tensor_copy_2d(unsigned dst, const TensorMap* map, int c1, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          dst),
      "l"(map), "r"(0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tensor_copy_3d(unsigned dst, const TensorMap* map, int c1, int c2, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];" ::"r"(dst),
      "l"(map), "r"(0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}

// Programmatic dependent launch (the GEMM launched while the activation quantizer still runs):
// wait until the grids this one depends on have finished and their writes are visible. A no-op
// when the kernel was launched without the attribute.
__device__ __forceinline__ void wait_for_producer_grid() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// atomicAdd with acquire-release semantics at GPU scope; returns the old value.
__device__ __forceinline__ int counter_add_acq_rel(int* counter, int value) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(counter), "r"(value) : "memory");
  return old;
}

// ---- thread block clusters (split-K through distributed shared memory) ----

// CTAs in this CTA's cluster (1 when launched without clusters).
__device__ __forceinline__ unsigned cluster_size() {
  unsigned n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
  return n;
}

// The shared::cluster address of `addr` (a shared::cta address of this CTA) in cluster CTA `rank`.
__device__ __forceinline__ unsigned map_to_cluster_cta(unsigned addr, unsigned rank) {
  unsigned mapped;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(mapped) : "r"(addr), "r"(rank));
  return mapped;
}

// Split barrier over every thread of the cluster: each thread arrives once (release), a thread
// that waits (acquire) passes once all non-exited threads of the cluster have arrived.
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;" ::: "memory"); }

// 16 bytes into another cluster CTA's shared memory; their arrival completes 16 bytes of the
// transaction count of that CTA's mbarrier `remote_bar` (both shared::cluster addresses).
__device__ __forceinline__ void store_to_cluster_cta(unsigned remote_addr, int4 v, unsigned remote_bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.s32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(
                   remote_addr),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(remote_bar)
               : "memory");
}

// The racecheck build's form of store_to_cluster_cta (LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER):
// a plain 16-byte store into another cluster CTA's shared memory, ordered for the owner by the
// sender's next cluster_arrive (release) and the owner's cluster_wait (acquire).
__device__ __forceinline__ void plain_store_to_cluster_cta(unsigned remote_addr, int4 v) {
  asm volatile("st.shared::cluster.v4.s32 [%0], {%1, %2, %3, %4};" ::"r"(remote_addr), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}

// mbarrier_wait with acquire semantics at cluster scope: what other cluster CTAs wrote before
// completing the phase is visible after it.
__device__ __forceinline__ void mbarrier_wait_cluster(unsigned bar, unsigned parity) {
  asm volatile(LIQUIDREF_MBARRIER_WAIT_LOOP("mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64")
               ::"r"(bar), "r"(parity)
               : "memory");
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int PENDING>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(PENDING) : "memory");
}

// Tells the compiler the accumulators may change here (the asynchronous wgmma writes them), so
// no read of them is moved across a wgmma wait.
template <int R>
__device__ __forceinline__ void fence_registers(int (&r)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// wgmma shared-memory descriptor, no swizzle (ARCHITECTURE.md section 3):
//   bits  0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4.
__device__ __forceinline__ unsigned long long smem_descriptor(unsigned addr, unsigned leading,
                                                              unsigned stride) {
  return static_cast<unsigned long long>((addr & 0x3FFFF) >> 4) |
         (static_cast<unsigned long long>((leading & 0x3FFFF) >> 4) << 16) |
         (static_cast<unsigned long long>((stride & 0x3FFFF) >> 4) << 32);
}

// ---- LiquidQuant dequant of one packed word ----------------------------------------------------
//
//   word = 8 nibbles:  [hi3 lo3 | hi2 lo2 | hi1 lo1 | hi0 lo0]   (one byte per k)
//   lo   = word & 0x0F0F0F0F        -> 4 codes of row r
//   hi   = (word >> 4) & 0x0F0F0F0F -> 4 codes of row r + 8
//   out  = (codes * s + a * 0x01010101) ^ 0x80808080     (IMAD, XOR: no carry crosses a byte)
//
// Ablation (compiled with -DLIQUIDREF_DEQUANT_QOQ=1, backend "hopper_qoq_dequant"): QServe's
// sequence on the same bytes, IMUL then a per-byte wrapping add (__vadd4) of the group minimum
// broadcast as int8 bytes. (q4 * s + min) mod 256 per byte is the same weight, so the variant is
// bit-exact too and isolates what the IMAD + XOR form saves.
#ifndef LIQUIDREF_DEQUANT_QOQ
#define LIQUIDREF_DEQUANT_QOQ 0
#endif
__device__ __forceinline__ void dequant_word(unsigned word, unsigned s_lo, unsigned a_lo,
                                             unsigned s_hi, unsigned a_hi, unsigned& out_lo,
                                             unsigned& out_hi) {
  const unsigned lo = word & LOW_NIBBLES;
  const unsigned hi = (word >> 4) & LOW_NIBBLES;
#if LIQUIDREF_DEQUANT_QOQ
  out_lo = __vadd4(lo * s_lo, a_lo);
  out_hi = __vadd4(hi * s_hi, a_hi);
#else
  out_lo = (lo * s_lo + a_lo) ^ XOR_MASK_WORD;
  out_hi = (hi * s_hi + a_hi) ^ XOR_MASK_WORD;
#endif
}

// A registers of one compute-warpgroup thread for the BPS blocks of a stage: 2 k32 steps each.
//   a[2b + step][reg]: reg 0 = row r, k 4q..4q+3; reg 1 = row r+8; reg 2 = row r, k+16; reg 3 = r+8
template <int BPS>
__device__ __forceinline__ void load_and_dequant(const unsigned char* codes, const unsigned char* meta,
                                                 unsigned thread, unsigned (&a)[2 * BPS][4]) {
  // Metadata word j = 8 * warp + lane / 4 holds [s_r, a_r, s_r+8, a_r+8].
  const unsigned meta_word = 8 * (thread / 32) + (thread % 32) / 4;
#pragma unroll
  for (int b = 0; b < BPS; ++b) {
    const uint4 w = *reinterpret_cast<const uint4*>(codes + b * BLOCK_BYTES + thread * BYTES_PER_THREAD);
    unsigned m = *reinterpret_cast<const unsigned*>(meta + b * META_BYTES_PER_BLOCK + 4 * meta_word);
    // bytes 1 and 3 (the offsets a) become the int8 group minimum a - 128; bytes 0 and 2 (s) stay
    if (LIQUIDREF_DEQUANT_QOQ) m ^= XOR_MASK_WORD & 0xFF00FF00u;
    const unsigned s_lo = __byte_perm(m, 0, 0x4440);  // byte 0, zero-extended
    const unsigned a_lo = __byte_perm(m, 0, 0x1111);  // byte 1 in all four lanes
    const unsigned s_hi = __byte_perm(m, 0, 0x4442);  // byte 2
    const unsigned a_hi = __byte_perm(m, 0, 0x3333);  // byte 3 in all four lanes
    dequant_word(w.x, s_lo, a_lo, s_hi, a_hi, a[2 * b][0], a[2 * b][1]);
    dequant_word(w.y, s_lo, a_lo, s_hi, a_hi, a[2 * b][2], a[2 * b][3]);
    dequant_word(w.z, s_lo, a_lo, s_hi, a_hi, a[2 * b + 1][0], a[2 * b + 1][1]);
    dequant_word(w.w, s_lo, a_lo, s_hi, a_hi, a[2 * b + 1][2], a[2 * b + 1][3]);
  }
}

// The stage's 2 * BPS wgmma k32 steps. X stage layout [BN/8][KS/16][8][16]: step j starts at
// byte 256 j, its two k-adjacent core matrices are 128 bytes apart (leading byte offset) and
// 8-token groups are KS * 8 bytes apart (stride byte offset). (A pad between the groups, against
// possible bank conflicts of the B reads, measured no faster on an H200 for pads of 16..144 bytes.)
//
// Small n: consecutive wgmmas on one accumulator form a dependent chain whose latency, not the
// tensor core's throughput, would set the pace; step j therefore adds into accumulator set
// j % CHAINS, and the sets are summed (exactly, in int32) after the k loop.
template <int BN, int KS, int CHAINS>
__device__ __forceinline__ void mma_stage(int (&acc)[CHAINS][BN / 2], const unsigned (&a)[KS / 32][4],
                                          unsigned x_stage) {
  wgmma_fence();
#pragma unroll
  for (int j = 0; j < KS / 32; ++j) {
    WgmmaS8<BN>::mma(acc[j % CHAINS], a[j],
                     smem_descriptor(x_stage + 2 * CORE_MATRIX_BYTES * j, CORE_MATRIX_BYTES, KS * 8));
  }
  wgmma_commit();
}

// Independent accumulator sets per compute warpgroup: one per k32 step of a stage for n <= 32
// (their registers are cheap there), one otherwise. With three compute warpgroups (152 registers
// a thread) the sets take at most 32 registers (n = 16: 4 sets, n = 32: 2): with 8 sets ptxas
// serializes the wgmmas for want of registers (its C7511/C7512 warnings).
#ifndef LIQUIDREF_ACC_CHAINS
#define LIQUIDREF_ACC_CHAINS 0
#endif
constexpr int THREE_WARPGROUP_CHAIN_REGISTERS = 32;
template <int BN, int KS, int CWG = 2>
__host__ __device__ constexpr int accumulator_chains() {
  if (LIQUIDREF_ACC_CHAINS > 0) return LIQUIDREF_ACC_CHAINS;
  if (BN > 32) return 1;
  const int per_k32_step = KS / 32;
  if (CWG <= 2) return per_k32_step;
  const int fitting = THREE_WARPGROUP_CHAIN_REGISTERS / (BN / 2);  // a set: BN / 2 registers
  return fitting < per_k32_step ? fitting : per_k32_step;
}

// Output row of a compute-warpgroup thread's wgmma m64nNk32 accumulators of half h (register i is
// in half h = (i >> 1) & 1; store_tile has the token map), in the 64-row block from `block_row`:
//
//   row = block_row + 16 warp + lane / 4 + 8 h       warp w: rows 16w .. 16w + 15
//                                                    lanes 4q .. 4q + 3: rows 16w + q and 16w + q + 8
//
// EpilogueScales and store_tile both use it. A macro, not a function: every inline-function form
// tried changed the SASS of the whole kernel (its integer ops came out in another order), whose
// schedule was measured as is.
#define LIQUIDREF_ACCUMULATOR_ROW(block_row, warp, lane, h) ((block_row) + 16 * (warp) + (lane) / 4 + 8 * (h))

__device__ __forceinline__ __half epilogue(int acc, float s1, float s_x) {
  return __float2half_rn(__fmul_rn(__int2float_rn(acc), __fmul_rn(s1, s_x)));
}

// bar.sync on a compute warpgroup's own epilogue barrier (EPILOGUE_BARRIER_ID + its index among
// the CWG compute warpgroups), its 128 threads. Up to two warpgroups: immediate barrier ids, so
// ptxas reserves only those two (the builds measured with them keep their SASS); with three, the
// id from a register (ptxas then reserves all 16; one CTA per SM uses none of the others).
template <int CWG = 2>
__device__ __forceinline__ void epilogue_barrier_sync(unsigned barrier_id) {
  if constexpr (CWG > 2)
    asm volatile("bar.sync %0, %1;" ::"r"(barrier_id), "n"(THREADS_PER_WARPGROUP) : "memory");
  else if (barrier_id == EPILOGUE_BARRIER_ID)
    asm volatile("bar.sync %0, %1;" ::"n"(EPILOGUE_BARRIER_ID), "n"(THREADS_PER_WARPGROUP) : "memory");
  else
    asm volatile("bar.sync %0, %1;" ::"n"(EPILOGUE_BARRIER_ID + 1), "n"(THREADS_PER_WARPGROUP) : "memory");
}

// The epilogue's scales of one warpgroup, s1 of its rows and s_x of the tile's tokens.
//
// Up to n = PRELOADED_SCALES_MAX_N they are read from global memory before the k loop, so their
// latency hides under it instead of sitting between the loop and the stores (H200, against the
// epilogue that read them, same run: 70B o M = 16 15.7 -> 15.1 us, 8B o M = 16 8.7 -> 8.1 us,
// 8B qkv M = 1 9.0 -> 8.6 us; every shape at M = 1 and 16 faster, M = 32 within 1 %). At n = 64
// the same code measured 3-5 % slower on every shape (the k loop's instruction schedule came out
// different, and the tensor work is exposed there), so wider tiles read them in the epilogue,
// element by element, as before.
//
// Preloaded: a thread's accumulators of row block r belong to the rows
// LIQUIDREF_ACCUMULATOR_ROW(64 (first_block + r), warp, lane, h), h = 0, 1: those s1 stay in registers.
// The BN token scales s_x[blockIdx.y * BN + j] (0 beyond M) are read into registers too,
// j = thread, thread + 128, and only after the k loop put into shared memory (one copy per
// warpgroup) for the threads that use them: a barrier before the loop would delay the first wgmma.
constexpr int PRELOADED_SCALES_MAX_N = 32;

template <int BN, int R>
struct EpilogueScales {
  static constexpr bool PRELOADED = BN <= PRELOADED_SCALES_MAX_N;
  static constexpr int TOKENS_PER_THREAD = (BN + THREADS_PER_WARPGROUP - 1) / THREADS_PER_WARPGROUP;
  static constexpr int SHARED_TOKENS = PRELOADED ? BN : 1;  // floats of publish()'s shared array
  const float* s1;
  const float* s_x;
  int last_token;                   // M - 1
  float rows[R][2];                 // preloaded: s1 of the thread's rows, [row block][h]
  float loaded[TOKENS_PER_THREAD];  // preloaded: s_x of tokens thread + 128 i, until publish()
  const float* tokens = nullptr;    // preloaded: shared memory, BN floats, after publish()

  // Called by the 128 threads of one warpgroup, before the k loop (after the producer grid).
  __device__ __forceinline__ EpilogueScales(int first_block, int blocks, unsigned thread, int M,
                                            const float* s1_, const float* s_x_)
      : s1(s1_), s_x(s_x_), last_token(M - 1) {
    if constexpr (PRELOADED) {
      const int warp = thread / 32, lane = thread % 32;
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          rows[r][h] = r < blocks ? s1[LIQUIDREF_ACCUMULATOR_ROW((first_block + r) * BLOCK_ROWS, warp, lane, h)] : 0.0f;
#pragma unroll
      for (int i = 0; i < TOKENS_PER_THREAD; ++i) {
        const int j = thread + i * THREADS_PER_WARPGROUP, m = blockIdx.y * BN + j;
        loaded[i] = j < BN && m < M ? s_x[m] : 0.0f;
      }
    }
  }
  // Called by the same 128 threads after the k loop; `barrier_id`: EPILOGUE_BARRIER_ID + their
  // compute warpgroup (0 .. CWG - 1), a named barrier of their own.
  template <int CWG = 2>
  __device__ __forceinline__ void publish(float* shared_tokens, unsigned thread, unsigned barrier_id) {
    if constexpr (PRELOADED) {
#pragma unroll
      for (int i = 0; i < TOKENS_PER_THREAD; ++i) {
        const int j = thread + i * THREADS_PER_WARPGROUP;
        if (j < BN) shared_tokens[j] = loaded[i];
      }
      epilogue_barrier_sync<CWG>(barrier_id);
      tokens = shared_tokens;
    }
  }
  // s1 of row n, the thread's row h of row block r; s_x of token m. s_x has M floats: a padding
  // token (m >= M; its result is never stored) gets the last token's, or 0 when preloaded.
  __device__ __forceinline__ float row(int r, int h, int n) const {
    if constexpr (PRELOADED) return rows[r][h];
    return s1[n];
  }
  __device__ __forceinline__ float token(int m) const {
    if constexpr (PRELOADED) return tokens[m - blockIdx.y * BN];
    return s_x[min(m, last_token)];
  }
};

// The epilogue's stores. A thread's accumulators cover 2 rows x BN/4 tokens scattered over the
// tile, so writing them straight to y[m][n] takes BN/2 two-byte stores per thread, each warp's
// store touching 4 tokens x 16 bytes. At n = STAGED_STORES_N a warpgroup instead writes its fp16
// results into a shared-memory tile [BN tokens][CWG * 64 rows] (after the stage ring), then
// stores whole 16-byte chunks of 8 rows of one token, a warp covering 4 tokens x 128 bytes
// (H200, same run: 70B qkv M = 64 25.1 -> 24.5 us, gate_up M = 64 91.4 -> 89.5, M = 128
// 156.4 -> 152.9; 15 of 16 cases at M = 64 and 128 faster by 1-4 %, 70B down M = 128 +0.8 %;
// unlike the early scales, this epilogue change left the k loop's speed at n = 64 alone).
// liquidref.tiling (STAGED_STORES_TOKENS) adds the tile's bytes to the configuration's shared
// memory.
constexpr int STAGED_STORES_N = 64;

template <int BN, int R, int CWG = 2>
struct StagedStores {
  static constexpr bool ON = BN == STAGED_STORES_N;
  __half* tile;        // this warpgroup's first row, token 0 of the CTA's staging tile
  int stride;          // halves between two tokens: CWG * 64
  unsigned barrier_id; // EPILOGUE_BARRIER_ID + 0 .. CWG - 1: a named barrier of this warpgroup

  // The 128 threads of the warpgroup, once store_tile has put all its row blocks into `tile`:
  // the barrier, then R * 64 rows x BN tokens of y in 16-byte chunks (tokens >= M and row blocks
  // >= blocks left out).
  __device__ __forceinline__ void flush(unsigned thread, int first_block, int blocks, int M, int N, __half* y) const {
    epilogue_barrier_sync<CWG>(barrier_id);
    constexpr int CHUNKS_PER_TOKEN = R * BLOCK_ROWS / 8;
    static_assert(BN * CHUNKS_PER_TOKEN % THREADS_PER_WARPGROUP == 0, "every thread stores as many chunks");
#pragma unroll
    for (int c = 0; c < BN * CHUNKS_PER_TOKEN / THREADS_PER_WARPGROUP; ++c) {
      const int chunk = c * THREADS_PER_WARPGROUP + thread;
      const int token = chunk / CHUNKS_PER_TOKEN, row = 8 * (chunk % CHUNKS_PER_TOKEN);
      const int m = blockIdx.y * BN + token;
      if (m < M && row < blocks * BLOCK_ROWS)
        *reinterpret_cast<uint4*>(y + static_cast<size_t>(m) * N + first_block * BLOCK_ROWS + row) =
            *reinterpret_cast<const uint4*>(tile + token * stride + row);
    }
  }
};

// The weights and the activations of a stage are requested by two load warps in parallel from
// n = 64 on (faster at M >= 64 on an H100: 70B qkv M = 64 28.7 -> 25.7 us, down M = 128 91 -> 79
// us), by one warp in stage order below (that order measured faster at decode for split-K
// tiles). gpu/hopper.py builds a second module with LIQUIDREF_SPLIT_LOADERS_MIN_N = 8, two load
// warps at every n, for the tiles with a long unsplit k range (see hopper.two_load_warps).
#ifndef LIQUIDREF_SPLIT_LOADERS_MIN_N
#define LIQUIDREF_SPLIT_LOADERS_MIN_N 64
#endif
constexpr int SPLIT_LOADERS_MIN_N = LIQUIDREF_SPLIT_LOADERS_MIN_N;

template <int CWG, int BN, int KS, int STAGES>
struct Config {
  static constexpr int BPS = KS / BLOCK_K;  // packed blocks per compute warpgroup per stage
  static constexpr unsigned CODES_BYTES = CWG * BPS * BLOCK_BYTES;
  static constexpr unsigned META_BYTES = CWG * BPS * META_BYTES_PER_BLOCK;
  static constexpr unsigned X_BYTES = BN * KS;
  static constexpr unsigned STAGE_BYTES = CODES_BYTES + META_BYTES + X_BYTES;
  // the epilogue's fp16 tile [BN tokens][CWG * 64 rows] after the ring (see StagedStores)
  static constexpr unsigned STAGING_BYTES = BN == STAGED_STORES_N ? BN * CWG * BLOCK_ROWS * 2 : 0;
  static constexpr unsigned SHARED_BYTES = BARRIER_REGION_BYTES + STAGES * STAGE_BYTES + STAGING_BYTES;
  static constexpr int THREADS = (CWG + 1) * THREADS_PER_WARPGROUP;
  static_assert(KS % BLOCK_K == 0, "a stage holds whole 64-k blocks");
  static_assert(BN % 8 == 0 && BN >= 8 && BN <= 256, "wgmma n");
  static_assert(4 * STAGES * 8 <= BARRIER_REGION_BYTES, "barriers fit their region");
};

// ---- what both pipelines share: the CTA's tile, the load warp and the epilogue ---------------

// The CTA's place in the problem and the addresses of its stage ring (the same ring layout for
// both pipelines: codes, metadata and activations of each stage, BLOCKS row blocks of 64). From
// n = SPLIT_LOADERS_MIN_N on, a slot's weights (codes + metadata) and its activations are filled
// and freed separately, each half with its own full and empty mbarrier; below, the _w barriers
// cover the whole slot (x_full and x_empty name them) and the _x ones are unused.
//   barrier region: full_w[STAGES] | full_x[STAGES] | empty_w[STAGES] | empty_x[STAGES]  (8 bytes each)
template <int BLOCKS, int BN, int KS, int STAGES>
struct Tile {
  using C = Config<BLOCKS, BN, KS, STAGES>;
  static constexpr bool SPLIT_LOADERS = BN >= SPLIT_LOADERS_MIN_N;
  int first_row_block, active_blocks, first_group, k_blocks, first_stage, n_stages;
  unsigned full_w, full_x, empty_w, empty_x, ring;  // barrier of slot s: full_w + 8 s, ...

  __device__ Tile(const unsigned char* smem, int N, int K, int split_k) {
    const int row_blocks = N / BLOCK_ROWS;
    const int k_stages = K / KS;
    first_row_block = blockIdx.x * BLOCKS;
    active_blocks = min(BLOCKS, row_blocks - first_row_block);
    first_group = blockIdx.y * (BN / 8);
    k_blocks = K / BLOCK_K;
    first_stage = blockIdx.z * k_stages / split_k;
    n_stages = (blockIdx.z + 1) * k_stages / split_k - first_stage;
    full_w = shared_address(smem);
    full_x = full_w + 8 * STAGES;
    empty_w = full_x + 8 * STAGES;
    empty_x = empty_w + 8 * STAGES;
    ring = full_w + BARRIER_REGION_BYTES;
  }
  // every barrier of the ring; the empty ones count `weight_consumers` / `activation_consumers`
  __device__ void init_barriers(unsigned weight_consumers, unsigned activation_consumers) const {
    for (int s = 0; s < STAGES; ++s) {
      mbarrier_init(full_w + 8 * s, 1);  // the load warps' arrive.expect_tx
      mbarrier_init(full_x + 8 * s, 1);
      mbarrier_init(empty_w + 8 * s, weight_consumers);
      mbarrier_init(empty_x + 8 * s, activation_consumers);
    }
  }
  __device__ unsigned codes_at(int s, int rb) const { return ring + s * C::STAGE_BYTES + rb * C::BPS * BLOCK_BYTES; }
  __device__ unsigned meta_at(int s, int rb) const {
    return ring + s * C::STAGE_BYTES + C::CODES_BYTES + rb * C::BPS * META_BYTES_PER_BLOCK;
  }
  __device__ unsigned x_at(int s) const { return ring + s * C::STAGE_BYTES + C::CODES_BYTES + C::META_BYTES; }
  // the epilogue's staging tile after the ring (C::STAGING_BYTES; generic pointer into `smem`)
  __device__ __half* staging(unsigned char* smem) const {
    return reinterpret_cast<__half*>(smem + BARRIER_REGION_BYTES + STAGES * C::STAGE_BYTES);
  }
  // the barriers of slot s's activations
  __device__ unsigned x_full(int s) const { return (SPLIT_LOADERS ? full_x : full_w) + 8 * s; }
  __device__ unsigned x_empty(int s) const { return (SPLIT_LOADERS ? empty_x : empty_w) + 8 * s; }
};

// The load warpgroup. Every stage slot has two halves:
//   weights:     wait empty_w[s], expect_tx(full_w[s]), lanes 0..BLOCKS-1 copy one row block's
//                codes and metadata each
//   activations: wait empty_x[s], expect_tx(full_x[s]), lane 0 copies the tile's 8-token
//                groups (one box)
// From n = SPLIT_LOADERS_MIN_N on, warp 0 streams the weights and warp 1 the activations, each
// half on its own barriers and as far ahead as its half of the ring allows; below, warp 0
// requests both halves stage by stage on the _w barriers (the weights' expect_tx counts both).
// With `weight_prefetch` = P > 0 (a launch right after the activation quantizer, with
// programmatic dependent launch) the weights of the first P stages are requested before waiting
// for the quantizer's grid, so they stream while it finishes; the activations of those P stages
// are requested before any more weights (one SM's copies complete roughly in issue order, and
// the first wgmma needs both).
//
// The three tensor maps (gpu.hopper.tensor_maps encodes them; 8-byte elements, innermost first):
//   codes_map  codes[N/64][K/64][2048]  2D: {2048 B, N/64 * K/64 blocks}, box {2048 B, BPS}
//   meta_map   meta[N/64][K/64][128]    2D: {128 B, N/64 * K/64 blocks},  box {128 B, BPS}
//     weight block of (row block rb, stage st) = rb * K/64 + st * BPS: one copy per row block
//   x_map      x_tiled[M_pad/8][K/16][8][16] as 3D: {KS * 8 B, K/KS stages, M_pad/8 groups},
//              box {KS * 8 B, 1, BN / 8}: one copy per stage brings the tile's BN/8 groups,
//              group g's stage at g * KS * 8 in the slot (groups past M_pad/8 come as zeros)
template <int BLOCKS, int BN, int KS, int STAGES>
struct Loader {
  using C = Config<BLOCKS, BN, KS, STAGES>;
  const Tile<BLOCKS, BN, KS, STAGES>& t;
  unsigned lane;
  const TensorMap* codes_map;
  const TensorMap* meta_map;
  const TensorMap* x_map;

  // the whole box: groups of the tile past the last token group arrive as zeros
  __device__ unsigned activation_bytes() const { return C::X_BYTES; }

  __device__ void weights(int it) const {
    const int s = it % STAGES;
    if (it >= STAGES) mbarrier_wait(t.empty_w + 8 * s, ((it / STAGES) - 1) & 1);
    const unsigned bytes = t.active_blocks * C::BPS * (BLOCK_BYTES + META_BYTES_PER_BLOCK) +
                           (t.SPLIT_LOADERS ? 0 : activation_bytes());
    if (lane == 0) mbarrier_arrive_expect_tx(t.full_w + 8 * s, bytes);
    __syncwarp();
    const int k_block = (t.first_stage + it) * C::BPS;
    if (lane < static_cast<unsigned>(t.active_blocks)) {
      const int block = (t.first_row_block + lane) * t.k_blocks + k_block;
      tensor_copy_2d(t.codes_at(s, lane), codes_map, block, t.full_w + 8 * s);
      tensor_copy_2d(t.meta_at(s, lane), meta_map, block, t.full_w + 8 * s);
    }
  }

  __device__ void activations(int it) const {  // (without SPLIT_LOADERS: after weights(it))
    const int s = it % STAGES;
    if (t.SPLIT_LOADERS) {
      if (it >= STAGES) mbarrier_wait(t.empty_x + 8 * s, ((it / STAGES) - 1) & 1);
      if (lane == 0) mbarrier_arrive_expect_tx(t.full_x + 8 * s, activation_bytes());
      __syncwarp();
    }
    if (lane == 0) tensor_copy_3d(t.x_at(s), x_map, t.first_stage + it, t.first_group, t.x_full(s));
  }
};

// Called by every thread of the load warpgroup.
template <int BLOCKS, int BN, int KS, int STAGES>
__device__ __forceinline__ void load_stages(const Tile<BLOCKS, BN, KS, STAGES>& t, unsigned thread,
                                            const TensorMap* codes_map, const TensorMap* meta_map,
                                            const TensorMap* x_map, int weight_prefetch) {
  const Loader<BLOCKS, BN, KS, STAGES> load{t, thread % WARP_LANES, codes_map, meta_map, x_map};
  const int warp = thread / WARP_LANES;
  const int prefetch = min(t.n_stages, min(weight_prefetch, STAGES));
  if constexpr (Tile<BLOCKS, BN, KS, STAGES>::SPLIT_LOADERS) {
    if (warp == 0) {
      for (int it = 0; it < prefetch; ++it) load.weights(it);
      wait_for_producer_grid();
      // warp 1 has requested the activations of the prefetched stages
      asm volatile("bar.sync %0, %1;" ::"n"(LOADERS_BARRIER_ID), "n"(2 * WARP_LANES) : "memory");
      for (int it = prefetch; it < t.n_stages; ++it) load.weights(it);
    } else if (warp == 1) {
      wait_for_producer_grid();  // the quantizer writes x_tiled (x_map's array)
      for (int it = 0; it < t.n_stages; ++it) {
        load.activations(it);
        if (it + 1 == max(prefetch, 1)) asm volatile("bar.arrive %0, %1;" ::"n"(LOADERS_BARRIER_ID), "n"(2 * WARP_LANES) : "memory");
      }
    }
  } else if (warp == 0) {
    for (int it = 0; it < prefetch; ++it) load.weights(it);
    wait_for_producer_grid();
    for (int it = 0; it < t.n_stages; ++it) {
      if (it >= prefetch) load.weights(it);
      load.activations(it);
    }
  }
}

// Writes R row blocks' accumulators of one warpgroup (rows 64 (first_block + r) ..): the fused
// epilogue, or, with split-K, exact int32 partials: every split but the last to finish stores its
// accumulators into its own slice of the workspace, and the last adds the others' slices to its
// registers and runs the epilogue. No atomics on the data, and nothing to clear: each slice is
// written before it is read in every launch; only the tile's counter is reset. `group_threads`
// threads (whole warpgroups) take part; the one with `leader` counts the CTA in.
//   accumulator register i of thread (warp, lane):
//     row   = 16 warp + lane / 4 + 8 ((i >> 1) & 1)
//     token = 2 (lane % 4) + (i & 1) + 8 (i >> 2)
//   workspace slice of (token tile, row block, split): the 128 threads' registers, 4 at a time,
//     int4 chunk c of thread t at [c][t] (a warp's chunk c is 512 contiguous bytes):
//     slice = ((token_tile * row_blocks + row_block) * split_k + split) * 64 * BN ints
//   (gpu.hopper.split_k_workspace_ints sizes the workspace for exactly these slices)
template <int BN, int R, int CWG = 2>
__device__ __forceinline__ void store_tile(const int (&acc)[R][BN / 2], int first_block, int blocks,
                                           unsigned thread, unsigned group_threads, bool leader,
                                           int& is_last_split, int M, int N,
                                           const EpilogueScales<BN, R>& scales, const StagedStores<BN, R, CWG>& staged,
                                           __half* y, int* workspace, int* tile_counters, int split_k) {
  const int warp = thread / 32, lane = thread % 32;
  const int token_base = blockIdx.y * BN + 2 * (lane % 4);
  auto row_of = [&](int r, int i) {
    return LIQUIDREF_ACCUMULATOR_ROW((first_block + r) * BLOCK_ROWS, warp, lane, (i >> 1) & 1);
  };
  auto token_of = [&](int i) { return token_base + (i & 1) + 8 * (i >> 2); };
  // row block r's results: to y, or (staged) into the warpgroup's shared tile for flush()
  auto store = [&](int r, const int (&values)[BN / 2]) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) {
      const int n = row_of(r, i), m = token_of(i);
      const __half v = epilogue(values[i], scales.row(r, (i >> 1) & 1, n), scales.token(m));
      if constexpr (StagedStores<BN, R>::ON)
        staged.tile[(m - blockIdx.y * BN) * staged.stride + n - first_block * BLOCK_ROWS] = v;
      else if (m < M)
        y[static_cast<size_t>(m) * N + n] = v;
    }
  };
  auto flush = [&]() {
    if constexpr (StagedStores<BN, R>::ON) staged.flush(thread, first_block, blocks, M, N, y);
  };
  if (split_k == 1) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r < blocks) store(r, acc[r]);
    flush();
    return;
  }
  auto slice = [&](int r, int split) {
    const size_t index = (static_cast<size_t>(blockIdx.y) * (N / BLOCK_ROWS) + first_block + r) * split_k + split;
    return reinterpret_cast<int4*>(workspace + index * (THREADS_PER_WARPGROUP * (BN / 2))) + thread;
  };
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= blocks) continue;
    int4* mine = slice(r, blockIdx.z);
#pragma unroll
    for (int c = 0; c < BN / 8; ++c)
      mine[c * THREADS_PER_WARPGROUP] = make_int4(acc[r][4 * c], acc[r][4 * c + 1], acc[r][4 * c + 2], acc[r][4 * c + 3]);
  }
  // The CTA's slices are complete once every thread passed the barrier; the leader's
  // acquire-release add then publishes them at GPU scope and, in the last CTA, makes the other
  // splits' slices visible, which the second barrier passes on to its threads (the semaphore
  // pattern: no per-thread fence).
  asm volatile("bar.sync %0, %1;" ::"n"(SPLIT_K_BARRIER_ID), "r"(group_threads) : "memory");
  const int tile = blockIdx.y * gridDim.x + blockIdx.x;
  if (leader) is_last_split = counter_add_acq_rel(tile_counters + tile, 1) == split_k - 1;
  asm volatile("bar.sync %0, %1;" ::"n"(SPLIT_K_BARRIER_ID), "r"(group_threads) : "memory");
  if (!is_last_split) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= blocks) continue;
    int total[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) total[i] = acc[r][i];
    for (int split = 0; split < split_k; ++split) {
      if (split == static_cast<int>(blockIdx.z)) continue;
      const int4* other = slice(r, split);
#pragma unroll
      for (int c = 0; c < BN / 8; ++c) {
        const int4 v = __ldcg(other + c * THREADS_PER_WARPGROUP);  // L2: written by another SM
        total[4 * c] += v.x;  // partial sums: exact in int32
        total[4 * c + 1] += v.y;
        total[4 * c + 2] += v.z;
        total[4 * c + 3] += v.w;
      }
    }
    store(r, total);
  }
  flush();
  if (leader) tile_counters[tile] = 0;
}

// Split-K through distributed shared memory: launched with clusters of split_k CTAs along z
// (gpu/hopper.py does for 2 <= split_k <= CLUSTER_SPLIT_K_MAX), the k splits of a tile are one
// cluster, and row block b (compute warpgroup b) is finished by the cluster CTA of rank
// b % split_k, its owner. The other CTAs' warpgroups b send their int32 partials from registers
// into the owner's exchange buffer (st.async, each 16 bytes completing on the owner's exchange
// mbarrier); the owner waits for split_k - 1 slices, adds them to its registers and runs the
// epilogue. No workspace, no tile counter and no L2 round trip, and the row blocks' epilogues
// run on different SMs:
//
//   split_k = 2, CWG = 2      CTA z = 0                       CTA z = 1
//                             WG 0: owner of row block 0  <-  WG 0: sends its partials
//                             WG 1: sends its partials    ->  WG 1: owner of row block 1
//
// Exchange buffer: after the stage ring, over the staging tile at n = STAGED_STORES_N (the owner
// warpgroup writes that only after it has read the exchange; the sender warpgroup of the CTA
// never does). Slot j holds the j-th sender in rank order: 64 * BN ints, int4 chunk c of thread
// t at [c][t], as the workspace slices of store_tile. liquidref.tiling (CLUSTER_SPLIT_K_MAX,
// TileConfig.split_exchange_bytes) sizes it.
//
// H200, against the workspace in the same run: split-K 2 faster on every case at M = 1-64
// (70B o M = 16 14.9 -> 14.5 us, M = 64 18.6 -> 18.0; 8B qkv M = 1 8.6 -> 8.0); clusters of 4
// 40-50 % slower (8B o M = 1 7.1 -> 9.9 us: 32 clusters of 4 do not all fit on the GPCs at
// once), hence CLUSTER_SPLIT_K_MAX. Decode and mid-M tiles (n <= CLUSTER_SPLIT_MAX_N) only;
// wider tiles split at few shapes and keep the workspace.
constexpr int CLUSTER_SPLIT_K_MAX = 2;
constexpr int CLUSTER_SPLIT_MAX_N = 64;

// compute-sanitizer racecheck never finishes a kernel whose CTAs exchange data through an
// mbarrier, with st.async or with plain remote stores and a remote complete_tx
// (scripts/racecheck_probe.py cluster_st_async, cluster_st_remote), but it runs and judges an
// exchange of plain remote stores ordered by the cluster barrier (cluster_barrier_exchange: no
// hazard; cluster_barrier_exchange_racy, which reads before the second barrier: one hazard; H100,
// CUDA 13.0, 2026-12-08). gpu/hopper.py builds a module with
// LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER = 1 for racecheck only; its exchange is the
// cluster barrier's second phase, over every non-exited thread of both CTAs:
//
//   sender warpgroup                        owner warpgroup
//   cluster_wait       (phase 0: barriers   cluster_wait (phase 0), unless it sent first (ExCP)
//                       initialized)
//   st.shared::cluster of its partials
//   cluster_arrive     (phase 1, release)   cluster_arrive (phase 1)
//   exit                                    cluster_wait (phase 1, acquire); read the slots
//
// The load warpgroups and idle compute warpgroups have exited by then (exited threads do not
// hold up a cluster barrier). The buffer and the owner's reads are those of the st.async build;
// its mbarrier is initialized but never armed. No backend launches it: the owner waits for every
// thread of the cluster, not only for its senders.
#ifndef LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER
#define LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER 0
#endif

template <int BN>
struct ClusterExchange {
  static constexpr bool BY_CLUSTER_BARRIER = LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER;
  static constexpr unsigned SLOT_BYTES = BLOCK_ROWS * BN * 4;
  static constexpr unsigned BYTES = (CLUSTER_SPLIT_K_MAX - 1) * SLOT_BYTES;  // the buffer: the most senders
  unsigned buffer;      // shared::cta address of this CTA's exchange buffer
  const int4* slots;    // the same, as a generic pointer
  unsigned barrier;     // this CTA's exchange mbarrier

  __device__ static int owner(int row_block, int split_k) { return row_block % split_k; }

  // Thread 0 of a CLUSTER_SPLIT build, first: a launch without its clusters would send partials
  // to CTAs that are not there.
  __device__ static void check_launch(int split_k) {
    if (split_k < 2 || split_k > CLUSTER_SPLIT_K_MAX || cluster_size() != static_cast<unsigned>(split_k)) __trap();
  }

  // Thread 0 at init, before fence.mbarrier_init: the barrier's one arrival is the owner's own,
  // with the bytes of split_k - 1 slices. A CTA owns at most one row block (CWG <= 2 <= split_k).
  __device__ void init(int active_blocks, int split_k) const {
    mbarrier_init(barrier, 1);
    if (!BY_CLUSTER_BARRIER && static_cast<int>(blockIdx.z) < active_blocks)
      mbarrier_arrive_expect_tx(barrier, (split_k - 1) * SLOT_BYTES);
  }

  // The 128 threads of a sender warpgroup. Every thread of the cluster has passed
  // cluster_arrive() after the barriers' init, so the owner's barrier is ready after cluster_wait.
  __device__ __forceinline__ void send(const int (&acc)[BN / 2], int owner_rank, unsigned thread) const {
    const int slot = blockIdx.z - (static_cast<int>(blockIdx.z) > owner_rank);
    const unsigned remote = map_to_cluster_cta(buffer + slot * SLOT_BYTES, owner_rank) + 16 * thread;
    const unsigned remote_barrier = map_to_cluster_cta(barrier, owner_rank);
    cluster_wait();
#pragma unroll
    for (int c = 0; c < BN / 8; ++c) {
      const int4 v = make_int4(acc[4 * c], acc[4 * c + 1], acc[4 * c + 2], acc[4 * c + 3]);
      if constexpr (BY_CLUSTER_BARRIER)
        plain_store_to_cluster_cta(remote + 16 * THREADS_PER_WARPGROUP * c, v);
      else
        store_to_cluster_cta(remote + 16 * THREADS_PER_WARPGROUP * c, v, remote_barrier);
    }
    if constexpr (BY_CLUSTER_BARRIER) cluster_arrive();
  }

  // The 128 threads of the owner warpgroup: wait for every slice and add them (exact in int32).
  // has_sent: this thread sent a row block first (ExCP), so it is past phase 0 of the cluster
  // barrier and has arrived on phase 1 (the racecheck build's exchange).
  __device__ __forceinline__ void receive(int (&acc)[BN / 2], int split_k, unsigned thread,
                                          bool has_sent = false) const {
    if constexpr (BY_CLUSTER_BARRIER) {
      if (!has_sent) {
        cluster_wait();
        cluster_arrive();
      }
      cluster_wait();
    } else {
      mbarrier_wait_cluster(barrier, 0);
    }
    for (int slot = 0; slot + 1 < split_k; ++slot) {
      const int4* mine = slots + slot * (SLOT_BYTES / 16) + thread;
#pragma unroll
      for (int c = 0; c < BN / 8; ++c) {
        const int4 v = mine[c * THREADS_PER_WARPGROUP];
        acc[4 * c] += v.x;
        acc[4 * c + 1] += v.y;
        acc[4 * c + 2] += v.z;
        acc[4 * c + 3] += v.w;
      }
    }
  }
};

// grid = (ceil(N / (64 CWG)), ceil(M / BN), split_k); block = (CWG + 1) * 128 threads;
// dynamic shared memory = Config::SHARED_BYTES (+ the exchange buffer, see ClusterExchange).
// K % KS == 0 and N % 64 == 0 (checked in Python). weight_prefetch: 0, or the stages of weights
// to request before waiting for the producer grid (programmatic dependent launch; see
// load_stages). CLUSTER_SPLIT: launched as clusters of the split_k (2..CLUSTER_SPLIT_K_MAX) CTAs
// of each tile, which add their partials through ClusterExchange; only that build has its code,
// so the other builds' SASS stays as measured without it.
template <int CWG, int BN, int KS, int STAGES, bool CLUSTER_SPLIT = false>
__global__ void __launch_bounds__((CWG + 1) * 128, 1)
    w4a8_hopper(const __grid_constant__ TensorMap codes_map, const __grid_constant__ TensorMap meta_map,
                const float* __restrict__ s1, const __grid_constant__ TensorMap x_map,
                const float* __restrict__ s_x, __half* __restrict__ y, int* __restrict__ workspace,
                int* __restrict__ tile_counters, int M, int N, int K, int split_k, int weight_prefetch) {
  using C = Config<CWG, BN, KS, STAGES>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int is_last_split;
  __shared__ __align__(8) unsigned long long exchange_barrier;

  const unsigned warpgroup = threadIdx.x / THREADS_PER_WARPGROUP;
  const unsigned thread = threadIdx.x % THREADS_PER_WARPGROUP;
  const Tile<CWG, BN, KS, STAGES> t(smem, N, K, split_k);
  constexpr bool SPLIT_LOADERS = Tile<CWG, BN, KS, STAGES>::SPLIT_LOADERS;
  static_assert(!CLUSTER_SPLIT || (BN <= CLUSTER_SPLIT_MAX_N && CWG <= 2),
                "cluster splits: n <= CLUSTER_SPLIT_MAX_N, and a CTA owns at most one row block");
  const ClusterExchange<BN> exchange{shared_address(t.staging(smem)), reinterpret_cast<const int4*>(t.staging(smem)),
                                     shared_address(&exchange_barrier)};

  if (threadIdx.x == 0) {
    if constexpr (CLUSTER_SPLIT) ClusterExchange<BN>::check_launch(split_k);
    // each half of a slot: one arrival per compute warp, once its wgmmas of the stage are done
    // (freeing the weights right after the dequant measured no faster)
    t.init_barriers(WARPS_PER_WARPGROUP * t.active_blocks, WARPS_PER_WARPGROUP * t.active_blocks);
    if constexpr (CLUSTER_SPLIT) exchange.init(t.active_blocks, split_k);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if constexpr (CLUSTER_SPLIT) cluster_arrive();  // every thread: this CTA's barriers are initialized

  if (warpgroup == 0) {
    // ---------------- load warpgroup: one or two warps issue the TMA copies -----------------
    if constexpr (CWG >= 2) asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(LOAD_WARPGROUP_REGISTERS));
    load_stages(t, thread, &codes_map, &meta_map, &x_map, weight_prefetch);
    return;
  }

  // ---------------- compute warpgroups ----------------
  if constexpr (CWG >= 2)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(COMPUTE_WARPGROUP_REGISTERS<CWG>));
  wait_for_producer_grid();  // s_x and the output are touched only after the producer grid
  const int cw = warpgroup - 1;
  if (cw >= t.active_blocks) return;
  EpilogueScales<BN, 1> scales(t.first_row_block + cw, 1, thread, M, s1, s_x);

  constexpr int CHAINS = accumulator_chains<BN, KS, CWG>();
  static_assert((KS / 32) % CHAINS == 0, "each accumulator set gets the same k32 steps per stage");
  int chains[CHAINS][BN / 2];
#pragma unroll
  for (int c = 0; c < CHAINS; ++c)
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) chains[c][i] = 0;
  unsigned a0[KS / 32][4], a1[KS / 32][4];  // two A-register buffers: stage it uses a[it % 2]

  auto step = [&](int it, unsigned (&a)[KS / 32][4]) {
    const int s = it % STAGES;
    const unsigned parity = (it / STAGES) & 1;
    mbarrier_wait(t.full_w + 8 * s, parity);
    const unsigned char* stage_base = smem + BARRIER_REGION_BYTES + s * C::STAGE_BYTES;
    load_and_dequant<C::BPS>(stage_base + cw * C::BPS * BLOCK_BYTES,
                             stage_base + C::CODES_BYTES + cw * C::BPS * META_BYTES_PER_BLOCK, thread, a);
    if constexpr (SPLIT_LOADERS) mbarrier_wait(t.full_x + 8 * s, parity);
    mma_stage<BN, KS, CHAINS>(chains, a, t.x_at(s));
    wgmma_wait<1>();  // the previous stage's wgmmas are done: its slot and A buffer are free
    // Each warp frees the previous slot once all its lanes are past their reads of it: the
    // __syncwarp orders the lanes' LDS before lane 0's arrive (release), which the load warp's
    // wait (acquire) orders before the slot's next TMA copy.
    __syncwarp();
    if (it > 0 && thread % WARP_LANES == 0) {
      mbarrier_arrive(t.empty_w + 8 * ((it - 1) % STAGES));
      if constexpr (SPLIT_LOADERS) mbarrier_arrive(t.empty_x + 8 * ((it - 1) % STAGES));
    }
  };
  int it = 0;
#pragma unroll 1
  for (; it + 1 < t.n_stages; it += 2) {
    step(it, a0);
    step(it + 1, a1);
  }
  if (it < t.n_stages) step(it, a0);
  wgmma_wait<0>();
  int acc[1][BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[0][i] = 0;
#pragma unroll
  for (int c = 0; c < CHAINS; ++c) {
    fence_registers(chains[c]);
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[0][i] += chains[c][i];  // partial sums: exact in int32
  }
  if constexpr (CLUSTER_SPLIT) {
    const int owner = ClusterExchange<BN>::owner(cw, split_k);
    if (static_cast<int>(blockIdx.z) != owner) {
      exchange.send(acc[0], owner, thread);
      return;
    }
    exchange.receive(acc[0], split_k, thread);
    // the exchange lies under the staging tile: every thread has read it before any writes there
    if constexpr (StagedStores<BN, 1>::ON) epilogue_barrier_sync(EPILOGUE_BARRIER_ID + cw);
  }
  __shared__ float token_scales[CWG][EpilogueScales<BN, 1>::SHARED_TOKENS];
  scales.template publish<CWG>(token_scales[cw], thread, EPILOGUE_BARRIER_ID + cw);
  const StagedStores<BN, 1, CWG> staged{t.staging(smem) + cw * BLOCK_ROWS, CWG * BLOCK_ROWS, EPILOGUE_BARRIER_ID + cw};
  store_tile<BN, 1, CWG>(acc, t.first_row_block + cw, 1, thread, t.active_blocks * THREADS_PER_WARPGROUP,
                         cw == 0 && thread == 0, is_last_split, M, N, scales, staged, y, workspace,
                         tile_counters, CLUSTER_SPLIT ? 1 : split_k);
}


// ==== Ablation: the explicit three-role pipeline (ExCP) the paper's ImFP replaces =============
//
//   load WG (as above)     dequant WG (128 threads)                MMA WG (128 threads)
//   ----------------       ----------------------------------       ---------------------------
//   TMA copies into        wait full[s], a_empty[a]                 wait full[s], a_full[a]
//   the stage ring         LDS.128 + IMAD/XOR both row blocks       wgmma m64nNk32 with A from
//                          st.shared int8 -> A slot a (core-        shared memory (SS), 2 row
//                          matrix layout), fence.proxy.async        blocks x KS/32 steps
//                          arrive empty[s], a_full[a]               arrive empty[s-1], a_empty[a-1]
//
// The dequantized weights make a round trip through shared memory and every stage needs a
// handoff between the two warpgroups: what ImFP avoids. One MMA warpgroup owns both 64-row
// blocks of the CTA (two accumulator sets), so n <= 128. The int8 A slot of a row block is laid
// out like the activations: [8-row group][KS/16][8][16] (leading byte offset 128, stride KS * 8).
constexpr int EXCP_A_SLOTS = 2;

template <int BN, int KS>
__device__ __forceinline__ void store_a_fragments(unsigned slot, unsigned thread,
                                                  const unsigned (&a)[KS / 32][4]) {
  // register q of k32 step j holds row 16 warp + lane/4 + 8 (q & 1), k 32 j + 4 (lane % 4) + 16 (q >> 1)
  // (the accumulators' row map, LIQUIDREF_ACCUMULATOR_ROW)
  const unsigned warp = thread / 32, lane = thread % 32;
#pragma unroll
  for (int j = 0; j < KS / 32; ++j) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const unsigned row = LIQUIDREF_ACCUMULATOR_ROW(0, warp, lane, q & 1);  // the A fragment's rows are the same
      const unsigned k = 32 * j + 4 * (lane % 4) + 16 * (q >> 1);
      const unsigned addr = slot + (row / 8) * (KS * 8) + (k / 16) * CORE_MATRIX_BYTES + (row % 8) * 16 + k % 16;
      asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(a[j][q]) : "memory");
    }
  }
}

// grid, block (384 threads), arguments, the stage ring and CLUSTER_SPLIT as w4a8_hopper<2, BN,
// KS, STAGES, CLUSTER_SPLIT>; dynamic shared memory = Config::SHARED_BYTES (the staging tile or,
// for a cluster split, the exchange buffer if larger) + EXCP_A_SLOTS * 2 * 64 * KS. A cluster
// split's CTA z finishes row block z, as the LiquidGEMM kernel's does, so both pipelines add
// their split-K partials the same way.
template <int BN, int KS, int STAGES, bool CLUSTER_SPLIT = false>
__global__ void __launch_bounds__(3 * 128, 1)
    w4a8_hopper_excp(const __grid_constant__ TensorMap codes_map, const __grid_constant__ TensorMap meta_map,
                     const float* __restrict__ s1, const __grid_constant__ TensorMap x_map,
                     const float* __restrict__ s_x, __half* __restrict__ y, int* __restrict__ workspace,
                     int* __restrict__ tile_counters, int M, int N, int K, int split_k, int weight_prefetch) {
  using C = Config<2, BN, KS, STAGES>;
  static_assert(BN <= 128, "one MMA warpgroup holds both row blocks' accumulators");

  constexpr unsigned A_BLOCK_BYTES = BLOCK_ROWS * KS;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int is_last_split;

  const unsigned warpgroup = threadIdx.x / THREADS_PER_WARPGROUP;
  const unsigned thread = threadIdx.x % THREADS_PER_WARPGROUP;
  const Tile<2, BN, KS, STAGES> t(smem, N, K, split_k);
  __shared__ __align__(8) unsigned long long a_barriers[2 * EXCP_A_SLOTS];  // a_full[], a_empty[]
  __shared__ __align__(8) unsigned long long exchange_barrier;
  static_assert(!CLUSTER_SPLIT || BN <= CLUSTER_SPLIT_MAX_N, "cluster splits: n <= CLUSTER_SPLIT_MAX_N");
  const unsigned a_full_bar = shared_address(a_barriers);
  const unsigned a_empty_bar = a_full_bar + 8 * EXCP_A_SLOTS;
  constexpr unsigned AFTER_RING_BYTES =
      CLUSTER_SPLIT && ClusterExchange<BN>::BYTES > C::STAGING_BYTES ? ClusterExchange<BN>::BYTES : C::STAGING_BYTES;
  const unsigned a_ring = t.ring + STAGES * C::STAGE_BYTES + AFTER_RING_BYTES;
  const ClusterExchange<BN> exchange{shared_address(t.staging(smem)), reinterpret_cast<const int4*>(t.staging(smem)),
                                     shared_address(&exchange_barrier)};

  if (threadIdx.x == 0) {
    if constexpr (CLUSTER_SPLIT) ClusterExchange<BN>::check_launch(split_k);
    // weights: the dequant threads; activations: the MMA leader (on empty_w too without split loaders)
    t.init_barriers(THREADS_PER_WARPGROUP + (t.SPLIT_LOADERS ? 0 : 1), 1);
    for (int a = 0; a < EXCP_A_SLOTS; ++a) {
      mbarrier_init(a_full_bar + 8 * a, THREADS_PER_WARPGROUP);
      mbarrier_init(a_empty_bar + 8 * a, 1);
    }
    if constexpr (CLUSTER_SPLIT) exchange.init(t.active_blocks, split_k);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if constexpr (CLUSTER_SPLIT) cluster_arrive();  // every thread: this CTA's barriers are initialized

  if (warpgroup == 0) {  // ---------------- load warpgroup: as in w4a8_hopper ----------------
    load_stages(t, thread, &codes_map, &meta_map, &x_map, weight_prefetch);
    return;
  }

  if (warpgroup == 1) {  // ---------------- dequant warpgroup ----------------
    for (int it = 0; it < t.n_stages; ++it) {
      const int s = it % STAGES, a = it % EXCP_A_SLOTS;
      mbarrier_wait(t.full_w + 8 * s, (it / STAGES) & 1);
      if (it >= EXCP_A_SLOTS) mbarrier_wait(a_empty_bar + 8 * a, ((it / EXCP_A_SLOTS) - 1) & 1);
      const unsigned char* stage_base = smem + BARRIER_REGION_BYTES + s * C::STAGE_BYTES;
      for (int rb = 0; rb < t.active_blocks; ++rb) {
        unsigned regs[KS / 32][4];
        load_and_dequant<C::BPS>(stage_base + rb * C::BPS * BLOCK_BYTES,
                                 stage_base + C::CODES_BYTES + rb * C::BPS * META_BYTES_PER_BLOCK, thread, regs);
        store_a_fragments<BN, KS>(a_ring + a * 2 * A_BLOCK_BYTES + rb * A_BLOCK_BYTES, thread, regs);
      }
      mbarrier_arrive(t.empty_w + 8 * s);  // this thread has read the stage's codes and metadata
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // st.shared -> wgmma reads
      mbarrier_arrive(a_full_bar + 8 * a);
    }
    return;
  }

  // ---------------- MMA warpgroup ----------------
  wait_for_producer_grid();
  // the row blocks this CTA finishes: both, or for a cluster split row block z alone
  constexpr int FINISHED = CLUSTER_SPLIT ? 1 : 2;
  const int first_finished = CLUSTER_SPLIT ? blockIdx.z : 0;
  EpilogueScales<BN, FINISHED> scales(t.first_row_block + first_finished,
                                      CLUSTER_SPLIT ? int(first_finished < t.active_blocks) : t.active_blocks, thread,
                                      M, s1, s_x);
  int acc[2][BN / 2];
#pragma unroll
  for (int rb = 0; rb < 2; ++rb)
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[rb][i] = 0;
  for (int it = 0; it < t.n_stages; ++it) {
    const int s = it % STAGES, a = it % EXCP_A_SLOTS;
    mbarrier_wait(t.x_full(s), (it / STAGES) & 1);
    mbarrier_wait(a_full_bar + 8 * a, (it / EXCP_A_SLOTS) & 1);
    // one straight-line wgmma sequence per case (a branch between wgmmas makes ptxas fence them)
    auto mma_block = [&](int rb, int j) {
      const unsigned a_base = a_ring + a * 2 * A_BLOCK_BYTES + rb * A_BLOCK_BYTES + 2 * CORE_MATRIX_BYTES * j;
      WgmmaS8<BN>::mma_ss(acc[rb], smem_descriptor(a_base, CORE_MATRIX_BYTES, KS * 8),
                          smem_descriptor(t.x_at(s) + 2 * CORE_MATRIX_BYTES * j, CORE_MATRIX_BYTES, KS * 8));
    };
    wgmma_fence();
    if (t.active_blocks == 2) {
#pragma unroll
      for (int j = 0; j < KS / 32; ++j) {
        mma_block(0, j);
        mma_block(1, j);
      }
    } else {
#pragma unroll
      for (int j = 0; j < KS / 32; ++j) mma_block(0, j);
    }
    wgmma_commit();
    wgmma_wait<1>();  // the previous stage's wgmmas are done: its X and A slot are free
    if (it > 0 && thread == 0) {
      mbarrier_arrive(t.x_empty((it - 1) % STAGES));
      mbarrier_arrive(a_empty_bar + 8 * ((it - 1) % EXCP_A_SLOTS));
    }
  }
  wgmma_wait<0>();
  fence_registers(acc[0]);
  fence_registers(acc[1]);
  __shared__ float token_scales[EpilogueScales<BN, FINISHED>::SHARED_TOKENS];
  if constexpr (CLUSTER_SPLIT) {
    // send the partner's row block, finish this CTA's own: row block z (selected register by
    // register, so no accumulator is indexed at run time)
    const int own = blockIdx.z, other = 1 - own;
    int mine[1][BN / 2], theirs[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) {
      mine[0][i] = own == 0 ? acc[0][i] : acc[1][i];
      theirs[i] = own == 0 ? acc[1][i] : acc[0][i];
    }
    const bool sends = other < t.active_blocks;
    if (sends) exchange.send(theirs, ClusterExchange<BN>::owner(other, split_k), thread);
    if (own >= t.active_blocks) return;
    exchange.receive(mine[0], split_k, thread, sends);
    // the exchange lies under the staging tile: every thread has read it before any writes there
    if constexpr (StagedStores<BN, 1>::ON) epilogue_barrier_sync(EPILOGUE_BARRIER_ID);
    scales.publish(token_scales, thread, EPILOGUE_BARRIER_ID);
    const StagedStores<BN, 1> staged{t.staging(smem), BLOCK_ROWS, EPILOGUE_BARRIER_ID};
    store_tile<BN, 1>(mine, t.first_row_block + own, 1, thread, THREADS_PER_WARPGROUP, thread == 0, is_last_split,
                      M, N, scales, staged, y, workspace, tile_counters, 1);
  } else {
    scales.publish(token_scales, thread, EPILOGUE_BARRIER_ID);
    const StagedStores<BN, 2> staged{t.staging(smem), 2 * BLOCK_ROWS, EPILOGUE_BARRIER_ID};
    store_tile<BN, 2>(acc, t.first_row_block, t.active_blocks, thread, THREADS_PER_WARPGROUP, thread == 0,
                      is_last_split, M, N, scales, staged, y, workspace, tile_counters, split_k);
  }
}

}  // namespace hopper
}  // namespace liquidref

#ifdef LIQUIDREF_SASS_CHECK
// The dequant alone, for tests/gpu/test_compile.py to count its integer instructions: one
// thread's 16 bytes (32 weights, 4 words) with a block's (s, a) pairs, results stored whole.
__global__ void dequant_probe_kernel(uint4 codes, unsigned s_lo, unsigned a_lo, unsigned s_hi,
                                     unsigned a_hi, uint4* __restrict__ out) {
  uint4 r0, r1;
  liquidref::hopper::dequant_word(codes.x, s_lo, a_lo, s_hi, a_hi, r0.x, r0.y);
  liquidref::hopper::dequant_word(codes.y, s_lo, a_lo, s_hi, a_hi, r0.z, r0.w);
  liquidref::hopper::dequant_word(codes.z, s_lo, a_lo, s_hi, a_hi, r1.x, r1.y);
  liquidref::hopper::dequant_word(codes.w, s_lo, a_lo, s_hi, a_hi, r1.z, r1.w);
  out[0] = r0;
  out[1] = r1;
}

// The configurations choose_tile_config launches for K % 256 == 0 (n = 8, 16, 32, 64 up to
// M = 128, each also as a cluster split, 128 up to M = 2047, 176-224 beyond, and the
// three-warpgroup tiles of n = 8..128; tests/gpu/test_compile.py checks the list against it),
// two odd ones, and the ExCP ablation at decode, mid M and prefill, for the CPU-side compile,
// SASS and ptxas checks. Both kernels take the same parameters.
#define HOPPER_KERNEL_PARAMETERS                                                                  \
  const __grid_constant__ liquidref::hopper::TensorMap, const __grid_constant__ liquidref::hopper::TensorMap, \
      const float*, const __grid_constant__ liquidref::hopper::TensorMap, const float*, __half*,             \
      int*, int*, int, int, int, int, int
template __global__ void liquidref::hopper::w4a8_hopper<2, 8, 256, 8>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 16, 256, 8>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 32, 256, 8>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 64, 256, 6>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 8, 256, 8, true>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 16, 256, 8, true>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 32, 256, 8, true>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 64, 256, 6, true>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 128, 256, 4>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 176, 256, 3>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 192, 256, 3>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 208, 256, 3>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 224, 256, 3>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<2, 256, 128, 5>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<3, 8, 256, 8>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<3, 16, 256, 7>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<3, 32, 256, 6>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<3, 64, 256, 4>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<3, 128, 128, 7>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper<1, 24, 64, 3>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper_excp<8, 256, 8>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper_excp<8, 256, 8, true>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper_excp<64, 256, 4, true>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper_excp<64, 256, 4>(HOPPER_KERNEL_PARAMETERS);
template __global__ void liquidref::hopper::w4a8_hopper_excp<128, 256, 3>(HOPPER_KERNEL_PARAMETERS);
#endif
