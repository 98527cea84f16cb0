"""LiquidQuant (LQQ): two-level W4 weight quantization and per-token int8 activations.

The numeric contract, ``ARCHITECTURE.md`` section 2::

    level 1 (per output row n):   s1[n] = max|W[n,:]| / 119             (float32; 1.0 if the row is 0)
                                  q8    = clip(rint(W / s1), -119, 119)  (float32 division, ties to even)
    level 2 (per row, group of G): mn, mx = min(q8), max(q8)
                                  s     = max(1, rint((mx - mn) / 15))   (1..16)
                                  q4    = clip(rint((q8 - mn) / s), 0, 15)
                                  a     = 128 + mn                       (9..247)
    dequant:                      u     = q4 * s + a                     (always 0..255: no carry)
                                  w_i8  = u XOR 0x80  (as int8)          (== q4 * s + mn)

The XOR is the "rotation": ``a`` was stored 128 too high so that ``u`` stays an unsigned byte;
flipping bit 7 subtracts 128 modulo 256, which turns the byte into the two's-complement int8
``q4 * s + mn``. On a 32-bit register of four codes the whole dequant is one IMAD and one XOR::

    word = [q4_3 | q4_2 | q4_1 | q4_0]        four bytes, each 0..15
    word * s + a * 0x01010101                 each lane <= 15 * 16 + 247 = ... <= 255, no carry
    ^ 0x80808080                              four int8 weights
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate as v
from .constants import (
    ACT_LIMIT,
    BYTE_BROADCAST,
    GROUP_SIZE,
    OFFSET_BIAS,
    Q4_MAX,
    Q8_LIMIT,
    STEP_MAX,
    XOR_MASK_BYTE,
    XOR_MASK_WORD,
)


@dataclass(frozen=True, eq=False)
class LiquidQuantWeight:
    """A LiquidQuant weight: 4-bit codes with per-group (s, a) and per-row s1.

    Attributes:
        q4: uint8 [N, K], codes 0..15, one per weight (unpacked; see ``pack_weight``).
        s: uint8 [N, K / group_size], level-2 steps 1..16.
        a: uint8 [N, K / group_size], stored offsets ``128 + group min``.
        s1: float32 [N], level-1 scales.
        group_size: k-elements per group (64 for LiquidQuant).

    Construction checks dtypes, shapes and ranges, including that ``q4 * s + a`` never
    leaves [0, 255] (the overflow-safety invariant), so a hand-made weight that the kernel
    would dequantize wrongly is refused here.
    """

    q4: np.ndarray
    s: np.ndarray
    a: np.ndarray
    s1: np.ndarray
    group_size: int = GROUP_SIZE

    def __post_init__(self) -> None:
        q4, group_size = v.check_grouped_codes(
            self.q4, self.group_size, {"s": (self.s, np.uint8), "a": (self.a, np.uint8)}, self.s1
        )
        n = q4.shape[0]
        if n and (self.s.min() < 1 or self.s.max() > STEP_MAX):
            raise ValueError(
                f"s must be 1..{STEP_MAX}; found {int(self.s.min())}..{int(self.s.max())}"
            )
        if n:
            u = _lane_sums(q4, self.s, self.a, group_size)
            if u.max() > 255:
                row, col = np.unravel_index(int(np.argmax(u)), u.shape)
                raise ValueError(
                    f"q4 * s + a must stay within one byte (<= 255) or the dequant carries into "
                    f"the next lane; it is {int(u[row, col])} at row {row}, column {col}"
                )

    @property
    def n(self) -> int:
        """Output features (rows of W)."""
        return self.q4.shape[0]

    @property
    def k(self) -> int:
        """Input features (columns of W)."""
        return self.q4.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K) of the quantized weight."""
        return self.q4.shape

    def bits_per_weight(self) -> float:
        """Storage cost per weight: 4-bit code + (s, a) bytes per group + float32 s1 per row."""
        return 4 + 16 / self.group_size + 32 / self.k


def _lane_sums(q4: np.ndarray, s: np.ndarray, a: np.ndarray, group_size: int) -> np.ndarray:
    """u = q4 * s + a in int32 (the byte-lane value before the XOR), shape [N, K]."""
    n, k = q4.shape
    u = q4.reshape(n, k // group_size, group_size).astype(np.int32) * s[..., None].astype(
        np.int32
    ) + a[..., None].astype(np.int32)
    return u.reshape(n, k)


