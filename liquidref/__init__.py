"""liquidref: the bit-exact NumPy reference of LiquidQuant W4A8 (arXiv 2509.01229).

The oracle API (the contract other code and users rely on):

- ``quantize_weight(W, group_size=64)`` -> ``LiquidQuantWeight``
- ``dequantize_int8(w)`` -> int8 [N, K]
- ``quantize_activation(X)`` -> (``x_i8`` int8 [M, K], ``s_x`` float32 [M])
- ``gemm(x_i8, s_x, w)`` -> float16 [M, N]
- ``w4a8_linear(X, w)`` -> float16 [M, N]

and the kernel's packed format: ``pack_weight`` / ``unpack_weight`` (``PackedWeight``),
``TileConfig`` / ``choose_tile_config``, and the kernel's tiled pipeline replayed in NumPy:
``tiled_gemm`` / ``tiled_accumulate``.
"""

from .constants import GROUP_SIZE
from .gemm import epilogue, gemm, gemm_int8, int32_matmul, w4a8_linear
from .layout import (
    PackedWeight,
    code_position,
    meta_position,
    pack_weight,
    tile_activation,
    unpack_weight,
    untile_activation,
)
from .quant import (
    LiquidQuantWeight,
    dequant_word,
    dequantize_int8,
    dequantize_int8_packed,
    quantize_activation,
    quantize_weight,
)
from .tiled import tiled_accumulate, tiled_gemm
from .tiling import TileConfig, choose_tile_config

__version__ = "0.1.0"

__all__ = [
    "GROUP_SIZE",
    "LiquidQuantWeight",
    "PackedWeight",
    "TileConfig",
    "choose_tile_config",
    "code_position",
    "dequant_word",
    "dequantize_int8",
    "dequantize_int8_packed",
    "epilogue",
    "gemm",
    "gemm_int8",
    "int32_matmul",
    "meta_position",
    "pack_weight",
    "quantize_activation",
    "quantize_weight",
    "tile_activation",
    "tiled_accumulate",
    "tiled_gemm",
    "unpack_weight",
    "untile_activation",
    "w4a8_linear",
]
