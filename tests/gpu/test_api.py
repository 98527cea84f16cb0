"""gpu.api: the backend registry and launch geometry (on the CPU), then upload, the entry
points' argument checks, M = 0 and torch interop on a GPU. Bit-exactness of the kernels is
tested in test_quantize_act.py and test_mma_sync.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import liquidref
from gpu import api, runtime

# --- the registry (CPU, with fake backends) ------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """An empty private registry; gpu.hopper counts as already looked for."""
    monkeypatch.setattr(api, "_backends", {})
    monkeypatch.setattr(api, "_optional_backends_loaded", True)
    return api._backends


def _fake(name, calls):
    def fn(x_tiled, s_x, m, dw, out):
        calls.append(name)

    return fn


def test_register_backend_checks_its_arguments(registry):
    with pytest.raises(ValueError, match="other than 'auto'"):
        api.register_backend("auto", _fake("a", []), lambda: True)
    with pytest.raises(ValueError, match="non-empty"):
        api.register_backend("", _fake("a", []), lambda: True)
    with pytest.raises(TypeError, match="callable"):
        api.register_backend("x", None, lambda: True)
    with pytest.raises(TypeError, match="callable"):
        api.register_backend("x", _fake("x", []), True)
    assert registry == {}


def test_available_backends_asks_each_backend(registry):
    api.register_backend("mma_sync", _fake("mma_sync", []), lambda: True)
    api.register_backend("hopper", _fake("hopper", []), lambda: False)
    assert api.registered_backends() == ["hopper", "mma_sync"]
    assert api.available_backends() == ["mma_sync"]


@pytest.mark.parametrize(
    ("with_hopper", "capability", "chosen"),
    [
        (True, (9, 0), "hopper"),
        (True, (8, 9), "mma_sync"),
        (True, (10, 0), "mma_sync"),
        (True, (12, 0), "mma_sync"),
        (False, (9, 0), "mma_sync"),
    ],
)
def test_auto_picks_hopper_only_on_sm90(registry, with_hopper, capability, chosen):
    api.register_backend("mma_sync", _fake("mma_sync", []), lambda: True)
    if with_hopper:
        api.register_backend("hopper", _fake("hopper", []), lambda: True)
    assert api.resolve_backend("auto", capability).name == chosen


def test_resolve_backend_errors(registry):
    api.register_backend("mma_sync", _fake("mma_sync", []), lambda: False)
    with pytest.raises(ValueError, match=r"unknown backend 'cutlass'; registered: \['mma_sync'\]"):
        api.resolve_backend("cutlass", (9, 0))
    with pytest.raises(RuntimeError, match="cannot run on this machine"):
        api.resolve_backend("mma_sync", (9, 0))


def test_register_replaces_a_backend_of_the_same_name(registry):
    calls = []
    api.register_backend("mma_sync", _fake("first", calls), lambda: True)
    api.register_backend("mma_sync", _fake("second", calls), lambda: True)
    api.resolve_backend("mma_sync", (8, 0)).fn(None, None, 1, None, None)
    assert calls == ["second"]


def test_hopper_module_is_imported_lazily_when_it_exists(monkeypatch):
    imported = []
    monkeypatch.setattr(api, "_backends", dict(api._backends))
    monkeypatch.setattr(api, "_optional_backends_loaded", False)
    monkeypatch.setattr(api.importlib.util, "find_spec", lambda name: object() if name == "gpu.hopper" else None)
    monkeypatch.setattr(api.importlib, "import_module", lambda name: imported.append(name))
    api.registered_backends()
    api.registered_backends()
    assert imported == ["gpu.hopper"]


def test_missing_hopper_module_is_not_an_error(monkeypatch):
    monkeypatch.setattr(api, "_backends", dict(api._backends))
    monkeypatch.setattr(api, "_optional_backends_loaded", False)
    monkeypatch.setattr(api.importlib.util, "find_spec", lambda name: None)
    assert "mma_sync" in api.registered_backends()


def test_mma_sync_is_registered_on_import():
    assert "mma_sync" in api._backends


# --- launch geometry (CPU) -----------------------------------------------------------------


@pytest.mark.parametrize(("m", "groups"), [(1, 1), (8, 1), (9, 2), (16, 2), (17, 4), (32, 4), (300, 4)])
def test_mma_sync_token_groups(m, groups):
    assert api.mma_sync_token_groups(m) == groups


@pytest.mark.parametrize("m", [1, 7, 8, 9, 33, 300, 4096])
def test_mma_sync_grid_covers_every_token_once(m):
    groups = api.mma_sync_token_groups(m)
    rows, token_ctas = api.mma_sync_grid(m, 1024, groups)
    assert rows == 1024 // 64
    covered = token_ctas * groups * 8
    assert covered >= m and covered - m < groups * 8 + 8


def test_padded_tokens():
    assert [api.padded_tokens(m) for m in (0, 1, 8, 9)] == [0, 8, 8, 16]


def test_upload_refuses_other_objects():
    with pytest.raises(TypeError, match="LiquidQuantWeight or PackedWeight; got ndarray"):
        api.upload(np.zeros((64, 64), np.float32))


# --- on a GPU ------------------------------------------------------------------------------


def _weight(n=128, k=256, seed=0):
    rng = np.random.default_rng(seed)
    return liquidref.quantize_weight(rng.standard_normal((n, k)).astype(np.float32))


@pytest.mark.gpu
def test_upload_copies_the_packed_bytes(cp):
    w = _weight()
    packed = liquidref.pack_weight(w)
    for source in (w, packed):
        dw = api.upload(source)
        assert (dw.n, dw.k) == (128, 256)
        assert np.array_equal(cp.asnumpy(dw.codes), packed.codes)
        assert np.array_equal(cp.asnumpy(dw.meta), packed.meta)
        assert np.array_equal(cp.asnumpy(dw.s1).view(np.uint32), packed.s1.view(np.uint32))


@pytest.mark.gpu
def test_device_weight_checks_its_arrays(cp):
    dw = api.upload(_weight())
    with pytest.raises(ValueError, match=r"codes must have shape \(2, 4, 2048\)"):
        api.DeviceWeight(dw.codes[:1], dw.meta, dw.s1, dw.n, dw.k)
    with pytest.raises(TypeError, match="meta must have dtype uint8"):
        api.DeviceWeight(dw.codes, dw.meta.view(cp.int8), dw.s1, dw.n, dw.k)
    with pytest.raises(ValueError, match="k = 100 must be a multiple of 64"):
        api.DeviceWeight(dw.codes, dw.meta, dw.s1, dw.n, 100)
    with pytest.raises(ValueError, match="exceeds"):
        api.DeviceWeight(dw.codes, dw.meta, dw.s1, dw.n, 64 * 10**4)


@pytest.mark.gpu
def test_linear_with_no_tokens_is_empty(cp):
    dw = api.upload(_weight())
    y = api.linear(cp.zeros((0, 256), cp.float16), dw)
    assert y.shape == (0, 128) and y.dtype == cp.float16
    x_i8, s_x = api.quantize_activation(cp.zeros((0, 256), cp.float16))
    assert x_i8.shape == (0, 256) and s_x.shape == (0,)
    assert api.gemm(x_i8, s_x, dw).shape == (0, 128)


@pytest.mark.gpu
def test_entry_points_reject_bad_arguments(cp):
    dw = api.upload(_weight())
    X = cp.ones((4, 256), cp.float16)
    with pytest.raises(TypeError, match="X must have dtype float16; got float32"):
        api.linear(X.astype(cp.float32), dw)
    with pytest.raises(ValueError, match=r"X must have shape \(any, 256\); got \(4, 128\)"):
        api.linear(X[:, :128].copy(), dw)
    with pytest.raises(TypeError, match="dw must be a gpu.api.DeviceWeight"):
        api.linear(X, object())
    with pytest.raises(ValueError, match="unknown backend"):
        api.linear(X, dw, backend="nope")
    with pytest.raises(ValueError, match="multiple of 16"):
        api.quantize_activation(cp.ones((4, 40), cp.float16))
    x_i8, s_x = api.quantize_activation(X)
    with pytest.raises(ValueError, match=r"s_x must have shape \(3,\)"):
        api.gemm(x_i8[:3], s_x, dw)
    with pytest.raises(TypeError, match="x_i8 must have dtype int8"):
        api.gemm(x_i8.view(cp.uint8), s_x, dw)
    with pytest.raises(ValueError, match=r"out must have shape \(4, 128\)"):
        api.gemm(x_i8, s_x, dw, out=cp.empty((4, 64), cp.float16))
    with pytest.raises(TypeError, match="out must be a tuple"):
        api.quantize_activation(X, out=cp.empty((4, 256), cp.int8))


@pytest.mark.gpu
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_name_the_row(cp, bad):
    X = cp.ones((5, 64), cp.float16)
    X[3, 17] = bad
    with pytest.raises(ValueError, match=f"row 3 holds {bad} at column 17"):
        api.quantize_activation(X)
    with pytest.raises(ValueError, match="row 3"):
        api.linear(X, api.upload(_weight(k=64)))
    api.quantize_activation(X, check_finite=False)  # no check, no error


@pytest.mark.gpu
def test_torch_in_torch_out(torch_cuda):
    torch = torch_cuda
    w = _weight()
    dw = api.upload(w)
    X = torch.randn((5, 256), dtype=torch.float16, device="cuda")
    y = api.linear(X, dw)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float16 and y.shape == (5, 128)
    expected = liquidref.w4a8_linear(X.cpu().numpy(), w)
    assert np.array_equal(y.cpu().numpy().view(np.uint16), expected.view(np.uint16))
    x_i8, s_x = api.quantize_activation(X)
    assert isinstance(x_i8, torch.Tensor) and isinstance(s_x, torch.Tensor)
    y2 = api.gemm(x_i8, s_x, dw)
    assert isinstance(y2, torch.Tensor) and torch.equal(y2.view(torch.int16), y.view(torch.int16))


@pytest.mark.gpu
def test_auto_backend_on_this_device(cp):
    from gpu import runtime

    chosen = api.resolve_backend("auto").name
    hopper = "hopper" in api.registered_backends() and runtime.device_capability() == (9, 0)
    assert chosen == ("hopper" if hopper else "mma_sync")
    assert "mma_sync" in api.available_backends()


def test_quantizer_threads_match_the_kernel_and_scale_with_rows():
    source = runtime.kernel_path(api.QUANTIZE_SOURCE).read_text()
    match = re.search(r"constexpr int QUANT_MAX_THREADS = (\d+);", source)
    assert match and int(match.group(1)) == api.QUANTIZE_MAX_THREADS
    assert api.quantize_threads(1, 28672) == api.QUANTIZE_MAX_THREADS  # decode: one long row
    assert api.quantize_threads(1, 64) == api.QUANTIZE_MIN_THREADS
    assert api.quantize_threads(4096, 28672) == api.QUANTIZE_MIN_THREADS  # rows fill the GPU
    for rows in (1, 8, 100, 300):
        for k in (16, 64, 1000 * 16, 28672):
            threads = api.quantize_threads(rows, k)
            assert threads % 32 == 0 and api.QUANTIZE_MIN_THREADS <= threads <= api.QUANTIZE_MAX_THREADS


def test_quantizer_slices_cut_long_rows_only_when_rows_are_few():
    assert api.quantize_slices(1, 28672) == api.QUANTIZE_MAX_SLICES
    assert api.quantize_slices(1, 2048) == 2048 // 16 // api.QUANTIZE_MIN_CHUNKS_PER_SLICE  # 2 slices
    assert api.quantize_slices(1, 64) == 1
    assert api.quantize_slices(4096, 28672) == 1
    for rows in (1, 3, 16, 100, 263, 264):
        for k in (16, 1024, 4096, 28672):
            slices = api.quantize_slices(rows, k)
            assert slices >= 1 and (slices == 1 or k // 16 // slices >= api.QUANTIZE_MIN_CHUNKS_PER_SLICE)
            assert slices <= api.QUANTIZE_MAX_SLICES


def test_quantizer_slices_fit_in_one_wave():
    # a second wave of CTAs would double the quantizer's time (70B down at M = 64: 10.0 -> 7.4 us)
    assert api.quantize_slices(64, 28672) == 4  # 64 x 4 CTAs of 1024 threads <= 2 per SM x 132
    assert api.quantize_slices(100, 28672) == 2  # not 3: 300 CTAs would need a second wave
    for num_sms in (132, 78):
        for rows in range(1, 300, 7):
            for k in (16, 1024, 4096, 8192, 14336, 28672):
                slices = api.quantize_slices(rows, k, num_sms)
                per_sm = api.SM_MAX_THREADS // api.quantize_threads(rows, k, num_sms)
                assert slices == 1 or rows * slices <= per_sm * num_sms


def test_user_api_at_the_package_top_level_without_cupy():
    import gpu

    assert gpu.upload is api.upload and gpu.linear is api.linear and gpu.gemm is api.gemm
    assert set(gpu.__all__) <= set(dir(gpu))
