"""Fragment maps: bijections, the PTX ISA's formulas, ARCHITECTURE.md's H200-verified formulas,
and the cross-check between the packed bytes (layout.code_position) and the A fragment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liquidref.constants import MMA_K
from liquidref.fragments import (
    SWIZZLE_128B,
    SWIZZLE_NONE,
    WgmmaDescriptor,
    activation_stage_descriptor,
    mma_m16n8k32,
    mma_m16n8k32_a_fragment,
    mma_m16n8k32_b_fragment,
    mma_m16n8k32_c_fragment,
    swizzle_activation_stage,
    swizzled_stage_descriptor,
    wgmma_a_fragment,
    wgmma_accumulator_fragment,
    wgmma_b_address,
    wgmma_m64nNk32,
)
from liquidref.layout import code_position, meta_position, tile_activation
from liquidref.tiling import WGMMA_S8_N


def grid(*sizes):
    return np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")


def assert_bijection(rows, cols, shape):
    """(rows, cols) hit every cell of a ``shape`` matrix exactly once."""
    assert rows.size == shape[0] * shape[1]
    counts = np.zeros(shape, np.int64)
    np.add.at(counts, (rows.ravel(), cols.ravel()), 1)
    assert (counts == 1).all()


# --- transcriptions of the PTX ISA text, scalar and literal ("for ai where ...") ---------------
# PTX ISA 9.7.14.5.10 "Matrix Fragments for mma.m16n8k32", .s8 / .u8.


def ptx_m16n8k32_a(laneid, i):
    group_id, thread_id_in_group = laneid >> 2, laneid % 4
    row = group_id if (0 <= i < 4 or 8 <= i < 12) else group_id + 8
    col = thread_id_in_group * 4 + (i & 0x3) + (16 if i >= 8 else 0)
    return row, col


def ptx_m16n8k32_b(laneid, i):
    group_id, thread_id_in_group = laneid >> 2, laneid % 4
    row = thread_id_in_group * 4 + (i & 0x3) + (16 if i >= 4 else 0)
    return row, group_id


def ptx_m16n8k32_c(laneid, i):
    group_id, thread_id_in_group = laneid >> 2, laneid % 4
    row = group_id if i < 2 else group_id + 8
    return row, thread_id_in_group * 2 + (i & 0x1)


# ARCHITECTURE.md section 3, verified on an H200 (wgmma m64nNk32 .s8, A from registers).
def h200_wgmma_a(t, reg, b):
    warp, lane = t // 32, t % 32
    return 16 * warp + lane // 4 + 8 * (reg & 1), 4 * (lane % 4) + b + 16 * (reg >> 1)


def h200_wgmma_d(t, i):
    warp, lane = t // 32, t % 32
    return 16 * warp + lane // 4 + 8 * ((i >> 1) & 1), 2 * (lane % 4) + (i & 1) + 8 * (i >> 2)


# --- bijections --------------------------------------------------------------------------------


def test_wgmma_a_fragment_is_a_bijection_onto_64x32():
    t, reg, b = grid(128, 4, 4)
    assert_bijection(*wgmma_a_fragment(t, reg, b), (64, 32))


@pytest.mark.parametrize("n", WGMMA_S8_N)
def test_wgmma_accumulator_is_a_bijection_onto_64xn(n):
    t, i = grid(128, n // 2)
    assert_bijection(*wgmma_accumulator_fragment(t, i), (64, n))


def test_mma_m16n8k32_maps_are_bijections():
    assert_bijection(*mma_m16n8k32_a_fragment(*grid(32, 4, 4)), (16, 32))
    assert_bijection(*mma_m16n8k32_b_fragment(*grid(32, 2, 4)), (32, 8))
    assert_bijection(*mma_m16n8k32_c_fragment(*grid(32, 4)), (16, 8))


# --- agreement with the PTX ISA and with ARCHITECTURE.md -----------------------------------------


def test_mma_m16n8k32_maps_follow_the_ptx_isa_text():
    for lane in range(32):
        for reg in range(4):
            for b in range(4):
                got = tuple(int(x) for x in mma_m16n8k32_a_fragment(lane, reg, b))
                assert got == ptx_m16n8k32_a(lane, 4 * reg + b)
            got = tuple(int(x) for x in mma_m16n8k32_c_fragment(lane, reg))
            assert got == ptx_m16n8k32_c(lane, reg)
        for reg in range(2):
            for b in range(4):
                got = tuple(int(x) for x in mma_m16n8k32_b_fragment(lane, reg, b))
                assert got == ptx_m16n8k32_b(lane, 4 * reg + b)


def test_wgmma_maps_match_the_h200_verified_formulas():
    for t in range(128):
        for reg in range(4):
            for b in range(4):
                got = tuple(int(x) for x in wgmma_a_fragment(t, reg, b))
                assert got == h200_wgmma_a(t, reg, b)
        for i in range(128):
            assert tuple(int(x) for x in wgmma_accumulator_fragment(t, i)) == h200_wgmma_d(t, i)


def test_wgmma_per_warp_is_the_m16n8k32_fragment_shifted_by_16_rows():
    # PTX ISA Figures 152/153: each warp of the warpgroup holds a 16-row slice of A and D laid
    # out like the mma.m16n8k32 fragments; D repeats the 16 x 8 C fragment every 8 tokens.
    lane, reg, b = grid(32, 4, 4)
    mma_row, mma_k = mma_m16n8k32_a_fragment(lane, reg, b)
    for warp in range(4):
        row, k = wgmma_a_fragment(32 * warp + lane, reg, b)
        assert np.array_equal(row, mma_row + 16 * warp) and np.array_equal(k, mma_k)
        for j in range(256 // 8):
            lane2, creg = grid(32, 4)
            row, token = wgmma_accumulator_fragment(32 * warp + lane2, 4 * j + creg)
            c_row, c_col = mma_m16n8k32_c_fragment(lane2, creg)
            assert np.array_equal(row, c_row + 16 * warp)
            assert np.array_equal(token, c_col + 8 * j)


def test_out_of_range_fragment_coordinates_raise():
    with pytest.raises(ValueError, match="thread"):
        wgmma_a_fragment(128, 0, 0)
    with pytest.raises(ValueError, match="reg"):
        mma_m16n8k32_b_fragment(0, 2, 0)
    with pytest.raises(ValueError, match="byte"):
        mma_m16n8k32_a_fragment(0, 0, 4)


# --- THE cross-check between the packed bytes and the A fragment ------------------------------


def test_code_position_agrees_with_the_a_fragment():
    """Thread t's word p: low nibbles = A register 2 (p % 2) of k32 step p // 2, high nibbles =
    register 2 (p % 2) + 1; byte b of the word is byte lane b of the register."""
    t, p, b, nibble = grid(128, 4, 4, 2)
    row, k = wgmma_a_fragment(t, 2 * (p % 2) + nibble, b)
    byte, high = code_position(row, MMA_K * (p // 2) + k)
    assert np.array_equal(byte, 16 * t + 4 * p + b)
    assert np.array_equal(high, nibble)


def test_meta_word_of_a_thread_holds_the_rows_of_its_registers():
    # The kernel reads word 8 * warp + lane // 4 = t // 4: [s_r, a_r, s_r+8, a_r+8].
    t = np.arange(128)
    row_lo, _ = wgmma_a_fragment(t, 0, 0)
    row_hi, _ = wgmma_a_fragment(t, 1, 0)
    s_lo, a_lo = meta_position(row_lo)
    s_hi, a_hi = meta_position(row_hi)
    word = 8 * (t // 32) + (t % 32) // 4
    assert np.array_equal(word, t // 4)
    for offset, position in enumerate((s_lo, a_lo, s_hi, a_hi)):
        assert np.array_equal(position, 4 * word + offset)


# --- B operand: descriptors, core matrices, swizzle --------------------------------------------


def test_descriptor_encoding_places_the_fields():
    desc = WgmmaDescriptor(start=0x1230, leading_byte_offset=128, stride_byte_offset=1024,
                           swizzle=SWIZZLE_128B)
    value = desc.encode()
    assert value & 0x3FFF == 0x123
    assert (value >> 16) & 0x3FFF == 128 >> 4
    assert (value >> 32) & 0x3FFF == 1024 >> 4
    assert (value >> 49) & 0x7 == 0
    assert value >> 62 == 1
    assert WgmmaDescriptor.decode(value) == desc


@given(st.integers(0, 2**14 - 1), st.integers(0, 2**14 - 1), st.integers(0, 2**14 - 1),
       st.sampled_from([SWIZZLE_NONE, SWIZZLE_128B]))
def test_descriptor_round_trip(start, lbo, sbo, swizzle):
    desc = WgmmaDescriptor(16 * start, 16 * lbo, 16 * sbo, swizzle)
    assert WgmmaDescriptor.decode(desc.encode()) == desc


def test_descriptor_rejects_bad_fields():
    with pytest.raises(ValueError, match="multiple of 16"):
        WgmmaDescriptor(8, 128, 1024)
    with pytest.raises(ValueError, match="swizzle"):
        WgmmaDescriptor(0, 128, 1024, swizzle=2)


def cute_offset(shape, stride, coord):
    """Offset of a (row, col) coordinate in a CuTe layout ((r0, r1), (c0, c1)) : strides,
    the notation of PTX ISA 9.7.15.5.1.2.1.3 "Canonical Layouts" (colexicographic modes)."""
    offset = 0
    for mode_shape, mode_stride, x in zip(shape, stride, coord):
        for size, step in zip(mode_shape, mode_stride):
            offset += (x % size) * step
            x //= size
    return offset


def cute_swizzle(offset, b, m, s):
    """CuTe Swizzle<B, M, S>: XOR bits [M, M + B) with bits [M + S, M + S + B)."""
    mask = ((1 << b) - 1) << (m + s)
    return offset ^ ((offset & mask) >> s)


def test_cute_offset_reproduces_the_ptx_tf32_no_swizzle_example():
    # PTX ISA: K-major, no swizzle, tf32: ((8,2),(4,4)):((4,32),(1,64)) = canonical
    # ((8,m),(T,2k)):((1T,SBO),(1,LBO)) with T = 4, SBO = 32, LBO = 64 (in elements).
    for row in range(16):
        for col in range(16):
            exact = cute_offset(((8, 2), (4, 4)), ((4, 32), (1, 64)), (row, col))
            canonical = 4 * (row % 8) + 32 * (row // 8) + col % 4 + 64 * (col // 4)
            assert exact == canonical


@pytest.mark.parametrize("tokens", [8, 16, 64])
def test_no_swizzle_b_address_is_the_ptx_canonical_k_major_layout(tokens):
    # ((8, m), (T, 2)) : ((1T, SBO), (1, LBO)) with T = 16 one-byte elements, one k32 step.
    lbo, sbo = 128, 128 * 4
    desc = WgmmaDescriptor(0, lbo, sbo)
    token, k = grid(tokens, 32)
    expected = np.vectorize(
        lambda r, c: cute_offset(((8, tokens // 8), (16, 2)), ((16, sbo), (1, lbo)), (r, c))
    )(token, k)
    assert np.array_equal(wgmma_b_address(token, k, desc), expected)


@pytest.mark.parametrize("tokens", [8, 24, 64])
def test_swizzled_b_address_is_the_ptx_canonical_128b_layout(tokens):
    # ((8, m), (T, 2k)) : ((8T, SBO), (1, T)) then Swizzle<3, 4, 3>, T = 16, SBO = 1024; the k32
    # slice j of the 128-k row starts at +32 j.
    for j in range(4):
        desc = WgmmaDescriptor(32 * j, 16, 1024, SWIZZLE_128B)
        token, k = grid(tokens, 32)
        expected = np.vectorize(
            lambda r, c: cute_swizzle(
                cute_offset(((8, tokens // 8), (16, 8)), ((128, 1024), (1, 16)), (r, c + 32 * j)),
                3, 4, 3)
        )(token, k)
        assert np.array_equal(wgmma_b_address(token, k, desc), expected)


@pytest.mark.parametrize("tokens,kps", [(8, 64), (16, 128), (24, 192), (64, 256)])
def test_stage_descriptors_read_the_tile_activation_layout(tokens, kps):
    rng = np.random.default_rng(tokens + kps)
    x = rng.integers(-128, 128, (tokens, kps), dtype=np.int8)
    smem = tile_activation(x).reshape(-1)  # the bytes one bulk copy puts in shared memory
    token, kk = grid(tokens, 32)
    addresses = [wgmma_b_address(token, kk, activation_stage_descriptor(kps, q))
                 for q in range(kps // 32)]
    b = np.concatenate([smem[a] for a in addresses], axis=1)
    assert np.array_equal(b, x)
    all_addresses = np.concatenate(addresses, axis=1)
    assert np.array_equal(np.sort(all_addresses.ravel()), np.arange(tokens * kps))
    desc = activation_stage_descriptor(kps, 1)
    assert (desc.start, desc.leading_byte_offset, desc.stride_byte_offset) == (256, 128, 8 * kps)


@pytest.mark.parametrize("tokens,kps", [(8, 128), (24, 256), (64, 128)])
def test_swizzled_stage_descriptors_read_the_swizzled_image(tokens, kps):
    rng = np.random.default_rng(tokens * kps)
    x = rng.integers(-128, 128, (tokens, kps), dtype=np.int8)
    smem = swizzle_activation_stage(x)
    # chunk c of row r sits at chunk c ^ (r % 8)
    r, c = 5, 2
    start = r * 128 + 16 * (c ^ (r % 8))
    assert np.array_equal(smem[start:start + 16], x[r, 16 * c:16 * c + 16])
    token, kk = grid(tokens, 32)
    addresses = [wgmma_b_address(token, kk, swizzled_stage_descriptor(tokens, q))
                 for q in range(kps // 32)]
    assert np.array_equal(np.concatenate([smem[a] for a in addresses], axis=1), x)
    assert np.array_equal(np.sort(np.concatenate(addresses, axis=1).ravel()),
                          np.arange(tokens * kps))


def test_stage_descriptor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="step"):
        activation_stage_descriptor(128, 4)
    with pytest.raises(ValueError, match="k_per_stage"):
        activation_stage_descriptor(48, 0)
    with pytest.raises(ValueError, match="tokens"):
        swizzled_stage_descriptor(12, 0)


# --- one instruction through the maps equals a matrix product ----------------------------------


def test_mma_m16n8k32_emulation_is_a_matrix_product():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (16, 32), dtype=np.int8)
    b = rng.integers(-128, 128, (32, 8), dtype=np.int8)
    c = rng.integers(-2**20, 2**20, (16, 8)).astype(np.int32)
    a_bytes = np.zeros((32, 4, 4), np.int8)
    b_bytes = np.zeros((32, 2, 4), np.int8)
    c_regs = np.zeros((32, 4), np.int32)
    for lane in range(32):  # fill the registers with the literal PTX formulas
        for i in range(16):
            a_bytes[lane, i // 4, i % 4] = a[ptx_m16n8k32_a(lane, i)]
        for i in range(8):
            b_bytes[lane, i // 4, i % 4] = b[ptx_m16n8k32_b(lane, i)]
        for i in range(4):
            c_regs[lane, i] = c[ptx_m16n8k32_c(lane, i)]
    d_regs = mma_m16n8k32(a_bytes.view("<u4")[..., 0], b_bytes.view("<u4")[..., 0], c_regs)
    expected = a.astype(np.int64) @ b.astype(np.int64) + c
    for lane in range(32):
        for i in range(4):
            assert d_regs[lane, i] == expected[ptx_m16n8k32_c(lane, i)]


@pytest.mark.parametrize("n", [8, 24, 64])
def test_wgmma_emulation_is_a_matrix_product(n):
    rng = np.random.default_rng(n)
    a = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    x = rng.integers(-128, 128, (n, 32), dtype=np.int8)  # B^T: tokens x k
    a_bytes = np.zeros((128, 4, 4), np.int8)
    for t in range(128):
        for reg in range(4):
            for b in range(4):
                a_bytes[t, reg, b] = a[h200_wgmma_a(t, reg, b)]
    smem = tile_activation(x).reshape(-1)
    d0 = np.zeros((128, n // 2), np.int32)
    d = wgmma_m64nNk32(a_bytes.view("<u4")[..., 0], smem, activation_stage_descriptor(32, 0), n, d0)
    expected = a.astype(np.int64) @ x.astype(np.int64).T
    for t in range(128):
        for i in range(n // 2):
            assert d[t, i] == expected[h200_wgmma_d(t, i)]
