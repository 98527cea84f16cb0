"""Launch glue for the Hopper (sm_90a) LiquidGEMM kernel, ``gpu/kernels/w4a8_hopper.cu``.

Registers the ``"hopper"`` backend of ``gpu.api``. The tile configuration comes from
``liquidref.choose_tile_config`` (the same one the tiled pipeline reference models) unless the
caller passes one. The kernel runs the classic grid (row tiles x token tiles x split_k);
``TileConfig.stream_k_ctas`` (the persistent stream-K schedule the tiled reference models) is
refused: a stream-K build of this kernel measured slower on an H200 (docs/performance.md).
Split-K tiles with ``TileConfig.cluster_split`` (n <= 64, split_k 2: 70B o and down and 8B
qkv at decode, 8B o and down at M = 128) are launched as thread block clusters of their split_k
CTAs and add their partials through distributed shared memory (``ClusterExchange`` in the
kernel). Other split-K launches need an int32 workspace (``split_k_workspace_ints``: one slice
of partial sums per output tile and split, written before it is read in every launch) and one
counter per output tile (zero; the kernel leaves it zero again), so both are allocated once per
device and grown on demand.

``run(..., programmatic=True)`` launches with programmatic dependent launch: the kernel starts
while the activation quantizer before it still runs and streams its first weight stages, then
waits on the device (``griddepcontrol.wait``) before it reads the activations or writes anything.
``gpu.api.linear`` uses it; a plain ``gemm_tiled`` call does not, since the kernel before it may
write the weights.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from liquidref.constants import (
    ACT_CORE_ROWS,
    BLOCK_BYTES,
    BLOCK_K,
    BLOCK_ROWS,
    META_BYTES_PER_BLOCK,
    THREADS_PER_WARPGROUP,
)
from liquidref.tiling import (
    CLUSTER_SPLIT_K_MAX,
    CLUSTER_SPLIT_MAX_TOKENS,
    SHARED_MEMORY_LIMIT,
    WGMMA_S8_N,
    TileConfig,
    choose_tile_config,
    most_stages,
)

from . import runtime

SOURCE = "w4a8_hopper.cu"


# Backends of this kernel: variant -> (kernel template, NVRTC options).
#   hopper              the LiquidGEMM kernel (implicit fine-grained pipeline, ImFP)
#   hopper_qoq_dequant  ablation: QServe's dequant instructions (IMUL + per-byte vadd4) on the
#                       same bytes (bit-exact, see the .cu)
#   hopper_excp         ablation: the explicit three-role pipeline (a dequant warpgroup writes
#                       int8 weights to shared memory for an MMA warpgroup)
VARIANTS = {
    "hopper": ("w4a8_hopper", ()),
    "hopper_qoq_dequant": ("w4a8_hopper", ("-DLIQUIDREF_DEQUANT_QOQ=1",)),
    "hopper_excp": ("w4a8_hopper_excp", ()),
}
# Stages of weights a programmatic launch requests before it waits for the quantizer's grid
# (the kernel's weight_prefetch argument; a plain launch passes 0). Tuned on an H200.
PROGRAMMATIC_WEIGHT_PREFETCH = 2
# Two load warps (one for the weights, one for the activations, each half of a slot on its own
# barriers) from wgmma n = SPLIT_LOADERS_MIN_N on: the kernel's default (tested). Below it one warp
# requests both halves in stage order, which measured faster for split-K tiles at decode; tiles
# with an unsplit k range of at least TWO_LOADERS_MIN_STAGES stages take two load warps at every
# n (a build with LIQUIDREF_SPLIT_LOADERS_MIN_N = 8). Measured at M = 1-32 (docs/performance.md,
# tuning log): H200 70B qkv M = 16 22.2 -> 19.7 us, gate_up M = 32 88.4 -> 81.2 us; H100 gate_up
# M = 32 106.2 -> 100.6 us, qkv M = 1 19.9 -> 20.6 us (the one loss); split-K tiles (70B o and
# down) and 8B's 16-stage tiles lose 0.5-5 % with two load warps, so they keep one.
SPLIT_LOADERS_MIN_N = 64
TWO_LOADERS_MIN_STAGES = 32
# the build option of that second module: two load warps from the smallest wgmma n on
TWO_LOADERS_DEFINE = f"LIQUIDREF_SPLIT_LOADERS_MIN_N={min(WGMMA_S8_N)}"
# The build compute-sanitizer racecheck can run on cluster splits (racecheck never finishes one
# whose CTAs exchange partials through an mbarrier): plain remote stores ordered by a second
# phase of the cluster barrier instead (ClusterExchange in the .cu). For the sanitizer cases only:
# the owner waits for every thread of the cluster.
BARRIER_EXCHANGE_DEFINE = "LIQUIDREF_CLUSTER_EXCHANGE_BY_CLUSTER_BARRIER=1"
EXCP_A_SLOTS = 2  # EXCP_A_SLOTS in the .cu (tested): int8 weight buffers between the roles
EXCP_MAX_TOKENS = 128  # one MMA warpgroup holds both row blocks' accumulators


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")


def kernel_name(config: TileConfig, variant: str = "hopper", cluster_split: bool = False) -> str:
    """The C++ name of the kernel instantiation for ``config`` and ``variant``; ``cluster_split``:
    the build launched as clusters of a tile's split-K CTAs (``config.cluster_split`` must hold)."""
    _check_variant(variant)
    template = VARIANTS[variant][0]
    fields = [config.tokens_per_cta, config.k_per_stage, config.stages]
    if template == "w4a8_hopper":
        fields.insert(0, config.compute_warpgroups)
    if cluster_split:
        if not config.cluster_split:
            raise ValueError(f"{config} has no cluster-split build (TileConfig.cluster_split)")
        fields.append("true")
    return f"liquidref::hopper::{template}<{', '.join(map(str, fields))}>"


