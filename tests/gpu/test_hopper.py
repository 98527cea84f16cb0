"""The Hopper kernel (gpu/kernels/w4a8_hopper.cu) is bit-exact with liquidref on every tile
configuration, split-K included, and through the public API (which launches it with
programmatic dependent launch right after the activation quantizer).

Runs on an sm_90 GPU only (the other tests of this module skip with the reason elsewhere). The
drawn cases and the byte-for-byte check are those of ``test_mma_sync.py``; here Hypothesis also
draws the tile configuration (wgmma n, k per stage, stages, split-K, one to three compute
warpgroups), so ragged M and N, every token-tile edge and uneven split-K ranges are exercised,
with split-K partials added through a cluster's distributed shared memory or the workspace.

Memory and race checking on the GPU (a Firecracker machine), from the repository root::

    compute-sanitizer --tool memcheck python3 -m pytest -x -q tests/gpu/test_hopper.py \
        -k sanitizer_case -p no:cacheprovider
    compute-sanitizer --tool racecheck python3 -m pytest -x -q tests/gpu/test_hopper.py \
        -k "sanitizer_case and (workspace or barrier_exchange)" -p no:cacheprovider

memcheck and synccheck report 0 errors on every case. racecheck runs the cases without thread
block clusters and the cluster splits' racecheck build (barrier_exchange: partials as plain remote
stores ordered by the cluster barrier), not the st.async build: under racecheck a kernel whose
cluster CTAs exchange data through an mbarrier never finishes (scripts/racecheck_probe.py
cluster_st_async and cluster_st_remote, CUDA 13.0, H100), while racecheck does see remote stores
ordered by the cluster barrier (cluster_barrier_exchange and its racy twin).
On test_hopper_mutants.py's RACECHECK_MUTANT (that build with a racy read) racecheck must report
a hazard (scripts/gpu_session.sh; neither has run on a GPU yet, 2026-12-08); the st.async
build's protocol is checked on the CPU by test_hopper_cluster_exchange_protocol.py. What racecheck checks
there is the kernel's own shared memory traffic (the epilogue's staging tile, the ExCP
ablation's int8 slots, the scales), not the stage ring: it does not attribute a TMA tensor
copy's writes to any thread, so it sees no hazard on a ring that frees a slot too early either
(scripts/racecheck_probe.py, modes tensor and tensor_early; with raw cp.async.bulk copies it
reported a hazard for the correct ring and the racy one alike). The GPU property tests, whose
rings wrap, stay bit-exact, and test_hopper_ring_protocol.py checks every interleaving of a model
of the ring protocol for races and deadlocks (CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import liquidref
from gpu import api, hopper
from liquidref.tiling import CLUSTER_SPLIT_MAX_TOKENS, TileConfig

from .test_mma_sync import check_backend, gemm_cases

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def hopper_gpu(cp):
    """Skip unless the device is a Hopper GPU (sm_90)."""
    if not hopper.is_available():
        pytest.skip("the Hopper kernel needs an sm_90 GPU")
    return cp


# Each (warpgroups, n, k per stage, stages) is its own kernel instantiation and NVRTC compile, so
# the property draws from a fixed spread of them (every n class, every warpgroup count, all stage
# sizes) and draws split-K, a launch argument, freely.
INSTANTIATIONS = (
    (2, 8, 256, 8),
    (2, 16, 128, 4),
    (1, 24, 64, 3),
    (2, 48, 256, 2),
    (1, 64, 128, 6),
    (2, 112, 64, 5),
    (2, 128, 128, 8),
    (2, 128, 256, 4),
    (2, 192, 256, 3),
    (2, 256, 128, 5),
    (3, 8, 256, 8),
    (3, 32, 128, 6),
    (3, 64, 256, 4),
    (3, 128, 128, 7),
)


@st.composite
def tile_configs(draw, k: int):
    """A valid TileConfig (one of INSTANTIATIONS) whose k_per_stage divides ``k``."""
    usable = [fields for fields in INSTANTIATIONS if k % fields[2] == 0]
    cwg, tokens, ks, stages = draw(st.sampled_from(usable))
    split = draw(st.integers(1, min(4, k // ks)))
    return TileConfig(cwg, tokens, ks, stages, split)


def _device_runner(cp, config=None, variant="hopper", two_loaders=None, cluster_split=None):
    def run(x_tiled, s_x, m, packed, out):
        dw = api.upload(packed)
        out_d = cp.asarray(out)
        hopper.run(cp.asarray(x_tiled), cp.asarray(s_x), m, dw, out_d, config, variant, two_loaders=two_loaders,
                   cluster_split=cluster_split)
        return cp.asnumpy(out_d)

    return run


def _poisoned_host(shape):
    from .conftest import POISON_FP16

    return np.full(shape, POISON_FP16, np.uint16).view(np.float16)


@settings(max_examples=60)
@given(case=gemm_cases(max_m=300, max_n=640, max_k=1024), data=st.data())
def test_every_tile_configuration_is_bit_exact(hopper_gpu, case, data):
    """Drawn configurations, each below n = 64 with one load warp or (the build for long
    unsplit k ranges) two, and split-K tiles that can run as clusters either way (partials
    through distributed shared memory or through the workspace)."""
    config = data.draw(tile_configs(case.w.k), label="config")
    two_loaders = data.draw(st.booleans(), label="two_loaders")
    cluster_split = data.draw(st.booleans(), label="cluster_split") if config.cluster_split else False
    check_backend(_device_runner(hopper_gpu, config, two_loaders=two_loaders, cluster_split=cluster_split), case,
                  _poisoned_host)


@given(case=gemm_cases())
def test_chosen_configuration_is_bit_exact(hopper_gpu, case):
    check_backend(_device_runner(hopper_gpu), case, _poisoned_host)


@pytest.mark.parametrize(("m", "n", "tokens"), [(2048, 320, 176), (2100, 320, 176), (4096, 4096, 208),
                                               (2100, 8192, 224)])
def test_prefill_configuration_is_bit_exact(hopper_gpu, m, n, tokens):
    """M >= 2048 takes the widest tiles (n = 176-224, by prefill_tokens); the drawn cases above
    stay below that."""
    rng = np.random.default_rng(m + n)
    W = rng.standard_normal((n, 768)).astype(np.float16)
    X = rng.standard_normal((m, 768)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    assert liquidref.choose_tile_config(m, n, 768).tokens_per_cta == tokens
    got = api.linear(hopper_gpu.asarray(X), api.upload(w), backend="hopper")
    assert np.array_equal(hopper_gpu.asnumpy(got).view(np.uint16), liquidref.w4a8_linear(X, w).view(np.uint16))


@pytest.mark.parametrize(("m", "n", "tokens"), [(70, 10240, 64), (5, 20416, 8), (300, 6208, 128)])
def test_three_warpgroup_tiles_through_the_chooser(hopper_gpu, m, n, tokens):
    """Where the chooser takes 192-row tiles (one wave instead of two) the API's launch is
    bit-exact: 70B qkv's N at M = 70 (two token tiles, the second ragged; 53 full row tiles and
    one with a single row block), N = 20416 at decode (107 tiles, the last with one block) and
    N = 6208 at n = 128 (128-k stages, 33 tiles)."""
    rng = np.random.default_rng(m)
    W = rng.standard_normal((n, 512)).astype(np.float16)
    X = rng.standard_normal((m, 512)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    config = liquidref.choose_tile_config(m, n, 512)
    assert (config.compute_warpgroups, config.tokens_per_cta, config.split_k) == (3, tokens, 1)
    got = api.linear(hopper_gpu.asarray(X), api.upload(w), backend="hopper")
    assert np.array_equal(hopper_gpu.asnumpy(got).view(np.uint16), liquidref.w4a8_linear(X, w).view(np.uint16))


@given(case=gemm_cases(max_m=130, max_n=512, max_k=1024))
def test_qoq_dequant_ablation_is_bit_exact(hopper_gpu, case):
    check_backend(_device_runner(hopper_gpu, variant="hopper_qoq_dequant"), case, _poisoned_host)


@settings(max_examples=40)
@given(case=gemm_cases(max_m=300, max_n=640, max_k=1024), data=st.data())
def test_excp_ablation_is_bit_exact(hopper_gpu, case, data):
    """The explicit-pipeline ablation (int8 weights through shared memory, SS wgmma), on drawn
    configurations (split-K included, as clusters or through the workspace), mapped to the
    nearest one it runs."""
    config = hopper.excp_config(data.draw(tile_configs(case.w.k), label="config"))
    two_loaders = data.draw(st.booleans(), label="two_loaders")
    cluster_split = data.draw(st.booleans(), label="cluster_split") if config.cluster_split else False
    check_backend(_device_runner(hopper_gpu, config, "hopper_excp", two_loaders, cluster_split), case,
                  _poisoned_host)


@settings(max_examples=20)
@given(case=gemm_cases(max_m=300, max_n=512, max_k=1024))
def test_linear_through_the_api(hopper_gpu, poisoned, case):
    X = hopper_gpu.asarray(case.X)
    out = poisoned(case.y.shape, np.float16)
    got = api.linear(X, api.upload(case.w), backend="hopper", out=out)
    assert np.array_equal(hopper_gpu.asnumpy(got).view(np.uint16), case.y.view(np.uint16))


def test_split_k_reuses_its_workspace(hopper_gpu):
    """Split-K's last CTA resets the tile counters and every split rewrites its workspace slice:
    back-to-back calls stay exact (the chooser's split at decode, as a cluster and through the
    workspace, and split-K 3 at M = 64), also with the workspace full of stale partials from a
    bigger earlier call."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((256, 2048)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    dw = api.upload(w)
    for m in (64, 1, 5, 16):  # the M = 64 call leaves the most stale partials behind
        X = rng.standard_normal((m, 2048)).astype(np.float16)
        want = liquidref.w4a8_linear(X, w).view(np.uint16)
        assert m == 64 or liquidref.choose_tile_config(m, 256, 2048).split_k > 1
        for _ in range(3):
            got = api.linear(hopper_gpu.asarray(X), dw, backend="hopper")
            assert np.array_equal(hopper_gpu.asnumpy(got).view(np.uint16), want)
        x_tiled, s_x = api.quantize_activation_tiled(hopper_gpu.asarray(X))
        out = hopper_gpu.empty((m, 256), hopper_gpu.float16)
        for config in (TileConfig(2, 16 if m <= 16 else 64, 256, 3, 3), liquidref.choose_tile_config(m, 256, 2048)):
            for _ in range(2):
                hopper.run(x_tiled, s_x, m, dw, out, config, cluster_split=False)
                assert np.array_equal(hopper_gpu.asnumpy(out).view(np.uint16), want)
    counters = hopper._scratch[hopper_gpu.cuda.Device().id]["counters"]
    assert int(hopper_gpu.count_nonzero(counters)) == 0


