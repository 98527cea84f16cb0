"""``liquidref bench``: our W4A8 kernels against cuBLAS and torch peers on Llama layer shapes.

How it measures (``ARCHITECTURE.md`` section 5; ``docs/performance.md`` explains it for readers):

* Shapes: the linear layers of Llama-3-8B and Llama-2-70B (``MODEL_SHAPES``), tokens M in
  ``DEFAULT_M``; every backend sees the same activations (fp16/bf16/fp8/int8 casts of one random
  fp32 matrix); weights are random in each backend's own format (never zeros).
* Ours: ``gpu.api.linear(X_fp16, dw, backend)`` end to end, so activation quantization and the
  fp16 epilogue are inside the timed region (``check_finite=False``: the NaN check's host read
  is a device synchronization). Peers time only their GEMM call, on inputs already in their
  format, which favours them.
* Before timing, each of our backends is checked once per shape on ``--check-m`` tokens against
  ``liquidref.w4a8_linear`` on a sample of output columns: fp16 bytes compared for equality.
* L2: each backend rotates ``rotation_copies`` copies of its weight, so the bytes read between
  two uses of one copy exceed twice the L2 size.
* Timing: one CUDA graph captures one pass over the copies; its replays are timed with CUDA
  events (adaptive count: about ``--target-ms`` of replays or ``--max-reps``, whichever comes
  first, and at least ``MIN_REPS``); the median replay time over the copies is the time per call.
  When capture fails the same loop runs on eager launches and the record says so.
* The floor: ``max(bytes / copy_bandwidth, 2 M N K / peak_8bit)``, with the copy bandwidth and
  the 8-bit tensor peak measured at the start of the same run (``measure_ceilings``); bytes are
  our weight bytes (codes + meta + s1) + fp16 X read + fp16 Y written (``floor_bytes``).

Outputs (``--out``): ``bench.json`` (everything, re-written after each shape so a killed run
keeps what it measured), ``bench.txt`` (the tables), ``bench.png`` (speed-up over cuBLAS bf16).
``--render-docs results.json`` writes the results section of ``docs/performance.md`` from a
results file; ``--render-summary results.json`` prints the summary. Neither needs a GPU. Both,
and the text report, end with the targets judged on the run and the ablation (``gpu.targets``).
``--build-only`` compiles and checks every backend at every M on a small shape (CuPy only).

Exit status: 0; 1 when one of our backends mismatched the oracle or raised; 2 when the bench
cannot run (no GPU, torch or CuPy; an unknown backend); 3 when a case hung for
``CASE_TIMEOUT_S`` (the results so far are written first).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from liquidref.constants import (
    BLOCK_BYTES,
    BLOCK_K,
    BLOCK_ROWS,
    GROUP_SIZE,
    META_BYTES_PER_BLOCK,
    OFFSET_BIAS,
    Q4_MAX,
    Q8_LIMIT,
    QOQ_GROUP_SIZE,
    STEP_MAX,
)

SCHEMA_VERSION = 1

# --- what is measured ----------------------------------------------------------------------

MODEL_SHAPES: dict[str, tuple[tuple[str, int, int], ...]] = {
    # model: (layer, N = output features, K = input features)
    "llama3-8b": (("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)),
    "llama2-70b": (("qkv", 10240, 8192), ("o", 8192, 8192), ("gate_up", 57344, 8192), ("down", 8192, 28672)),
}
DEFAULT_M = (1, 16, 64, 128, 256, 1024, 4096)
QUICK_SHAPES = ("llama3-8b:qkv", "llama3-8b:down", "llama2-70b:o", "llama2-70b:down")
QUICK_M = (1, 16, 128, 1024)

PEERS = ("cublas_bf16", "cublas_int8", "cublas_fp8", "torch_int4")
PEER_LABELS = {"cublas_bf16": "bf16", "cublas_int8": "int8", "cublas_fp8": "fp8", "torch_int4": "int4"}
INT4_PEER_GROUP = QOQ_GROUP_SIZE  # torch._weight_int4pack_mm group size (128)
INT_MM_MIN_ROWS = 17  # torch._int_mm needs M > 16 ...
INT_MM_ROW_MULTIPLE = 8  # ... and we keep M a multiple of 8 for cuBLASLt's int8 kernels

# Bytes of the dtypes that cross memory.
FP16_BYTES = 2
BF16_BYTES = 2
FP32_BYTES = 4
INT32_BYTES = 4

# Timing knobs (defaults of the command-line options).
DEFAULT_TARGET_MS = 50.0
DEFAULT_MAX_REPS = 100
MIN_REPS = 3
MAX_COPIES = 256  # rotation cap for tiny custom shapes (records say when it binds)
DEFAULT_CHECK_M = 5  # odd on purpose: exercises the padding of the token dimension
CASE_TIMEOUT_S = 90.0  # one case (check, warm-up with compilation, timing) taking longer is a hang
CHECK_COLUMN_BLOCKS = 3  # 64-row weight blocks sampled at the start, middle and end of N
FALLBACK_L2_BYTES = 60 * 1024**2  # H200's; used only if the device does not report its L2
COPY_CEILING_BYTES = 1024**3  # the device-to-device copy of the bandwidth ceiling
PEAK_GEMM_SIZE = 8192  # M = N = K of the 8-bit tensor-peak GEMM
BUILD_SHAPE = (256, 1024)  # (N, K) of --build-only: small, but every M compiles its kernel

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
DOCS_BEGIN = "<!-- BEGIN BENCH RESULTS (generated by `python -m gpu.bench --render-docs`) -->"
DOCS_END = "<!-- END BENCH RESULTS -->"
OUTPUT_FILES = ("bench.json", "bench.txt", "bench.png")


@dataclass(frozen=True)
class Shape:
    """One linear layer: ``Y[M, N] = X[M, K] W[N, K]^T``."""

    model: str
    layer: str
    n: int
    k: int

    @property
    def label(self) -> str:
        """``model:layer`` (``custom:NxK`` for shapes given as N x K)."""
        return f"{self.model}:{self.layer}"


def all_model_shapes() -> dict[str, Shape]:
    """Every named shape by label, in the order of ``MODEL_SHAPES``."""
    return {
        f"{model}:{layer}": Shape(model, layer, n, k)
        for model, layers in MODEL_SHAPES.items()
        for layer, n, k in layers
    }


def custom_shape(n: int, k: int) -> Shape:
    """A shape given as N x K; N and K must be positive multiples of 64 (the packed block)."""
    for name, value, multiple in (("N", n, BLOCK_ROWS), ("K", k, BLOCK_K)):
        if value <= 0 or value % multiple:
            raise ValueError(f"{name} = {value} must be a positive multiple of {multiple}")
    return Shape("custom", f"{n}x{k}", n, k)


def parse_shapes(spec: str) -> list[Shape]:
    """Shapes from a comma list of ``llama3-8b``, ``llama2-70b``, ``all``, ``model:layer`` or
    ``NxK`` (e.g. ``llama2-70b,4096x4096``); duplicates are dropped, order kept."""
    named = all_model_shapes()
    shapes: list[Shape] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item == "all":
            found = list(named.values())
        elif item in MODEL_SHAPES:
            found = [s for s in named.values() if s.model == item]
        elif item in named:
            found = [named[item]]
        else:
            text = item.lower().replace("×", "x")
            parts = text.split("x")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError(
                    f"unknown shape {item!r}: expected one of {sorted(MODEL_SHAPES)}, 'all', "
                    f"model:layer ({', '.join(named)}) or NxK like 4096x4096"
                )
            found = [custom_shape(int(parts[0]), int(parts[1]))]
        shapes += [s for s in found if s not in shapes]
    if not shapes:
        raise ValueError(f"no shapes in {spec!r}")
    return shapes


def parse_m_list(spec: str) -> list[int]:
    """Token counts from a comma list of positive integers (e.g. ``1,16,64``)."""
    values = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"M must be a positive integer; got {item!r} in {spec!r}")
        if int(item) not in values:
            values.append(int(item))
    if not values:
        raise ValueError(f"no token counts in {spec!r}")
    return values


def parse_backends(spec: str, ours_available: list[str]) -> tuple[list[str], list[str]]:
    """(our backends, peers) selected by a comma list of names, ``ours``, ``peers`` or ``all``.

    Args:
        spec: e.g. ``"all"``, ``"hopper,cublas_bf16"``, ``"ours,cublas_int8"``.
        ours_available: ``gpu.api.available_backends()``.
    """
    ours: list[str] = []
    peers: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item in ("all", "ours"):
            ours += [b for b in ours_available if b not in ours]
        if item in ("all", "peers"):
            peers += [p for p in PEERS if p not in peers]
        if item in ("all", "ours", "peers"):
            continue
        if item in PEERS:
            peers += [item] if item not in peers else []
        elif item in ours_available:
            ours += [item] if item not in ours else []
        else:
            raise ValueError(
                f"unknown backend {item!r}: ours available here {ours_available}, peers "
                f"{list(PEERS)}, or 'ours', 'peers', 'all'"
            )
    if not ours and not peers:
        raise ValueError(f"no backends selected by {spec!r}")
    return ours, peers


# --- bytes, operations, the floor ------------------------------------------------------------


def our_weight_bytes(n: int, k: int) -> int:
    """Bytes our kernel reads for an N x K weight: packed codes + per-block metadata + s1.

    Equals ``liquidref.pack_weight(w).nbytes`` (tested).
    """
    if n <= 0 or k <= 0 or n % BLOCK_ROWS or k % BLOCK_K:
        raise ValueError(f"N = {n} and K = {k} must be positive multiples of {BLOCK_ROWS} and {BLOCK_K}")
    blocks = (n // BLOCK_ROWS) * (k // BLOCK_K)
    return blocks * (BLOCK_BYTES + META_BYTES_PER_BLOCK) + FP32_BYTES * n


def floor_bytes(m: int, n: int, k: int) -> int:
    """The fewest bytes ``linear(X, W)`` moves: our weight bytes + fp16 X read + fp16 Y written.

    The timed region starts from fp16 X, so X counts at 2 bytes an element (read once).
    """
    return our_weight_bytes(n, k) + FP16_BYTES * m * k + FP16_BYTES * m * n


def gemm_ops(m: int, n: int, k: int) -> int:
    """Multiply-adds counted as two operations: ``2 M N K``."""
    return 2 * m * n * k


def floor_seconds(m: int, n: int, k: int, copy_bytes_per_s: float, peak_ops_per_s: float):
    """``(seconds, bound)``: ``max(bytes / bandwidth, ops / peak)`` and which term is larger
    (``"memory"`` or ``"compute"``)."""
    if copy_bytes_per_s <= 0 or peak_ops_per_s <= 0:
        raise ValueError("the ceilings must be positive")
    memory = floor_bytes(m, n, k) / copy_bytes_per_s
    compute = gemm_ops(m, n, k) / peak_ops_per_s
    return (memory, "memory") if memory >= compute else (compute, "compute")


def int_mm_rows(m: int) -> int:
    """Rows the cuBLAS int8 peer runs for M tokens: M rounded up to a multiple of 8, at least
    ``INT_MM_MIN_ROWS`` (torch._int_mm refuses M <= 16)."""
    rows = max(m, INT_MM_MIN_ROWS)
    return -(-rows // INT_MM_ROW_MULTIPLE) * INT_MM_ROW_MULTIPLE


def peer_weight_bytes(peer: str, n: int, k: int) -> int:
    """Bytes of one copy of a peer's weight (what its GEMM reads besides activations)."""
    if peer == "cublas_bf16":
        return BF16_BYTES * n * k
    if peer in ("cublas_int8", "cublas_fp8"):
        return n * k + (FP32_BYTES * n if peer == "cublas_fp8" else 0)
    if peer == "torch_int4":
        return n * k // 2 + (k // INT4_PEER_GROUP) * n * 2 * BF16_BYTES  # codes + (scale, zero)
    raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")


