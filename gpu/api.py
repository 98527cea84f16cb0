"""The GPU W4A8 API: upload a weight, quantize activations, run the GEMM through a backend.

Data on the device (all CuPy arrays; torch CUDA tensors are accepted everywhere through DLPack,
without a copy, and results come back as torch tensors when the input was one)::

    DeviceWeight   codes uint8 [N/64, K/64, 2048]   Dual-MMA packed 4-bit codes (liquidref.layout)
                   meta  uint8 [N/64, K/64, 128]    per-block (s, a) words
                   s1    float32 [N]                level-1 row scales
    activations    X fp16 [M, K]  ->  x_i8 int8 [M, K] (row-major) or
                                      x_tiled int8 [M_pad/8, K/16, 8, 16] (core matrices,
                                      liquidref.tile_activation), and s_x float32 [M]
    output         Y fp16 [M, N] = float16(float32(acc) * (s1[n] * s_x[m]))

Backends compute ``Y`` from ``x_tiled``; each is a function ``fn(x_tiled, s_x, m, dw, out)`` that
writes the fp16 ``out`` [M, N] (M >= 1, arguments already validated), registered with
``register_backend(name, fn, available)``. This module registers ``"mma_sync"`` (portable,
sm_80+); ``gpu.hopper`` (imported on first use when it exists) registers ``"hopper"``.
``backend="auto"`` picks ``"hopper"`` when it is registered and the device is sm_90, else
``"mma_sync"``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

import liquidref
from liquidref.constants import BLOCK_BYTES, BLOCK_K, BLOCK_ROWS, MAX_EXACT_K, META_BYTES_PER_BLOCK
from liquidref.layout import ACT_CORE_BYTES, ACT_CORE_ROWS

from . import runtime

INT32_MAX = 2**31 - 1
QUANTIZE_SOURCE = "quantize_act.cu"
MMA_SYNC_SOURCE = "w4a8_mma_sync.cu"
QUANTIZE_MIN_THREADS = 128
QUANTIZE_MAX_THREADS = 1024  # QUANT_MAX_THREADS in quantize_act.cu (tested)
QUANTIZE_ROWS_PER_SM_TARGET = 2  # with fewer rows than 2 per SM, rows get more threads
QUANTIZE_MIN_CHUNKS_PER_SLICE = 64  # 16-k chunks: a slice of a row is at least 1024 k
# At most 4 CTAs per row: each reads its whole row for the amax, and fewer CTAs leave more SMs
# free for the GEMM launched behind the quantizer (H200, M = 16: 70B o 16.3 -> 15.6 us, 8B down
# 16.0 -> 15.3 us; M = 1 and 4 within +-0.3 us).
QUANTIZE_MAX_SLICES = 4
SM_MAX_THREADS = 2048  # resident threads per SM (sm_80, sm_90); the quantizer's <= 32 registers
                       # per thread never bind before it (tests/gpu/test_compile.py checks them)


def quantize_slices(rows: int, k: int, num_sms: int = 132) -> int:
    """CTAs per row of the activation quantizer (each quantizes one slice of the row's chunks).

    With fewer rows than about two per SM, a row is cut into at most ``QUANTIZE_MAX_SLICES``
    slices of at least 64 chunks (1024 k) until the rows fill the SMs; many rows get one CTA
    each. The slices never make more CTAs than the SMs hold at once (``quantize_threads`` per
    CTA): a second wave of CTAs, each reading its whole row for the amax, would double the
    quantizer's time.
    """
    if rows >= QUANTIZE_ROWS_PER_SM_TARGET * num_sms:
        return 1
    chunks = -(-k // ACT_CORE_BYTES)
    wanted = -(-QUANTIZE_ROWS_PER_SM_TARGET * num_sms // max(rows, 1))
    resident = SM_MAX_THREADS // quantize_threads(rows, k, num_sms) * num_sms
    one_wave = resident // max(rows, 1)
    return max(1, min(wanted, one_wave, chunks // QUANTIZE_MIN_CHUNKS_PER_SLICE, QUANTIZE_MAX_SLICES))


def quantize_threads(rows: int, k: int, num_sms: int = 132) -> int:
    """Threads per row of the activation quantizer (a multiple of 32 in 128..1024).

    Many rows fill the GPU with 128-thread CTAs; a few rows (decode) would leave one CTA to
    quantize a long row alone, so each row then gets up to one thread per 16-k chunk.
    """
    if rows >= QUANTIZE_ROWS_PER_SM_TARGET * num_sms:
        return QUANTIZE_MIN_THREADS
    chunks = -(-k // ACT_CORE_BYTES)
    threads = -(-chunks // 32) * 32
    return max(QUANTIZE_MIN_THREADS, min(QUANTIZE_MAX_THREADS, threads))
MMA_SYNC_THREADS = 128  # 4 warps = one 64-row packed block
MMA_SYNC_TOKEN_GROUPS = (1, 2, 4)  # 8-token groups per CTA the kernel is instantiated for


def quantize_kernel_name(tiled: bool) -> str:
    """C++ name of the activation quantizer for one output layout."""
    return f"liquidref::quantize_act_kernel<{'true' if tiled else 'false'}>"


def mma_sync_kernel_name(token_groups: int) -> str:
    """C++ name of the mma.sync GEMM for ``token_groups`` 8-token groups per CTA."""
    return f"liquidref::w4a8_mma_sync_kernel<{token_groups}>"


# --- the weight ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DeviceWeight:
    """A packed LiquidQuant weight on the GPU.

    Attributes:
        codes: CuPy uint8 [N/64, K/64, 2048] (Dual-MMA layout, ``liquidref.pack_weight``).
        meta: CuPy uint8 [N/64, K/64, 128].
        s1: CuPy float32 [N].
        n: output features (a multiple of 64).
        k: input features (a multiple of 64, at most ``MAX_EXACT_K``).
    """

    codes: object
    meta: object
    s1: object
    n: int
    k: int

    def __post_init__(self) -> None:
        for name in ("n", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
            multiple = BLOCK_ROWS if name == "n" else BLOCK_K
            if value % multiple:
                raise ValueError(f"{name} = {value} must be a multiple of {multiple}")
        if self.k > MAX_EXACT_K:
            raise ValueError(f"K = {self.k} exceeds {MAX_EXACT_K}: the int32 accumulator could overflow")
        grid = (self.n // BLOCK_ROWS, self.k // BLOCK_K)
        runtime.device_array("codes", self.codes, np.uint8, (*grid, BLOCK_BYTES))
        runtime.device_array("meta", self.meta, np.uint8, (*grid, META_BYTES_PER_BLOCK))
        runtime.device_array("s1", self.s1, np.float32, (self.n,), alignment=4)

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K)."""
        return self.n, self.k


def upload(w) -> DeviceWeight:
    """Copy a weight to the GPU in the packed layout.

    Args:
        w: a ``liquidref.LiquidQuantWeight`` (group size 64, N a multiple of 64; packed with
            ``liquidref.pack_weight``) or a ``liquidref.PackedWeight``.
    """
    if isinstance(w, liquidref.LiquidQuantWeight):
        w = liquidref.pack_weight(w)
    if not isinstance(w, liquidref.PackedWeight):
        raise TypeError(
            f"expected a liquidref.LiquidQuantWeight or PackedWeight; got {type(w).__name__}"
        )
    cupy = runtime.require_gpu()
    return DeviceWeight(
        codes=cupy.asarray(w.codes),
        meta=cupy.asarray(w.meta),
        s1=cupy.asarray(w.s1),
        n=w.n,
        k=w.k,
    )


# --- activations ---------------------------------------------------------------------------


def _check_activation_k(k: int) -> None:
    if k <= 0 or k % ACT_CORE_BYTES:
        raise ValueError(f"X: K = {k} must be a positive multiple of {ACT_CORE_BYTES}")


def padded_tokens(m: int) -> int:
    """M rounded up to a multiple of 8 (the token rows of the tiled layout)."""
    return -(-m // ACT_CORE_ROWS) * ACT_CORE_ROWS


def tiled_activation_shape(m: int, k: int) -> tuple[int, int, int, int]:
    """The shape of M tokens' activations in the core-matrix layout: [M_pad/8, K/16, 8, 16]."""
    return padded_tokens(m) // ACT_CORE_ROWS, k // ACT_CORE_BYTES, ACT_CORE_ROWS, ACT_CORE_BYTES


_quantize_kernels: dict[tuple[int, bool], object] = {}
_scratch_words: dict[int, object] = {}


def _quantize_kernel(tiled: bool):
    """The quantizer kernel, compiled once per device (compile_module hashes every source)."""
    cupy = runtime.require_gpu()
    key = (cupy.cuda.Device().id, tiled)
    if key not in _quantize_kernels:
        module = runtime.compile_module(
            QUANTIZE_SOURCE, (quantize_kernel_name(False), quantize_kernel_name(True))
        )
        _quantize_kernels[key] = module.get_function(quantize_kernel_name(tiled))
    return _quantize_kernels[key]


def _scratch_word():
    cupy = runtime.require_gpu()
    device = cupy.cuda.Device().id
    if device not in _scratch_words:
        _scratch_words[device] = cupy.full((1,), INT32_MAX, np.int32)
    return _scratch_words[device]


def _quantize(X, tiled: bool, check_finite: bool, out):
    cupy = runtime.require_gpu()
    like = X
    X = runtime.device_array("X", X, np.float16, (None, None))
    m, k = X.shape
    _check_activation_k(k)
    rows_out = padded_tokens(m) if tiled else m
    x_shape = (rows_out // ACT_CORE_ROWS, k // ACT_CORE_BYTES, ACT_CORE_ROWS, ACT_CORE_BYTES) if tiled else (m, k)
    if out is None:
        x_out = cupy.empty(x_shape, np.int8)
        s_x = cupy.empty((m,), np.float32)
    else:
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError("out must be a tuple (x_out, s_x) of device arrays")
        x_out = runtime.device_array("out[0]", out[0], np.int8, x_shape)
        s_x = runtime.device_array("out[1]", out[1], np.float32, (m,), alignment=4)
    if rows_out:
        # The non-finite-row flag is only read (and so only reset, one more launch) when
        # check_finite; otherwise the kernel writes into a scratch word nobody reads.
        bad_row = cupy.full((1,), INT32_MAX, np.int32) if check_finite else _scratch_word()
        kernel = _quantize_kernel(tiled)
        kernel(
            (rows_out, quantize_slices(rows_out, k)),
            (quantize_threads(rows_out, k),),
            (X, x_out, s_x, bad_row, np.int32(m), np.int32(k), np.int32(rows_out)),
        )
        if check_finite:
            row = int(bad_row.get()[0])
            if row != INT32_MAX:
                values = cupy.asnumpy(X[row]).astype(np.float32)
                col = int(np.argmin(np.isfinite(values)))
                raise ValueError(f"X must be finite; row {row} holds {values[col]} at column {col}")
    return runtime.to_caller(x_out, like), runtime.to_caller(s_x, like)


def quantize_activation(X, check_finite: bool = True, out=None):
    """Per-token int8 quantization on the GPU, bit-exact with ``liquidref.quantize_activation``.

    Args:
        X: fp16 [M, K] device array (CuPy or CUDA torch), K a positive multiple of 16.
        check_finite: raise ``ValueError`` naming the first row with a NaN or Inf (one device
            synchronization; pass False in timed loops).
        out: optional (x_i8, s_x) device arrays to write into.

    Returns:
        (x_i8 int8 [M, K], s_x float32 [M]).
    """
    return _quantize(X, False, check_finite, out)


def quantize_activation_tiled(X, check_finite: bool = True, out=None):
    """Like ``quantize_activation`` but writes x in the core-matrix layout the GEMM reads.

    Returns:
        (x_tiled int8 [M_pad/8, K/16, 8, 16] = ``liquidref.tile_activation(x_i8)``, rows
        M..M_pad-1 zero; s_x float32 [M]).
    """
    return _quantize(X, True, check_finite, out)


def tile_activation(x_i8):
    """``liquidref.tile_activation`` on the device: int8 [M, K] -> int8 [M_pad/8, K/16, 8, 16]."""
    cupy = runtime.require_gpu()
    x_i8 = runtime.device_array("x_i8", x_i8, np.int8, (None, None), alignment=1)
    m, k = x_i8.shape
    _check_activation_k(k)
    m_pad = padded_tokens(m)
    padded = cupy.zeros((m_pad, k), np.int8)
    padded[:m] = x_i8
    tiled = padded.reshape(m_pad // ACT_CORE_ROWS, ACT_CORE_ROWS, k // ACT_CORE_BYTES, ACT_CORE_BYTES)
    return cupy.ascontiguousarray(tiled.transpose(0, 2, 1, 3))


# --- backends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A registered GEMM implementation (see the module docstring)."""

    name: str
    fn: Callable
    available: Callable[[], bool]
    # fn accepts programmatic=True: it may launch before the activation quantizer has finished
    # and waits for it on the device (programmatic dependent launch, see gpu.hopper)
    programmatic: bool = False


_backends: dict[str, Backend] = {}
_optional_backends_loaded = False


def register_backend(name: str, fn: Callable, available: Callable[[], bool], programmatic: bool = False) -> None:
    """Register (or replace) a GEMM backend ``fn(x_tiled, s_x, m, dw, out)``.

    ``available()`` says whether it can run on the current machine (no exception expected).
    ``programmatic``: ``fn`` also takes ``programmatic=True`` from ``linear``, right after the
    quantizer's launch (see ``gpu.hopper``).
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"backend name must be a non-empty string other than 'auto'; got {name!r}")
    if not callable(fn) or not callable(available):
        raise TypeError("fn and available must be callable")
    _backends[name] = Backend(name, fn, available, bool(programmatic))


def _load_optional_backends() -> None:
    """Import gpu.hopper once, if the module exists (it registers "hopper" on import)."""
    global _optional_backends_loaded
    if not _optional_backends_loaded:
        _optional_backends_loaded = True
        if importlib.util.find_spec("gpu.hopper") is not None:
            importlib.import_module("gpu.hopper")


def registered_backends() -> list[str]:
    """Names of every registered backend, available here or not."""
    _load_optional_backends()
    return sorted(_backends)


def available_backends() -> list[str]:
    """Names of the registered backends that can run on this machine."""
    return [name for name in registered_backends() if _backends[name].available()]


def resolve_backend(name: str, capability: tuple[int, int] | None = None) -> Backend:
    """The backend ``name`` stands for (``"auto"``: hopper on sm_90 when registered, else mma_sync).

    Args:
        name: a registered name or ``"auto"``.
        capability: the device's (major, minor); read from the device when None and needed.
    """
    _load_optional_backends()
    if name == "auto":
        if capability is None:
            capability = runtime.device_capability()
        name = "hopper" if "hopper" in _backends and tuple(capability) == (9, 0) else "mma_sync"
    if name not in _backends:
        raise ValueError(f"unknown backend {name!r}; registered: {registered_backends()} (or 'auto')")
    backend = _backends[name]
    if not backend.available():
        raise RuntimeError(f"backend {name!r} cannot run on this machine; available: {available_backends()}")
    return backend


# --- the GEMM ------------------------------------------------------------------------------


def _check_dw(dw) -> DeviceWeight:
    if not isinstance(dw, DeviceWeight):
        raise TypeError(f"dw must be a gpu.api.DeviceWeight (see upload); got {type(dw).__name__}")
    return dw


def _output(out, m: int, n: int):
    cupy = runtime.require_gpu()
    if out is None:
        return cupy.empty((m, n), np.float16)
    return runtime.device_array("out", out, np.float16, (m, n))


def gemm_tiled(x_tiled, s_x, m: int, dw: DeviceWeight, backend: str = "auto", out=None):
    """Y = x W^T with the contract's epilogue, from tiled activations.

    Args:
        x_tiled: int8 [M_pad/8, K/16, 8, 16] (``quantize_activation_tiled``).
        s_x: float32 [M].
        m: M, the number of tokens (M_pad = M rounded up to 8).
        dw: the ``DeviceWeight`` [N, K].
        backend: a registered name or ``"auto"``.
        out: optional fp16 [M, N] device array to write into.

    Returns:
        fp16 [M, N] (torch when ``x_tiled`` was torch).
    """
    return _gemm_tiled(x_tiled, s_x, m, dw, backend, out, after_quantize=False)


def _gemm_tiled(x_tiled, s_x, m, dw, backend, out, after_quantize: bool):
    """``gemm_tiled``; ``after_quantize``: the quantizer that wrote x_tiled was the last launch."""
    dw = _check_dw(dw)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(f"m must be a non-negative int; got {m!r}")
    m = int(m)
    like = x_tiled
    x_tiled = runtime.device_array("x_tiled", x_tiled, np.int8, tiled_activation_shape(m, dw.k))
    s_x = runtime.device_array("s_x", s_x, np.float32, (m,), alignment=4)
    y = _output(out, m, dw.n)
    if m:
        chosen = resolve_backend(backend)
        if after_quantize and chosen.programmatic:
            chosen.fn(x_tiled, s_x, m, dw, y, programmatic=True)
        else:
            chosen.fn(x_tiled, s_x, m, dw, y)
    return runtime.to_caller(y, like)


def gemm(x_i8, s_x, dw: DeviceWeight, backend: str = "auto", out=None):
    """The W4A8 GEMM on the GPU, bit-exact with ``liquidref.gemm``.

    Args:
        x_i8: int8 [M, K] device array (row-major; tiled on the device first).
        s_x: float32 [M].
        dw: the ``DeviceWeight`` [N, K].
        backend: a registered name or ``"auto"``.
        out: optional fp16 [M, N] device array to write into.

    Returns:
        fp16 [M, N] (torch when ``x_i8`` was torch).
    """
    dw = _check_dw(dw)
    like = x_i8
    x_i8 = runtime.device_array("x_i8", x_i8, np.int8, (None, dw.k), alignment=1)
    y = gemm_tiled(tile_activation(x_i8), s_x, x_i8.shape[0], dw, backend, out)
    return runtime.to_caller(y, like)


def linear(X, dw: DeviceWeight, backend: str = "auto", check_finite: bool = True, out=None):
    """Quantize fp16 activations per token and run the GEMM: ``liquidref.w4a8_linear`` on the GPU.

    Args:
        X: fp16 [M, K] device array (CuPy or CUDA torch); M = 0 gives an empty result.
        dw: the ``DeviceWeight`` [N, K].
        backend: a registered name or ``"auto"``.
        check_finite: raise on NaN/Inf in X (one device synchronization).
        out: optional fp16 [M, N] device array to write into.

    Returns:
        fp16 [M, N] (torch when X was torch).
    """
    dw = _check_dw(dw)
    like = X
    X = runtime.device_array("X", X, np.float16, (None, dw.k))
    x_tiled, s_x = quantize_activation_tiled(X, check_finite=check_finite)
    y = _gemm_tiled(x_tiled, s_x, X.shape[0], dw, backend, out, after_quantize=True)
    return runtime.to_caller(y, like)


# --- the portable backend: mma.sync m16n8k32 (sm_80+) --------------------------------------


def mma_sync_token_groups(m: int) -> int:
    """8-token groups per CTA of the mma.sync kernel: the fewest that cover M, at most 4."""
    groups = padded_tokens(m) // ACT_CORE_ROWS
    return next(g for g in MMA_SYNC_TOKEN_GROUPS if g >= groups or g == MMA_SYNC_TOKEN_GROUPS[-1])


def mma_sync_grid(m: int, n: int, token_groups: int) -> tuple[int, int]:
    """(CTAs along weight rows, CTAs along tokens) of the mma.sync kernel."""
    groups = padded_tokens(m) // ACT_CORE_ROWS
    return n // BLOCK_ROWS, -(-groups // token_groups)


def _mma_sync_gemm(x_tiled, s_x, m: int, dw: DeviceWeight, out) -> None:
    """Backend "mma_sync": fp16 out [M, N] from validated arguments (M >= 1)."""
    token_groups = mma_sync_token_groups(m)
    module = runtime.compile_module(
        MMA_SYNC_SOURCE, tuple(mma_sync_kernel_name(g) for g in MMA_SYNC_TOKEN_GROUPS)
    )
    kernel = module.get_function(mma_sync_kernel_name(token_groups))
    kernel(
        mma_sync_grid(m, dw.n, token_groups),
        (MMA_SYNC_THREADS,),
        (dw.codes, dw.meta, dw.s1, x_tiled, s_x, out, np.int32(m), np.int32(dw.n), np.int32(dw.k)),
    )


def _mma_sync_available() -> bool:
    return runtime.gpu_available() and runtime.device_capability() >= (8, 0)


register_backend("mma_sync", _mma_sync_gemm, _mma_sync_available)
