// Portable W4A8 GEMM on mma.sync m16n8k32 (sm_80+): the correctness baseline and the fallback
// for GPUs without wgmma. Computes Y^T = W X^T, bit-exact with liquidref.gemm:
//
//   acc[m, n] = sum_k x_i8[m, k] * w_i8[n, k]           (int32, exact)
//   Y[m, n]   = fp16_rn( float(acc) * (s1[n] * s_x[m]) ) (two float32 _rn products, one rounding)
//
// One CTA = 4 warps = one 64-row packed block x TOKEN_GROUPS * 8 tokens; it walks K in 64-k
// blocks (one LiquidQuant group each). Per block, thread t = 32 * warp + lane:
//
//   codes: one 16-byte load = words P0..P3 of the Dual-MMA layout (liquidref/layout.py)
//            P0 -> A regs {a0 = low nibbles (row r), a1 = high nibbles (row r+8)} of k32 step 0
//            P1 -> {a2, a3} of step 0;  P2, P3 -> the same for step 1;  r = 16 warp + lane/4
//   meta:  one 4-byte load = [s_r, a_r, s_r+8, a_r+8]
//   x:     B regs of 8 tokens straight from the tiled core-matrix layout
//            x_tiled[g, c, i, b] = x_i8[8 g + i, 16 c + b]; lane (g = lane/4, q = lane%4) needs
//            token g, k 4q..4q+3 of chunks 4 kb + 0..3: word 32 * chunk + 4 g + q of group g
//   2 mma.sync per 8-token group (k32 steps 0 and 1), accumulators stay in registers.
//
// The epilogue stores the transposed tile: accumulator (weight row, token) -> Y[token, row],
// masked to token < M. The next block's loads are issued before this block's dequant and MMAs.
//
// nvcc-arch: sm_80 sm_90a
// SASS must contain: IMMA LDG.E.128 PRMT LOP3 IMAD
// SASS must not contain: LDL STL
#include "common.cuh"