def shared_memory_bytes(config: TileConfig, variant: str = "hopper") -> int:
    """Dynamic shared memory of one CTA: ``TileConfig.shared_memory_bytes``, plus the int8
    weight buffers between the two roles for ``hopper_excp``."""
    _check_variant(variant)
    extra = 0
    if variant == "hopper_excp":
        extra = EXCP_A_SLOTS * config.rows_per_cta * config.k_per_stage
    return config.shared_memory_bytes + extra


def two_load_warps(config: TileConfig, k: int) -> bool:
    """Whether the kernel for ``config`` streams weights and activations with two load warps on
    a problem of depth ``k``: from n = ``SPLIT_LOADERS_MIN_N`` on, and below for an unsplit k range
    of at least ``TWO_LOADERS_MIN_STAGES`` stages."""
    if config.tokens_per_cta >= SPLIT_LOADERS_MIN_N:
        return True
    return config.split_k == 1 and config.k_stages(k) >= TWO_LOADERS_MIN_STAGES


def excp_config(config: TileConfig) -> TileConfig:
    """The nearest configuration the ExCP ablation runs: two row blocks, n <= 128, and as many
    of ``config``'s stages as fit beside its int8 weight buffers (at least 2)."""
    tokens = min(config.tokens_per_cta, EXCP_MAX_TOKENS)
    smallest = dataclasses.replace(config, compute_warpgroups=2, tokens_per_cta=tokens, stages=2)
    return most_stages(smallest, config.stages,
                       fits=lambda c: shared_memory_bytes(c, "hopper_excp") <= SHARED_MEMORY_LIMIT)