@pytest.mark.parametrize("tokens", [8, 16, 32, 64])
def test_split_k_runs_as_clusters(hopper_gpu, monkeypatch, tokens):
    """Split-K 2 at n <= 64 launches clusters of the tile's two CTAs by default (partials
    through distributed shared memory), bit-exact with a half row tile (N = 192: the second CTA
    of the last cluster owns no row block) and a partial token tile, in the LiquidGEMM kernel and
    in the ExCP ablation; split-K 3 and cluster_split=False take the workspace, with the same
    bytes."""
    clusters = []
    launch = hopper.runtime.launch
    monkeypatch.setattr(hopper.runtime, "launch",
                        lambda *args, **kwargs: clusters.append(kwargs.get("cluster")) or launch(*args, **kwargs))
    rng = np.random.default_rng(tokens)
    w = liquidref.quantize_weight(rng.standard_normal((192, 1536)).astype(np.float16))
    m = tokens - 3
    X = rng.standard_normal((m, 1536)).astype(np.float16)
    want = liquidref.w4a8_linear(X, w).view(np.uint16)
    dw = api.upload(w)
    x_tiled, s_x = api.quantize_activation_tiled(hopper_gpu.asarray(X))
    runs = ((2, None, "hopper"), (2, False, "hopper"), (3, None, "hopper"), (2, None, "hopper_excp"),
            (2, False, "hopper_excp"))
    for split, cluster_split, variant in runs:
        out = hopper_gpu.empty((m, 192), hopper_gpu.float16)
        hopper.run(x_tiled, s_x, m, dw, out, TileConfig(2, tokens, 256, 2, split), variant, cluster_split=cluster_split)
        assert np.array_equal(hopper_gpu.asnumpy(out).view(np.uint16), want), variant
    assert clusters == [(1, 1, 2), None, None, (1, 1, 2), None]


