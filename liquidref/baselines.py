"""Baseline weight quantizers in the oracle's style, and one registry of every scheme.

Three baselines sit next to LiquidQuant (``liquidref.quant``):

- **QoQ** (QServe's progressive group quantization, arXiv 2405.04532): the same per-row int8
  level 1 as LiquidQuant (limit 119, the *protective range*), then per group of 128 an
  asymmetric uint4 code with a **rounded zero point** ``z``::

      s  = max(1, rint((max - min) / 15))          (the uint8 step; QServe has no max(1, .))
      z  = -rint(min / s)                           (zero point in code units, int8)
      q4 = clip(rint(q8 / s) + z, 0, 15)
      dequant (exact)  = (q4 - z) * s  =  q4 * s - z * s      "subtraction after multiplication"

  The kernel (QServe's ``share_to_reg_one_stage_B``) multiplies four codes in one 32-bit IMUL
  (each byte ``q4 * s <= 255``, no carry), then adds the stored *scaled zero* ``-z * s`` to
  every byte with ``__vadd4``, a per-byte add that wraps modulo 256::

      word = [q4_3 | q4_2 | q4_1 | q4_0]
      word * s                          bytes q4_i * s           (one IMUL, no carry)
      vadd4(., [-zs | -zs | -zs | -zs]) bytes (q4_i * s - z * s) mod 256

  so the kernel's int8 equals the exact value only while that value lies in [-128, 127]. The
  rounded zero point lets the reconstruction drift below ``min`` as well as above ``max`` by up
  to ``s / 2 <= 8``; the protective range keeps ``|q8| <= 119 = 127 - 8`` so both ends stay in
  int8. ``quantize_qoq(W, protective_range=False)`` uses 127 instead and *does* overflow (a
  group with q8 in [-113, 127]: s = 16, z = 7, the top code gives (15 - 7) * 16 = 128).
  ``qoq_dequantize_int8`` returns the wrapped bytes the kernel gets, ``qoq_dequantize_exact``
  the unwrapped integers, so the overflow is visible.

- **W8 per channel**: ``quantize_rows_int8(W, 127)``, a W8A8 scheme (SmoothQuant-style).

- **RTN int4**, group-wise asymmetric round-to-nearest with float32 scales (the W4A16
  weight-only scheme of GPTQ/AWQ-style kernels, without their calibration). The range of each
  group is widened to include 0 (GPTQ's convention), so the integer zero point is in 0..15::

      lo, hi = min(min(W_g), 0), max(max(W_g), 0)
      scale  = (hi - lo) / 15   (float32; 1.0 for an all-zero group)
      zero   = rint(-lo / scale)                   (0..15)
      q4     = clip(rint(W / scale) + zero, 0, 15)
      dequant = (q4 - zero) * scale                (float32)

``SCHEMES`` maps a short name to a ``Scheme`` with the same five callables for every method,
used by the demo, the MiniLM evaluation and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _validate as v
from .constants import (
    ACT_LIMIT,
    BYTE_BROADCAST,
    GROUP_SIZE,
    Q4_MAX,
    Q8_LIMIT,
    QOQ_GROUP_SIZE,
)
from .gemm import gemm_int8, w4a8_linear
from .quant import (
    LiquidQuantWeight,
    dequantize_int8,
    quantize_activation,
    quantize_rows_int8,
    quantize_weight,
)

# The symmetric int8 limit of W8 weights and of QoQ without its protective range: the same
# [-127, 127] as the activations.
INT8_LIMIT = ACT_LIMIT


# --- QoQ ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QoQWeight:
    """A QoQ (QServe progressive group quantization) weight.

    Attributes:
        q4: uint8 [N, K], codes 0..15 (unpacked).
        s: uint8 [N, K / group_size], level-2 steps (1..16 with the protective range, up to 17
            without it).
        z: int8 [N, K / group_size], zero points in code units (``-rint(min / s)``).
        s1: float32 [N], level-1 scales.
        group_size: k-elements per group (128 in QServe).
        q8_limit: the level-1 limit, 119 (protective range) or 127.
    """

    q4: np.ndarray
    s: np.ndarray
    z: np.ndarray
    s1: np.ndarray
    group_size: int = QOQ_GROUP_SIZE
    q8_limit: int = Q8_LIMIT

    def __post_init__(self) -> None:
        q4, _ = v.check_grouped_codes(
            self.q4, self.group_size, {"s": (self.s, np.uint8), "z": (self.z, np.int8)}, self.s1
        )
        if q4.shape[0] and (self.s.min() < 1 or int(self.s.max()) * Q4_MAX > 255):
            raise ValueError(
                f"s must be >= 1 and keep q4 * s within a byte (s <= {255 // Q4_MAX}); found "
                f"{int(self.s.min())}..{int(self.s.max())}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K) of the quantized weight."""
        return self.q4.shape

    def bits_per_weight(self) -> float:
        """4-bit code + int8 step and int8 scaled zero per group + float32 s1 per row."""
        return 4 + 16 / self.group_size + 32 / self.q4.shape[1]