namespace liquidref {

constexpr int MMA_SYNC_THREADS = 128;                       // 4 warps x 16 rows = BLOCK_ROWS
constexpr int CODE_VECTORS_PER_BLOCK = BLOCK_BYTES / 16;    // 128 uint4, one per thread
constexpr int META_WORDS_PER_BLOCK = META_BYTES_PER_BLOCK / 4;  // 32
constexpr int ACT_CHUNK_K = ACT_CORE_BYTES;                 // k of one core matrix row
constexpr int ACT_CORE_WORDS = ACT_CORE_ROWS * ACT_CORE_BYTES / 4;  // 32 words = one 8 x 16-byte core matrix
constexpr int ACT_CHUNKS_PER_BLOCK = BLOCK_K / ACT_CHUNK_K; // 4
static_assert(MMA_SYNC_THREADS * 16 == BLOCK_BYTES, "one 16-byte code vector per thread");

template <int TOKEN_GROUPS>
struct BlockOperands {
    uint4 codes;
    u32 meta;
    u32 x[TOKEN_GROUPS][ACT_CHUNKS_PER_BLOCK];
};

template <int TOKEN_GROUPS>
__device__ __forceinline__ void load_block(BlockOperands<TOKEN_GROUPS>& op, const uint4* code_ptr,
                                           const u32* meta_ptr, const u32* const (&x_ptr)[TOKEN_GROUPS],
                                           int kb) {
    op.codes = __ldg(code_ptr + static_cast<i64>(kb) * CODE_VECTORS_PER_BLOCK);
    op.meta = __ldg(meta_ptr + static_cast<i64>(kb) * META_WORDS_PER_BLOCK);
#pragma unroll
    for (int g = 0; g < TOKEN_GROUPS; ++g) {
#pragma unroll
        for (int c = 0; c < ACT_CHUNKS_PER_BLOCK; ++c) {
            op.x[g][c] = __ldg(x_ptr[g] + (static_cast<i64>(kb) * ACT_CHUNKS_PER_BLOCK + c) * ACT_CORE_WORDS);
        }
    }
}

// codes  uint8 [N/64, K/64, 2048] as uint4     meta  uint8 [N/64, K/64, 128] as u32
// s1     float32 [N]                            x_tiled  int8 [M_pad/8, K/16, 8, 16] as u32
// s_x    float32 [M]                            y  fp16 [M, N] as u16 bits
// grid = (N / 64, ceil(M_pad / 8 / TOKEN_GROUPS)), MMA_SYNC_THREADS threads
template <int TOKEN_GROUPS>
__global__ void __launch_bounds__(MMA_SYNC_THREADS) w4a8_mma_sync_kernel(
    const uint4* __restrict__ codes, const u32* __restrict__ meta, const float* __restrict__ s1,
    const u32* __restrict__ x_tiled, const float* __restrict__ s_x, u16* __restrict__ y,
    int m, int n, int k) {
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    const int quad_row = lane / 4;  // g: the row (A, D) or token (B) of this lane within 8
    const int quad_col = lane % 4;  // q
    const int row_block = blockIdx.x;
    const int k_blocks = k / static_cast<int>(BLOCK_K);
    const int token_groups = (m + 7) / 8;
    const int first_group = blockIdx.y * TOKEN_GROUPS;

    const i64 block_base = static_cast<i64>(row_block) * k_blocks;
    const uint4* code_ptr = codes + block_base * CODE_VECTORS_PER_BLOCK + threadIdx.x;
    const u32* meta_ptr = meta + block_base * META_WORDS_PER_BLOCK + (8 * warp + quad_row);
    const i64 group_words = static_cast<i64>(k / ACT_CHUNK_K) * ACT_CORE_WORDS;
    const u32* x_ptr[TOKEN_GROUPS];
#pragma unroll
    for (int g = 0; g < TOKEN_GROUPS; ++g) {
        // groups past the end read the last real group (valid memory); their tokens are >= M
        // and never stored
        const int group = min(first_group + g, token_groups - 1);
        x_ptr[g] = x_tiled + group * group_words + 4 * quad_row + quad_col;
    }

    i32 acc[TOKEN_GROUPS][4];
#pragma unroll
    for (int g = 0; g < TOKEN_GROUPS; ++g) {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[g][i] = 0;
    }

    BlockOperands<TOKEN_GROUPS> cur;
    load_block(cur, code_ptr, meta_ptr, x_ptr, 0);
    for (int kb = 0; kb < k_blocks; ++kb) {
        // prefetch the next block (the last iteration reloads its own block: no branch)
        BlockOperands<TOKEN_GROUPS> next;
        load_block(next, code_ptr, meta_ptr, x_ptr, min(kb + 1, k_blocks - 1));

        const GroupScales scales = split_meta_word(cur.meta);
        u32 a[8];  // a[0..3]: A regs of k32 step 0, a[4..7]: step 1
        dequant_word(cur.codes.x, scales, a[0], a[1]);
        dequant_word(cur.codes.y, scales, a[2], a[3]);
        dequant_word(cur.codes.z, scales, a[4], a[5]);
        dequant_word(cur.codes.w, scales, a[6], a[7]);
#pragma unroll
        for (int g = 0; g < TOKEN_GROUPS; ++g) {
            mma_m16n8k32_s8(acc[g], a[0], a[1], a[2], a[3], cur.x[g][0], cur.x[g][1]);
            mma_m16n8k32_s8(acc[g], a[4], a[5], a[6], a[7], cur.x[g][2], cur.x[g][3]);
        }
        cur = next;
    }

    // epilogue: acc[g][i] is (weight row r + 8 (i >= 2), token 8 group + 2q + (i & 1))
    const int row_low = row_block * static_cast<int>(BLOCK_ROWS) + 16 * warp + quad_row;
    const float s1_rows[2] = {__ldg(s1 + row_low), __ldg(s1 + row_low + 8)};
#pragma unroll
    for (int g = 0; g < TOKEN_GROUPS; ++g) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int token = 8 * (first_group + g) + 2 * quad_col + (i & 1);
            const int row = row_low + 8 * (i >> 1);
            if (token < m) {
                const float scale = __fmul_rn(s1_rows[i >> 1], __ldg(s_x + token));
                const float value = __fmul_rn(__int2float_rn(acc[g][i]), scale);
                y[static_cast<i64>(token) * n + row] = float_to_half_bits_rn(value);
            }
        }
    }
}

#ifdef LIQUIDREF_SASS_CHECK
#define LIQUIDREF_INSTANTIATE(G)                                                                 \
    template __global__ void w4a8_mma_sync_kernel<G>(const uint4*, const u32*, const float*,      \
                                                     const u32*, const float*, u16*, int, int, int);
LIQUIDREF_INSTANTIATE(1)
LIQUIDREF_INSTANTIATE(2)
LIQUIDREF_INSTANTIATE(4)
#undef LIQUIDREF_INSTANTIATE

// The dequant of one thread's 32 codes of a block (4 packed words + 1 metadata word) alone,
// for counting its integer instructions (tests/gpu/test_compile.py): arguments arrive in the
// constant bank, so the only other instructions are the final stores.
__global__ void dequant_probe_kernel(uint4 codes, u32 meta, uint4* __restrict__ out) {
    const GroupScales scales = split_meta_word(meta);
    uint4 row_r, row_r8;
    dequant_word(codes.x, scales, row_r.x, row_r8.x);
    dequant_word(codes.y, scales, row_r.y, row_r8.y);
    dequant_word(codes.z, scales, row_r.z, row_r8.z);
    dequant_word(codes.w, scales, row_r.w, row_r8.w);
    out[0] = row_r;
    out[1] = row_r8;
}
#endif

}  // namespace liquidref
