"""The Dual-MMA packed layout, its metadata and the activation core-matrix layout: round trips
and exhaustive bijection checks of every index map on small domains."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import liquidref as lr
from liquidref.constants import Q4_MAX, STEP_MAX
from liquidref.layout import (
    PackedWeight,
    code_position,
    meta_position,
    pack_weight,
    tile_activation,
    unpack_weight,
    untile_activation,
)


def architecture_code_position(r, c):
    """ARCHITECTURE.md section 3, written out literally."""
    t = 32 * (r // 16) + 4 * (r % 8) + (c % 16) // 4
    p = 2 * (c // 32) + (c % 32) // 16
    return 16 * t + 4 * p + c % 4, 0 if (r % 16) // 8 == 0 else 1


@st.composite
def weights(draw):
    n = 64 * draw(st.integers(1, 3))
    k = 64 * draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        return lr.quantize_weight(rng.standard_normal((n, k)).astype(np.float32))
    s = rng.integers(1, STEP_MAX + 1, (n, k // 64)).astype(np.uint8)
    a = rng.integers(0, 256 - Q4_MAX * s.astype(np.int64)).astype(np.uint8)
    q4 = rng.integers(0, Q4_MAX + 1, (n, k)).astype(np.uint8)
    return lr.LiquidQuantWeight(q4=q4, s=s, a=a, s1=rng.uniform(0.1, 1, n).astype(np.float32))


@given(weights())
def test_pack_unpack_round_trip(w):
    packed = pack_weight(w)
    back = unpack_weight(packed)
    for name in ("q4", "s", "a", "s1"):
        assert np.array_equal(getattr(back, name), getattr(w, name))
    again = pack_weight(back)
    assert np.array_equal(again.codes, packed.codes) and np.array_equal(again.meta, packed.meta)
    assert packed.shape == w.shape
    assert packed.nbytes == w.n * w.k // 2 + 2 * w.n * w.k // 64 + 4 * w.n


@given(weights())
def test_packed_bytes_hold_each_code_where_code_position_says(w):
    packed = pack_weight(w)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, w.n, 50)
    cols = rng.integers(0, w.k, 50)
    byte, high = code_position(rows % 64, cols % 64)
    stored = packed.codes[rows // 64, cols // 64, byte]
    assert np.array_equal(np.where(high == 1, stored >> 4, stored & 0x0F), w.q4[rows, cols])
    s_byte, a_byte = meta_position(rows % 64)
    assert np.array_equal(packed.meta[rows // 64, cols // 64, s_byte], w.s[rows, cols // 64])
    assert np.array_equal(packed.meta[rows // 64, cols // 64, a_byte], w.a[rows, cols // 64])


def test_code_position_is_a_bijection_onto_the_block_nibbles():
    r, c = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    byte, high = code_position(r, c)
    nibble = 2 * byte + high
    assert np.array_equal(np.sort(nibble.ravel()), np.arange(4096))


def test_code_position_matches_architecture_md():
    for r in range(64):
        for c in range(64):
            byte, high = code_position(r, c)
            assert (int(byte), int(high)) == architecture_code_position(r, c)


def test_each_warp_reads_512_contiguous_bytes_and_rows_r_r8_share_bytes():
    r, c = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    byte, high = code_position(r, c)
    for warp in range(4):
        rows = slice(16 * warp, 16 * warp + 16)
        assert set(byte[rows].ravel()) == set(range(512 * warp, 512 * warp + 512))
    lower = (r % 16) < 8
    assert np.array_equal(byte[lower].reshape(32, 64), byte[~lower].reshape(32, 64))
    assert (high[lower] == 0).all() and (high[~lower] == 1).all()


def test_meta_position_is_a_bijection_onto_the_metadata_bytes():
    s_byte, a_byte = meta_position(np.arange(64))
    assert np.array_equal(a_byte, s_byte + 1)
    assert np.array_equal(np.sort(np.concatenate([s_byte, a_byte])), np.arange(128))
    # word j holds [s_r, a_r, s_r+8, a_r+8] for r = 16 (j // 8) + j % 8
    for j in range(32):
        r = 16 * (j // 8) + j % 8
        assert int(s_byte[r]) == 4 * j and int(s_byte[r + 8]) == 4 * j + 2


@pytest.mark.parametrize("m", [0, 1, 7, 8, 9, 23])
@pytest.mark.parametrize("k", [16, 48])
def test_tile_activation_is_a_bijection_and_untile_inverts_it(m, k):
    x = (np.arange(m * k) % 251 - 125).astype(np.int8).reshape(m, k)
    tiled = tile_activation(x)
    m_pad = -(-m // 8) * 8
    assert tiled.shape == (m_pad // 8, k // 16, 8, 16)
    assert np.array_equal(untile_activation(tiled, m), x)
    # positions: (m, k) -> flat byte 128 (g K/16 + c) + 16 i + b, all distinct, padding is zero
    mm, kk = np.meshgrid(np.arange(m), np.arange(k), indexing="ij")
    flat = 128 * ((mm // 8) * (k // 16) + kk // 16) + 16 * (mm % 8) + kk % 16
    assert len(np.unique(flat)) == m * k
    assert np.array_equal(tiled.reshape(-1)[flat], x)
    mask = np.ones(tiled.size, bool)
    mask[flat.ravel()] = False
    assert (tiled.reshape(-1)[mask] == 0).all()


def test_layout_errors_are_clear():
    w = lr.quantize_weight(np.ones((64, 128), np.float32), group_size=128)
    with pytest.raises(ValueError, match="group_size must be 64"):
        pack_weight(w)
    with pytest.raises(ValueError, match="multiple of 64"):
        pack_weight(lr.quantize_weight(np.ones((32, 64), np.float32)))
    with pytest.raises(TypeError, match="LiquidQuantWeight"):
        pack_weight(np.zeros((64, 64)))
    with pytest.raises(TypeError, match="PackedWeight"):
        unpack_weight(w)
    with pytest.raises(ValueError, match="2048"):
        PackedWeight(np.zeros((1, 1, 1024), np.uint8), np.zeros((1, 1, 128), np.uint8),
                     np.ones(64, np.float32))
    with pytest.raises(ValueError, match="disagree"):
        PackedWeight(np.zeros((1, 2, 2048), np.uint8), np.zeros((1, 1, 128), np.uint8),
                     np.ones(64, np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        tile_activation(np.zeros((4, 24), np.int8))
    with pytest.raises(ValueError, match="expected"):
        untile_activation(np.zeros((1, 1, 8, 16), np.int8), 9)
