"""gpu.runtime: source lookup, targets, cache keys and argument checks (on the CPU), then
compile_module and device_array on a GPU."""

from __future__ import annotations

import os
import shutil
import sys
import types

import numpy as np
import pytest

from gpu import runtime

# --- sources and targets (CPU) -------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "../liquidref/constants.py", "kernels/quantize_act.cu", 3])
def test_kernel_path_wants_a_bare_file_name(bad):
    with pytest.raises(ValueError, match="bare file name"):
        runtime.kernel_path(bad)


def test_kernel_path_names_the_available_sources():
    with pytest.raises(FileNotFoundError, match="w4a8_mma_sync.cu"):
        runtime.kernel_path("nope.cu")


def test_included_headers_are_followed_recursively():
    assert runtime.included_headers("w4a8_mma_sync.cu") == ["common.cuh", "liquidref_constants.cuh"]


def test_source_archs():
    assert runtime.source_archs("w4a8_mma_sync.cu") == ("sm_80", "sm_90a")
    assert runtime.source_archs("quantize_act.cu") == ("sm_80", "sm_90a")


@pytest.mark.parametrize(
    ("capability", "arch"), [((9, 0), "sm_90a"), ((8, 0), "sm_80"), ((8, 9), "sm_89"), ((12, 0), "sm_120")]
)
def test_arch_for_capability(capability, arch):
    assert runtime.arch_for_capability(*capability) == arch


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)])
def test_portable_source_runs_on_sm80_and_newer(capability):
    assert runtime.check_source_runs_on("w4a8_mma_sync.cu", *capability) == runtime.arch_for_capability(*capability)


def test_portable_source_refuses_older_devices():
    with pytest.raises(RuntimeError, match="sm_75"):
        runtime.check_source_runs_on("w4a8_mma_sync.cu", 7, 5)


@pytest.fixture
def kernels_copy(tmp_path, monkeypatch):
    """A private copy of gpu/kernels that a test may edit."""
    copy = tmp_path / "kernels"
    shutil.copytree(runtime.KERNELS_DIR, copy)
    monkeypatch.setattr(runtime, "KERNELS_DIR", copy)
    return copy


def test_hopper_only_source_refuses_other_devices(kernels_copy):
    (kernels_copy / "hopper_only.cu").write_text("// nvcc-arch: sm_90a\n__global__ void k() {}\n")
    assert runtime.check_source_runs_on("hopper_only.cu", 9, 0) == "sm_90a"
    for capability in [(8, 0), (8, 9), (10, 0), (12, 0)]:
        with pytest.raises(RuntimeError, match="Hopper-only"):
            runtime.check_source_runs_on("hopper_only.cu", *capability)


def test_source_without_arch_line_is_refused(kernels_copy):
    (kernels_copy / "bare.cu").write_text("__global__ void k() {}\n")
    with pytest.raises(ValueError, match="nvcc-arch"):
        runtime.source_archs("bare.cu")


def test_nvrtc_options():
    opts = runtime.nvrtc_options("sm_90a", ("-DX=1",))
    assert opts == ("-std=c++17", f"-I{runtime.KERNELS_DIR}", "--gpu-architecture=sm_90a", "-DX=1")
    with pytest.raises(ValueError, match="chosen from the device"):
        runtime.nvrtc_options("sm_90a", ("-arch=sm_80",))
    with pytest.raises(ValueError, match="sm_90a"):
        runtime.nvrtc_options("compute_90", ())
    with pytest.raises(TypeError):
        runtime.nvrtc_options("sm_80", (3,))


def test_cache_key_follows_source_headers_options_and_arch(kernels_copy):
    key = runtime.source_key("w4a8_mma_sync.cu", (), "sm_90a")
    assert key == runtime.source_key("w4a8_mma_sync.cu", (), "sm_90a")
    assert key != runtime.source_key("w4a8_mma_sync.cu", ("-DX",), "sm_90a")
    assert key != runtime.source_key("w4a8_mma_sync.cu", (), "sm_80")
    assert key != runtime.source_key("w4a8_mma_sync.cu", (), "sm_90a", ("liquidref::w4a8_mma_sync_kernel<1>",))
    header = kernels_copy / "liquidref_constants.cuh"  # included through common.cuh
    header.write_text(header.read_text() + "\n// edited\n")
    assert key != runtime.source_key("w4a8_mma_sync.cu", (), "sm_90a")


@pytest.mark.skipif(not runtime.nvrtc_available(), reason="libnvrtc is not installed")
def test_compile_cubin_lowers_name_expressions():
    names = ("liquidref::w4a8_mma_sync_kernel<1>", "liquidref::w4a8_mma_sync_kernel<4>")
    cubin, lowered = runtime.compile_cubin("w4a8_mma_sync.cu", names, arch="sm_80")
    assert cubin.startswith(b"\x7fELF")
    assert set(lowered) == set(names)
    assert all(name.startswith("_ZN9liquidref20w4a8_mma_sync_kernel") for name in lowered.values())
    assert lowered[names[0]] != lowered[names[1]]


