// Per-token activation quantization: fp16 X [M, K] -> int8 + float32 s_x [M], bit-exact with
// liquidref.quantize_activation (and, with TILED, liquidref.tile_activation of its x_i8).
//
//   amax  = max |X[m, :]|                       (exact: the largest |fp16| bit pattern)
//   s_x   = amax / 127 (__fdiv_rn), 1.0 for an all-zero row
//   x_i8  = clip(rint(X / s_x), -127, 127)      (__fdiv_rn, __float2int_rn: ties to even)
//
// Every rounding step is an explicit _rn intrinsic, so FMA contraction or fast-math flags cannot
// change a result. One CTA per output row: rows M..M_pad-1 of the tiled layout are written as
// zeros. A row holding NaN or Inf records its index with atomicMin in *bad_row (the host
// raises naming it); its outputs are then meaningless.
//
// nvcc-arch: sm_80 sm_90a
// SASS must contain: REDUX F2I FCHK LDG.E.128 STG.E.128
// SASS must not contain: LDL STL F2I.TRUNC
#include "common.cuh"

namespace liquidref {

constexpr int QUANT_MAX_THREADS = 1024;  // the host picks 128..1024 threads per row (gpu/api.py)
constexpr int CHUNK_K = ACT_CORE_BYTES;  // k per 16-byte int8 output vector = one core-matrix row
constexpr int HALVES_PER_VECTOR = 8;   // fp16 per 16-byte input vector
constexpr u32 HALF_ABS_MASK2 = 0x7FFF7FFFu;  // |x| of the two fp16 in a word
constexpr u32 HALF_INF_BITS = 0x7C00u;       // exponent all ones: Inf or NaN
constexpr int CORE_ROWS = ACT_CORE_ROWS;      // token rows of a core matrix

__device__ __forceinline__ u32 quantize_pair(u32 halves, float scale) {
    // two fp16 -> two int8 in the low 16 bits
    const int limit = static_cast<int>(ACT_LIMIT);
    int q0 = __float2int_rn(__fdiv_rn(half_bits_to_float(static_cast<u16>(halves & 0xFFFFu)), scale));
    int q1 = __float2int_rn(__fdiv_rn(half_bits_to_float(static_cast<u16>(halves >> 16)), scale));
    q0 = min(max(q0, -limit), limit);
    q1 = min(max(q1, -limit), limit);
    return (static_cast<u32>(q0) & 0xFFu) | ((static_cast<u32>(q1) & 0xFFu) << 8);
}

__device__ __forceinline__ u32 quantize_quad(u32 halves01, u32 halves23, float scale) {
    return quantize_pair(halves01, scale) | (quantize_pair(halves23, scale) << 16);
}

// x      fp16 [M, K] (16-byte vectors of 8), K a multiple of 16, 16-byte aligned
// x_out  int8 [M, K] (TILED = false) or [M_pad/8, K/16, 8, 16] (TILED = true), 16-byte vectors
// s_x    float32 [M]
// bad_row  int32 [1], preset to INT32_MAX by the host
// grid = (rows_out, slices) CTAs (rows_out = M, or M_pad when TILED), a multiple of 32 threads
// each (at most 1024). With few rows (decode) a row gets many threads and is cut into `slices`
// CTAs: each reads the whole row for its amax (the row is small and L2-resident) but quantizes
// only its own slice of the 16-k chunks, so one long row is not left to one CTA. Slice 0 writes
// s_x and the non-finite flag.
template <bool TILED>
__global__ void __launch_bounds__(QUANT_MAX_THREADS) quantize_act_kernel(
    const uint4* __restrict__ x, uint4* __restrict__ x_out, float* __restrict__ s_x,
    int* __restrict__ bad_row, int m, int k, int rows_out) {
#if __CUDA_ARCH__ >= 900
    // A GEMM launched after this grid with programmatic dependent launch may start now and stream
    // its weights; it waits (griddepcontrol.wait) for this grid to finish before it reads x_out.
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    const int row = blockIdx.x;
    const int chunks = k / CHUNK_K;
    const int chunk_begin = static_cast<int>(static_cast<i64>(blockIdx.y) * chunks / gridDim.y);
    const int chunk_end = static_cast<int>(static_cast<i64>(blockIdx.y + 1) * chunks / gridDim.y);
    const bool first_slice = blockIdx.y == 0;
    auto out_index = [&](int chunk) -> i64 {
        if (TILED) {
            return (static_cast<i64>(row / CORE_ROWS) * chunks + chunk) * CORE_ROWS + row % CORE_ROWS;
        }
        return static_cast<i64>(row) * chunks + chunk;
    };
    if (row >= rows_out) return;
    if (row >= m) {  // zero padding rows of the tiled layout
        for (int c = chunk_begin + threadIdx.x; c < chunk_end; c += blockDim.x) x_out[out_index(c)] = make_uint4(0u, 0u, 0u, 0u);
        return;
    }
    const uint4* x_row = x + static_cast<i64>(row) * (k / HALVES_PER_VECTOR);

    // pass 1: amax as fp16 bits (for finite values the order of |bits| is the order of |x|)
    u32 amax2 = 0;  // two fp16 magnitudes, maxed lane-wise
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const uint4 v0 = x_row[2 * c];
        const uint4 v1 = x_row[2 * c + 1];
        amax2 = __vmaxu2(amax2, v0.x & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v0.y & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v0.z & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v0.w & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v1.x & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v1.y & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v1.z & HALF_ABS_MASK2);
        amax2 = __vmaxu2(amax2, v1.w & HALF_ABS_MASK2);
    }
    u32 amax_bits = max(amax2 & 0xFFFFu, amax2 >> 16);
    amax_bits = __reduce_max_sync(0xFFFFFFFFu, amax_bits);
    __shared__ u32 warp_max[QUANT_MAX_THREADS / WARP_SIZE];
    if (threadIdx.x % WARP_SIZE == 0) warp_max[threadIdx.x / WARP_SIZE] = amax_bits;
    __syncthreads();
    amax_bits = warp_max[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / WARP_SIZE); ++w) amax_bits = max(amax_bits, warp_max[w]);

    if (amax_bits >= HALF_INF_BITS && threadIdx.x == 0 && first_slice) atomicMin(bad_row, row);
    const float amax = half_bits_to_float(static_cast<u16>(amax_bits));
    const float scale = amax > 0.0f ? __fdiv_rn(amax, static_cast<float>(ACT_LIMIT)) : 1.0f;
    if (threadIdx.x == 0 && first_slice) s_x[row] = scale;

    // pass 2: quantize 16 k per thread step into one 16-byte vector (the row is in L1/L2 now)
    for (int c = chunk_begin + threadIdx.x; c < chunk_end; c += blockDim.x) {
        const uint4 v0 = x_row[2 * c];
        const uint4 v1 = x_row[2 * c + 1];
        uint4 q;
        q.x = quantize_quad(v0.x, v0.y, scale);
        q.y = quantize_quad(v0.z, v0.w, scale);
        q.z = quantize_quad(v1.x, v1.y, scale);
        q.w = quantize_quad(v1.z, v1.w, scale);
        x_out[out_index(c)] = q;
    }
}

#ifdef LIQUIDREF_SASS_CHECK
template __global__ void quantize_act_kernel<false>(const uint4*, uint4*, float*, int*, int, int, int);
template __global__ void quantize_act_kernel<true>(const uint4*, uint4*, float*, int*, int, int, int);
#endif

}  // namespace liquidref
