"""Time launch and tile-configuration variants of the Hopper kernel side by side, in one run.

Registers extra backends of ``gpu.api`` that run the same kernel with another launch or tile
configuration, then hands its arguments to ``liquidref bench`` (so the variants, the default
``hopper`` backend and the peers are timed in the same process, the same way)::

    python scripts/compare_schedules.py --shapes llama2-70b --m 1,16,64 \
        --backends hopper,hopper_no_pdl,hopper_pf0,hopper_pf4,cublas_bf16 --out liquidref-out/compare

Variants:
    hopper_no_pdl    launched plainly after the quantizer (no programmatic dependent launch)
    hopper_pf<P>     programmatic launch requesting P stages of weights before waiting for the
                     quantizer (the default is gpu.hopper.PROGRAMMATIC_WEIGHT_PREFETCH)
    hopper_split<S>  the chosen configuration with split-K S (where K has enough stages)
    hopper_n<T>s<S>  T tokens per CTA (the wgmma n) and split-K S, stages as the chooser would
    hopper_n<T>k<KS> T tokens per CTA, KS k per stage, as many stages as fit, no split-K (prefill
                     tiles: n128k128, n128k256, n176k256, n192k256, n208k256, n224k256, n256k128)
    hopper_ks<KS>    KS k per stage (64..512) and as many stages as fit, the chooser's split-K
                     (at most a quarter of the k stages)
    quantize_only    the activation quantizer alone (its GEMM is skipped, so its check fails):
                     what the quantizer costs inside an end-to-end call
    hopper_qcap<C>   the quantizer's grid capped at C CTAs per SM (qcap1, qcap05 = 0.5)
    hopper_qw32      one-warp quantizer CTAs (they fit beside a GEMM CTA), at most 1 per SM;
                     hopper_qw32s1 one per row
    quantize_only_q* the quantizer alone, launched as in hopper_q*
    hopper_cwg1      one compute warpgroup per CTA (64-row tiles), no split-K, as many stages as fit
    hopper_cwg1s2    the same with split-K 2
    hopper_cwg2      two compute warpgroups per CTA always (128-row tiles: the chooser before it
                     took three where they save a wave), split-K by the chooser's rule
    hopper_cwg3      three compute warpgroups per CTA (192-row tiles) always, split-K by the
                     chooser's rule for them (through the workspace)
    hopper_cwg3k128  three compute warpgroups, 128-k stages (as many as fit), the chooser's split
                     (its 256-k n = 128 build has too few registers: ptxas serializes its wgmmas)
    hopper_loaders2  two load warps at every n (hopper.two_load_warps decides otherwise)
    hopper_loaders1  one load warp below n = 64 whatever the k range
    hopper_workspace split-K partials through the global workspace, not a cluster (where the
                     chooser's configuration would run a cluster split)
    hopper_barrier_exchange  racecheck's build of the cluster split (partials as plain remote
                     stores ordered by the cluster barrier, gpu.hopper.BARRIER_EXCHANGE_DEFINE) where the chooser's configuration
                     runs one; elsewhere the kernel as is
    gemm_only        the GEMM alone (plain launch) on activations quantized once per input
    hopper_prev      a control: gpu/kernels/w4a8_hopper_prev.cu, when such a file is there (an
                     older kernel source with the current launch signature: the three tensor
                     maps of gpu.hopper.tensor_maps, since commit 9ca1490), launched like the
                     kernel (programmatic, split-K through the workspace) with the chooser's config
"""

from __future__ import annotations

import dataclasses
import os
import sys

from gpu import api, bench, hopper, runtime
from liquidref.tiling import choose_tile_config, most_stages