@pytest.mark.skipif(not runtime.nvrtc_available(), reason="libnvrtc is not installed")
def test_compile_cubin_reports_compile_errors(kernels_copy):
    (kernels_copy / "broken.cu").write_text("// nvcc-arch: sm_80\n__global__ void k() { undeclared(); }\n")
    with pytest.raises(RuntimeError, match="undeclared"):
        runtime.compile_cubin("broken.cu", arch="sm_80")


# --- CuPy and device checks without a GPU (CPU) --------------------------------------------


def test_require_gpu_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(RuntimeError, match="needs CuPy"):
        runtime.require_gpu()
    assert not runtime.gpu_available()


def test_import_gpu_does_not_import_cupy():
    import subprocess

    code = "import sys, gpu, gpu.api, gpu.runtime; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


GOOD = dict(
    dtype="float16",
    shape=(4, 64),
    c_contiguous=True,
    pointer=0x1000,
    device_id=0,
    expected_dtype="float16",
    expected_shape=(None, 64),
    contiguous=True,
    alignment=16,
    expected_device=0,
)


def test_check_array_accepts_good_arguments():
    runtime.check_array("X", **GOOD)
    runtime.check_array("X", **{**GOOD, "c_contiguous": False, "contiguous": False})
    runtime.check_array("X", **{**GOOD, "pointer": 0x1001, "alignment": 1})
    runtime.check_array("X", **{**GOOD, "expected_shape": None, "shape": (1, 2, 3)})


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"dtype": "float32"}, TypeError, "X must have dtype float16; got float32"),
        ({"shape": (4, 32)}, ValueError, r"shape \(any, 64\); got \(4, 32\)"),
        ({"shape": (4, 64, 1)}, ValueError, r"shape \(any, 64\)"),
        ({"c_contiguous": False}, ValueError, "C-contiguous"),
        ({"pointer": 0x1008}, ValueError, "16-byte aligned"),
        ({"device_id": 1}, ValueError, "device 1; expected the current device 0"),
    ],
)
def test_check_array_errors_say_what_was_expected(change, error, message):
    with pytest.raises(error, match=message):
        runtime.check_array("X", **{**GOOD, **change})


def test_to_caller_leaves_non_torch_results_alone():
    y = np.zeros(3)
    assert runtime.to_caller(y, like=np.ones(2)) is y


# --- on a GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
def test_compile_module_is_cached_and_finds_name_expressions(cp):
    names = ("liquidref::quantize_act_kernel<false>", "liquidref::quantize_act_kernel<true>")
    module = runtime.compile_module("quantize_act.cu", names)
    assert isinstance(module, cp.RawModule)
    assert runtime.compile_module("quantize_act.cu", names) is module
    for name in names:
        assert module.get_function(name) is not None
    assert module.arch == runtime.arch_for_capability(*runtime.device_capability())


@pytest.mark.gpu
def test_device_array_accepts_and_rejects(cp):
    x = cp.zeros((8, 64), cp.float16)
    assert runtime.device_array("X", x, np.float16, (None, 64)) is x
    with pytest.raises(TypeError, match="cupy.ndarray or a CUDA torch.Tensor; got numpy.ndarray"):
        runtime.device_array("X", np.zeros((8, 64), np.float16), np.float16)
    with pytest.raises(TypeError, match="dtype float16; got float32"):
        runtime.device_array("X", x.astype(cp.float32), np.float16)
    with pytest.raises(ValueError, match=r"shape \(any, 32\)"):
        runtime.device_array("X", x, np.float16, (None, 32))
    with pytest.raises(ValueError, match="C-contiguous"):
        runtime.device_array("X", x[:, ::2], np.float16)
    with pytest.raises(ValueError, match="16-byte aligned"):
        runtime.device_array("X", x.reshape(-1)[1:65].reshape(1, 64), np.float16)


@pytest.mark.gpu
def test_device_array_shares_torch_memory(torch_cuda):
    torch = torch_cuda
    t = torch.zeros((8, 64), dtype=torch.float16, device="cuda")
    x = runtime.device_array("X", t, np.float16, (8, 64))
    assert x.data.ptr == t.data_ptr()
    x[0, 0] = 1.5
    assert float(t[0, 0]) == 1.5
    back = runtime.to_caller(x, like=t)
    assert isinstance(back, torch.Tensor) and back.data_ptr() == t.data_ptr()
    with pytest.raises(TypeError, match="CUDA tensor"):
        runtime.device_array("X", t.cpu(), np.float16)
    with pytest.raises(TypeError, match="torch.float32"):
        runtime.device_array("X", t.float(), np.float16)
    with pytest.raises(ValueError, match="C-contiguous"):
        runtime.device_array("X", t.t(), np.float16)