def test_torch_tensors_in_and_out(hopper_gpu, torch_cuda):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((128, 512)).astype(np.float16)
    X = rng.standard_normal((9, 512)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    y = api.linear(torch_cuda.from_numpy(X).cuda(), api.upload(w), backend="hopper")
    assert isinstance(y, torch_cuda.Tensor)
    want = liquidref.w4a8_linear(X, w)
    assert np.array_equal(y.cpu().numpy().view(np.uint16), want.view(np.uint16))


def test_bad_configurations_are_refused(hopper_gpu):
    w = liquidref.quantize_weight(np.ones((128, 192), np.float16))
    dw = api.upload(w)
    xt, s_x = api.quantize_activation_tiled(hopper_gpu.ones((4, 192), hopper_gpu.float16))
    out = hopper_gpu.empty((4, 128), hopper_gpu.float16)
    with pytest.raises(ValueError, match="multiple of k_per_stage"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 128, 4, 1))
    with pytest.raises(ValueError, match="split_k"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 4, 4))
    with pytest.raises(ValueError, match="variant"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 4, 1), variant="nope")
    with pytest.raises(ValueError, match="stream_k_ctas must be 0"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 4, stream_k_ctas=3))
    with pytest.raises(ValueError, match="weight_prefetch"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 4, 1), weight_prefetch=-1)
    with pytest.raises(ValueError, match="cluster_split needs 2 <= split_k"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 4, 1), cluster_split=True)
    with pytest.raises(ValueError, match="cluster_split must be None, True or False"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 2, 2), cluster_split=1)
    with pytest.raises(ValueError, match="barrier_exchange is a build of the cluster split"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 2, 2), cluster_split=False, barrier_exchange=True)
    with pytest.raises(ValueError, match="barrier_exchange must be True or False"):
        hopper.run(xt, s_x, 4, dw, out, TileConfig(2, 8, 64, 2, 2), barrier_exchange=None)
    # the tensor maps are built from x_tiled's shape: one for other M or K is refused
    with pytest.raises(ValueError, match=r"x_tiled must have shape \(2, 12, 8, 16\)"):
        hopper.run(xt, s_x, 9, dw, out, TileConfig(2, 16, 64, 4, 1))
    with pytest.raises(ValueError, match="x_tiled must have shape"):
        hopper.run(xt[:, :8], s_x, 4, dw, out, TileConfig(2, 8, 64, 4, 1))


