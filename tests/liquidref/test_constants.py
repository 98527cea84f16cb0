"""liquidref/constants.py: the generated CUDA header is current, and the numbers fit together."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from liquidref import constants as c

HEADER = Path(__file__).resolve().parents[2] / "gpu" / "kernels" / "liquidref_constants.cuh"


def test_cuda_header_is_generated_from_constants():
    assert HEADER.read_text() == c.cuda_header(), (
        "gpu/kernels/liquidref_constants.cuh is stale: regenerate it with "
        "`python -m liquidref.constants > gpu/kernels/liquidref_constants.cuh`"
    )


def test_regeneration_command_prints_the_header():
    printed = subprocess.run(
        [sys.executable, "-m", "liquidref.constants"], capture_output=True, text=True, check=True
    ).stdout
    assert printed == c.cuda_header()


def test_header_values_parse_back_to_the_constants():
    pattern = re.compile(r"constexpr unsigned int (\w+) = (0x[0-9a-f]+)u;  // (\d+)")
    parsed = {m[1]: (int(m[2], 16), int(m[3])) for m in pattern.finditer(c.cuda_header())}
    assert list(parsed) == c._CUDA_NAMES
    for name, (hex_value, decimal_value) in parsed.items():
        assert hex_value == decimal_value == getattr(c, name), name


def test_numeric_contract_fits_together():
    # the protective range leaves room for the largest rounding-up of level 2 (s / 2 <= 8)
    assert c.Q8_LIMIT == 127 - c.STEP_MAX // 2
    # the largest step: a full span of 2 * 119 codes over 15 code steps, rounded to nearest
    assert c.STEP_MAX == round(2 * c.Q8_LIMIT / c.Q4_MAX)
    # Eq. 11: q4 * s + a <= (max - min) + s / 2 + 128 + min <= 119 + 8 + 128 = 255
    assert c.Q8_LIMIT + c.STEP_MAX // 2 + c.OFFSET_BIAS == 255
    assert c.OFFSET_BIAS == c.XOR_MASK_BYTE == 1 << 7
    assert c.XOR_MASK_WORD == c.XOR_MASK_BYTE * c.BYTE_BROADCAST
    assert c.LOW_NIBBLES == c.Q4_MAX * c.BYTE_BROADCAST
    assert c.Q4_MAX == 2**4 - 1


def test_max_exact_k_is_the_largest_k_without_int32_overflow():
    product = c.ACT_LIMIT * c.ACT_LIMIT
    assert c.MAX_EXACT_K * product <= 2**31 - 1 < (c.MAX_EXACT_K + 1) * product


def test_block_layout_numbers_fit_together():
    assert c.BLOCK_K == c.GROUP_SIZE == 2 * c.MMA_K
    assert c.BLOCK_BYTES == c.BLOCK_ROWS * c.BLOCK_K // 2  # two 4-bit codes per byte
    assert c.BLOCK_BYTES == c.THREADS_PER_WARPGROUP * c.BYTES_PER_THREAD  # one LDS.128 each
    assert c.META_BYTES_PER_BLOCK == 2 * c.BLOCK_ROWS  # one (s, a) byte pair per row
    assert c.QOQ_GROUP_SIZE == 2 * c.GROUP_SIZE