# --- programmatic dependent launch: the ctypes mirror of cuda.h (CPU, with nvcc) -------------


def test_launch_structures_match_cuda_h(tmp_path):
    """The ctypes CUlaunchConfig / CUlaunchAttribute, the attribute ids and the tensor map's size,
    alignment and enum values agree with cuda.h: a host program compiled against the toolkit's
    header prints them."""
    import ctypes
    import subprocess

    nvcc = shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if os.access(p, os.X_OK)), None
    )
    if nvcc is None:
        pytest.skip("nvcc is not installed (CUDA toolkit): cuda.h is not there to compare with")
    program = tmp_path / "layout.cpp"
    program.write_text(
        "#include <cuda.h>\n#include <cstddef>\n#include <cstdio>\n"
        "int main() { printf(\"%zu %zu %zu %zu %zu %zu %d\\n\", sizeof(CUlaunchConfig),"
        " sizeof(CUlaunchAttribute), offsetof(CUlaunchConfig, sharedMemBytes),"
        " offsetof(CUlaunchConfig, hStream), offsetof(CUlaunchConfig, attrs),"
        " offsetof(CUlaunchConfig, numAttrs),"
        " (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);"
        " printf(\"%d %zu %zu\\n\", (int)CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,"
        " offsetof(CUlaunchAttribute, value.clusterDim.x), offsetof(CUlaunchAttribute, value.clusterDim.z));"
        " printf(\"%zu %zu %d %d %d %d %d\\n\", sizeof(CUtensorMap), alignof(CUtensorMap),"
        " (int)CU_TENSOR_MAP_DATA_TYPE_UINT64, (int)CU_TENSOR_MAP_INTERLEAVE_NONE, (int)CU_TENSOR_MAP_SWIZZLE_NONE,"
        " (int)CU_TENSOR_MAP_L2_PROMOTION_NONE, (int)CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE); }\n"
    )
    subprocess.run([nvcc, "-x", "c++", str(program), "-o", str(tmp_path / "layout")], check=True)
    printed = subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout
    config, attribute = runtime._LaunchConfig, runtime._LaunchAttribute
    assert list(map(int, printed.split())) == [
        ctypes.sizeof(config),
        ctypes.sizeof(attribute),
        config.sharedMemBytes.offset,
        config.hStream.offset,
        config.attrs.offset,
        config.numAttrs.offset,
        runtime.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        # the cluster attribute: its id, and {x, y, z} as three unsigned ints at the value's start
        runtime.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
        attribute.value.offset,
        attribute.value.offset + 8,
        # the tensor maps of gpu.runtime.tensor_map (TensorMap in w4a8_hopper.cu)
        runtime.TENSOR_MAP_BYTES,
        runtime.TENSOR_MAP_ALIGNMENT,
        runtime.CU_TENSOR_MAP_DATA_TYPE_UINT64,
        runtime.CU_TENSOR_MAP_INTERLEAVE_NONE,
        runtime.CU_TENSOR_MAP_SWIZZLE_NONE,
        runtime.CU_TENSOR_MAP_L2_PROMOTION_NONE,
        runtime.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
    ]


def test_tensor_map_holder_is_aligned():
    """A TensorMap's 128 bytes start on a 64-byte boundary (a __grid_constant__ CUtensorMap)."""
    maps = [runtime.TensorMap() for _ in range(8)]
    assert all(m.address % runtime.TENSOR_MAP_ALIGNMENT == 0 for m in maps)
    assert all(len(m.raw) == runtime.TENSOR_MAP_BYTES for m in maps)


@pytest.mark.parametrize(
    ("address", "row_bytes", "dims", "strides", "box", "message"),
    [
        (0x1000, 24, (4,), (32,), (1,), "multiple of 16"),
        (0x1000, 4096, (4,), (4096,), (1,), "at most 2048"),
        (0x1000, 2048, (4,), (2048,), (257,), "at most 256"),
        (0x1000, 2048, (4, 2), (2048,), (1, 1), "one entry per outer dimension"),
        (0x1000, 2048, (), (), (), "one entry per outer dimension"),
        (0x1000, 2048, (2**32,), (2048,), (1,), "below 2\\*\\*32"),
        (0x1000, 2048, (4,), (2056,), (1,), "multiples of 16 bytes"),
        (0x1008, 2048, (4,), (2048,), (1,), "16-byte aligned"),
        (0x1000, 2048, (0,), (2048,), (1,), "dims must be ints >= 1"),
        (0x1000, 2048, (4,), (2048,), (True,), "box must be ints >= 1"),
        (0x1000, 0, (4,), (2048,), (1,), "row_bytes must be an int >= 1"),
    ],
)
def test_tensor_map_limits_are_checked(address, row_bytes, dims, strides, box, message):
    """Checked with a message before the driver sees them (no GPU needed)."""
    with pytest.raises(ValueError, match=message):
        runtime.check_tensor_map(address, row_bytes, dims, strides, box)
    with pytest.raises(ValueError, match=message):
        runtime.tensor_map(address, row_bytes, dims, strides, box)