def _variant(allow_programmatic: bool, weight_prefetch: int | None = None, split_k: int | None = None,
             tokens: int | None = None, k_per_stage: int | None = None, compute_warpgroups: int | None = None):
    def run(x_tiled, s_x, m, dw, out, programmatic=False):
        config = choose_tile_config(m, dw.n, dw.k)
        if compute_warpgroups is not None:
            config = most_stages(dataclasses.replace(config, compute_warpgroups=compute_warpgroups, stages=2))
        if tokens is not None:
            config = _with_tokens(config, tokens)
        if k_per_stage is not None and dw.k % k_per_stage == 0:
            # the chooser's split, rounded down to what the longer stages allow
            longer = most_stages(dataclasses.replace(config, k_per_stage=k_per_stage, stages=2, split_k=1))
            split = max(1, min(config.split_k, dw.k // k_per_stage // 4))
            config = dataclasses.replace(longer, split_k=split)
        if split_k is not None and dw.k // config.k_per_stage >= split_k:
            # at most the stages before (the cluster split's exchange buffer may take some)
            config = most_stages(dataclasses.replace(config, split_k=split_k, stages=2), config.stages)
        hopper.run(x_tiled, s_x, m, dw, out, config, "hopper", programmatic=programmatic and allow_programmatic,
                   weight_prefetch=weight_prefetch if programmatic and allow_programmatic else None)

    return run


def _chooser_variant(**chooser_options):
    """The chooser's configuration for ``chooser_options`` (e.g. compute_warpgroups=3: 192-row
    tiles, split-K by the chooser's rule for them)."""
    def run(x_tiled, s_x, m, dw, out, programmatic=False):
        config = choose_tile_config(m, dw.n, dw.k, **chooser_options)
        hopper.run(x_tiled, s_x, m, dw, out, config, "hopper", programmatic=programmatic)

    return run


def _with_tokens(config, tokens: int):
    """``config`` with ``tokens`` per CTA, split-K 1 and as many stages as fit (at most 8)."""
    return most_stages(dataclasses.replace(config, tokens_per_cta=tokens, stages=2, split_k=1))


def _previous_kernel_run(x_tiled, s_x, m, dw, out, programmatic=False):
    config = choose_tile_config(m, dw.n, dw.k)
    name = hopper.kernel_name(config)
    kernel = runtime.compile_module("w4a8_hopper_prev.cu", name_expressions=(name,)).get_function(name)
    kernel.max_dynamic_shared_size_bytes = config.shared_memory_bytes
    prefetch = hopper.PROGRAMMATIC_WEIGHT_PREFETCH if programmatic else 0
    hopper._launch(kernel, config, config.shared_memory_bytes, x_tiled, s_x, m, dw, out, programmatic, prefetch)


def quantize_slices_capped(ctas_per_sm: float):
    """gpu.api.quantize_slices, further capped at ``ctas_per_sm`` x 132 CTAs in all."""
    base = api.quantize_slices  # the rule itself, not the patched name this replaces

    def slices(rows: int, k: int, num_sms: int = 132) -> int:
        return max(1, min(base(rows, k, num_sms), int(ctas_per_sm * num_sms) // max(rows, 1)))

    return slices


_quantize_threads = api.quantize_threads  # the rule itself, not the patched name


def one_warp_threads(rows: int, k: int, num_sms: int = 132) -> int:
    """32 threads per quantizer CTA where gpu.api.quantize_threads gives a row more than its
    minimum (M below 2 rows per SM): with 24 registers a thread, such a CTA fits beside a GEMM CTA,
    which leaves only 1024 registers of an SM free, so the GEMM's CTAs need not wait for it."""
    base = _quantize_threads(rows, k, num_sms)
    return 32 if base > 128 else base


# backend name -> (GEMM backend, quantizer slices rule, quantizer threads rule)
QUANTIZER_VARIANTS = {
    "hopper_qcap1": ("hopper", quantize_slices_capped(1), _quantize_threads),
    "hopper_qcap05": ("hopper", quantize_slices_capped(0.5), _quantize_threads),
    "quantize_only_qcap1": ("quantize_only", quantize_slices_capped(1), _quantize_threads),
    "quantize_only_qcap05": ("quantize_only", quantize_slices_capped(0.5), _quantize_threads),
    "hopper_qw32": ("hopper", quantize_slices_capped(1), one_warp_threads),
    "hopper_qw32s1": ("hopper", quantize_slices_capped(0.01), one_warp_threads),
    "quantize_only_qw32": ("quantize_only", quantize_slices_capped(1), one_warp_threads),
}


_quantized: dict = {}


def _patch_linear() -> None:
    """Make ``api.linear`` take the variants that change more than the GEMM backend:
    ``backend="gemm_only"`` runs only the GEMM (hopper, plain launch) on activations quantized
    once per X (cached), what the GEMM costs without the quantizer; a ``QUANTIZER_VARIANTS`` name
    runs its GEMM backend behind the quantizer launched with that variant's grid."""
    linear = api.linear

    def patched(X, dw, backend="auto", check_finite=True, out=None):
        if backend in QUANTIZER_VARIANTS:
            gemm, slices, threads = QUANTIZER_VARIANTS[backend]
            saved = api.quantize_slices, api.quantize_threads
            api.quantize_slices, api.quantize_threads = slices, threads
            try:
                return linear(X, dw, backend=gemm, check_finite=check_finite, out=out)
            finally:
                api.quantize_slices, api.quantize_threads = saved
        if backend != "gemm_only":
            return linear(X, dw, backend=backend, check_finite=check_finite, out=out)
        key = (X.data.ptr, X.shape)
        if key not in _quantized:
            _quantized[key] = api.quantize_activation_tiled(X, check_finite=False)
        x_tiled, s_x = _quantized[key]
        return api.gemm_tiled(x_tiled, s_x, X.shape[0], dw, backend="hopper", out=out)

    api.linear = patched


def _workspace_run(x_tiled, s_x, m, dw, out, programmatic=False):
    """The chooser's configuration with split-K partials through the global workspace."""
    hopper.run(x_tiled, s_x, m, dw, out, None, "hopper", programmatic=programmatic, cluster_split=False)


def _barrier_exchange_run(x_tiled, s_x, m, dw, out, programmatic=False):
    """The chooser's configuration; a cluster split through racecheck's cluster-barrier build."""
    config = choose_tile_config(m, dw.n, dw.k)
    hopper.run(x_tiled, s_x, m, dw, out, config, "hopper", programmatic=programmatic,
               barrier_exchange=config.cluster_split)


def _loaders_variant(two_loaders: bool):
    """The chooser's configuration with two load warps below n = 64 always, or never."""
    def run(x_tiled, s_x, m, dw, out, programmatic=False):
        hopper.run(x_tiled, s_x, m, dw, out, None, "hopper", programmatic=programmatic, two_loaders=two_loaders)

    return run


def register() -> None:
    _patch_linear()
    for name, two_loaders in (("hopper_loaders2", True), ("hopper_loaders1", False)):
        api.register_backend(name, _loaders_variant(two_loaders), hopper.is_available, programmatic=True)
    api.register_backend("gemm_only", lambda *args, **kwargs: None, hopper.is_available)
    for name in QUANTIZER_VARIANTS:
        api.register_backend(name, lambda *args, **kwargs: None, hopper.is_available)
    api.register_backend("hopper_no_pdl", _variant(False), hopper.is_available)
    api.register_backend("hopper_workspace", _workspace_run, hopper.is_available, programmatic=True)
    api.register_backend("hopper_barrier_exchange", _barrier_exchange_run, hopper.is_available, programmatic=True)
    api.register_backend("hopper_cwg1", _variant(True, split_k=1, compute_warpgroups=1), hopper.is_available,
                         programmatic=True)
    api.register_backend("hopper_cwg1s2", _variant(True, split_k=2, compute_warpgroups=1), hopper.is_available,
                         programmatic=True)
    api.register_backend("hopper_cwg3k128", _variant(True, k_per_stage=128, compute_warpgroups=3),
                         hopper.is_available, programmatic=True)
    for warpgroups in (2, 3):
        api.register_backend(f"hopper_cwg{warpgroups}", _chooser_variant(compute_warpgroups=warpgroups),
                             hopper.is_available, programmatic=True)
    for stages in (0, 1, 4, 8):
        api.register_backend(f"hopper_pf{stages}", _variant(True, stages), hopper.is_available, programmatic=True)
    for split in (2, 3, 4):
        api.register_backend(f"hopper_split{split}", _variant(True, split_k=split), hopper.is_available,
                             programmatic=True)
    api.register_backend("quantize_only", lambda *args, **kwargs: None, hopper.is_available, programmatic=True)
    for tokens in (8, 16, 32, 64):
        for split in (1, 2, 3, 4):
            api.register_backend(f"hopper_n{tokens}s{split}", _variant(True, split_k=split, tokens=tokens),
                                 hopper.is_available, programmatic=True)
    for tokens, k_per_stage in ((128, 128), (128, 256), (176, 256), (192, 256), (208, 256), (224, 256), (256, 128)):
        api.register_backend(f"hopper_n{tokens}k{k_per_stage}", _variant(True, tokens=tokens, k_per_stage=k_per_stage),
                             hopper.is_available, programmatic=True)
    for k_per_stage in (128, 512):
        api.register_backend(f"hopper_ks{k_per_stage}", _variant(True, k_per_stage=k_per_stage), hopper.is_available,
                             programmatic=True)
    if os.path.exists(runtime.KERNELS_DIR / "w4a8_hopper_prev.cu"):
        api.register_backend("hopper_prev", _previous_kernel_run, hopper.is_available, programmatic=True)


if __name__ == "__main__":
    register()
    sys.exit(bench.main(sys.argv[1:]))