def peer_bytes(peer: str, m: int, n: int, k: int) -> int:
    """Bytes a peer's GEMM call moves: its weight + its activations + its output."""
    weight = peer_weight_bytes(peer, n, k)
    if peer == "cublas_bf16":
        return weight + BF16_BYTES * m * k + BF16_BYTES * m * n
    if peer == "cublas_int8":
        rows = int_mm_rows(m)
        return weight + rows * k + INT32_BYTES * rows * n
    if peer == "cublas_fp8":
        return weight + m * k + FP32_BYTES * m + BF16_BYTES * m * n
    return weight + BF16_BYTES * m * k + BF16_BYTES * m * n  # torch_int4: W4A16


def rotation_copies(bytes_per_copy: int, l2_bytes: int, max_copies: int = MAX_COPIES) -> int:
    """How many weight copies to rotate so that a copy is gone from L2 when it comes back.

    Between two uses of one copy the other ``copies - 1`` are read; they must total at least
    ``2 * l2_bytes``. A weight larger than twice the L2 cannot stay in it: one copy.
    The result is capped at ``max_copies``.
    """
    if bytes_per_copy <= 0 or l2_bytes <= 0:
        raise ValueError("bytes_per_copy and l2_bytes must be positive")
    if bytes_per_copy > 2 * l2_bytes:
        return 1
    return min(max_copies, 1 + -(-2 * l2_bytes // bytes_per_copy))


def rotation_defeats_l2(bytes_per_copy: int, copies: int, l2_bytes: int) -> bool:
    """True when ``copies`` copies keep each copy out of L2 between its uses."""
    return bytes_per_copy > 2 * l2_bytes or (copies - 1) * bytes_per_copy >= 2 * l2_bytes


def choose_reps(estimate_s: float, target_s: float, max_reps: int, min_reps: int = MIN_REPS) -> int:
    """Timed repetitions: enough to fill about ``target_s``, at most ``max_reps``, at least
    ``min_reps`` (for a median)."""
    if max_reps < 1 or min_reps < 1:
        raise ValueError("max_reps and min_reps must be >= 1")
    if estimate_s <= 0:
        return max_reps
    return max(min(min_reps, max_reps), min(max_reps, math.ceil(target_s / estimate_s)))


def geometric_mean(values) -> float | None:
    """Geometric mean of positive values; None for none."""
    values = [float(v) for v in values]
    if not values:
        return None
    if any(v <= 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"geometric mean needs positive finite values; got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


# --- the run plan, the time budget and the loop ------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One timing: a shape, a token count and a backend (``kind`` "ours" or "peer")."""

    shape: Shape
    m: int
    backend: str
    kind: str


def build_plan(shapes: list[Shape], ms: list[int], ours: list[str], peers: list[str]) -> list[Case]:
    """Cases in run order: shape by shape (weights are made once per shape), then M, ours first."""
    return [
        Case(shape, m, backend, kind)
        for shape in shapes
        for m in ms
        for backend, kind in [(b, "ours") for b in ours] + [(p, "peer") for p in peers]
    ]


class Budget:
    """A wall-clock budget: ``exhausted()`` once ``max_seconds`` have passed since creation.

    ``clock`` is injectable (tests pass a fake); ``None`` seconds means no limit.
    """

    def __init__(self, max_seconds: float | None, clock: Callable[[], float] | None = None):
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive; got {max_seconds}")
        self.max_seconds = max_seconds
        self.clock = clock or time.monotonic
        self.start = self.clock()

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self.clock() - self.start

    def exhausted(self) -> bool:
        """True when the budget is spent."""
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds


class Watchdog:
    """Calls ``on_timeout(case, records, checks)`` from a daemon thread once one case has run
    longer than ``limit_s`` (a kernel that never finishes blocks the main thread in a CUDA
    synchronization, where no signal reaches Python; the callback can still write the results
    so far and end the process)."""

    def __init__(self, limit_s: float, on_timeout, poll_s: float = 0.5):
        self.limit_s, self.on_timeout, self.poll_s = limit_s, on_timeout, poll_s
        self._lock = threading.Lock()
        self._current = None  # (case, records, checks, started)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)
        self._thread.start()

    def begin(self, case: "Case", records: list, checks: list) -> None:
        with self._lock:
            self._current = (case, records, checks, time.monotonic())

    def end(self) -> None:
        with self._lock:
            self._current = None

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            with self._lock:
                current = self._current
            if current is not None and time.monotonic() - current[3] > self.limit_s:
                self._done.set()
                self.on_timeout(*current[:3])
                return


class Terminated(Exception):
    """Raised in the main thread when the process gets SIGTERM (``timeout`` sends it)."""


class Unavailable(Exception):
    """A peer cannot run here (an API this torch lacks, a shape it refuses): reported, not failed."""


def _short_error(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _base_record(case: Case) -> dict:
    return {
        "model": case.shape.model,
        "layer": case.shape.layer,
        "shape": case.shape.label,
        "n": case.shape.n,
        "k": case.shape.k,
        "m": case.m,
        "backend": case.backend,
        "kind": case.kind,
    }


def run_plan(plan: list[Case], measurer, budget: Budget, progress=None, checkpoint=None, watchdog=None) -> dict:
    """Run every case of the plan through ``measurer``; never raises for a failing case.

    ``measurer`` provides ``check(shape, backend) -> dict`` (correctness of one of our backends,
    called once per shape before its first timing), ``measure(case) -> dict`` (``time_s`` and
    details; may raise) and ``peer_unavailable(peer) -> str | None``. Once ``budget`` is spent,
    or on ``Terminated`` / ``KeyboardInterrupt``, the remaining cases are recorded as skipped.
    ``progress`` (optional) gets ``update(1)`` and ``set_postfix_str(text)`` per case;
    ``checkpoint(partial)`` (optional) is called after each shape with the partial result;
    ``watchdog`` (optional, a ``Watchdog``) is told when each case begins and ends.

    Returns:
        ``{"records": [...], "checks": [...], "stopped": None | reason}``.
    """
    records: list[dict] = []
    checks: list[dict] = []
    checked: set[tuple[Shape, str]] = set()
    stopped = None
    for index, case in enumerate(plan):
        if stopped is None and budget.exhausted():
            stopped = f"time budget of {budget.max_seconds:g} s spent"
        record = _base_record(case)
        first_of_shape = index == 0 or plan[index - 1].shape != case.shape
        if stopped is not None:
            record.update(status="skipped", note=stopped)
        else:
            if first_of_shape:
                message = f"bench: {case.shape.label} (N={case.shape.n}, K={case.shape.k}) at {budget.elapsed():.0f} s"
                if progress is not None:
                    progress.write(message, file=sys.stderr)
                else:
                    print(message, file=sys.stderr)
            if progress is not None:
                progress.set_postfix_str(f"{case.shape.label} M={case.m} {case.backend}")
            if watchdog is not None:
                watchdog.begin(case, records, checks)
            try:
                if case.kind == "ours" and (case.shape, case.backend) not in checked:
                    checked.add((case.shape, case.backend))
                    checks.append(_run_check(measurer, case.shape, case.backend))
                unavailable = measurer.peer_unavailable(case.backend) if case.kind == "peer" else None
                if unavailable:
                    record.update(status="unavailable", error=unavailable)
                else:
                    record.update(status="ok", **measurer.measure(case))
            except (Terminated, KeyboardInterrupt) as error:
                stopped = f"interrupted ({type(error).__name__})"
                record.update(status="skipped", note=stopped)
            except Unavailable as error:
                record.update(status="unavailable", error=str(error))
            except Exception as error:  # noqa: BLE001 - one failing case must not end the run
                record.update(status="error", error=_short_error(error))
            if watchdog is not None:
                watchdog.end()
        records.append(record)
        if progress is not None:
            progress.update(1)
        last_of_shape = index + 1 == len(plan) or plan[index + 1].shape != case.shape
        if checkpoint is not None and last_of_shape:
            checkpoint({"records": records, "checks": checks, "stopped": stopped})
    return {"records": records, "checks": checks, "stopped": stopped}


def _run_check(measurer, shape: Shape, backend: str) -> dict:
    base = {"shape": shape.label, "n": shape.n, "k": shape.k, "backend": backend}
    try:
        return {**base, **measurer.check(shape, backend)}
    except (Terminated, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - reported as a failed check, loudly
        return {**base, "ok": False, "raised": True, "detail": f"check raised {_short_error(error)}"}


# --- derived numbers, the summary ----------------------------------------------------------------


def derive(raw: dict) -> dict:
    """Add the derived numbers to a raw result (records with ``time_s``, ``ceilings``, ``checks``).

    Per ok record: ``time_us``, ``bytes``, ``ops``, ``tbps``, ``tops``; per record of ours also
    ``floor_us``, ``floor_bound``, ``floor_frac`` (floor / time: 1.0 is at the floor),
    ``vs`` (peer time / our time, per peer: > 1 means ours is faster) and ``check``.
    Adds ``summary`` and ``complete``. Returns a new dict.
    """
    result = json.loads(json.dumps(raw))  # a deep copy of plain data
    ceilings = result.get("ceilings") or {}
    bandwidth = ceilings.get("copy_bytes_per_s")
    peak = ceilings.get("peak_ops_per_s")
    peer_time = {
        (r["shape"], r["m"], r["backend"]): r["time_s"]
        for r in result["records"]
        if r["kind"] == "peer" and r["status"] == "ok"
    }
    check_of = {(c["shape"], c["backend"]): c for c in result.get("checks", [])}
    for r in result["records"]:
        m, n, k = r["m"], r["n"], r["k"]
        r["ops"] = gemm_ops(m, n, k)
        r["bytes"] = floor_bytes(m, n, k) if r["kind"] == "ours" else peer_bytes(r["backend"], m, n, k)
        if r["kind"] == "ours":
            check = check_of.get((r["shape"], r["backend"]))
            r["check"] = None if check is None else check_label(check)
        if r["status"] != "ok":
            continue
        t = r["time_s"]
        r["time_us"] = t * 1e6
        r["tbps"] = r["bytes"] / t / 1e12
        r["tops"] = r["ops"] / t / 1e12
        if r["kind"] != "ours":
            continue
        if bandwidth and peak:
            floor_s, bound = floor_seconds(m, n, k, bandwidth, peak)
            r.update(floor_us=floor_s * 1e6, floor_bound=bound, floor_frac=floor_s / t)
        r["vs"] = {
            peer: peer_time[(r["shape"], m, peer)] / t
            for peer in PEERS
            if (r["shape"], m, peer) in peer_time
        }
    result["summary"] = summarize(result)
    result["complete"] = result.get("stopped") is None and all(
        r["status"] in ("ok", "unavailable") for r in result["records"]
    )
    return result


def check_label(check: dict) -> str:
    """``ok``, ``MISMATCH`` (bytes differ) or ``CHECK ERROR`` (the check itself raised)."""
    if check.get("ok"):
        return "ok"
    return "CHECK ERROR" if check.get("raised") else "MISMATCH"


def summarize(result: dict) -> list[dict]:
    """Per our backend and M: geometric means over the shapes of ``floor_frac`` and of each
    ``vs`` ratio, with the number of shapes behind each mean."""
    rows = []
    ours = [r for r in result["records"] if r["kind"] == "ours"]
    backends = list(dict.fromkeys(r["backend"] for r in ours))
    ms = sorted({r["m"] for r in ours})
    for backend in backends:
        for m in ms:
            done = [r for r in ours if r["backend"] == backend and r["m"] == m and r["status"] == "ok"]
            fracs = [r["floor_frac"] for r in done if r.get("floor_frac")]
            row = {
                "backend": backend,
                "m": m,
                "shapes": len(done),
                "floor_frac": geometric_mean(fracs),
                "floor_shapes": len(fracs),
                "vs": {},
                "vs_shapes": {},
            }
            for peer in PEERS:
                ratios = [r["vs"][peer] for r in done if peer in r.get("vs", {})]
                if ratios:
                    row["vs"][peer] = geometric_mean(ratios)
                    row["vs_shapes"][peer] = len(ratios)
            rows.append(row)
    return rows


def mismatches(result: dict) -> list[dict]:
    """The correctness checks that failed."""
    return [c for c in result.get("checks", []) if not c.get("ok")]


def our_errors(result: dict) -> list[dict]:
    """Records of our backends that raised."""
    return [r for r in result["records"] if r["kind"] == "ours" and r["status"] == "error"]


# --- rendering ---------------------------------------------------------------------------------


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _ratio(value) -> str:
    return _fmt(value, ".2f") + ("x" if value is not None else "")


def _percent(value) -> str:
    return _fmt(None if value is None else 100 * value, ".0f") + ("%" if value is not None else "")


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    fmt = lambda row: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in rows])


def _present_peers(result: dict) -> list[str]:
    seen = {r["backend"] for r in result["records"] if r["kind"] == "peer"}
    return [p for p in PEERS if p in seen]


def render_ours_table(result: dict, markdown: bool = False) -> str:
    """One row per (shape, M, our backend): time, floor, TB/s, TOPS, ratios, correctness."""
    peers = _present_peers(result)
    header = ["shape", "M", "backend", "us", "floor us", "of floor", "TB/s", "TOPS"]
    header += [f"vs {PEER_LABELS[p]}" for p in peers] + ["check"]
    rows = []
    for r in result["records"]:
        if r["kind"] != "ours":
            continue
        check = r.get("check") or "-"
        if check != "ok" and check != "-":
            check = f"**{check}**" if markdown else f"{check} <<<"
        if r["status"] != "ok":
            reason = "" if r["status"] == "skipped" or markdown else (r.get("error") or "")[:40]
            status = r["status"] + (f": {reason}" if reason else "")
            rows.append([r["shape"], str(r["m"]), r["backend"], status] + ["-"] * (4 + len(peers)) + [check])
            continue
        rows.append(
            [
                r["shape"],
                str(r["m"]),
                r["backend"] + ("" if r.get("method", "graph") == "graph" else "*"),
                _fmt(r["time_us"], ".1f"),
                _fmt(r.get("floor_us"), ".1f"),
                _percent(r.get("floor_frac")),
                _fmt(r["tbps"], ".2f"),
                _fmt(r["tops"], ".1f"),
            ]
            + [_ratio(r["vs"].get(p)) for p in peers]
            + [check]
        )
    return _table(header, rows, markdown)


def render_peer_table(result: dict, markdown: bool = False) -> str:
    """One row per (shape, M): each peer's time in microseconds (or why it has none)."""
    peers = _present_peers(result)
    cell: dict[tuple[str, int], dict[str, str]] = {}
    for r in result["records"]:
        if r["kind"] != "peer":
            continue
        text = _fmt(r.get("time_us"), ".1f") if r["status"] == "ok" else r["status"]
        if r["status"] == "ok" and r.get("method", "graph") != "graph":
            text += "*"
        cell.setdefault((r["shape"], r["m"]), {})[r["backend"]] = text
    header = ["shape", "M"] + [f"{PEER_LABELS[p]} us" for p in peers]
    rows = [[shape, str(m)] + [cells.get(p, "-") for p in peers] for (shape, m), cells in cell.items()]
    return _table(header, rows, markdown)


def render_summary(result: dict, markdown: bool = False) -> str:
    """Per our backend and M: geometric means over shapes of the fraction of the floor and of
    the speed-up against each peer (peer time / our time)."""
    peers = _present_peers(result)
    header = ["backend", "M", "shapes", "of floor"] + [f"vs {PEER_LABELS[p]}" for p in peers]
    rows = [
        [row["backend"], str(row["m"]), str(row["shapes"]), _percent(row["floor_frac"])]
        + [_ratio(row["vs"].get(p)) for p in peers]
        for row in result.get("summary", [])
    ]
    return _table(header, rows, markdown)


def render_ceilings(result: dict) -> str:
    """One line: the measured copy bandwidth and 8-bit tensor peak (and what failed)."""
    c = result.get("ceilings") or {}
    parts = []
    if c.get("copy_bytes_per_s"):
        parts.append(f"copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s")
    for key, label in (("fp8_fast_ops_per_s", "fp8 fast-accum"), ("fp8_ops_per_s", "fp8"), ("int8_ops_per_s", "int8")):
        if c.get(key):
            parts.append(f"{label} {c[key] / 1e12:.0f} TOPS")
    if c.get("peak_ops_per_s"):
        parts.append(f"8-bit peak used {c['peak_ops_per_s'] / 1e12:.0f} TOPS")
    for name, error in (c.get("errors") or {}).items():
        parts.append(f"{name} failed ({error})")
    return "ceilings: " + (", ".join(parts) if parts else "not measured")


def render_status(result: dict) -> list[str]:
    """Lines on what went wrong or is not as specified: mismatches, errors of ours, failing or
    unavailable peers, eager timing (no graph), weights that stayed in L2, an early stop."""
    lines = []
    for c in mismatches(result):
        lines.append(f"CORRECTNESS {check_label(c)}: {c['backend']} on {c['shape']}: {c.get('detail', '')}")
    for r in our_errors(result):
        lines.append(f"ERROR: {r['backend']} {r['shape']} M={r['m']}: {r['error']}")
    for peer, error in (result.get("unavailable") or {}).items():
        lines.append(f"peer {peer} unavailable: {error}")
    records = result["records"]
    for backend in dict.fromkeys(r["backend"] for r in records):
        mine = [r for r in records if r["backend"] == backend]
        failed = [r for r in mine if r["status"] == "error" and r["kind"] == "peer"]
        if failed:
            lines.append(f"peer {backend} failed in {len(failed)} cases, first: {failed[0]['error']}")
        eager = [r for r in mine if r["status"] == "ok" and r.get("method") == "eager"]
        if eager and result.get("config", {}).get("graphs", True):
            lines.append(f"{backend}: {len(eager)} cases timed on eager launches: {eager[0].get('note', '')}")
        cached = [r for r in mine if r["status"] == "ok" and r.get("l2_defeated") is False]
        if cached:
            lines.append(f"{backend}: in {len(cached)} cases the weight copies could stay in L2 (rotation capped)")
    if result.get("stopped"):
        skipped = sum(r["status"] == "skipped" for r in records)
        lines.append(f"INCOMPLETE: {result['stopped']}; {skipped} cases skipped")
    return lines


def render_notes(result: dict) -> list[str]:
    """The distinct notes of the timed cases (how each peer ran: padding, scales, ...)."""
    notes = dict.fromkeys(r["note"] for r in result["records"] if r.get("note") and r["status"] == "ok")
    return [f"note: {note}" for note in notes if "graph capture failed" not in note]


def render_meta(result: dict) -> str:
    """One line: device, date, software."""
    meta = result.get("meta") or {}
    keys = ("device", "date", "torch", "cupy", "cuda")
    return ", ".join(f"{k} {meta[k]}" for k in keys if meta.get(k))


def _targets():
    """gpu.targets, which builds on this module's tables (imported when a report is rendered)."""
    from . import targets

    return targets


def render_text(result: dict) -> str:
    """The whole text report: meta, ceilings, our table, peer table, status lines, summary."""
    ok_checks = sum(bool(c.get("ok")) for c in result.get("checks", []))
    parts = [
        "liquidref bench: " + render_meta(result),
        render_ceilings(result),
        "",
        "ours (time per call, median; of floor = floor / time; vs X = X's time / ours; "
        "* = eager launches, no CUDA graph)",
        render_ours_table(result),
        "",
        "peers (time per call, median, us)",
        render_peer_table(result),
        "",
        f"correctness: {ok_checks} of {len(result.get('checks', []))} checks bit-exact",
        *render_status(result),
        *render_notes(result),
        "",
        "summary (geometric mean over shapes)",
        render_summary(result),
    ]
    judgement = _targets().report_lines(result)
    if judgement:
        parts += ["", *judgement]
    return "\n".join(parts) + "\n"


def render_markdown(result: dict, plot_path: str | None = None) -> str:
    """The results section of ``docs/performance.md`` for one results file."""
    meta = result.get("meta") or {}
    lines = [
        f"Measured on **{meta.get('device', 'an unknown device')}** on {meta.get('date', 'an unknown date')}"
        + (f" (torch {meta['torch']}, CuPy {meta['cupy']}, CUDA {meta.get('cuda', '?')})" if meta.get("torch") else "")
        + ".",
        "",
        render_ceilings(result).replace("ceilings: ", "Ceilings measured in the same run: ") + ".",
        "",
    ]
    status = render_status(result)
    if status:
        lines += ["**Read before the numbers:**", ""] + [f"- {s}" for s in status] + [""]
    lines += [
        "### Summary",
        "",
        "Geometric mean over the shapes, per backend and M. *of floor* = floor time / our time "
        "(100% is at the floor); *vs X* = X's time / our time (above 1 means ours is faster).",
        "",
        render_summary(result, markdown=True),
        "",
        *_targets().report_lines(result, markdown=True),
    ]
    if plot_path:
        lines += [f"![Speed-up over cuBLAS bf16 per shape]({plot_path})", ""]
    notes = render_notes(result)
    if notes:
        lines += ["How the peers ran:", ""] + [f"- {n.removeprefix('note: ')}" for n in notes] + [""]
    lines += [
        "### Our kernels, every shape",
        "",
        render_ours_table(result, markdown=True),
        "",
        "### Peers, time per call (us)",
        "",
        render_peer_table(result, markdown=True),
        "",
    ]
    return "\n".join(lines)


def replace_docs_section(page_text: str, section: str) -> str:
    """``page_text`` with everything between ``DOCS_BEGIN`` and ``DOCS_END`` replaced."""
    begin, end = page_text.find(DOCS_BEGIN), page_text.find(DOCS_END)
    if begin < 0 or end < 0 or end < begin:
        raise ValueError(f"the page must contain the markers {DOCS_BEGIN!r} and then {DOCS_END!r}")
    head = page_text[: begin + len(DOCS_BEGIN)]
    return head + "\n" + section.strip("\n") + "\n" + page_text[end:]


def render_docs(results_path: Path, page: Path = DOCS_PAGE) -> Path:
    """Write the results section of ``page`` from a results JSON; copy its plot beside the page.

    The plot (the JSON's name with ``.png``, e.g. ``bench.png`` beside ``bench.json``, if there is
    one) goes to ``<page dir>/img/<that name>``. Returns the page's path.
    """
    result = json.loads(Path(results_path).read_text())
    if result.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{results_path}: not a results file of schema {SCHEMA_VERSION}")
    plot_rel = None
    plot = Path(results_path).with_suffix(".png")
    if plot.is_file():
        target = Path(page).parent / "img" / plot.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(plot.read_bytes())
        plot_rel = f"img/{plot.name}"
    text = Path(page).read_text()
    Path(page).write_text(replace_docs_section(text, render_markdown(result, plot_rel)))
    return Path(page)


def plot(result: dict, path: Path) -> bool:
    """Speed-up over cuBLAS bf16 against M, one panel per shape, one line per backend, the floor
    dashed. Returns False (and writes nothing) when no shape has bf16 times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = result["records"]
    shapes = list(dict.fromkeys(r["shape"] for r in records))
    bf16 = {(r["shape"], r["m"]): r["time_s"] for r in records if r["backend"] == "cublas_bf16" and r["status"] == "ok"}
    shapes = [s for s in shapes if any(key[0] == s for key in bf16)]
    if not shapes:
        return False
    columns = min(4, len(shapes))
    rows = -(-len(shapes) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    backends = list(dict.fromkeys(r["backend"] for r in records if r["backend"] != "cublas_bf16"))
    for ax, shape in zip(axes.flat, shapes):
        for backend in backends:
            points = sorted(
                (r["m"], bf16[(shape, r["m"])] / r["time_s"])
                for r in records
                if r["shape"] == shape and r["backend"] == backend and r["status"] == "ok" and (shape, r["m"]) in bf16
            )
            if points:
                style = "-o" if any(r["kind"] == "ours" and r["backend"] == backend for r in records) else "--."
                ax.plot(*zip(*points), style, label=PEER_LABELS.get(backend, backend), markersize=3)
        floor = sorted(
            {(r["m"], bf16[(shape, r["m"])] * 1e6 / r["floor_us"]) for r in records
             if r["shape"] == shape and r.get("floor_us") and (shape, r["m"]) in bf16}
        )
        if floor:
            ax.plot(*zip(*floor), ":", color="black", label="floor")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_xscale("log", base=2)
        ticks = sorted({r["m"] for r in records if r["shape"] == shape})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(shape, fontsize=9)
        ax.set_xlabel("M (tokens)", fontsize=8)
        ax.set_ylabel("speed-up over cuBLAS bf16", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shapes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    meta = result.get("meta") or {}
    fig.suptitle(f"liquidref bench: {meta.get('device', '?')}, {meta.get('date', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(result: dict, out_dir: Path, with_plot: bool = True) -> dict:
    """Write ``bench.json``, ``bench.txt`` and (``with_plot``) ``bench.png`` into ``out_dir``.

    Returns ``{name: path}`` of what was written; a failing plot is reported, not raised.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    _write_atomic(out_dir / "bench.json", json.dumps(result, indent=1, sort_keys=False) + "\n")
    written["bench.json"] = out_dir / "bench.json"
    _write_atomic(out_dir / "bench.txt", render_text(result))
    written["bench.txt"] = out_dir / "bench.txt"
    if with_plot:
        try:
            if plot(result, out_dir / "bench.png"):
                written["bench.png"] = out_dir / "bench.png"
        except Exception as error:  # noqa: BLE001 - the numbers matter more than the figure
            print(f"bench: the plot failed: {_short_error(error)}", file=sys.stderr)
    return written


# --- random weights (CPU) --------------------------------------------------------------------------

BYTE_VALUES = np.iinfo(np.uint8).max + 1  # 256


def random_steps_offsets(rng, shape) -> tuple[np.ndarray, np.ndarray]:
    """Random level-2 steps s (uniform 1..16) and offsets a (uniform in
    ``[OFFSET_BIAS - Q8_LIMIT, 255 - 15 s]``: a group minimum the quantizer could give, and
    ``q4 * s + a`` within one byte for every code), both uint8 of ``shape``."""
    s = rng.integers(1, STEP_MAX + 1, size=shape, dtype=np.uint8)
    low = OFFSET_BIAS - Q8_LIMIT
    high = (BYTE_VALUES - 1) - Q4_MAX * s.astype(np.int32)
    a = (low + np.floor(rng.random(shape) * (high - low + 1))).astype(np.uint8)
    return s, a


def random_scales(rng, n: int) -> np.ndarray:
    """Level-1 scales s1, uniform in [1e-4, 1e-3]: outputs stay far from fp16 overflow."""
    return rng.uniform(1e-4, 1e-3, size=n).astype(np.float32)


def random_packed_weight(n: int, k: int, seed: int):
    """A random, valid weight [N, K] directly in the packed layout (``liquidref.PackedWeight``).

    Every byte of packed codes is two 4-bit codes, so uniform random bytes are valid codes;
    the metadata holds random (s, a) pairs (``random_steps_offsets``) at their even/odd bytes.
    Nothing is quantized or packed, so a 57344 x 8192 weight takes a fraction of a second.
    ``liquidref.unpack_weight`` turns it (or ``packed_row_blocks`` of it) into the
    ``LiquidQuantWeight`` the oracle reads, which validates it.
    """
    from liquidref.layout import PackedWeight

    rng = np.random.default_rng(seed)
    blocks = (n // BLOCK_ROWS, k // BLOCK_K)
    codes = rng.integers(0, BYTE_VALUES, size=(*blocks, BLOCK_BYTES), dtype=np.uint8)
    s, a = random_steps_offsets(rng, (*blocks, META_BYTES_PER_BLOCK // 2))
    meta = np.empty((*blocks, META_BYTES_PER_BLOCK), np.uint8)
    meta[..., 0::2] = s  # byte pairs (s, a), one per row (liquidref.layout.meta_position)
    meta[..., 1::2] = a
    return PackedWeight(codes=codes, meta=meta, s1=random_scales(rng, n))


def random_liquid_weight(n: int, k: int, seed: int):
    """A random, valid ``LiquidQuantWeight`` [N, K] (group 64) with uniform codes 0..15 and
    (s, a, s1) as in ``random_packed_weight``."""
    from liquidref.quant import LiquidQuantWeight

    rng = np.random.default_rng(seed)
    q4 = rng.integers(0, Q4_MAX + 1, size=(n, k), dtype=np.uint8)
    s, a = random_steps_offsets(rng, (n, k // GROUP_SIZE))
    return LiquidQuantWeight(q4=q4, s=s, a=a, s1=random_scales(rng, n), group_size=GROUP_SIZE)


def check_row_blocks(n: int, blocks: int = CHECK_COLUMN_BLOCKS) -> list[int]:
    """The 64-row weight blocks the correctness check compares: first, middle and last of N."""
    total = n // BLOCK_ROWS
    return sorted({0, total // 2, total - 1} if blocks >= 3 else {0, total - 1})


def check_columns(n: int, blocks: int = CHECK_COLUMN_BLOCKS) -> np.ndarray:
    """Output columns of ``check_row_blocks`` (sorted, without repeats)."""
    return np.concatenate([np.arange(b * BLOCK_ROWS, (b + 1) * BLOCK_ROWS) for b in check_row_blocks(n, blocks)])


def packed_row_blocks(packed, row_blocks: list[int]):
    """The ``PackedWeight`` of some 64-row blocks of ``packed`` (each output column of the GEMM
    depends only on its own weight row, so the oracle on the subset is exact for its columns)."""
    from liquidref.layout import PackedWeight

    rows = np.concatenate([np.arange(b * BLOCK_ROWS, (b + 1) * BLOCK_ROWS) for b in row_blocks])
    return PackedWeight(
        codes=np.ascontiguousarray(packed.codes[row_blocks]),
        meta=np.ascontiguousarray(packed.meta[row_blocks]),
        s1=np.ascontiguousarray(packed.s1[rows]),
    )


def compare_fp16(ours: np.ndarray, reference: np.ndarray) -> dict:
    """Bitwise comparison of two fp16 arrays: ``{"ok", "compared", "mismatches", "detail"}``."""
    if ours.shape != reference.shape or ours.dtype != np.float16 or reference.dtype != np.float16:
        return {
            "ok": False,
            "compared": 0,
            "mismatches": None,
            "detail": f"got {ours.dtype} {ours.shape}, expected float16 {reference.shape}",
        }
    differ = ours.view(np.uint16) != reference.view(np.uint16)
    count = int(differ.sum())
    detail = "bit-exact"
    if count:
        row, col = (int(i) for i in np.argwhere(differ)[0])
        detail = (
            f"{count} of {differ.size} fp16 values differ; first at [{row}, {col}]: "
            f"{float(ours[row, col])!r} (0x{int(ours.view(np.uint16)[row, col]):04x}) vs oracle "
            f"{float(reference[row, col])!r} (0x{int(reference.view(np.uint16)[row, col]):04x})"
        )
    return {"ok": count == 0, "compared": int(differ.size), "mismatches": count, "detail": detail}


# --- the GPU side ----------------------------------------------------------------------------------


class GpuMeasurer:
    """Times our backends and the peers on one CUDA device (torch + CuPy).

    All device work runs on one side stream (torch's current stream and, through
    ``Stream.from_external``, CuPy's), so nothing races and CUDA graphs capture our CuPy
    launches too. CuPy
    allocates through torch's caching allocator, so arrays made while a graph is captured come
    from the graph's private pool.
    """

    def __init__(self, *, target_s: float, max_reps: int, use_graph: bool, check_m: int, seed: int):
        import cupy
        import torch

        import gpu.api as api

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        self.torch, self.cupy, self.api = torch, cupy, api
        self.target_s, self.max_reps, self.use_graph = target_s, max_reps, use_graph
        self.check_m, self.seed = check_m, seed
        self.notes: list[str] = []
        self._use_torch_allocator()
        self.stream = torch.cuda.Stream()
        self.cupy_stream = self._cupy_view_of(self.stream)
        props = torch.cuda.get_device_properties(0)
        self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 0)
        if not self.l2_bytes:
            self.l2_bytes = FALLBACK_L2_BYTES
            self.notes.append(f"L2 size not reported; assumed {FALLBACK_L2_BYTES} bytes")
        self.shape: Shape | None = None
        self.state: dict = {}
        self.unavailable: dict[str, str] = {}

    # -- set-up ----------------------------------------------------------------------------------

    def _use_torch_allocator(self) -> None:
        torch, cupy = self.torch, self.cupy

        def malloc(size: int, device_id: int) -> int:
            stream = cupy.cuda.get_current_stream().ptr or torch.cuda.current_stream().cuda_stream
            return torch.cuda.caching_allocator_alloc(size, device_id, stream)

        def free(pointer: int, device_id: int) -> None:  # noqa: ARG001
            torch.cuda.caching_allocator_delete(pointer)

        try:
            self._previous_allocator = cupy.cuda.get_allocator()
            self._allocator = cupy.cuda.memory.PythonFunctionAllocator(malloc, free)
            cupy.cuda.set_allocator(self._allocator.malloc)
        except Exception as error:  # noqa: BLE001 - graphs may then fail and fall back to eager
            self.notes.append(f"CuPy kept its own memory pool ({_short_error(error)})")

    def _cupy_view_of(self, stream):
        """The torch stream as a CuPy stream (``Stream.from_external`` where CuPy has it)."""
        cupy = self.cupy
        try:
            return cupy.cuda.Stream.from_external(stream)
        except (AttributeError, TypeError):  # older CuPy, or a torch stream without the protocol
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return cupy.cuda.ExternalStream(stream.cuda_stream)

    def on_stream(self):
        """Context: torch's and CuPy's current stream is the side stream."""
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(self.torch.cuda.stream(self.stream))
        stack.enter_context(self.cupy_stream)
        return stack

    def meta(self) -> dict:
        torch, cupy = self.torch, self.cupy
        props = torch.cuda.get_device_properties(0)
        return {
            "device": props.name,
            "sms": props.multi_processor_count,
            "l2_bytes": self.l2_bytes,
            "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cupy": cupy.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "our_backends_available": self.api.available_backends(),
        }

    def _events_time(self, fn, reps: int) -> list[float]:
        """Seconds of each of ``reps`` back-to-back calls of ``fn`` on the side stream."""
        torch = self.torch
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        with self.on_stream():
            for start, end in pairs:
                start.record(self.stream)
                fn()
                end.record(self.stream)
        self.stream.synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in pairs]

    def measure_ceilings(self) -> dict:
        """The copy bandwidth (bytes read + written per second) and the 8-bit tensor peak
        (the fastest of fp8 ``_scaled_mm`` with and without fast accumulation and int8
        ``_int_mm`` on an 8192^3 product: Hopper's fp8 and int8 dense rates are equal)."""
        with self.on_stream():
            return self._measure_ceilings()

    def _copy_bandwidth(self) -> float:
        """Bytes read + written per second by a device-to-device copy of random bytes."""
        torch = self.torch
        src = torch.empty(COPY_CEILING_BYTES, dtype=torch.uint8, device="cuda").random_()
        dst = torch.empty_like(src)
        self._events_time(lambda: dst.copy_(src), 3)  # warm-up
        times = self._events_time(lambda: dst.copy_(src), 10)
        return 2 * COPY_CEILING_BYTES / statistics.median(times)

    def _measure_ceilings(self) -> dict:
        torch = self.torch
        ceilings: dict = {"errors": {}, "copy_bytes": COPY_CEILING_BYTES, "peak_gemm_size": PEAK_GEMM_SIZE}
        try:
            ceilings["copy_bytes_per_s"] = self._copy_bandwidth()
        except Exception as error:  # noqa: BLE001
            ceilings["errors"]["copy"] = _short_error(error, 160)
        size = PEAK_GEMM_SIZE
        ops = gemm_ops(size, size, size)
        gen = torch.Generator(device="cuda").manual_seed(self.seed)
        attempts = {}
        try:
            a = torch.randn(size, size, device="cuda", generator=gen).to(torch.float8_e4m3fn)
            b = torch.randn(size, size, device="cuda", generator=gen).to(torch.float8_e4m3fn)
            one = torch.ones((), device="cuda", dtype=torch.float32)
            attempts["fp8_fast_ops_per_s"] = lambda: torch._scaled_mm(
                a, b.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True
            )
            attempts["fp8_ops_per_s"] = lambda: torch._scaled_mm(a, b.t(), one, one, out_dtype=torch.bfloat16)
        except Exception as error:  # noqa: BLE001
            ceilings["errors"]["fp8"] = _short_error(error, 160)
        ai = torch.randint(-127, 128, (size, size), device="cuda", generator=gen, dtype=torch.int8)
        bi = torch.randint(-127, 128, (size, size), device="cuda", generator=gen, dtype=torch.int8)
        attempts["int8_ops_per_s"] = lambda: torch._int_mm(ai, bi.t())
        for key, fn in attempts.items():
            try:
                self._events_time(fn, 3)
                ceilings[key] = ops / statistics.median(self._events_time(fn, 10))
            except Exception as error:  # noqa: BLE001
                ceilings["errors"][key] = _short_error(error, 160)
        rates = [ceilings[key] for key in attempts if ceilings.get(key)]
        ceilings["peak_ops_per_s"] = max(rates) if rates else None
        attempts.clear()
        torch.cuda.empty_cache()
        return ceilings

    # -- per shape ---------------------------------------------------------------------------------

    def _shape_seed(self, shape: Shape) -> int:
        return (self.seed * 1_000_003 + shape.n * 131 + shape.k) % 2**31

    def _set_shape(self, shape: Shape) -> None:
        if self.shape == shape:
            return
        self.state = {}
        self.shape = None
        self.torch.cuda.empty_cache()
        self.state["packed"] = random_packed_weight(shape.n, shape.k, self._shape_seed(shape))
        self.shape = shape

    def _generator(self, salt: int):
        return self.torch.Generator(device="cuda").manual_seed(self._shape_seed(self.shape) + salt)

    def _x_fp32(self, m: int):
        """The activations of M tokens (random normal fp32; every backend casts these)."""
        key = ("x", m)
        if key not in self.state:
            self.state = {key: value for key, value in self.state.items() if not (isinstance(key, tuple) and key[0] == "x")}
            self.state[key] = self.torch.randn(m, self.shape.k, device="cuda", generator=self._generator(m))
        return self.state[key]

    def _our_weights(self) -> list:
        if "dw" not in self.state:
            dw = self.api.upload(self.state["packed"])
            copies = rotation_copies(our_weight_bytes(self.shape.n, self.shape.k), self.l2_bytes)
            self.state["dw"] = [dw] + [self._clone(dw) for _ in range(copies - 1)]
        return self.state["dw"]

    def _clone(self, dw):
        """Another device copy of a ``DeviceWeight`` (its arrays copied on the device)."""
        changes = {
            f.name: getattr(dw, f.name).copy()
            for f in dataclasses.fields(dw)
            if isinstance(getattr(dw, f.name), self.cupy.ndarray)
        }
        return dataclasses.replace(dw, **changes)

    def check(self, shape: Shape, backend: str) -> dict:
        """Our ``backend`` on ``check_m`` random tokens against ``liquidref.w4a8_linear``, on
        ``check_columns`` of the output: fp16 bytes must be equal."""
        from liquidref.gemm import w4a8_linear
        from liquidref.layout import unpack_weight

        with self.on_stream():
            self._set_shape(shape)
            dws = self._our_weights()
            X = self.torch.randn(self.check_m, shape.k, device="cuda", generator=self._generator(-1)).half()
            y = self.cupy.asnumpy(self.api.linear(self.cupy.from_dlpack(X), dws[0], backend=backend))
            x_host = X.cpu().numpy()
        cols = check_columns(shape.n)
        reference = w4a8_linear(x_host, unpack_weight(packed_row_blocks(self.state["packed"], check_row_blocks(shape.n))))
        result = compare_fp16(np.ascontiguousarray(y[:, cols]), reference)
        nonfinite = int((~np.isfinite(y)).sum())
        if nonfinite:
            result["ok"] = False
            result["detail"] += f"; {nonfinite} non-finite values in the whole [M, N] output"
        result.update(m=self.check_m, columns=len(cols))
        return result

    # -- the callables that are timed --------------------------------------------------------------

    def _ours(self, case: Case):
        dws = self._our_weights()
        X = self.cupy.from_dlpack(self._x_fp32(case.m).half())
        linear, backend = self.api.linear, case.backend
        fn = lambda i: linear(X, dws[i], backend=backend, check_finite=False)  # noqa: E731
        return fn, len(dws), our_weight_bytes(self.shape.n, self.shape.k), ""

    def _peer(self, case: Case):
        torch = self.torch
        m, n, k = case.m, self.shape.n, self.shape.k
        nbytes = peer_weight_bytes(case.backend, n, k)
        copies = rotation_copies(nbytes, self.l2_bytes)
        gen = self._generator(1000 + PEERS.index(case.backend))
        x = self._x_fp32(m)
        note = ""
        if case.backend == "cublas_bf16":
            ws = [torch.randn(n, k, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(copies)]
            xb = x.bfloat16()
            fn = lambda i: torch.nn.functional.linear(xb, ws[i])  # noqa: E731
        elif case.backend == "cublas_int8":
            ws = [torch.randint(-127, 128, (n, k), device="cuda", generator=gen, dtype=torch.int8) for _ in range(copies)]
            rows = int_mm_rows(m)
            xr = torch.randn(rows, k, device="cuda", generator=gen)
            xr[:m] = x
            xi = (xr * (127 / xr.abs().amax(dim=1, keepdim=True))).round().to(torch.int8)
            if rows != m:
                note = f"int8: torch._int_mm needs M > 16 and we keep M a multiple of 8: M={m} ran as {rows} rows"
            fn = lambda i: torch._int_mm(xi, ws[i].t())  # noqa: E731
        elif case.backend == "cublas_fp8":
            fn, note = self._fp8(case, x, copies, gen)
        else:
            fn, copies, note = self._int4(case, x, copies, gen)
        return fn, copies, nbytes, note

    def _fp8(self, case: Case, x, copies: int, gen):
        """``torch._scaled_mm`` on e4m3 with per-row scales, else per-tensor scales."""
        torch = self.torch
        n, k = self.shape.n, self.shape.k
        ws = [(torch.randn(n, k, device="cuda", generator=gen) * 0.5).to(torch.float8_e4m3fn) for _ in range(copies)]
        xf = x.to(torch.float8_e4m3fn)
        row_a = torch.rand(case.m, 1, device="cuda", generator=gen) + 0.5
        row_b = torch.rand(1, n, device="cuda", generator=gen) + 0.5
        one = torch.ones((), device="cuda")
        errors = []
        for label, scale_a, scale_b in (("per-row scales", row_a, row_b), ("per-tensor scales", one, one)):
            fn = lambda i, sa=scale_a, sb=scale_b: torch._scaled_mm(xf, ws[i].t(), sa, sb, out_dtype=torch.bfloat16)  # noqa: E731
            try:
                out = fn(0)
                out = out[0] if isinstance(out, tuple) else out  # torch < 2.4 returned (out, amax)
                if tuple(out.shape) != (case.m, n):
                    raise RuntimeError(f"output shape {tuple(out.shape)}, expected {(case.m, n)}")
                refused = f" ({errors[0]})" if errors else ""
                return fn, f"fp8: e4m3, {label}{refused}"
            except Exception as error:  # noqa: BLE001
                errors.append(f"{label} refused: {_short_error(error, 120)}")
        raise Unavailable("torch._scaled_mm: " + "; ".join(errors))

    def _int4(self, case: Case, x, copies: int, gen):
        """``torch._weight_int4pack_mm`` (W4A16, group 128) on random packed codes."""
        torch = self.torch
        n, k = self.shape.n, self.shape.k
        if "torch_int4" in self.unavailable:
            raise Unavailable(self.unavailable["torch_int4"])
        packed = self.state.get("int4_packed")
        if packed is None:
            inner = next((t for t in (8, 4, 2) if k % (t * 16) == 0), None)
            if inner is None or k % INT4_PEER_GROUP or n % 8:
                raise Unavailable(f"torch int4 needs K % {INT4_PEER_GROUP} == 0 and N % 8 == 0; got N={n}, K={k}")
            packed = []
            for _ in range(copies):
                codes = torch.randint(0, 256, (n, k // 2), device="cuda", generator=gen, dtype=torch.uint8)
                w = self._convert_int4(codes, inner)
                scales = torch.rand(k // INT4_PEER_GROUP, n, 1, device="cuda", generator=gen) * 0.01 + 0.001
                zeros = torch.rand(k // INT4_PEER_GROUP, n, 1, device="cuda", generator=gen) * 0.01
                packed.append((w, torch.cat([scales, zeros], dim=2).to(torch.bfloat16).contiguous()))
            self.state["int4_packed"] = packed
        xb = x.bfloat16()
        fn = lambda i: torch._weight_int4pack_mm(xb, packed[i][0], INT4_PEER_GROUP, packed[i][1])  # noqa: E731
        return fn, len(packed), f"int4: torch._weight_int4pack_mm, group {INT4_PEER_GROUP}, bf16 activations"

    def _convert_int4(self, codes_u8, inner: int):
        """``_convert_weight_to_int4pack``: uint8 [N, K/2] (torch >= 2.5) or int32 [N, K] (older);
        when both are refused the peer is unavailable for the whole run."""
        torch = self.torch
        try:
            convert = torch.ops.aten._convert_weight_to_int4pack
            return convert(codes_u8, inner)
        except Exception as first:  # noqa: BLE001 - the older API takes one int32 code per weight
            try:
                unpacked = torch.stack([codes_u8 >> 4, codes_u8 & 0xF], dim=2).reshape(codes_u8.shape[0], -1)
                return convert(unpacked.to(torch.int32).contiguous(), inner)
            except Exception as second:  # noqa: BLE001
                message = (
                    f"_convert_weight_to_int4pack refused uint8 [N, K/2] ({_short_error(first, 120)}) "
                    f"and int32 [N, K] ({_short_error(second, 120)})"
                )
                self.unavailable["torch_int4"] = message
                raise Unavailable(message) from second

    def peer_unavailable(self, peer: str) -> str | None:
        return self.unavailable.get(peer)

    def measure(self, case: Case) -> dict:
        """Time one case: median seconds per call and how it was timed."""
        with self.on_stream():
            self._set_shape(case.shape)
            fn, copies, nbytes, note = self._ours(case) if case.kind == "ours" else self._peer(case)
            timing = self._time(fn, copies)
        timing.update(
            copies=copies,
            weight_bytes_per_copy=nbytes,
            l2_defeated=rotation_defeats_l2(nbytes, copies, self.l2_bytes),
        )
        notes = [t for t in (note, timing.pop("graph_error", None)) if t]
        if notes:
            timing["note"] = "; ".join(notes)
        return timing

    def _time(self, fn, copies: int) -> dict:
        """Median seconds per call of ``fn(i)``, ``i`` rotating over the copies (on the side stream)."""
        torch = self.torch
        keep = [fn(i) for i in range(copies)]  # warm-up: compiles, picks algorithms, workspaces
        self.stream.synchronize()
        graph, graph_error = None, None
        if self.use_graph:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="relaxed"):
                    with self.cupy_stream:
                        keep += [fn(i) for i in range(copies)]
            except Exception as error:  # noqa: BLE001 - fall back to eager launches, and say so
                graph = None
                graph_error = f"graph capture failed, eager launches timed ({_short_error(error, 160)})"
                torch.cuda.synchronize()

        def one_pass():
            if graph is not None:
                graph.replay()
            else:
                for i in range(copies):
                    fn(i)

        self._events_time(one_pass, 1)  # a warm pass
        estimate = min(self._events_time(one_pass, 2))
        reps = choose_reps(estimate, self.target_s, self.max_reps)
        per_call = [t / copies for t in self._events_time(one_pass, reps)]
        result = {
            "time_s": statistics.median(per_call),
            "min_s": min(per_call),
            "reps": reps,
            "method": "graph" if graph is not None else "eager",
        }
        if graph_error:
            result["graph_error"] = graph_error
        return result

    def close(self) -> None:
        """Drop the device data and give CuPy its allocator back."""
        self.state = {}
        if getattr(self, "_previous_allocator", None) is not None:
            self.cupy.cuda.set_allocator(self._previous_allocator)
            self._previous_allocator = None


# --- --build-only: compile each backend, check it, at every M, on a small shape ---------------------


def build_only(ms: list[int], ours: list[str] | None, shape: tuple[int, int], seed: int) -> int:
    """First call (compilation included) and a bit-exact check of each backend at each M.

    Uses CuPy only (no torch), so it also serves as the small case of compute-sanitizer.
    Returns 0 when every check is bit-exact, else 1.
    """
    import gpu.api as api
    from liquidref.gemm import w4a8_linear

    try:
        cupy = api.runtime.require_gpu()
        backends = ours or api.available_backends()
    except RuntimeError as error:
        print(f"build: {error}", file=sys.stderr)
        return 2
    if not backends:
        print(f"build: no backend can run here (registered: {api.registered_backends()})", file=sys.stderr)
        return 1
    n, k = shape
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    print(f"build: backends {backends} on N={n}, K={k}, M in {ms}; device {name}")
    t0 = time.perf_counter()
    w = random_liquid_weight(n, k, seed)
    dw = api.upload(w)
    rng = np.random.default_rng(seed)
    failures = 0
    for backend in backends:
        for m in ms:
            X = rng.standard_normal((m, k)).astype(np.float16)
            print(f"build: {backend:>12} M={m:<5}", end=" ", flush=True)  # a hang shows where
            start = time.perf_counter()
            try:
                y = api.linear(cupy.asarray(X), dw, backend=backend)
                cupy.cuda.Device().synchronize()
                seconds = time.perf_counter() - start
                verdict = compare_fp16(cupy.asnumpy(y), w4a8_linear(X, w))
            except Exception as error:  # noqa: BLE001
                seconds, verdict = time.perf_counter() - start, {"ok": False, "detail": _short_error(error)}
            failures += not verdict["ok"]
            outcome = "bit-exact" if verdict["ok"] else "FAIL: " + verdict["detail"]
            print(f"first call {seconds:6.2f} s (compilation included)  {outcome}", flush=True)
    print(f"build: {time.perf_counter() - t0:.1f} s in all; {failures} failures")
    return 1 if failures else 0


# --- the command ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liquidref bench",
        description="Benchmark our W4A8 kernels against cuBLAS bf16/int8/fp8 and torch int4 on "
        "Llama layer shapes (needs a CUDA GPU, torch and CuPy). See docs/performance.md.",
    )
    parser.add_argument("--shapes", help="comma list: llama3-8b, llama2-70b, all, model:layer or NxK (default: both models)")
    parser.add_argument("--m", help=f"comma list of token counts (default: {','.join(map(str, DEFAULT_M))})")
    parser.add_argument("--backends", default="all", help=f"comma list of our backends and peers {list(PEERS)}, or ours, peers, all (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"a small subset: shapes {','.join(QUICK_SHAPES)}, M {','.join(map(str, QUICK_M))} (~1-2 minutes)")
    parser.add_argument("--max-seconds", type=float, help="stop cleanly after this many seconds, writing what was measured")
    parser.add_argument("--out", default="liquidref-out/bench", help="folder for bench.json, bench.txt, bench.png (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results JSON to stdout instead of the tables")
    parser.add_argument("--target-ms", type=float, default=DEFAULT_TARGET_MS, help="timed replays per case fill about this many ms (default: %(default)s)")
    parser.add_argument("--max-reps", type=int, default=DEFAULT_MAX_REPS, help="at most this many timed replays per case (default: %(default)s)")
    parser.add_argument("--check-m", type=int, default=DEFAULT_CHECK_M, help="tokens of the per-shape correctness check (default: %(default)s)")
    parser.add_argument("--no-graph", action="store_true", help="time eager launches instead of CUDA-graph replays")
    parser.add_argument("--no-plot", action="store_true", help="do not write bench.png")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random input (default: %(default)s)")
    parser.add_argument("--build-only", action="store_true", help="compile and check each backend at each M on a small shape (CuPy only), then exit")
    parser.add_argument("--render-docs", metavar="RESULTS_JSON", help="write the results section of docs/performance.md from a results file, then exit (no GPU)")
    parser.add_argument("--docs-page", default=str(DOCS_PAGE), help="the page --render-docs writes (default: %(default)s)")
    parser.add_argument("--render-summary", metavar="RESULTS_JSON", help="print the status lines and summary of a results file, then exit (no GPU)")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse and check the options (``--quick`` fills in shapes and M not given explicitly)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.shape_list = parse_shapes(args.shapes or (",".join(QUICK_SHAPES) if args.quick else "all"))
        args.m_list = parse_m_list(args.m or ",".join(map(str, QUICK_M if args.quick else DEFAULT_M)))
    except ValueError as error:
        parser.error(str(error))
    if args.max_seconds is not None and args.max_seconds <= 0:
        parser.error("--max-seconds must be positive")
    if args.target_ms <= 0 or args.max_reps < 1 or args.check_m < 1:
        parser.error("--target-ms must be positive, --max-reps and --check-m at least 1")
    return args


def _install_sigterm():
    """SIGTERM (``timeout`` sends it) raises ``Terminated`` once; later ones are ignored so that
    the outputs can still be written. Returns the previous handler (None if not installed)."""

    def handler(signum, frame):  # noqa: ARG001
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _progress(total: int):
    """A tqdm bar on stderr (sparse updates when stderr is not a terminal), or None."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc="bench", unit="case", file=sys.stderr, mininterval=0.5 if tty else 15.0, dynamic_ncols=tty)


def run(args: argparse.Namespace, measurer, budget: Budget, out_dir: Path | None, meta: dict,
        ours: list[str], peers: list[str]) -> dict:
    """The ceilings, every case of the plan, the derived result: ``main`` with the measurer
    passed in (tests pass a fake). Writes a checkpoint ``bench.json`` after each shape."""
    plan = build_plan(args.shape_list, args.m_list, ours, peers)
    config = {
        "shapes": [dataclasses.asdict(s) for s in args.shape_list],
        "m": args.m_list,
        "ours": ours,
        "peers": peers,
        "target_ms": args.target_ms,
        "max_reps": args.max_reps,
        "min_reps": MIN_REPS,
        "check_m": args.check_m,
        "graphs": not args.no_graph,
        "max_seconds": args.max_seconds,
        "seed": args.seed,
    }
    base = {"schema": SCHEMA_VERSION, "meta": meta, "config": config}
    base["ceilings"] = measurer.measure_ceilings()

    def checkpoint(partial: dict) -> None:
        if out_dir is not None:
            snapshot = {**base, **partial, "unavailable": dict(measurer.unavailable)}
            snapshot["stopped"] = partial["stopped"] or "still running (a checkpoint)"
            write_outputs(derive(snapshot), out_dir, with_plot=False)

    def on_timeout(case: Case, records: list, checks: list) -> None:
        hung = {**_base_record(case), "status": "error",
                "error": f"no result after {CASE_TIMEOUT_S:g} s (a kernel that never finishes?); the run ended here"}
        stopped = f"{case.shape.label} M={case.m} {case.backend} hung"
        snapshot = {**base, "records": list(records) + [hung], "checks": list(checks), "stopped": stopped,
                    "unavailable": dict(measurer.unavailable)}
        result = derive(snapshot)
        if out_dir is not None:
            write_outputs(result, out_dir)
        print(render_text(result), flush=True)
        print(f"bench: {stopped}: wrote what was measured; exiting", file=sys.stderr, flush=True)
        os._exit(3)

    progress = _progress(len(plan))
    watchdog = Watchdog(CASE_TIMEOUT_S, on_timeout) if out_dir is not None else None
    try:
        raw = run_plan(plan, measurer, budget, progress, checkpoint, watchdog)
    finally:
        if watchdog is not None:
            watchdog.close()
        if progress is not None:
            progress.close()
    base["meta"]["seconds"] = round(budget.elapsed(), 1)
    base["meta"]["notes"] = list(getattr(measurer, "notes", []))
    return derive({**base, **raw, "unavailable": dict(measurer.unavailable)})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``liquidref bench``.

    Returns 0; 1 when one of our backends mismatched the oracle or raised; 2 when the bench
    cannot run (no GPU, torch or CuPy; an unknown backend). Bad options exit 2 (argparse).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.render_docs:
        page = render_docs(Path(args.render_docs), Path(args.docs_page))
        print(f"bench: wrote the results section of {page}")
        return 0
    if args.render_summary:
        result = json.loads(Path(args.render_summary).read_text())
        judgement = _targets().report_lines(result)
        print("\n".join([render_meta(result), render_ceilings(result), *render_status(result), "", render_summary(result),
                         *([""] + judgement if judgement else [])]))
        return 1 if mismatches(result) or our_errors(result) else 0
    if args.build_only:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        ours = None if set(names) & {"all", "ours"} else [b for b in names if b not in PEERS and b != "peers"]
        shape = (args.shape_list[0].n, args.shape_list[0].k) if args.shapes else BUILD_SHAPE
        return build_only(args.m_list, ours, shape, args.seed)
    budget = Budget(args.max_seconds)
    try:
        measurer = GpuMeasurer(
            target_s=args.target_ms / 1e3,
            max_reps=args.max_reps,
            use_graph=not args.no_graph,
            check_m=args.check_m,
            seed=args.seed,
        )
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **measurer.meta()}
    except Exception as error:  # noqa: BLE001 - no GPU, no torch, no CuPy: say so and stop
        print(f"liquidref bench needs a CUDA GPU with torch and CuPy: {_short_error(error)}", file=sys.stderr)
        return 2
    meta["argv"] = argv
    try:
        ours, peers = parse_backends(args.backends, meta["our_backends_available"])
    except ValueError as error:
        print(f"liquidref bench: {error}", file=sys.stderr)
        return 2
    previous_handler = _install_sigterm()
    try:
        result = run(args, measurer, budget, Path(args.out), meta, ours, peers)
    finally:
        measurer.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    written = write_outputs(result, Path(args.out), with_plot=not args.no_plot)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(render_text(result), end="")
        print("bench: wrote " + ", ".join(str(p) for p in written.values()))
    return 1 if mismatches(result) or our_errors(result) else 0


if __name__ == "__main__":
    sys.exit(main())