def is_available() -> bool:
    """True when CuPy sees a Hopper (compute capability 9.0) GPU."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.Device().compute_capability == "90"
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


_kernels: dict[tuple, object] = {}
_scratch: dict[int, dict[str, object]] = {}


def _kernel(config: TileConfig, variant: str = "hopper", two_loaders: bool = False, cluster_split: bool = False,
            barrier_exchange: bool = False):
    """The compiled kernel; ``two_loaders`` below n = SPLIT_LOADERS_MIN_N: the build with two
    load warps at every n; ``cluster_split``: the build launched as clusters (see ``run``);
    ``barrier_exchange``: its racecheck build (``BARRIER_EXCHANGE_DEFINE``)."""
    base = TileConfig(config.compute_warpgroups, config.tokens_per_cta, config.k_per_stage, config.stages)
    two_loaders = two_loaders and base.tokens_per_cta < SPLIT_LOADERS_MIN_N
    key = (base, variant, two_loaders, cluster_split, barrier_exchange)
    if key not in _kernels:
        name = kernel_name(config, variant, cluster_split)  # (split_k is a launch argument)
        options = VARIANTS[variant][1] + ((f"-D{TWO_LOADERS_DEFINE}",) if two_loaders else ())
        options += (f"-D{BARRIER_EXCHANGE_DEFINE}",) if barrier_exchange else ()
        module = runtime.compile_module(SOURCE, name_expressions=(name,), options=options)
        kernel = module.get_function(name)
        # one build serves every split_k, whose exchange buffers differ: allow the most a
        # configuration may take (TileConfig checks each launch's own bytes against it)
        kernel.max_dynamic_shared_size_bytes = SHARED_MEMORY_LIMIT
        _kernels[key] = kernel
    return _kernels[key]


def cluster_occupancy(config: TileConfig, sizes: tuple[int, ...] = (1, 2, 3, 4), variant: str = "hopper") -> dict[int, int]:
    """{cluster size: clusters the device runs at once} for the kernel ``config`` launches
    (its build, threads and shared memory), in clusters of that many CTAs along the split-K axis
    (``runtime.max_active_clusters``). Size x count is how many of these CTAs a cluster launch
    can keep resident: below the SM count, the grouping of SMs into GPCs leaves some idle (the
    reason ``CLUSTER_SPLIT_K_MAX`` is 2). Needs a Hopper GPU."""
    kernel = _kernel(config, variant, cluster_split=config.cluster_split)
    block = ((config.compute_warpgroups + 1) * THREADS_PER_WARPGROUP,)
    shared = shared_memory_bytes(config, variant)
    return {size: runtime.max_active_clusters(kernel, block, shared, (1, 1, size)) for size in sizes}


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_id: int) -> int:
    """SM count of a device (read once: ``Device.attributes`` queries every attribute)."""
    import cupy

    return cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, device_id)


def split_k_workspace_ints(config: TileConfig, m: int, n: int) -> int:
    """int32 elements of the split-K workspace for an [M, K] x [N, K] problem.

    One slice of partial sums per (token tile, 64-row block, split), each the 128 threads'
    ``tokens_per_cta / 2`` accumulators: split_k x N x token tiles x tokens_per_cta in all (the
    kernel's ``store_tile`` indexes the slices this way). 0 without split-K.
    """
    if config.split_k == 1:
        return 0
    return config.split_k * n * config.grid(m, n)[1] * config.tokens_per_cta


def _zeroed(name: str, size: int):
    """A zero int32 device buffer of at least ``size`` elements, kept per device."""
    import cupy

    per_device = _scratch.setdefault(cupy.cuda.Device().id, {})
    buf = per_device.get(name)
    if buf is None or buf.size < size:
        buf = cupy.zeros(max(size, 1), dtype=cupy.int32)
        per_device[name] = buf
    return buf


def run(
    x_tiled,
    s_x,
    m: int,
    dw,
    out,
    config: TileConfig | None = None,
    variant: str = "hopper",
    programmatic: bool = False,
    weight_prefetch: int | None = None,
    two_loaders: bool | None = None,
    cluster_split: bool | None = None,
    barrier_exchange: bool = False,
) -> None:
    """Launch the Hopper kernel: ``out[m, n] = fp16(float(x_i8 @ w_i8.T) * (s1[n] * s_x[m]))``.

    Args:
        x_tiled: CuPy int8 [M_pad/8, K/16, 8, 16], activations in the core-matrix layout.
        s_x: CuPy float32 [M].
        m: M, the number of tokens (>= 1).
        dw: ``gpu.api.DeviceWeight`` (codes, meta, s1 on the device; N % 64 == 0).
        out: CuPy float16 [M, N], written completely.
        config: a ``TileConfig``; ``choose_tile_config(M, N, K, SMs)`` when None.
        variant: a key of ``VARIANTS`` (the kernel or one of its ablations; ``hopper_excp`` runs
            ``excp_config(config)``).
        programmatic: launch with programmatic dependent launch (see the module docstring):
            only right after the kernel that writes ``x_tiled`` and ``s_x``, in the same stream.
        weight_prefetch: stages of weights requested before waiting for that kernel (default:
            ``PROGRAMMATIC_WEIGHT_PREFETCH`` when programmatic, else 0).
        two_loaders: two load warps below n = ``SPLIT_LOADERS_MIN_N`` too (None: by
            ``two_load_warps``; from that n on there are always two).
        cluster_split: add split-K partials through distributed shared memory, the split_k CTAs
            of a tile launched as one cluster (None: where ``config.cluster_split``, for every
            variant; False: through the global workspace).
        barrier_exchange: the cluster split's racecheck build (``BARRIER_EXCHANGE_DEFINE``: the
            partials as plain remote stores ordered by the cluster barrier, not st.async on an
            mbarrier; slower); needs a cluster split.
    """
    import cupy

    from . import api

    _check_variant(variant)
    n, k = dw.n, dw.k
    # the tensor maps are built from these shapes, and a TMA copy outside them reads zeros: check
    runtime.device_array("x_tiled", x_tiled, np.int8, api.tiled_activation_shape(m, k))
    if config is None:
        config = choose_tile_config(m, n, k, _multiprocessors(cupy.cuda.Device().id))
    if variant == "hopper_excp":
        config = excp_config(config)
    if k % config.k_per_stage != 0:
        raise ValueError(f"K = {k} must be a multiple of k_per_stage = {config.k_per_stage}")
    k_stages = k // config.k_per_stage
    if config.split_k > k_stages:
        raise ValueError(f"split_k = {config.split_k} exceeds the {k_stages} k stages of K = {k}")
    if n % BLOCK_ROWS != 0:
        raise ValueError(f"N = {n} must be a multiple of {BLOCK_ROWS}")
    if config.stream_k_ctas:
        raise ValueError(
            f"{config}: the Hopper kernel runs the classic grid (split_k); stream_k_ctas must be 0"
        )
    if weight_prefetch is None:
        weight_prefetch = PROGRAMMATIC_WEIGHT_PREFETCH if programmatic else 0
    if isinstance(weight_prefetch, bool) or not isinstance(weight_prefetch, (int, np.integer)) or weight_prefetch < 0:
        raise ValueError(f"weight_prefetch must be an int >= 0; got {weight_prefetch!r}")
    if two_loaders is None:
        two_loaders = two_load_warps(config, k)
    elif not isinstance(two_loaders, bool):
        raise ValueError(f"two_loaders must be None, True or False; got {two_loaders!r}")
    if cluster_split is None:
        cluster_split = config.cluster_split
    elif not isinstance(cluster_split, bool):
        raise ValueError(f"cluster_split must be None, True or False; got {cluster_split!r}")
    elif cluster_split and not config.cluster_split:
        raise ValueError(f"{config}: cluster_split needs 2 <= split_k <= {CLUSTER_SPLIT_K_MAX} and "
                         f"tokens_per_cta <= {CLUSTER_SPLIT_MAX_TOKENS} (TileConfig.cluster_split)")
    if not isinstance(barrier_exchange, bool):
        raise ValueError(f"barrier_exchange must be True or False; got {barrier_exchange!r}")
    if barrier_exchange and not cluster_split:
        raise ValueError(f"{config}: barrier_exchange is a build of the cluster split, which this launch does not run "
                         "(cluster_split False, or the configuration has none)")
    _launch(_kernel(config, variant, two_loaders, cluster_split, barrier_exchange), config,
            shared_memory_bytes(config, variant),
            x_tiled, s_x, m, dw, out, programmatic, weight_prefetch, cluster_split)


@functools.lru_cache(maxsize=1024)
def _tensor_map(address: int, row_bytes: int, dims: tuple, strides: tuple, box: tuple) -> runtime.TensorMap:
    """``runtime.tensor_map``, cached: a map is a pure function of these values."""
    return runtime.tensor_map(address, row_bytes, dims, strides, box)


def tensor_maps(config: TileConfig, x_tiled, dw) -> tuple[runtime.TensorMap, runtime.TensorMap, runtime.TensorMap]:
    """The kernel's three TMA tensor maps (``Loader`` in the .cu), in parameter order:

    codes   codes [N/64, K/64, 2048] as N/64 * K/64 rows of BLOCK_BYTES (one 64 x 64 block);
            a box is a stage's k_per_stage / 64 blocks of one row block
    meta    meta [N/64, K/64, 128] as rows of META_BYTES_PER_BLOCK, the same box
    x       x_tiled [M_pad/8, K/16, 8, 16] as [M_pad/8 groups][K / k_per_stage stages] rows of
            k_per_stage * 8 bytes (one 8-token group's 16-byte chunks of one stage are
            contiguous); a box is one stage of tokens_per_cta / 8 groups (zeros past M_pad)

    Without L2 promotion: 128- or 256-byte promotion of the weights' or of both maps' copies
    measured no faster (H100, within 0.3 us at M <= 64).
    """
    blocks_per_stage = config.k_per_stage // BLOCK_K
    weight_rows = (dw.n // BLOCK_ROWS) * (dw.k // BLOCK_K)
    x_row_bytes = config.k_per_stage * ACT_CORE_ROWS
    k_stages = dw.k // config.k_per_stage
    groups = x_tiled.shape[0]
    return (
        _tensor_map(dw.codes.data.ptr, BLOCK_BYTES, (weight_rows,), (BLOCK_BYTES,), (blocks_per_stage,)),
        _tensor_map(dw.meta.data.ptr, META_BYTES_PER_BLOCK, (weight_rows,), (META_BYTES_PER_BLOCK,),
                    (blocks_per_stage,)),
        _tensor_map(x_tiled.data.ptr, x_row_bytes, (k_stages, groups), (x_row_bytes, k_stages * x_row_bytes),
                    (1, config.tokens_per_cta // ACT_CORE_ROWS)),
    )


def _launch(kernel, config: TileConfig, shared_mem: int, x_tiled, s_x, m: int, dw, out, programmatic: bool,
            weight_prefetch: int, cluster_split: bool = False) -> None:
    """Launch a compiled kernel of ``w4a8_hopper.cu``'s signature on checked arguments
    (``cluster_split``: clusters of the split_k CTAs of a tile, ``config.cluster_split`` true)."""
    n, k = dw.n, dw.k
    grid = config.grid(m, n)
    if cluster_split:
        workspace = counters = _zeroed("unused", 1)
    elif config.split_k > 1:
        workspace = _zeroed("workspace", split_k_workspace_ints(config, m, n))
        counters = _zeroed("counters", grid[0] * grid[1])
    else:
        workspace = counters = _zeroed("unused", 1)
    codes_map, meta_map, x_map = tensor_maps(config, x_tiled, dw)
    runtime.launch(
        kernel,
        grid,
        ((config.compute_warpgroups + 1) * THREADS_PER_WARPGROUP,),
        (codes_map, meta_map, dw.s1, x_map, s_x, out, workspace, counters, np.int32(m), np.int32(n),
         np.int32(k), np.int32(config.split_k), np.int32(weight_prefetch)),
        shared_mem=shared_mem,
        programmatic=programmatic,
        cluster=(1, 1, config.split_k) if cluster_split else None,
    )


def _register() -> None:
    from . import api

    for variant in VARIANTS:
        api.register_backend(variant, functools.partial(run, variant=variant), is_available, programmatic=True)


_register()