def quantize_qoq(
    W: np.ndarray, group_size: int = QOQ_GROUP_SIZE, protective_range: bool = True
) -> QoQWeight:
    """Quantize a weight with QoQ progressive group quantization.

    Args:
        W: float16 or float32 [N, K], finite, K a positive multiple of ``group_size``.
        group_size: k-elements per level-2 group (128 as in QServe).
        protective_range: level 1 in [-119, 119] (True, QServe's choice) or [-127, 127]
            (False; the kernel's int8 dequant then overflows on some groups).

    Returns:
        A ``QoQWeight``.
    """
    group_size = v.require_positive_group_size(group_size)
    W = v.as_matrix("W", W, (np.float16, np.float32))
    n, k = W.shape
    v.require_group_multiple("W", k, group_size)
    v.require_finite("W", W)
    limit = Q8_LIMIT if protective_range else INT8_LIMIT
    s1, q8 = quantize_rows_int8(W, limit)
    groups = q8.reshape(n, k // group_size, group_size)
    mn = groups.min(axis=2)
    mx = groups.max(axis=2)
    s = np.maximum(1, np.rint((mx - mn) / Q4_MAX)).astype(np.int32)
    z = -np.rint(mn / s).astype(np.int32)
    q4 = np.clip(np.rint(groups / s[..., None]) + z[..., None], 0, Q4_MAX)
    return QoQWeight(
        q4=q4.reshape(n, k).astype(np.uint8),
        s=s.astype(np.uint8),
        z=z.astype(np.int8),
        s1=s1,
        group_size=group_size,
        q8_limit=limit,
    )


def _require_qoq(w) -> QoQWeight:
    if not isinstance(w, QoQWeight):
        raise TypeError(f"expected a QoQWeight; got {type(w).__name__}")
    return w


def _per_element(values: np.ndarray, group_size: int) -> np.ndarray:
    """Repeat a per-group [N, K/G] array to one value per weight, [N, K]."""
    return np.repeat(values, group_size, axis=1)


def qoq_scaled_zeros(w: QoQWeight) -> np.ndarray:
    """The stored scaled zeros ``-z * s`` as int8 [N, K/G] bytes (wrapped modulo 256).

    With the protective range ``|z * s| <= 127`` always fits; without it the byte wraps, which
    the per-byte wrapping add of the kernel does not notice (it works modulo 256 anyway).
    """
    _require_qoq(w)
    scaled = -(w.z.astype(np.int32) * w.s.astype(np.int32))
    return (scaled & 0xFF).astype(np.uint8).view(np.int8)


def qoq_dequantize_exact(w: QoQWeight) -> np.ndarray:
    """The mathematically intended ``(q4 - z) * s`` as int32 [N, K] (no wrap-around)."""
    _require_qoq(w)
    g = w.group_size
    s = _per_element(w.s.astype(np.int32), g)
    z = _per_element(w.z.astype(np.int32), g)
    return (w.q4.astype(np.int32) - z) * s


def qoq_dequantize_int8(w: QoQWeight) -> np.ndarray:
    """The kernel's dequant, lane by lane: byte ``q4 * s`` plus byte ``-z * s``, wrapping.

    Returns int8 [N, K]; equals ``qoq_dequantize_exact`` wherever that lies in [-128, 127]
    and differs by a multiple of 256 elsewhere (the overflow).
    """
    _require_qoq(w)
    g = w.group_size
    product = w.q4.astype(np.int32) * _per_element(w.s.astype(np.int32), g)  # <= 255
    zero_byte = _per_element(qoq_scaled_zeros(w).view(np.uint8).astype(np.int32), g)
    return ((product + zero_byte) & 0xFF).astype(np.uint8).view(np.int8)


def vadd4(x, y):
    """CUDA's ``__vadd4``: four independent byte additions modulo 256 (no carry between bytes).

    Args:
        x, y: uint32 (scalars or broadcastable arrays), four byte lanes each.

    Returns:
        uint32 whose byte ``i`` is ``(byte_i(x) + byte_i(y)) mod 256``. On the GPU this is not
        one instruction; the LiquidGEMM paper measures it as a dozen.
    """
    x = np.asarray(x, dtype=np.uint32)
    y = np.asarray(y, dtype=np.uint32)
    # Add the low 7 bits of each lane (cannot carry out of the lane), then put bit 7 back with
    # an XOR (the sum of the two bit-7s modulo 2; its carry would leave the lane and is dropped).
    low7 = np.uint32(0x7F7F7F7F)
    top = np.uint32(0x80808080)
    return ((x & low7) + (y & low7)) ^ ((x ^ y) & top)


def qoq_dequant_word(word, s, scaled_zero_byte):
    """QServe's dequant of one 32-bit register: ``vadd4(word * s, zero_byte * 0x01010101)``.

    Args:
        word: uint32, four codes 0..15, one per byte lane.
        s: the group's step (broadcastable to ``word``); ``15 * s <= 255`` so the multiply
            cannot carry between lanes.
        scaled_zero_byte: the stored ``-z * s`` byte as uint8 (broadcastable).

    Returns:
        uint32 words whose bytes are the four int8 weights the kernel feeds to the MMA.
    """
    product = np.asarray(word, dtype=np.uint32) * np.asarray(s, dtype=np.uint32)
    zeros = np.asarray(scaled_zero_byte, dtype=np.uint32) * np.uint32(BYTE_BROADCAST)
    return vadd4(product, zeros)


def qoq_dequantize_int8_packed(w: QoQWeight) -> np.ndarray:
    """``qoq_dequantize_int8`` through 32-bit words of four codes (IMUL + vadd4), int8 [N, K]."""
    _require_qoq(w)
    n, k = w.shape
    g = w.group_size
    words = np.ascontiguousarray(w.q4).view(np.uint32).reshape(n, k // g, g // 4)
    zeros = qoq_scaled_zeros(w).view(np.uint8)
    out = qoq_dequant_word(words, w.s[..., None], zeros[..., None])
    return out.view(np.int8).reshape(n, k)


def qoq_int8_headroom(w: QoQWeight) -> int:
    """Distance of the exact dequantized values to the nearest int8 bound; < 0 means overflow.

    ``min(127 - max(exact), min(exact) + 128)`` over the whole weight.
    """
    exact = qoq_dequantize_exact(w)
    if exact.size == 0:
        return 127
    return int(min(127 - exact.max(), exact.min() + 128))


def qoq_linear(X: np.ndarray, w: QoQWeight) -> np.ndarray:
    """W4A8 with QoQ weights: per-token int8 activations, the kernel's int8 weight, exact GEMM.

    Args:
        X: float16 or float32 [M, K], finite. w: a ``QoQWeight`` [N, K].

    Returns:
        float16 [M, N] with the contract epilogue (``liquidref.gemm.gemm_int8``).
    """
    _require_qoq(w)
    x_i8, s_x = quantize_activation(X)
    return gemm_int8(x_i8, s_x, qoq_dequantize_int8(w), w.s1)


# --- W8 per channel -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class W8Weight:
    """A per-output-channel symmetric int8 weight.

    Attributes:
        w_i8: int8 [N, K] in [-127, 127].
        s1: float32 [N], ``max|W[n]| / 127`` (1.0 for an all-zero row).
    """

    w_i8: np.ndarray
    s1: np.ndarray

    def __post_init__(self) -> None:
        w_i8 = v.as_matrix("w_i8", self.w_i8, (np.int8,))
        v.as_vector("s1", self.s1, np.float32, w_i8.shape[0])
        if w_i8.size and w_i8.min() < -INT8_LIMIT:
            raise ValueError(f"w_i8 must be in [-{INT8_LIMIT}, {INT8_LIMIT}]; found -128")
        if not np.isfinite(self.s1).all() or (self.s1 <= 0).any():
            raise ValueError("s1 must be finite and positive")

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K) of the quantized weight."""
        return self.w_i8.shape

    def bits_per_weight(self) -> float:
        """8-bit value + float32 s1 per row."""
        return 8 + 32 / self.w_i8.shape[1]


def quantize_w8(W: np.ndarray) -> W8Weight:
    """Per-channel int8: ``quantize_rows_int8(W, 127)``.

    Args:
        W: float16 or float32 [N, K], finite, K > 0.
    """
    W = v.as_matrix("W", W, (np.float16, np.float32))
    if W.shape[1] == 0:
        raise ValueError("W must have K > 0 columns")
    v.require_finite("W", W)
    s1, q8 = quantize_rows_int8(W, INT8_LIMIT)
    return W8Weight(w_i8=q8.astype(np.int8), s1=s1)


def _require_w8(w) -> W8Weight:
    if not isinstance(w, W8Weight):
        raise TypeError(f"expected a W8Weight; got {type(w).__name__}")
    return w


def w8_linear(X: np.ndarray, w: W8Weight) -> np.ndarray:
    """W8A8: per-token int8 activations, exact GEMM, contract epilogue; float16 [M, N]."""
    _require_w8(w)
    x_i8, s_x = quantize_activation(X)
    return gemm_int8(x_i8, s_x, w.w_i8, w.s1)


# --- RTN int4 (W4A16) ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RTNWeight:
    """A group-wise asymmetric round-to-nearest int4 weight (weight-only, W4A16).

    Attributes:
        q4: uint8 [N, K], codes 0..15.
        scale: float32 [N, K / group_size], positive.
        zero: uint8 [N, K / group_size], integer zero points 0..15.
        group_size: k-elements per group.
    """

    q4: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    group_size: int

    def __post_init__(self) -> None:
        group_size = v.require_positive_group_size(self.group_size)
        q4 = v.as_matrix("q4", self.q4, (np.uint8,))
        n, k = q4.shape
        v.require_group_multiple("q4", k, group_size)
        for name, dtype in (("scale", np.float32), ("zero", np.uint8)):
            m = v.as_matrix(name, getattr(self, name), (dtype,))
            if m.shape != (n, k // group_size):
                raise ValueError(
                    f"{name} must have shape (N, K/group_size) = ({n}, {k // group_size}); "
                    f"got {m.shape}"
                )
        if n and (q4.max() > Q4_MAX or self.zero.max() > Q4_MAX):
            raise ValueError(f"q4 and zero must be 0..{Q4_MAX}")
        if not np.isfinite(self.scale).all() or (self.scale <= 0).any():
            raise ValueError("scale must be finite and positive")

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K) of the quantized weight."""
        return self.q4.shape

    def bits_per_weight(self) -> float:
        """4-bit code + float32 scale and 4-bit zero per group."""
        return 4 + (32 + 4) / self.group_size


def quantize_rtn(W: np.ndarray, group_size: int = GROUP_SIZE) -> RTNWeight:
    """Group-wise asymmetric RTN int4 (see the module docstring for the formulas).

    Args:
        W: float16 or float32 [N, K], finite, K a positive multiple of ``group_size``.
        group_size: k-elements per group (64 or 128 in ``SCHEMES``).
    """
    group_size = v.require_positive_group_size(group_size)
    W = v.as_matrix("W", W, (np.float16, np.float32))
    n, k = W.shape
    v.require_group_multiple("W", k, group_size)
    v.require_finite("W", W)
    groups = W.astype(np.float32).reshape(n, k // group_size, group_size)
    lo = np.minimum(groups.min(axis=2), 0).astype(np.float64)
    hi = np.maximum(groups.max(axis=2), 0).astype(np.float64)
    # float64 so that hi - lo cannot overflow for float32 extremes; the stored scale is float32.
    scale = ((hi - lo) / Q4_MAX).astype(np.float32)
    scale = np.where(hi > lo, scale, np.float32(1.0))
    # a span of a few subnormals divided by 15 can round to 0: use the smallest positive float32
    scale = np.maximum(scale, np.finfo(np.float32).smallest_subnormal).astype(np.float32)
    zero = np.clip(np.rint(-lo / scale), 0, Q4_MAX)
    q4 = np.clip(np.rint(groups / scale[..., None]) + zero[..., None], 0, Q4_MAX)
    return RTNWeight(
        q4=q4.reshape(n, k).astype(np.uint8),
        scale=scale,
        zero=zero.astype(np.uint8),
        group_size=group_size,
    )


def rtn_dequantize(w: RTNWeight) -> np.ndarray:
    """``(q4 - zero) * scale`` as float32 [N, K]."""
    if not isinstance(w, RTNWeight):
        raise TypeError(f"expected an RTNWeight; got {type(w).__name__}")
    g = w.group_size
    codes = w.q4.astype(np.float32) - _per_element(w.zero, g).astype(np.float32)
    return codes * _per_element(w.scale, g)


def rtn_linear(X: np.ndarray, w: RTNWeight) -> np.ndarray:
    """W4A16: ``float16(float32(X) @ rtn_dequantize(w).T)``.

    Args:
        X: float16 or float32 [M, K], finite (M may be 0). w: an ``RTNWeight`` [N, K].

    Returns:
        float16 [M, N] (float32 accumulation, one rounding to float16; not bit-specified, as
        BLAS chooses the summation order).
    """
    W_hat = rtn_dequantize(w)
    X = v.as_matrix("X", X, (np.float16, np.float32))
    if X.shape[1] != W_hat.shape[1]:
        raise ValueError(f"X has K = {X.shape[1]} columns but the weight has K = {W_hat.shape[1]}")
    v.require_finite("X", X)
    with np.errstate(over="ignore"):
        return (X.astype(np.float32) @ W_hat.T).astype(np.float16)


# --- the registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheme:
    """One weight quantization scheme, behind the same five names for every method.

    Attributes:
        name: the key in ``SCHEMES``.
        description: one line for tables and docs.
        quantize: ``W`` (float16/float32 [N, K]) -> the scheme's weight object.
        dequantize: weight -> float32 [N, K], the effective weight (int8 values times scales
            for the W4A8/W8A8 schemes, exactly what the GEMM multiplies).
        linear: ``(X [M, K], weight)`` -> float16 [M, N].
        bits_per_weight: weight -> storage bits per weight, metadata included.
    """

    name: str
    description: str
    quantize: Callable[[np.ndarray], Any]
    dequantize: Callable[[Any], np.ndarray]
    linear: Callable[[np.ndarray, Any], np.ndarray]
    bits_per_weight: Callable[[Any], float]


def _lqq_dequantize(w: LiquidQuantWeight) -> np.ndarray:
    return dequantize_int8(w).astype(np.float32) * w.s1[:, None]


def _qoq_dequantize(w: QoQWeight) -> np.ndarray:
    return qoq_dequantize_int8(w).astype(np.float32) * w.s1[:, None]


def _w8_dequantize(w: W8Weight) -> np.ndarray:
    _require_w8(w)
    return w.w_i8.astype(np.float32) * w.s1[:, None]


def _bits(w) -> float:
    return float(w.bits_per_weight())


SCHEMES: dict[str, Scheme] = {
    "lqq-g64": Scheme(
        name="lqq-g64",
        description="LiquidQuant W4A8, group 64: int8 level 1 [-119, 119], uint4 level 2, IMAD+XOR",
        quantize=lambda W: quantize_weight(W, GROUP_SIZE),
        dequantize=_lqq_dequantize,
        linear=w4a8_linear,
        bits_per_weight=_bits,
    ),
    "qoq-g128": Scheme(
        name="qoq-g128",
        description="QServe QoQ W4A8, group 128: protective range, rounded zero, IMUL+vadd4",
        quantize=lambda W: quantize_qoq(W, QOQ_GROUP_SIZE, protective_range=True),
        dequantize=_qoq_dequantize,
        linear=qoq_linear,
        bits_per_weight=_bits,
    ),
    "rtn-g64": Scheme(
        name="rtn-g64",
        description="RTN int4 W4A16, group 64, asymmetric, float32 scales",
        quantize=lambda W: quantize_rtn(W, GROUP_SIZE),
        dequantize=rtn_dequantize,
        linear=rtn_linear,
        bits_per_weight=_bits,
    ),
    "rtn-g128": Scheme(
        name="rtn-g128",
        description="RTN int4 W4A16, group 128, asymmetric, float32 scales",
        quantize=lambda W: quantize_rtn(W, QOQ_GROUP_SIZE),
        dequantize=rtn_dequantize,
        linear=rtn_linear,
        bits_per_weight=_bits,
    ),
    "w8-per-channel": Scheme(
        name="w8-per-channel",
        description="W8A8, symmetric per-channel int8 [-127, 127]",
        quantize=quantize_w8,
        dequantize=_w8_dequantize,
        linear=w8_linear,
        bits_per_weight=_bits,
    ),
}