def _exact(cp, shape, dtype):
    """An empty device array in its own cudaMalloc of exactly its bytes (not the memory pool's
    rounded-up blocks), so compute-sanitizer's memcheck sees a read or write one byte past it."""
    dtype = np.dtype(dtype)
    memory = cp.cuda.Memory(int(np.prod(shape)) * dtype.itemsize)
    return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(memory, 0))


SANITIZER_TILES = {"one_load_warp": (16, False), "two_load_warps_small_n": (16, True), "two_load_warps": (64, True),
                   "wide_tile": (128, True)}  # id: (n, two load warps)
# id: (variant, cluster_split, compute warpgroups, barrier_exchange); the barrier_exchange builds
# (racecheck's form of the cluster split) only where the tile has a cluster split (n <= 64)
SANITIZER_KERNELS = {"hopper": ("hopper", None, 2, False), "hopper_workspace": ("hopper", False, 2, False),
                     "hopper_cwg3_workspace": ("hopper", False, 3, False), "hopper_excp": ("hopper_excp", None, 2, False),
                     "hopper_excp_workspace": ("hopper_excp", False, 2, False),
                     "hopper_barrier_exchange": ("hopper", None, 2, True),
                     "hopper_excp_barrier_exchange": ("hopper_excp", None, 2, True)}
SANITIZER_CASES = [
    pytest.param(*kernel, *tile, id=f"{kernel_id}-{tile_id}")
    for kernel_id, kernel in SANITIZER_KERNELS.items()
    for tile_id, tile in SANITIZER_TILES.items()
    if not (kernel[3] and tile[0] > CLUSTER_SPLIT_MAX_TOKENS)
]


@pytest.mark.parametrize(("variant", "cluster_split", "compute_warpgroups", "barrier_exchange", "tokens", "two_loaders"),
                         SANITIZER_CASES)
