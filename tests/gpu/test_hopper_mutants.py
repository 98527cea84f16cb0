"""Deliberately wrong builds of the Hopper kernel must fail the GPU property.

Each mutant is one source edit of ``gpu/kernels/w4a8_hopper.cu`` (compiled through NVRTC exactly
like the real kernel, from a copy of the kernel folder) in a code path the property of
``test_hopper.py`` reaches: the dequant, the cluster split's exchange (in both pipelines), the
workspace split's reduction, the early epilogue scales, the staged stores, the third compute
warpgroup's row block. For each, ``check_backend`` (the same
byte-for-byte check as everywhere) must raise on a fixed case and configuration that runs the
edited code, while the unedited kernel passes the same case. The CPU test below keeps the
mutants honest: each edit's text must occur exactly once in the kernel, so a refactor that moves
it fails here instead of quietly testing nothing.
"""

from __future__ import annotations

import shutil
from typing import NamedTuple

import numpy as np
import pytest

import liquidref
from gpu import api, hopper, runtime
from liquidref.tiling import TileConfig

from .test_hopper import run_sanitizer_case
from .test_mma_sync import Case, check_backend

class Mutant(NamedTuple):
    """One source edit of the kernel and a launch that runs the edited code."""

    original: str  # text in the kernel (exactly once)
    mutated: str  # its replacement
    split_k: int = 1
    tokens: int = 16  # the wgmma n of the tile; M is tokens - 3
    variant: str = "hopper"
    compute_warpgroups: int = 2

    @property
    def config(self) -> TileConfig:
        return TileConfig(self.compute_warpgroups, self.tokens, 256, 3, self.split_k)


MUTANTS = {
    # the LiquidQuant dequant without the XOR that turns the unsigned byte sums into int8
    "dequant_without_xor": Mutant("out_lo = (lo * s_lo + a_lo) ^ XOR_MASK_WORD;", "out_lo = (lo * s_lo + a_lo);"),
    # the owner CTA of a cluster split ignores the partials its partner sent
    "cluster_owner_drops_partials": Mutant("acc[4 * c] += v.x;", "acc[4 * c] += 0 * v.x;", split_k=2),
    # the ExCP ablation's cluster split sends its own row block instead of the partner's
    "excp_cluster_sends_its_own_block": Mutant("theirs[i] = own == 0 ? acc[1][i] : acc[0][i];",
                                               "theirs[i] = own == 0 ? acc[0][i] : acc[1][i];", split_k=2,
                                               variant="hopper_excp"),
    # the workspace split's last CTA ignores the other splits' slices
    "workspace_last_split_drops_partials": Mutant("total[4 * c] += v.x;", "total[4 * c] += 0 * v.x;", split_k=3),
    # the early (n <= 32) epilogue scales: s1 of the first row half for both halves
    "early_scales_of_wrong_half": Mutant("if constexpr (PRELOADED) return rows[r][h];",
                                         "if constexpr (PRELOADED) return rows[r][0];"),
    # the staged n = 64 stores: each chunk taken from the neighbouring token's row of the tile
    "staged_chunk_of_wrong_token": Mutant("*reinterpret_cast<const uint4*>(tile + token * stride + row);",
                                          "*reinterpret_cast<const uint4*>(tile + (token ^ 1) * stride + row);",
                                          split_k=2, tokens=64),
    # a tile's active row blocks capped at two warpgroups' worth (the kernel before three compute
    # warpgroups): with three, the third warpgroup's 64 rows are never loaded nor stored
    "third_warpgroup_rows_dropped": Mutant("active_blocks = min(BLOCKS, row_blocks - first_row_block);",
                                           "active_blocks = min(2, row_blocks - first_row_block);",
                                           compute_warpgroups=3),
}
N, K = 192, 1536  # 1.5 row tiles (one 192-row tile with three warpgroups); 6 stages of 256: 2 or 3
# per split, the ring wraps unsplit


