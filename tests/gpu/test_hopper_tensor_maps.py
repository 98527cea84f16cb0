"""The Hopper kernel's TMA tensor maps (``gpu.hopper.tensor_maps``) bring each stage slot exactly
the bytes the layouts say it holds (CPU only: no driver, no GPU).

The kernel's loader (``Loader`` in gpu/kernels/w4a8_hopper.cu) copies, per stage ``st`` of a
tile with first row block ``rb0`` and first 8-token group ``g0``:

    codes  one box per row block rb:  coordinates {0, rb * K/64 + st * BPS}
    meta   the same coordinates on the metadata map
    x      one box per stage:         coordinates {0, st, g0}

Here the maps' geometry comes from ``tensor_maps`` (its encoder replaced by a recorder), a box
copy is emulated in NumPy the way the PTX ISA defines a tiled TMA copy (the box's rows in
row-major order, innermost dimension fastest; rows outside the tensor arrive as zeros), and the
bytes must equal the slices of ``liquidref.pack_weight`` and ``liquidref.tile_activation`` that
the slot is meant to hold. The coordinate formulas above are restated from the kernel; the GPU
property tests check the kernel itself. Deliberately wrong geometries (MUTANTS) show that the
check fails when a map is off.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

import liquidref
from gpu import hopper, runtime
from liquidref.constants import BLOCK_K, BLOCK_ROWS
from liquidref.tiling import TileConfig


def _device_like(array: np.ndarray, address: int):
    """What tensor_maps reads of a device array: its address, shape and size."""
    return SimpleNamespace(data=SimpleNamespace(ptr=address), shape=array.shape, nbytes=array.nbytes)


def _box_copy(memory: np.ndarray, row_bytes: int, dims: tuple, strides: tuple, box: tuple, coords: tuple) -> bytes:
    """A tiled TMA copy of 8-byte elements, whole rows: the box's rows in row-major order
    (the first outer dimension fastest), zeros for rows outside ``dims``."""
    rows = []
    for index in itertools.product(*(range(b) for b in reversed(box))):
        position = tuple(c + i for c, i in zip(coords, reversed(index)))
        if any(p >= d for p, d in zip(position, dims)):
            rows.append(bytes(row_bytes))
        else:
            start = sum(p * s for p, s in zip(position, strides))
            rows.append(memory[start:start + row_bytes].tobytes())
    return b"".join(rows)


CASES = [  # (TileConfig, M, N, K): ragged M (a partial last token tile), a half row tile
    (TileConfig(2, 8, 256, 8), 5, 192, 1024),
    (TileConfig(2, 16, 128, 4), 13, 128, 512),
    (TileConfig(1, 24, 64, 3), 30, 64, 256),
    (TileConfig(2, 64, 256, 6), 70, 192, 512),
    (TileConfig(2, 256, 128, 5), 300, 128, 256),
]


def _recorded_maps(monkeypatch, config, arrays, n, k):
    """{name: (address, row_bytes, dims, strides, box)} as tensor_maps encodes them."""
    addresses = {name: 0x10000 * (i + 1) for i, name in enumerate(arrays)}
    recorded = []
    monkeypatch.setattr(hopper, "_tensor_map", lambda *geometry: recorded.append(geometry) or geometry)
    dw = SimpleNamespace(codes=_device_like(arrays["codes"], addresses["codes"]),
                         meta=_device_like(arrays["meta"], addresses["meta"]), n=n, k=k)
    hopper.tensor_maps(config, _device_like(arrays["x"], addresses["x"]), dw)
    maps = dict(zip(arrays, recorded))
    for name, (address, *_) in maps.items():
        assert address == addresses[name]
    return maps


def _wrong_slots(maps, arrays, config, n, k) -> list[str]:
    """Every (array, stage, tile) whose copy at the kernel's coordinates differs from the slice
    of the layout that its slot is meant to hold."""
    def copy(name, coords):
        _, row_bytes, dims, strides, box = maps[name]
        return _box_copy(arrays[name].reshape(-1).view(np.uint8), row_bytes, dims, strides, box, coords)

    codes, meta, x_tiled = arrays["codes"], arrays["meta"], arrays["x"]
    blocks_per_stage = config.k_per_stage // BLOCK_K
    groups_per_tile = config.tokens_per_cta // 8
    wrong = []
    for stage in range(k // config.k_per_stage):
        k_slice = slice(stage * blocks_per_stage, (stage + 1) * blocks_per_stage)
        for rb in range(n // BLOCK_ROWS):
            block = rb * (k // BLOCK_K) + stage * blocks_per_stage
            if copy("codes", (block,)) != codes[rb, k_slice].tobytes():
                wrong.append(f"codes stage {stage} row block {rb}")
            if copy("meta", (block,)) != meta[rb, k_slice].tobytes():
                wrong.append(f"meta stage {stage} row block {rb}")
        chunks = slice(stage * config.k_per_stage // 16, (stage + 1) * config.k_per_stage // 16)
        for g0 in range(0, x_tiled.shape[0], groups_per_tile):
            want = np.zeros((groups_per_tile, config.k_per_stage // 16, 8, 16), np.int8)
            loaded = x_tiled[g0:g0 + groups_per_tile, chunks]
            want[:loaded.shape[0]] = loaded
            if copy("x", (stage, g0)) != want.tobytes():
                wrong.append(f"x stage {stage} groups {g0}..")
    return wrong


def _problem(config, m, n, k):
    rng = np.random.default_rng(m)
    packed = liquidref.pack_weight(liquidref.quantize_weight(rng.standard_normal((n, k)).astype(np.float16)))
    x_i8 = rng.integers(-127, 128, (m, k)).astype(np.int8)
    return {"codes": packed.codes, "meta": packed.meta, "x": liquidref.tile_activation(x_i8)}


@pytest.mark.parametrize(("config", "m", "n", "k"), CASES, ids=[f"n{c[0].tokens_per_cta}" for c in CASES])
def test_each_copy_brings_the_slot_its_bytes(monkeypatch, config, m, n, k):
    arrays = _problem(config, m, n, k)
    maps = _recorded_maps(monkeypatch, config, arrays, n, k)
    for address, row_bytes, dims, strides, box in maps.values():
        runtime.check_tensor_map(address, row_bytes, dims, strides, box)  # within the driver's limits
    assert _wrong_slots(maps, arrays, config, n, k) == []


# Deliberately wrong geometries (name -> (map, edit of (row_bytes, dims, strides, box))): each
# must put wrong bytes in some slot.
MUTANTS = {
    "x_strides_swapped": ("x", lambda rb, d, s, b: (rb, d, s[::-1], b)),
    "x_box_one_group": ("x", lambda rb, d, s, b: (rb, d, s, (1, 1))),
    "x_rows_of_16_k": ("x", lambda rb, d, s, b: (rb // 16, d, s, b)),
    "codes_box_one_block": ("codes", lambda rb, d, s, b: (rb, d, s, (1,))),
    "meta_rows_of_codes": ("meta", lambda rb, d, s, b: (2048, d, (2048,), b)),
}


@pytest.mark.mutant
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_wrong_geometries_are_caught(monkeypatch, mutant):
    config, m, n, k = CASES[3]  # n = 64, 2 row blocks, a partial last token tile
    arrays = _problem(config, m, n, k)
    maps = _recorded_maps(monkeypatch, config, arrays, n, k)
    name, edit = MUTANTS[mutant]
    address, *geometry = maps[name]
    maps[name] = (address, *edit(*geometry))
    assert _wrong_slots(maps, arrays, config, n, k)