@pytest.mark.parametrize("programmatic", [False, True], ids=["plain", "programmatic"])
def test_sanitizer_case(hopper_gpu, variant, cluster_split, compute_warpgroups, barrier_exchange, programmatic, tokens,
                        two_loaders):
    """A small split-K GEMM with a partial token group and a partial row tile (N = 320: the last
    tile has one of its two or two of its three 64-row blocks), launched plainly and right after
    the quantizer with programmatic dependent launch (prefetching two stages of weights), for
    compute-sanitizer (see above); n = 16 with one load warp or two (the build for long unsplit k
    ranges), n = 64 and 128 with two (weights and activations on their own barriers); two compute
    warpgroups, or three (their split through the workspace); the split's partials through a
    cluster's shared memory (the default, n <= 64) or through the workspace. The output and s_x
    are exact-size allocations: the 13 tokens of a 16-, 64- or 128-token tile must not read s_x
    past token 12 (the epilogue once did at n >= 64). The barrier_exchange cases run the cluster
    split's racecheck build (partials as plain remote stores ordered by the cluster barrier,
    gpu.hopper.BARRIER_EXCHANGE_DEFINE)."""
    run_sanitizer_case(hopper_gpu, variant, cluster_split, compute_warpgroups, barrier_exchange, programmatic, tokens,
                       two_loaders)


def run_sanitizer_case(cp, variant, cluster_split, compute_warpgroups, barrier_exchange, programmatic, tokens,
                       two_loaders):
    """test_sanitizer_case's GEMM (M = 13, N = 320, K = 1024, split-K 2, 128-k stages), checked
    byte for byte against liquidref.w4a8_linear."""
    config = TileConfig(compute_warpgroups, tokens, 128, 3, 2)
    assert config.cluster_split or not barrier_exchange
    rng = np.random.default_rng(11)
    W = rng.standard_normal((320, 1024)).astype(np.float16)  # 4 stages per split: the ring wraps
    X = rng.standard_normal((13, 1024)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    dw = api.upload(w)
    out = _exact(cp, (13, 320), np.float16)
    x_tiled = _exact(cp, (2, 1024 // 16, 8, 16), np.int8)  # 13 tokens padded to 16
    s_x = _exact(cp, (13,), np.float32)
    api.quantize_activation_tiled(cp.asarray(X), check_finite=False, out=(x_tiled, s_x))
    hopper.run(x_tiled, s_x, 13, dw, out, config, variant, programmatic=programmatic,
               weight_prefetch=2 if programmatic else 0, two_loaders=two_loaders, cluster_split=cluster_split,
               barrier_exchange=barrier_exchange)
    assert np.array_equal(cp.asnumpy(out).view(np.uint16), liquidref.w4a8_linear(X, w).view(np.uint16))


def test_long_unsplit_tiles_take_two_load_warps(hopper_gpu, monkeypatch):
    """An n = 8 tile with 32 unsplit stages (70B qkv's at decode) runs the two-load-warp build
    by default, bit-exact; split into two it runs the one-warp build."""
    launched = []
    kernel = hopper._kernel
    monkeypatch.setattr(hopper, "_kernel",
                        lambda c, v="hopper", t=False, *rest: launched.append(t) or kernel(c, v, t, *rest))
    rng = np.random.default_rng(13)
    w = liquidref.quantize_weight(rng.standard_normal((192, 8192)).astype(np.float16))
    X = rng.standard_normal((3, 8192)).astype(np.float16)
    want = liquidref.w4a8_linear(X, w).view(np.uint16)
    dw = api.upload(w)
    x_tiled, s_x = api.quantize_activation_tiled(hopper_gpu.asarray(X))
    for split in (1, 2):
        out = hopper_gpu.empty((3, 192), hopper_gpu.float16)
        hopper.run(x_tiled, s_x, 3, dw, out, TileConfig(2, 8, 256, 8, split))
        assert np.array_equal(hopper_gpu.asnumpy(out).view(np.uint16), want)
    assert launched == [True, False]


def test_programmatic_launch_waits_for_the_quantizer(hopper_gpu):
    """Back-to-back linear calls on changing activations (each GEMM launched while its quantizer
    may still run) read each call's own activations: a GEMM that did not wait would read stale
    or half-written x_tiled and s_x."""
    rng = np.random.default_rng(12)
    W = rng.standard_normal((1024, 4096)).astype(np.float16)
    w = liquidref.quantize_weight(W)
    dw = api.upload(w)
    assert api.resolve_backend("hopper").programmatic
    xs = [rng.standard_normal((m, 4096)).astype(np.float16) * (1 + i) for i, m in enumerate((1, 16, 64, 1, 33))]
    outs = [api.linear(hopper_gpu.asarray(X), dw, backend="hopper", check_finite=False) for X in xs]
    for X, got in zip(xs, outs):
        assert np.array_equal(hopper_gpu.asnumpy(got).view(np.uint16), liquidref.w4a8_linear(X, w).view(np.uint16))