def test_tensor_map_launch_needs_the_driver(monkeypatch):
    """A launch with tensor maps cannot fall back to CuPy's kernel call."""
    monkeypatch.setattr(runtime, "_launch_kernel_ex", lambda: None)
    with pytest.raises(RuntimeError, match="a launch with tensor maps needs cuLaunchKernelEx"):
        runtime.launch(None, (1,), (32,), (runtime.TensorMap(),))


@pytest.mark.parametrize("cluster", [(1, 1, 3), (1, 1, 0), (2, 1, 2), (1, 2)])
def test_cluster_dimensions_must_divide_the_grid(cluster):
    """Checked before anything reaches the driver (no GPU needed)."""
    with pytest.raises(ValueError, match="cluster must be 3 ints"):
        runtime.launch(None, (63, 1, 2), (256,), (), cluster=cluster)


@pytest.mark.parametrize("bad", [3, 2.5, "x", np.int64(1)])
def test_kernel_arguments_must_be_typed(bad):
    with pytest.raises(TypeError, match="np.int32"):
        runtime._kernel_argument(bad)


def test_kernel_argument_values():
    assert runtime._kernel_argument(np.int32(-5)).value == -5
    assert runtime._kernel_argument(np.uint32(7)).value == 7
    assert runtime._kernel_argument(np.float32(0.5)).value == 0.5
    tensor_map = runtime.TensorMap()
    assert runtime._kernel_argument(tensor_map) is tensor_map


def test_max_active_clusters_asks_the_driver_for_one_cluster(monkeypatch):
    """cuOccupancyMaxActiveClusters gets the kernel's CUfunction and a launch config of one
    cluster (grid = cluster dims) with the cluster attribute; its count is returned, a failure
    raised (a fake driver function: no GPU needed)."""
    import ctypes

    seen = {}

    def fake_query(count, function, config):
        config = config._obj  # the CUlaunchConfig behind byref
        attribute = config.attrs[0]
        seen.update(function=function.value, grid=(config.gridDimX, config.gridDimY, config.gridDimZ),
                    block=(config.blockDimX, config.blockDimY, config.blockDimZ), shared=config.sharedMemBytes,
                    attrs=config.numAttrs, id=attribute.id,
                    dims=tuple((ctypes.c_uint * 3).from_buffer_copy(bytes(attribute.value[:12]))))
        count._obj.value = 42
        return 0

    monkeypatch.setattr(runtime, "_occupancy_max_active_clusters", lambda: fake_query)
    kernel = types.SimpleNamespace(ptr=0x1234)
    assert runtime.max_active_clusters(kernel, (384,), 200_000, (1, 1, 3)) == 42
    assert seen == {"function": 0x1234, "grid": (1, 1, 3), "block": (384, 1, 1), "shared": 200_000, "attrs": 1,
                    "id": runtime.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, "dims": (1, 1, 3)}

    monkeypatch.setattr(runtime, "_occupancy_max_active_clusters", lambda: lambda *args: 1)
    with pytest.raises(RuntimeError, match="failed with CUresult 1"):
        runtime.max_active_clusters(kernel, (384,), 200_000, (1, 1, 2))
    monkeypatch.setattr(runtime, "_occupancy_max_active_clusters", lambda: None)
    with pytest.raises(RuntimeError, match="needs libcuda"):
        runtime.max_active_clusters(kernel, (384,), 200_000, (1, 1, 2))
    with pytest.raises(ValueError, match="cluster must be"):
        runtime.max_active_clusters(kernel, (384,), 200_000, (1, 0, 2))


@pytest.mark.gpu
def test_cluster_occupancy_of_the_hopper_kernel(cp):
    """Last in this module (a failure under the session's -x stops no other GPU test): the
    configuration of 70B o at M = 64 (one ~200 KB CTA per SM) keeps one CTA on every SM
    without clusters, and at most one on each in clusters of 2 (scripts/cluster_occupancy.py
    prints the counts of every size)."""
    from gpu import hopper
    from liquidref.tiling import choose_tile_config

    if not hopper.is_available():
        pytest.skip("the Hopper kernel needs an sm_90 GPU")
    sms = hopper._multiprocessors(cp.cuda.Device().id)
    config = choose_tile_config(64, 8192, 8192, sms)
    assert config.cluster_split
    counts = hopper.cluster_occupancy(config, sizes=(1, 2))
    assert counts[1] == sms
    assert 1 <= counts[2] and 2 * counts[2] <= sms