def quantize_weight(W: np.ndarray, group_size: int = GROUP_SIZE) -> LiquidQuantWeight:
    """Quantize a weight matrix with LiquidQuant.

    Args:
        W: float16 or float32 [N, K], finite, K a positive multiple of ``group_size``.
        group_size: k-elements per level-2 group (64 is the kernel's; 128 for comparisons).

    Returns:
        A ``LiquidQuantWeight`` (``q4`` uint8 [N, K], ``s``/``a`` uint8 [N, K/G],
        ``s1`` float32 [N]).
    """
    group_size = v.require_positive_group_size(group_size)
    W = v.as_matrix("W", W, (np.float16, np.float32))
    n, k = W.shape
    v.require_group_multiple("W", k, group_size)
    v.require_finite("W", W)
    s1, q8 = quantize_rows_int8(W, Q8_LIMIT)
    groups = q8.reshape(n, k // group_size, group_size)
    mn = groups.min(axis=2)
    mx = groups.max(axis=2)
    s = np.maximum(1, np.rint((mx - mn) / Q4_MAX)).astype(np.int32)
    q4 = np.clip(np.rint((groups - mn[..., None]) / s[..., None]), 0, Q4_MAX)
    return LiquidQuantWeight(
        q4=q4.reshape(n, k).astype(np.uint8),
        s=s.astype(np.uint8),
        a=(OFFSET_BIAS + mn).astype(np.uint8),
        s1=s1,
        group_size=group_size,
    )


def quantize_rows_int8(W: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization: the level 1 of LiquidQuant and QoQ, and W8.

    Args:
        W: float16 or float32 [N, K], already checked finite.
        limit: the largest code magnitude (119 for LiquidQuant/QoQ, 127 for W8).

    Returns:
        ``s1`` float32 [N] (``max|W[n]| / limit``, 1.0 for an all-zero row, and at least the
        smallest float32 subnormal, so a row of tiny subnormals does not get s1 = 0) and
        ``q8`` int32 [N, K] (``clip(rint(W / s1), -limit, limit)`` in float32).
    """
    Wf = W.astype(np.float32)
    amax = np.abs(Wf).max(axis=1) if Wf.shape[1] else np.zeros(Wf.shape[0], np.float32)
    tiny = np.finfo(np.float32).smallest_subnormal
    s1 = np.where(amax > 0, np.maximum(amax / np.float32(limit), tiny), np.float32(1.0))
    s1 = s1.astype(np.float32)
    q8 = np.clip(np.rint(Wf / s1[:, None]), -limit, limit).astype(np.int32)
    return s1, q8


def dequantize_int8(w: LiquidQuantWeight) -> np.ndarray:
    """Lane-wise dequantization: ``(q4 * s + a) XOR 0x80`` per byte, as int8 [N, K].

    This equals ``q4 * s + min`` of each group (``min = a - 128``).
    """
    if not isinstance(w, LiquidQuantWeight):
        raise TypeError(f"expected a LiquidQuantWeight; got {type(w).__name__}")
    u = _lane_sums(w.q4, w.s, w.a, w.group_size)
    return (u ^ XOR_MASK_BYTE).astype(np.uint8).view(np.int8)


def dequant_word(word, s, a):
    """The kernel's dequant of one 32-bit register: ``(word * s + a * 0x01010101) ^ 0x80808080``.

    Args:
        word: uint32 (scalar or array), four codes 0..15, one per byte lane.
        s: the group's step 1..16 (broadcastable to ``word``).
        a: the group's stored offset (broadcastable to ``word``).

    Returns:
        uint32 words whose bytes are the four int8 weights (little-endian lanes), computed with
        32-bit wrap-around exactly as IMAD and LOP3 do (one multiply-add, one XOR).
    """
    word = np.asarray(word, dtype=np.uint32)
    s32 = np.asarray(s, dtype=np.uint32)
    a32 = np.asarray(a, dtype=np.uint32) * np.uint32(BYTE_BROADCAST)
    return (word * s32 + a32) ^ np.uint32(XOR_MASK_WORD)


def dequantize_int8_packed(w: LiquidQuantWeight) -> np.ndarray:
    """Instruction-level dequantization through 32-bit words of 4 codes, as int8 [N, K].

    Four consecutive codes of a row form one little-endian uint32 (codes are 0..15, so each
    byte lane holds one code), then ``dequant_word`` runs one multiply-add and one XOR on the
    whole word. Must equal ``dequantize_int8`` bit for bit; that no byte lane carries into the
    next is exactly what makes the two agree.
    """
    if not isinstance(w, LiquidQuantWeight):
        raise TypeError(f"expected a LiquidQuantWeight; got {type(w).__name__}")
    n, k = w.shape
    g = w.group_size
    words = np.ascontiguousarray(w.q4).view(np.uint32).reshape(n, k // g, g // 4)
    out = dequant_word(words, w.s[..., None], w.a[..., None])
    return out.view(np.int8).reshape(n, k)


def quantize_activation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token symmetric int8 quantization of activations.

    Args:
        X: float16 or float32 [M, K], finite (M may be 0).

    Returns:
        ``x_i8`` int8 [M, K] = ``clip(rint(X / s_x), -127, 127)`` and ``s_x`` float32 [M] =
        ``max|X[m]| / 127`` (1.0 for an all-zero row), both in float32 arithmetic.
    """
    X = v.as_matrix("X", X, (np.float16, np.float32))
    if X.shape[1] == 0:
        raise ValueError("X must have K > 0 columns")
    v.require_finite("X", X)
    s_x, q = quantize_rows_int8(X, ACT_LIMIT)
    return q.astype(np.int8), s_x