# A race the bytes cannot show, for compute-sanitizer racecheck: in the cluster split's racecheck
# build (gpu.hopper.BARRIER_EXCHANGE_DEFINE) each owner thread also reads its exchange buffer once
# before its wait on the exchange's phase of the cluster barrier, racing with the sender's remote
# stores. The sum still comes from the reads after the wait, so the output stays bit-exact;
# scripts/gpu_session.sh (SANITIZE=1) runs test_racecheck_mutant under racecheck and requires a
# hazard report, so racecheck's clean result on the real build is one that could have failed.
RACECHECK_MUTANT = Mutant(
    "      cluster_wait();\n    } else {",
    "      {\n        unsigned early;  // racecheck mutant: a read before the phase-1 wait\n"
    "        asm volatile(\"ld.volatile.shared.u32 %0, [%1];\" : \"=r\"(early) : \"r\"(buffer + 16 * thread) : \"memory\");\n"
    "      }\n      cluster_wait();\n    } else {",
    split_k=2)
RACECHECK_MUTANT_CASES = [("hopper", 16), ("hopper", 64), ("hopper_excp", 16)]  # (variant, n)


@pytest.mark.mutant
def test_each_mutant_edits_the_kernel_once():
    """CPU: every mutant's text occurs exactly once in the kernel source."""
    source = (runtime.KERNELS_DIR / hopper.SOURCE).read_text()
    for name, mutant in {**MUTANTS, "racecheck_mutant": RACECHECK_MUTANT}.items():
        count = source.count(mutant.original)
        assert count == 1, f"{name}: {mutant.original!r} occurs {count} times"


def _case(m: int) -> Case:
    rng = np.random.default_rng(m)
    W = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.1, 10, (N, 1)).astype(np.float32)
    X = rng.standard_normal((m, K)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    x_i8, s_x = liquidref.quantize_activation(X)
    return Case(w, X, x_i8, s_x, liquidref.gemm(x_i8, s_x, w))


def _runner(cp, config, variant):
    def run(x_tiled, s_x, m, packed, out):
        out_d = cp.asarray(out)
        hopper.run(cp.asarray(x_tiled), cp.asarray(s_x), m, api.upload(packed), out_d, config, variant)
        return cp.asnumpy(out_d)

    return run


def _poisoned(shape):
    from .conftest import POISON_FP16

    return np.full(shape, POISON_FP16, np.uint16).view(np.float16)


@pytest.mark.mutant
@pytest.mark.gpu
@pytest.mark.parametrize("name", list(MUTANTS))
def test_property_catches_kernel_mutant(cp, name, tmp_path, monkeypatch):
    if not hopper.is_available():
        pytest.skip("the Hopper kernel needs an sm_90 GPU")
    mutant = MUTANTS[name]
    run = _runner(cp, mutant.config, mutant.variant)
    case = _case(mutant.tokens - 3)
    check_backend(run, case, _poisoned)  # the real kernel passes

    use_mutated_kernels(tmp_path, monkeypatch, mutant)
    with pytest.raises(AssertionError):
        check_backend(run, case, _poisoned)


def use_mutated_kernels(tmp_path, monkeypatch, mutant: Mutant) -> None:
    """Compile the kernel from a copy of the kernel folder with ``mutant``'s edit from now on."""
    kernels = tmp_path / "kernels"
    shutil.copytree(runtime.KERNELS_DIR, kernels)
    source = kernels / hopper.SOURCE
    source.write_text(source.read_text().replace(mutant.original, mutant.mutated))
    monkeypatch.setattr(runtime, "KERNELS_DIR", kernels)
    monkeypatch.setattr(hopper, "_kernels", {})  # compile the mutant, not the cached kernel


@pytest.mark.mutant
@pytest.mark.gpu
@pytest.mark.parametrize(("variant", "tokens"), RACECHECK_MUTANT_CASES)
def test_racecheck_mutant(cp, variant, tokens, tmp_path, monkeypatch):
    """RACECHECK_MUTANT on test_hopper.py's sanitizer case (plain launch, one load warp below
    n = 64): bit-exact, as the race leaves the sum alone; under racecheck it must show a hazard."""
    if not hopper.is_available():
        pytest.skip("the Hopper kernel needs an sm_90 GPU")
    use_mutated_kernels(tmp_path, monkeypatch, RACECHECK_MUTANT)
    run_sanitizer_case(cp, variant, None, 2, True, False, tokens, tokens >= hopper.SPLIT_LOADERS_MIN_N)
