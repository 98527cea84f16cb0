// Device helpers shared by the liquidref kernels: fixed-width types, fp16 conversions, the
// LiquidQuant dequant of one packed register, and the mma.sync m16n8k32 s8 instruction.
//
// NVRTC has no standard or CUDA headers on its search path (no <cstdint>, no <cuda_fp16.h>), so
// this header needs none: types are spelled out, fp16 goes through PTX `cvt`.
#pragma once
#include "liquidref_constants.cuh"

namespace liquidref {

using u8 = unsigned char;
using u16 = unsigned short;
using u32 = unsigned int;
using i32 = int;
using u64 = unsigned long long;
using i64 = long long;
static_assert(sizeof(u16) == 2 && sizeof(u32) == 4 && sizeof(u64) == 8, "fixed-width types");

constexpr int WARP_SIZE = 32;

// --- fp16 <-> float32 (exact widening; round-to-nearest-even narrowing, overflow to inf) ----

__device__ __forceinline__ float half_bits_to_float(u16 bits) {
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
    return value;
}

__device__ __forceinline__ u16 float_to_half_bits_rn(float value) {
    u16 bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
    return bits;
}

// --- LiquidQuant dequant ------------------------------------------------------------------
//
// A block's metadata word of one thread quad:  byte 0 s_r | byte 1 a_r | byte 2 s_r+8 | byte 3 a_r+8
// (liquidref/layout.py). Split once per block: the steps as plain integers, the offsets
// broadcast to all four byte lanes (PRMT), ready for one IMAD per 4 weights.
struct GroupScales {
    u32 step_low;    // s of row r          (0x000000ss)
    u32 offset_low;  // a of row r in 4 lanes (0xaaaaaaaa)
    u32 step_high;   // s of row r + 8
    u32 offset_high; // a of row r + 8, broadcast
};

__device__ __forceinline__ GroupScales split_meta_word(u32 meta) {
    GroupScales g;
    g.step_low = __byte_perm(meta, 0u, 0x4440);    // [byte0, 0, 0, 0]
    g.offset_low = __byte_perm(meta, 0u, 0x1111);  // [byte1] x 4
    g.step_high = __byte_perm(meta, 0u, 0x4442);   // [byte2, 0, 0, 0]
    g.offset_high = __byte_perm(meta, 0u, 0x3333); // [byte3] x 4
    return g;
}

// One packed word holds 8 codes: low nibbles = 4 weights of row r, high nibbles = the same 4
// k of row r + 8 (the A registers a0/a1 or a2/a3 of one k32 step):
//
//   packed = [h3 l3 | h2 l2 | h1 l1 | h0 l0]        (one byte per k, nibbles h = row r+8, l = row r)
//   low    = packed & 0x0F0F0F0F         -> [l3 | l2 | l1 | l0]
//   high   = (packed >> 4) & 0x0F0F0F0F  -> [h3 | h2 | h1 | h0]
//   w      = (code * s + a * 0x01010101) ^ 0x80808080    (each lane <= 255: no carry)
//
// 7 integer instructions per 8 weights: LOP3, SHF + LOP3, 2 IMAD, 2 LOP3 (XOR).
__device__ __forceinline__ void dequant_word(u32 packed, const GroupScales& g, u32& row_r, u32& row_r8) {
    const u32 low = packed & LOW_NIBBLES;
    const u32 high = (packed >> 4) & LOW_NIBBLES;
    row_r = (low * g.step_low + g.offset_low) ^ XOR_MASK_WORD;
    row_r8 = (high * g.step_high + g.offset_high) ^ XOR_MASK_WORD;
}

// --- tensor cores --------------------------------------------------------------------------

// d += a * b, one warp, m16n8k32, int8 x int8 -> int32 (sm_80+).
//   a: 16 x 32 (row), regs {row g k 4q.., row g+8 k 4q.., row g k 16+4q.., row g+8 k 16+4q..}
//   b: 32 x 8 (col),  regs {k 4q.. of column g, k 16+4q.. of column g}
//   d: 16 x 8,        regs {(g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1)}
// with g = lane / 4, q = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k32").
__device__ __forceinline__ void mma_m16n8k32_s8(i32 (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace liquidref
