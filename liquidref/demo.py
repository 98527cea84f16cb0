"""``liquidref demo``: quantize a realistic layer with every scheme and run the W4A8 oracle.

The demo is a list of sections (``SECTIONS``). A section is a function
``section(out_dir, ctx) -> list[str]``: it may write figures into ``out_dir`` and returns the
lines to print. ``ctx`` (a ``DemoContext``) holds the layer, the activations and everything
computed so far, so later sections (the tiled pipeline, the emulator, the GPU kernel) can be
appended to ``SECTIONS`` and reuse the quantized weights::

    def section_gpu(out_dir, ctx):
        w = ctx.quantized("lqq-g64")
        ...
        return ["GPU kernel: bit-exact with the oracle"]

    SECTIONS.append(section_gpu)

Usage: ``liquidref demo [--out DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .baselines import SCHEMES, QoQWeight, qoq_dequantize_exact, qoq_int8_headroom, quantize_qoq
from .constants import OFFSET_BIAS
from .gemm import gemm, w4a8_linear
from .quant import LiquidQuantWeight, dequantize_int8, quantize_activation

DEFAULT_OUT = "liquidref-out"


@dataclass(frozen=True)
class DemoSize:
    """The layer and batch of one demo run: weight [n, k], activations [m, k]."""

    n: int
    k: int
    m: int


FULL = DemoSize(n=4096, k=4096, m=64)  # a Llama-3-8B attention projection, 64 tokens
QUICK = DemoSize(n=512, k=1024, m=16)


def default_weight(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic float16 [n, k] weight that looks like an LLM linear layer.

    Student-t entries with 5 degrees of freedom (heavy tails; real layers have kurtosis well
    above a Gaussian's), standard deviation about 0.02, a log-normal spread of the output
    channels' scales, and ``max(2, k // 512)`` outlier input channels scaled by 8.

    Returns:
        ``(W, outlier_columns)``: float16 [n, k] and the int64 indices of the outlier columns.
    """
    rng = np.random.default_rng(seed)
    dof = 5.0
    W = rng.standard_t(dof, (n, k)).astype(np.float32) * np.float32(0.02 / np.sqrt(dof / (dof - 2)))
    W *= rng.lognormal(0.0, 0.25, n).astype(np.float32)[:, None]
    outliers = np.sort(rng.choice(k, size=max(2, k // 512), replace=False))
    W[:, outliers] *= 8
    return W.astype(np.float16), outliers


def default_activations(m: int, k: int, seed: int = 1) -> np.ndarray:
    """Deterministic float16 [m, k] activations: Gaussian tokens, 0.5% outlier channels x 20."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, k)).astype(np.float32)
    X[:, rng.choice(k, size=max(1, k // 200), replace=False)] *= 20
    return X.astype(np.float16)


@dataclass
class DemoContext:
    """What the sections share: inputs, and results computed on first use."""

    size: DemoSize
    weight: np.ndarray
    outlier_columns: np.ndarray
    activations: np.ndarray
    figures: list[Path] = field(default_factory=list)
    _quantized: dict[str, Any] = field(default_factory=dict)
    _seconds: dict[str, float] = field(default_factory=dict)

    def quantized(self, name: str):
        """The weight quantized with ``SCHEMES[name]`` (computed once)."""
        if name not in self._quantized:
            start = time.perf_counter()
            self._quantized[name] = SCHEMES[name].quantize(self.weight)
            self._seconds[name] = time.perf_counter() - start
        return self._quantized[name]

    def quantize_seconds(self, name: str) -> float:
        """Wall time of ``SCHEMES[name].quantize`` on the layer."""
        self.quantized(name)
        return self._seconds[name]


Section = Callable[[Path, DemoContext], "list[str]"]


def _sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    noise = np.sum((reference - approximation) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


def _relative_rms(reference: np.ndarray, approximation: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(np.linalg.norm(reference - approximation) / np.linalg.norm(reference))


def overflow_margin(weight) -> str:
    """How far the scheme's int8 dequant stays from overflowing, as table text.

    LiquidQuant: ``255 - max(q4 * s + a)``, the unused top of the byte lane (0 means some lane
    reaches 255 without carrying). QoQ: the int8 headroom of the exact values. Others: "-".
    """
    if isinstance(weight, LiquidQuantWeight):
        lanes = dequantize_int8(weight).view(np.uint8) ^ np.uint8(0x80)  # back to u = q4*s + a
        return f"{255 - int(lanes.max())} (lane)"
    if isinstance(weight, QoQWeight):
        return f"{qoq_int8_headroom(weight)} (int8)"
    return "-"


def _save(fig, out_dir: Path, name: str, ctx: DemoContext) -> Path:
    path = out_dir / name
    fig.savefig(path, dpi=110)
    ctx.figures.append(path)
    return path


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure  # Agg canvas; no pyplot, no global backend change

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


# --- sections -----------------------------------------------------------------------------


def section_layer(out_dir: Path, ctx: DemoContext) -> list[str]:
    """The built-in layer and activations."""
    W = ctx.weight.astype(np.float64)
    centered = W - W.mean()
    kurtosis = float(np.mean(centered**4) / np.mean(centered**2) ** 2)
    n, k = W.shape
    shown = ", ".join(map(str, ctx.outlier_columns[:8]))
    if ctx.outlier_columns.size > 8:
        shown += " ..."
    return [
        f"weight W: float16 [{n}, {k}], Student-t(5) entries, std {W.std():.4f}, "
        f"max |W| {np.abs(W).max():.3f}, kurtosis {kurtosis:.1f} (Gaussian: 3)",
        f"  {ctx.outlier_columns.size} outlier input channels (x8): columns {shown}",
        f"activations X: float16 [{ctx.activations.shape[0]}, {k}], Gaussian with 0.5% outlier "
        "channels (x20)",
    ]


def section_schemes(out_dir: Path, ctx: DemoContext) -> list[str]:
    """Every scheme on the layer: storage, weight error, overflow margin; two figures."""
    W = ctx.weight.astype(np.float32)
    header = (
        f"{'scheme':<16}{'bits/weight':>12}{'rel. RMS err':>14}{'SQNR dB':>9}"
        f"{'max |err|':>11}{'overflow margin':>17}{'quantize s':>12}"
    )
    lines = [header, "-" * len(header)]
    errors = {}
    for name, scheme in SCHEMES.items():
        weight = ctx.quantized(name)
        W_hat = scheme.dequantize(weight)
        errors[name] = (W - W_hat).ravel()
        lines.append(
            f"{name:<16}{scheme.bits_per_weight(weight):>12.3f}"
            f"{_relative_rms(W, W_hat):>14.4f}{_sqnr_db(W, W_hat):>9.2f}"
            f"{np.abs(errors[name]).max():>11.2e}{overflow_margin(weight):>17}"
            f"{ctx.quantize_seconds(name):>12.2f}"
        )

    qoq_unprotected = quantize_qoq(ctx.weight, protective_range=False)
    exact = qoq_dequantize_exact(qoq_unprotected)
    overflowing = int(np.count_nonzero((exact > 127) | (exact < -128)))
    lines += [
        "",
        f"QoQ without its protective range ([-127, 127] at level 1): {overflowing} of {exact.size} "
        f"weights leave int8 (headroom {qoq_int8_headroom(qoq_unprotected)}); the kernel's "
        "per-byte add wraps them around.",
        "LiquidQuant stores a = 128 + min, so q4 * s + a never passes 255 and one IMAD + XOR "
        "per 4 weights dequantizes with no carry.",
    ]

    fig, ax = _figure()
    limit = max(float(np.abs(e).max()) for n, e in errors.items() if n != "w8-per-channel")
    bins = np.linspace(-limit, limit, 201)
    for name, error in errors.items():
        counts, edges = np.histogram(error, bins=bins)
        ax.stairs(np.maximum(counts, 0.1), edges, label=name)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.set_xlabel("W - dequantized W")
    ax.set_ylabel("weights")
    ax.set_title("Weight error distribution per scheme")
    ax.legend()
    error_path = _save(fig, out_dir, "weight_error_histogram.png", ctx)

    fig, ax = _figure()
    steps = {
        "lqq-g64 (s, group 64)": ctx.quantized("lqq-g64").s,
        "qoq-g128 (s, group 128)": ctx.quantized("qoq-g128").s,
    }
    largest = max(int(s.max()) for s in steps.values())
    values = np.arange(1, largest + 1)
    width = 0.4
    for offset, (label, s) in zip((-width / 2, width / 2), steps.items()):
        counts = np.bincount(s.ravel(), minlength=largest + 1)[1:]
        ax.bar(values + offset, counts / s.size, width=width, label=label)
    ax.set_xticks(values)
    ax.set_xlabel("level-2 step s")
    ax.set_ylabel("fraction of groups")
    ax.set_title("Per-group step sizes")
    ax.legend()
    step_path = _save(fig, out_dir, "step_sizes.png", ctx)
    lines += ["", f"figures: {error_path}", f"         {step_path}"]
    return lines


def section_gemm(out_dir: Path, ctx: DemoContext) -> list[str]:
    """The W4A8 GEMM through the oracle, and every scheme's linear, against the float GEMM."""
    X = ctx.activations
    reference = X.astype(np.float64) @ ctx.weight.astype(np.float64).T
    m, n, k = X.shape[0], ctx.weight.shape[0], X.shape[1]

    w = ctx.quantized("lqq-g64")
    x_i8, s_x = quantize_activation(X)
    start = time.perf_counter()
    y = gemm(x_i8, s_x, w)
    seconds = time.perf_counter() - start
    # spot check of the int32 accumulators against int64 brute force on some output features
    rows = slice(0, min(n, 128))
    s = np.repeat(w.s[rows].astype(np.int64), w.group_size, axis=1)
    a = np.repeat(w.a[rows].astype(np.int64), w.group_size, axis=1)
    w_i8 = w.q4[rows].astype(np.int64) * s + a - OFFSET_BIAS  # the dequant's spec
    acc = x_i8.astype(np.int64) @ w_i8.T
    expected = (acc.astype(np.float32) * (w.s1[rows][None, :] * s_x[:, None])).astype(np.float16)
    exact = np.array_equal(y[:, rows].view(np.uint16), expected.view(np.uint16))
    lines = [
        f"W4A8 GEMM (LiquidQuant oracle): M={m}, N={n}, K={k} in {seconds * 1e3:.0f} ms "
        f"(exact int32 via float64 BLAS)",
        f"  fp16 output bytes equal the int64 brute force on {rows.stop} output features: "
        f"{'yes' if exact else 'NO'}",
        "",
        f"{'scheme':<16}{'output rel. RMS err':>21}{'SQNR dB':>9}",
    ]
    fig, ax = _figure()
    spread = float(np.sqrt(np.mean(reference**2)))
    for name, scheme in SCHEMES.items():
        out = scheme.linear(X, ctx.quantized(name)).astype(np.float64)
        lines.append(
            f"{name:<16}{_relative_rms(reference, out):>21.4f}{_sqnr_db(reference, out):>9.2f}"
        )
        relative = (out - reference).ravel() / spread
        counts, edges = np.histogram(relative, bins=np.linspace(-1.0, 1.0, 161))
        ax.stairs(np.maximum(counts, 0.1), edges, label=name)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.set_xlabel("(Y - Y_float) / rms(Y_float)")
    ax.set_ylabel("outputs")
    ax.set_title(f"GEMM output error against the float GEMM, M={m}, N={n}, K={k}")
    ax.legend()
    path = _save(fig, out_dir, "gemm_error.png", ctx)
    lines += ["", f"figure: {path}"]
    return lines


def section_tiled(out_dir: Path, ctx: DemoContext) -> list[str]:
    """The kernel's tiled pipeline, replayed in NumPy, and its schedule model"""
    from . import tiled

    return tiled.demo_section(out_dir)


def section_emulator(out_dir: Path, ctx: DemoContext) -> list[str]:
    """The warp-level emulator: overflow safety and shared-memory layouts"""
    import emulator

    return emulator.demo_section(out_dir)


def section_gpu(out_dir: Path, ctx: DemoContext) -> list[str]:
    """The GPU kernel on the demo layer (skipped without a CUDA GPU)"""
    from gpu import api, runtime

    try:
        cupy = runtime.require_gpu()
    except RuntimeError as error:
        return [
            f"skipped: {error}",
            "(docs/performance.md and docs/performance-h100.md hold the numbers measured on an H200"
            " and an H100)",
        ]
    w = ctx.quantized("lqq-g64")
    X = ctx.activations.astype(np.float16)
    want = w4a8_linear(X, w)
    dw = api.upload(w)
    lines = []
    for backend in api.available_backends():
        got = cupy.asnumpy(api.linear(cupy.asarray(X), dw, backend=backend))
        same = np.array_equal(got.view(np.uint16), want.view(np.uint16))
        lines.append(f"{backend:>20}: {'bit-exact with the oracle' if same else 'MISMATCH with the oracle'}")
        if not same:
            raise AssertionError(f"the {backend} GPU backend disagrees with liquidref on the demo layer")
    return lines


SECTIONS: list[Section] = [
    section_layer,
    section_schemes,
    section_gemm,
    section_tiled,
    section_emulator,
    section_gpu,
]
"""The demo's sections, run in order."""


def make_context(size: DemoSize) -> DemoContext:
    """The built-in inputs for ``size``."""
    W, outliers = default_weight(size.n, size.k)
    return DemoContext(size=size, weight=W, outlier_columns=outliers,
                       activations=default_activations(size.m, size.k))


def main(argv: list[str] | None = None) -> int:
    """Run every section, print its lines, write figures to ``--out``; return 0."""
    parser = argparse.ArgumentParser(
        prog="liquidref demo",
        description="Quantize a realistic LLM layer with LiquidQuant, QoQ, RTN and W8, print "
        "a comparison table, run the W4A8 oracle GEMM, and write figures.",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"figure folder (default ./{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smaller layer ({QUICK.n} x {QUICK.k}, M={QUICK.m}) instead of "
        f"{FULL.n} x {FULL.k}, M={FULL.m}",
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = QUICK if args.quick else FULL
    start = time.perf_counter()
    ctx = make_context(size)
    for section in SECTIONS:
        title = (section.__doc__ or section.__name__).strip().splitlines()[0]
        print(f"\n== {title}")
        for line in section(out_dir, ctx):
            print(line)
    seconds = time.perf_counter() - start
    figures = sorted(out_dir.glob("*.png"))
    print(f"\n{len(figures)} figures in {out_dir.resolve()}; {seconds:.1f} s")
    return 0
