"""Compiling the CUDA sources of ``gpu/kernels`` and checking the arrays handed to kernels.

Nothing here imports CuPy at module level: ``import gpu`` works on a CPU-only install, and every
function that needs a GPU calls ``require_gpu()`` first, which raises a clear ``RuntimeError``.

Compilation goes through NVRTC directly (``libnvrtc`` loaded with ctypes), not through CuPy's
``RawModule(code=...)``: CuPy appends its own ``-arch=sm_XY`` (and ``-ftz=true``) to every NVRTC
call, and the Hopper sources need ``sm_90a``. The cubin is written to a cache file and loaded with
``cupy.RawModule(path=...)``; ``compile_module`` returns a ``RawModule`` whose ``get_function``
also accepts the C++ name expressions (``"liquidref::kernel<2>"``) it was compiled with.
``compile_cubin`` needs only NVRTC, no GPU: the CPU tests compile every kernel with it.

Options of every compilation (``nvrtc_options``)::

    -std=c++17  -I<gpu/kernels>  --gpu-architecture=sm_90a (Hopper) | sm_XY (others)  [options]

CuPy passes a bare Python int as ``long long`` and checks nothing about arrays, so every kernel
argument goes through ``device_array`` (dtype, shape, contiguity, alignment, device) first.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
HOPPER_ARCH = "sm_90a"
NVRTC_BASE_OPTIONS = ("-std=c++17",)

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
_ARCH_LINE_RE = re.compile(r"^//\s*nvcc-arch:\s*(.+)$", re.MULTILINE)
_ARCH_RE = re.compile(r"^sm_(\d+)(a?)$")


# --- the sources ---------------------------------------------------------------------------


def kernel_path(source: str) -> Path:
    """The path of a kernel source ``source`` (a bare file name in ``gpu/kernels``)."""
    if not isinstance(source, str) or not source or Path(source).name != source:
        raise ValueError(
            f"source must be the bare file name of a file in {KERNELS_DIR} (e.g. "
            f"'w4a8_mma_sync.cu'); got {source!r}"
        )
    path = KERNELS_DIR / source
    if not path.is_file():
        available = sorted(p.name for p in KERNELS_DIR.glob("*.cu"))
        raise FileNotFoundError(f"no kernel source {source!r} in {KERNELS_DIR}; have {available}")
    return path


def included_headers(source: str) -> list[str]:
    """The ``#include "..."`` files of ``source``, recursively, in first-seen order."""
    seen: list[str] = []
    pending = [source]
    while pending:
        text = kernel_path(pending.pop(0)).read_text()
        for name in _INCLUDE_RE.findall(text):
            if name not in seen:
                seen.append(name)
                pending.append(name)
    return seen


def source_archs(source: str) -> tuple[str, ...]:
    """The targets named on the ``// nvcc-arch: sm_80 sm_90a`` line of a kernel source."""
    text = kernel_path(source).read_text()
    match = _ARCH_LINE_RE.search(text)
    if match is None:
        raise ValueError(f"{source} has no '// nvcc-arch: ...' line naming its targets")
    archs = tuple(match.group(1).split())
    for arch in archs:
        if not _ARCH_RE.match(arch):
            raise ValueError(f"{source}: bad target {arch!r} on its nvcc-arch line (want sm_XY[a])")
    return archs


def arch_for_capability(major: int, minor: int) -> str:
    """NVRTC's ``--gpu-architecture`` for a device: ``sm_90a`` on Hopper, else ``sm_{major}{minor}``."""
    return HOPPER_ARCH if (major, minor) == (9, 0) else f"sm_{major}{minor}"


def check_source_runs_on(source: str, major: int, minor: int) -> str:
    """The target to compile ``source`` for on a device of compute capability major.minor.

    A source runs on a device when its nvcc-arch line names the device's own ``sm_90a``
    (architecture-specific targets run only on that architecture) or a plain ``sm_XY`` no newer
    than the device. Raises ``RuntimeError`` saying what the source needs otherwise.
    """
    arch = arch_for_capability(major, minor)
    archs = source_archs(source)
    capability = 10 * major + minor
    for target in archs:
        number, specific = _ARCH_RE.match(target).groups()
        if (specific and target == arch) or (not specific and int(number) <= capability):
            return arch
    if archs == (HOPPER_ARCH,):
        raise RuntimeError(
            f"{source} is Hopper-only (sm_90a: wgmma); this device is sm_{major}{minor}. "
            "Use the portable backend 'mma_sync' instead."
        )
    raise RuntimeError(
        f"{source} needs one of the targets {list(archs)}; this device is sm_{major}{minor}"
    )


def nvrtc_options(arch: str, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The NVRTC command line for ``arch`` plus the caller's ``options``."""
    if not _ARCH_RE.match(arch):
        raise ValueError(f"arch must look like 'sm_90a' or 'sm_80'; got {arch!r}")
    extra = tuple(options)
    for option in extra:
        if not isinstance(option, str):
            raise TypeError(f"options must be strings; got {option!r}")
        if option.startswith(("-arch", "--gpu-architecture")):
            raise ValueError(f"the target is chosen from the device; do not pass {option!r}")
    return NVRTC_BASE_OPTIONS + (f"-I{KERNELS_DIR}", f"--gpu-architecture={arch}") + extra


def source_key(source: str, options: tuple[str, ...], arch: str, name_expressions=()) -> str:
    """Cache key: hash of the source text, every included header's text, options and arch."""
    digest = hashlib.sha256()
    for name in [source, *included_headers(source)]:
        digest.update(name.encode() + b"\0" + kernel_path(name).read_bytes() + b"\0")
    for part in (*nvrtc_options(arch, options), "|", *name_expressions, "|", nvrtc_version_text()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


# --- NVRTC through ctypes ------------------------------------------------------------------

_nvrtc_lock = threading.Lock()
_nvrtc_lib = None


def _nvrtc_candidates() -> list[str]:
    """Where libnvrtc may be: $LIQUIDREF_NVRTC, the nvidia-cuda-nvrtc wheel, CUDA_PATH, system."""
    found = []
    if os.environ.get("LIQUIDREF_NVRTC"):
        found.append(os.environ["LIQUIDREF_NVRTC"])
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib  # comes with cupy-cuda13x

        found.append(load_nvidia_dynamic_lib("nvrtc").abs_path)
    except Exception:  # noqa: BLE001 - any failure just means "look elsewhere"
        pass
    for root in sys.path:
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libnvrtc.so.*")))
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*")))
    for home in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            found += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    found.append("libnvrtc.so")
    return [f for f in found if "builtins" not in os.path.basename(f) and ".alt." not in f]


def nvrtc_library():
    """The loaded libnvrtc (ctypes.CDLL); raises ``RuntimeError`` naming where it looked."""
    global _nvrtc_lib
    with _nvrtc_lock:
        if _nvrtc_lib is None:
            tried = []
            for candidate in _nvrtc_candidates():
                try:
                    _nvrtc_lib = ctypes.CDLL(candidate)
                    break
                except OSError as error:
                    tried.append(f"{candidate}: {error}")
            else:
                raise RuntimeError(
                    "NVRTC (libnvrtc.so) not found; install it with `pip install "
                    "nvidia-cuda-nvrtc` or set LIQUIDREF_NVRTC. Tried:\n  " + "\n  ".join(tried)
                )
        return _nvrtc_lib


def nvrtc_available() -> bool:
    """True when libnvrtc can be loaded (no GPU needed)."""
    try:
        nvrtc_library()
    except RuntimeError:
        return False
    return True


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the loaded NVRTC."""
    lib = nvrtc_library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc_check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def nvrtc_version_text() -> str:
    """NVRTC's version as text for cache keys ('none' when NVRTC is absent)."""
    return "nvrtc-%d.%d" % nvrtc_version() if nvrtc_available() else "none"


def _nvrtc_check(status: int, what: str, log: str = "") -> None:
    if status != 0:
        lib = nvrtc_library()
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        message = lib.nvrtcGetErrorString(status).decode()
        raise RuntimeError(f"{what} failed: {message} ({status})" + (f"\n{log}" if log else ""))


def _cuda_include_options() -> tuple[str, ...]:
    """``-I`` for the CUDA headers (cuda_fp16.h, ...) where some can be found; our kernels need
    none, but a source that includes them still compiles."""
    candidates = []
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        candidates.append(find_nvidia_header_directory("cudart"))
    except Exception:  # noqa: BLE001
        pass
    for home in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "include"))
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, "cuda_fp16.h")):
            return (f"-I{path}",)
    return ()


def compile_cubin(
    source: str,
    name_expressions: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    arch: str = HOPPER_ARCH,
) -> tuple[bytes, dict[str, str]]:
    """Compile a kernel source with NVRTC into a cubin; needs NVRTC, not a GPU.

    Args:
        source: file name in ``gpu/kernels`` (e.g. ``"w4a8_mma_sync.cu"``).
        name_expressions: C++ names of template instantiations to emit and look up
            (e.g. ``("liquidref::w4a8_mma_sync_kernel<2>",)``).
        options: extra NVRTC options (``-D...``, ``-lineinfo``, ...).
        arch: the real target, ``"sm_90a"`` or ``"sm_XY"``.

    Returns:
        (cubin bytes, {name expression: lowered (mangled) name}).
    """
    text = kernel_path(source).read_text()
    for name in name_expressions:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name_expressions must be non-empty strings; got {name!r}")
    opts = nvrtc_options(arch, tuple(options)) + _cuda_include_options()
    lib = nvrtc_library()
    prog = ctypes.c_void_p()
    _nvrtc_check(
        lib.nvrtcCreateProgram(
            ctypes.byref(prog), text.encode(), source.encode(), 0, None, None
        ),
        "nvrtcCreateProgram",
    )
    try:
        for name in name_expressions:
            _nvrtc_check(lib.nvrtcAddNameExpression(prog, name.encode()), "nvrtcAddNameExpression")
        argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        status = lib.nvrtcCompileProgram(prog, len(opts), argv)
        log = _program_log(lib, prog)
        _nvrtc_check(status, f"NVRTC compilation of {source} for {arch} ({' '.join(opts)})", log)
        size = ctypes.c_size_t()
        _nvrtc_check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        buffer = ctypes.create_string_buffer(size.value)
        _nvrtc_check(lib.nvrtcGetCUBIN(prog, buffer), "nvrtcGetCUBIN")
        cubin = buffer.raw[: size.value]
        lowered = {}
        for name in name_expressions:
            out = ctypes.c_char_p()
            _nvrtc_check(
                lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)),
                f"nvrtcGetLoweredName({name})",
            )
            lowered[name] = out.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    if not cubin.startswith(b"\x7fELF"):
        raise RuntimeError(f"NVRTC returned no cubin for {source} ({arch})")
    return cubin, lowered


def _program_log(lib, prog) -> str:
    size = ctypes.c_size_t()
    if lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)) != 0 or size.value <= 1:
        return ""
    buffer = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, buffer)
    return buffer.value.decode(errors="replace")


# --- CuPy, the device and loaded modules ---------------------------------------------------


def _import_cupy():
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(
            "the gpu package needs CuPy: pip install 'liquidref[gpu]' "
            f"(cupy-cuda13x and nvidia-cuda-nvrtc); import failed: {error}"
        ) from error
    return cupy


def require_gpu():
    """Return the ``cupy`` module once CuPy and a CUDA device are there; else raise RuntimeError."""
    cupy = _import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError without a driver, ...
        raise RuntimeError(f"no usable CUDA device: {error}") from error
    if count < 1:
        raise RuntimeError("no CUDA device found (cupy.cuda.runtime.getDeviceCount() == 0)")
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    try:
        require_gpu()
    except RuntimeError:
        return False
    return True


def device_capability() -> tuple[int, int]:
    """(major, minor) compute capability of the current CUDA device."""
    cupy = require_gpu()
    text = cupy.cuda.Device().compute_capability  # e.g. '90'
    return int(text[:-1]), int(text[-1])


def cache_dir() -> Path:
    """Where compiled cubins are kept: $LIQUIDREF_CACHE_DIR or ~/.cache/liquidref/kernels."""
    root = os.environ.get("LIQUIDREF_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "liquidref" / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


_modules: dict[tuple[str, int], object] = {}
_modules_lock = threading.Lock()
_module_class = None


def _named_module_class(cupy):
    """A ``cupy.RawModule`` loaded from a cubin whose ``get_function`` maps name expressions."""
    global _module_class
    if _module_class is None:

        class KernelModule(cupy.RawModule):
            """``cupy.RawModule`` of a compiled kernel source (see ``gpu.runtime``)."""

            def __init__(self, *, path: str, lowered_names: dict[str, str], source: str, arch: str):
                super().__init__(path=path)
                self.lowered_names = dict(lowered_names)
                self.source = source
                self.arch = arch

            def get_function(self, name: str):
                return super().get_function(self.lowered_names.get(name, name))

        _module_class = KernelModule
    return _module_class


def compile_module(source: str, name_expressions: tuple[str, ...] = (), options: tuple[str, ...] = ()):
    """Compile ``gpu/kernels/<source>`` for the current device and load it (cached per process).

    Args:
        source: file name in ``gpu/kernels``.
        name_expressions: C++ names of the kernels (template instantiations) to look up;
            ``module.get_function(expr)`` accepts each of them.
        options: extra NVRTC options.

    Returns:
        a ``cupy.RawModule``. Hopper-only sources (``// nvcc-arch: sm_90a``) raise
        ``RuntimeError`` on other devices.
    """
    cupy = require_gpu()
    major, minor = device_capability()
    arch = check_source_runs_on(source, major, minor)
    name_expressions = tuple(name_expressions)
    options = tuple(options)
    key = source_key(source, options, arch, name_expressions)
    device_id = cupy.cuda.Device().id
    with _modules_lock:
        module = _modules.get((key, device_id))
        if module is None:
            cubin, lowered = compile_cubin(source, name_expressions, options, arch)
            path = cache_dir() / f"{Path(source).stem}-{key[:24]}.cubin"
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(cubin)
            os.replace(tmp, path)
            module = _named_module_class(cupy)(
                path=str(path), lowered_names=lowered, source=source, arch=arch
            )
            _modules[(key, device_id)] = module
    return module


# --- arrays handed to kernels --------------------------------------------------------------


def check_array(
    name: str,
    *,
    dtype: str,
    shape: tuple[int, ...],
    c_contiguous: bool,
    pointer: int,
    device_id: int,
    expected_dtype: str,
    expected_shape: tuple | None,
    contiguous: bool,
    alignment: int,
    expected_device: int,
) -> None:
    """The checks of ``device_array`` on plain values (so they run without a GPU).

    ``expected_shape`` entries may be ``None`` (any size). Raises ``TypeError`` for a wrong dtype,
    ``ValueError`` for a wrong shape, non-contiguous or misaligned data or another device.
    """
    if dtype != expected_dtype:
        raise TypeError(f"{name} must have dtype {expected_dtype}; got {dtype}")
    if expected_shape is not None:
        ok = len(shape) == len(expected_shape) and all(
            want is None or want == got for want, got in zip(expected_shape, shape)
        )
        if not ok:
            sizes = ["any" if s is None else str(s) for s in expected_shape]
            want = f"({sizes[0]},)" if len(sizes) == 1 else "(" + ", ".join(sizes) + ")"
            raise ValueError(f"{name} must have shape {want}; got {tuple(shape)}")
    if contiguous and not c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (row-major, no strides); it is not")
    if alignment > 1 and pointer % alignment != 0:
        raise ValueError(
            f"{name} must start at a {alignment}-byte aligned address; its data pointer "
            f"{pointer:#x} is {pointer % alignment} bytes past one (a sliced view?)"
        )
    if device_id != expected_device:
        raise ValueError(f"{name} is on CUDA device {device_id}; expected the current device {expected_device}")


def is_torch_tensor(x) -> bool:
    """True for a torch.Tensor (checked without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def device_array(name: str, x, dtype, shape=None, contiguous: bool = True, alignment: int = 16):
    """Validate a kernel argument and return it as a CuPy array (zero copy).

    Args:
        name: the argument's name, for error messages.
        x: a ``cupy.ndarray`` or a CUDA ``torch.Tensor`` (shared through DLPack, no copy).
        dtype: the required dtype (numpy dtype or its name).
        shape: the required shape; entries may be ``None`` (any size); ``None`` for any shape.
        contiguous: require C-contiguous data.
        alignment: required byte alignment of the data pointer (1 for none).

    Raises:
        TypeError: not a device array, or the wrong dtype (the message says what was expected).
        ValueError: wrong shape, not contiguous, misaligned or on another device (likewise).
    """
    import numpy as np

    cupy = require_gpu()
    expected_dtype = np.dtype(dtype).name
    if is_torch_tensor(x):
        if not x.is_cuda:
            raise TypeError(f"{name} must be a CUDA tensor; got a torch tensor on {x.device}")
        torch_dtype = str(x.dtype).removeprefix("torch.")
        if torch_dtype != expected_dtype:
            raise TypeError(f"{name} must have dtype {expected_dtype}; got torch.{torch_dtype}")
        if contiguous and not x.is_contiguous():
            raise ValueError(f"{name} must be C-contiguous (row-major, no strides); it is not")
        x = cupy.from_dlpack(x)
    elif not isinstance(x, cupy.ndarray):
        raise TypeError(
            f"{name} must be a cupy.ndarray or a CUDA torch.Tensor; got {type(x).__module__}."
            f"{type(x).__name__} (move host data with cupy.asarray)"
        )
    check_array(
        name,
        dtype=x.dtype.name,
        shape=tuple(x.shape),
        c_contiguous=bool(x.flags.c_contiguous),
        pointer=int(x.data.ptr),
        device_id=int(x.device.id),
        expected_dtype=expected_dtype,
        expected_shape=None if shape is None else tuple(shape),
        contiguous=contiguous,
        alignment=alignment,
        expected_device=int(cupy.cuda.Device().id),
    )
    return x


def to_caller(y, like):
    """Return the CuPy result ``y`` as a torch tensor (zero copy) if ``like`` was one, else as is."""
    if is_torch_tensor(like):
        import torch

        return torch.from_dlpack(y)
    return y


# --- launching, with programmatic dependent launch ------------------------------------------
#
# A kernel launched with the driver's "programmatic stream serialization" attribute may start
# while the kernel before it in the stream still runs, once every CTA of that kernel has executed
# `griddepcontrol.launch_dependents` (or exited); it must execute `griddepcontrol.wait` before it
# touches anything the earlier kernel writes or reads. CuPy's kernel call cannot set launch
# attributes, so such launches go through cuLaunchKernelEx (CUDA driver >= 12.0) with ctypes.

CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4  # CUlaunchAttributeID (cuda.h)
CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6


class _LaunchAttribute(ctypes.Structure):
    # CUlaunchAttribute: a 4-byte id, 4 bytes of padding, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_ubyte * 64)]


class _LaunchConfig(ctypes.Structure):
    # CUlaunchConfig (ctypes inserts the padding before hStream, as the C compiler does)
    _fields_ = [
        ("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
        ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
        ("sharedMemBytes", ctypes.c_uint),
        ("hStream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(_LaunchAttribute)),
        ("numAttrs", ctypes.c_uint),
    ]


@functools.lru_cache(maxsize=None)
def _driver_function(name: str, argtypes: tuple):
    """A CUDA driver API function from libcuda (returning a CUresult int), or None when the
    library or the function is missing."""
    try:
        function = getattr(ctypes.CDLL("libcuda.so.1"), name)
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = list(argtypes)
    return function


def _launch_kernel_ex():
    """cuLaunchKernelEx from libcuda, or None when the driver has none."""
    return _driver_function("cuLaunchKernelEx", (ctypes.POINTER(_LaunchConfig), ctypes.c_void_p,
                                                 ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p))


def _occupancy_max_active_clusters():
    """cuOccupancyMaxActiveClusters from libcuda, or None when the driver has none."""
    return _driver_function("cuOccupancyMaxActiveClusters", (ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
                                                             ctypes.POINTER(_LaunchConfig)))


def _launch_config(grid: tuple, block: tuple, shared_mem: int, stream: int | None, programmatic: bool,
                   cluster: tuple | None):
    """A CUlaunchConfig with its attributes (returned too: the config points into them)."""
    attributes = (_LaunchAttribute * 2)()
    count = 0
    if programmatic:
        attributes[count].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attributes[count].value[0] = 1  # programmaticStreamSerializationAllowed (an int, little-endian)
        count += 1
    if cluster:
        attributes[count].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        ctypes.memmove(attributes[count].value, (ctypes.c_uint * 3)(*cluster), 12)  # {x, y, z}
        count += 1
    config = _LaunchConfig(*grid, *block, shared_mem, stream,
                           ctypes.cast(attributes, ctypes.POINTER(_LaunchAttribute)), count)
    return config, attributes


def _dim3(dims) -> tuple[int, ...]:
    """Up to three launch dimensions, padded with 1s (CUDA's dim3)."""
    dims = tuple(dims)
    return dims + (1,) * (3 - len(dims))


def _check_cluster(cluster, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    cluster = tuple(cluster)
    if len(cluster) != 3 or any(c < 1 or g % c for c, g in zip(cluster, grid)):
        raise ValueError(f"cluster must be 3 ints >= 1 dividing the grid {grid}; got {cluster}")
    return cluster


def max_active_clusters(kernel, block, shared_mem: int, cluster: tuple[int, int, int]) -> int:
    """How many thread block clusters of ``kernel`` the device can run at once
    (``cuOccupancyMaxActiveClusters``): each of ``cluster`` (x, y, z) CTAs of ``block`` threads
    and ``shared_mem`` bytes of dynamic shared memory. The kernel's own limits (registers, its
    maximum dynamic shared memory) count, and so does how the SMs are grouped into GPCs, which
    is why clusters of four 200 KB CTAs leave SMs unused where clusters of two do not.

    Args:
        kernel: from ``compile_module(...).get_function`` (its dynamic shared memory limit set).
        block: the CTA's threads, up to three ints.
        shared_mem: dynamic shared memory per CTA in bytes.
        cluster: the cluster's CTAs (x, y, z), each >= 1.

    Raises:
        RuntimeError: the driver has no cuOccupancyMaxActiveClusters, or it failed.
    """
    cluster = _check_cluster(cluster, tuple(cluster))  # the query's grid is one cluster
    query = _occupancy_max_active_clusters()
    if query is None:
        raise RuntimeError("cuOccupancyMaxActiveClusters needs libcuda.so.1 of a CUDA driver >= 12.0")
    config, _attributes = _launch_config(cluster, _dim3(block), shared_mem, None, False, cluster)
    clusters = ctypes.c_int()
    function = getattr(kernel, "kernel", kernel)  # RawKernel -> its cupy.cuda.Function (CUfunction)
    status = query(ctypes.byref(clusters), ctypes.c_void_p(function.ptr), ctypes.byref(config))
    if status != 0:
        raise RuntimeError(f"cuOccupancyMaxActiveClusters failed with CUresult {status} (cluster {cluster}, "
                           f"block {block}, {shared_mem} bytes of shared memory)")
    return clusters.value


# --- TMA tensor maps (cuTensorMapEncodeTiled through ctypes) ---------------------------------
#
# A CUtensorMap is 128 opaque bytes, 128-byte aligned (cuda.h), that the driver encodes on the
# host and a kernel receives as a ``__grid_constant__`` parameter (``TensorMap`` in
# w4a8_hopper.cu). The kernels need one kind only: a contiguous array viewed as rows of 8-byte
# elements, a box of whole rows. The enum values below are cuda.h's (tests/gpu/test_runtime.py
# compares them).

CU_TENSOR_MAP_DATA_TYPE_UINT64 = 4
CU_TENSOR_MAP_INTERLEAVE_NONE = 0
CU_TENSOR_MAP_SWIZZLE_NONE = 0
CU_TENSOR_MAP_L2_PROMOTION_NONE = 0
CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0
TENSOR_MAP_BYTES = 128
TENSOR_MAP_ALIGNMENT = 128
TENSOR_MAP_ELEMENT_BYTES = 8  # CU_TENSOR_MAP_DATA_TYPE_UINT64
TENSOR_MAP_MAX_BOX = 256  # elements per box dimension (cuTensorMapEncodeTiled's limit)


class TensorMap:
    """An encoded CUtensorMap: ``address`` is the 128-byte aligned start of its 128 bytes (kept
    alive with this object); ``raw`` are those bytes. Passed to ``launch`` as a kernel argument."""

    def __init__(self) -> None:
        self._buffer = (ctypes.c_ubyte * (TENSOR_MAP_BYTES + TENSOR_MAP_ALIGNMENT))()
        start = ctypes.addressof(self._buffer)
        self.address = -(-start // TENSOR_MAP_ALIGNMENT) * TENSOR_MAP_ALIGNMENT

    @property
    def raw(self) -> bytes:
        return ctypes.string_at(self.address, TENSOR_MAP_BYTES)


def _tensor_map_encoder():
    """cuTensorMapEncodeTiled from libcuda (CUDA driver >= 12.0)."""
    function = _driver_function("cuTensorMapEncodeTiled", (
        ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ))
    if function is None:
        raise RuntimeError("TMA tensor maps need cuTensorMapEncodeTiled from libcuda.so.1 (CUDA driver >= 12.0)")
    return function


def check_tensor_map(address: int, row_bytes: int, dims: tuple, strides: tuple, box: tuple) -> None:
    """The limits ``tensor_map`` needs, checked with a message (no GPU needed)."""
    if isinstance(row_bytes, bool) or not isinstance(row_bytes, int) or row_bytes < 1:
        raise ValueError(f"row_bytes must be an int >= 1; got {row_bytes!r}")
    if row_bytes % 16 or row_bytes // TENSOR_MAP_ELEMENT_BYTES > TENSOR_MAP_MAX_BOX:
        raise ValueError(f"row_bytes must be a multiple of 16 and at most "
                         f"{TENSOR_MAP_MAX_BOX * TENSOR_MAP_ELEMENT_BYTES}; got {row_bytes}")
    if not 1 <= len(dims) <= 4 or len(strides) != len(dims) or len(box) != len(dims):
        raise ValueError(f"dims, strides and box need one entry per outer dimension (1 to 4); "
                         f"got {dims}, {strides}, {box}")
    for name, values in (("dims", dims), ("strides", strides), ("box", box)):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{name} must be ints >= 1; got {values}")
    if any(d >= 2**32 for d in dims):
        raise ValueError(f"dims must be below 2**32; got {dims}")
    if any(s % 16 or s >= 2**40 for s in strides):
        raise ValueError(f"strides must be multiples of 16 bytes below 2**40; got {strides}")
    if any(b > TENSOR_MAP_MAX_BOX for b in box):
        raise ValueError(f"box entries must be at most {TENSOR_MAP_MAX_BOX}; got {box}")
    if address % 16:
        raise ValueError(f"a tensor map's array must be 16-byte aligned; its address is {address:#x}")


def tensor_map(address: int, row_bytes: int, dims: tuple, strides: tuple, box: tuple) -> TensorMap:
    """Encode a TMA tensor map of a device array of rows of ``row_bytes`` bytes.

    The map's element is 8 bytes (uint64); its dimensions, innermost first, are
    ``(row_bytes / 8, *dims)`` with byte strides ``strides`` for ``dims``, and its box
    ``(row_bytes / 8, *box)``: a copy at coordinates ``(0, c1, c2, ...)`` moves whole rows, the
    box in row-major order (innermost fastest), into contiguous shared memory; what lies outside
    the array arrives as zeros. No swizzle, no interleave, no L2 promotion.

    Args:
        address: the array's device address (16-byte aligned).
        row_bytes: bytes per row (a multiple of 16, at most 2048).
        dims: sizes of the outer dimensions (1 to 4 of them, each < 2**32).
        strides: their strides in bytes (multiples of 16).
        box: rows of each outer dimension per copy (each at most 256).
    """
    dims, strides, box = tuple(dims), tuple(strides), tuple(box)
    check_tensor_map(address, row_bytes, dims, strides, box)
    rank = 1 + len(dims)
    elements = row_bytes // TENSOR_MAP_ELEMENT_BYTES
    encoded = TensorMap()
    status = _tensor_map_encoder()(
        ctypes.c_void_p(encoded.address), CU_TENSOR_MAP_DATA_TYPE_UINT64, rank, ctypes.c_void_p(address),
        (ctypes.c_uint64 * rank)(elements, *dims), (ctypes.c_uint64 * len(strides))(*strides),
        (ctypes.c_uint32 * rank)(elements, *box), (ctypes.c_uint32 * rank)(*([1] * rank)),
        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
    )
    if status != 0:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed with CUresult {status} (address {address:#x}, "
                           f"rows of {row_bytes} bytes, dims {dims}, strides {strides}, box {box})")
    return encoded


def _kernel_argument(value):
    """A ctypes object holding one kernel argument (CuPy arrays: their device pointer; a
    ``TensorMap``: itself, whose bytes sit at its ``address``)."""
    import numpy as np

    if isinstance(value, TensorMap):
        return value
    if isinstance(value, np.int32):
        return ctypes.c_int32(int(value))
    if isinstance(value, np.uint32):
        return ctypes.c_uint32(int(value))
    if isinstance(value, np.float32):
        return ctypes.c_float(float(value))
    data = getattr(value, "data", None)
    if data is not None and hasattr(data, "ptr"):
        return ctypes.c_void_p(int(data.ptr))
    raise TypeError(f"kernel arguments must be CuPy arrays, np.int32/np.uint32/np.float32 or TensorMap; "
                    f"got {type(value)}")


def launch(kernel, grid, block, args, shared_mem: int = 0, programmatic: bool = False,
           cluster: tuple[int, int, int] | None = None) -> None:
    """Launch a CuPy ``RawKernel`` function on the current stream.

    Args:
        kernel: from ``compile_module(...).get_function``.
        grid, block: tuples of up to three ints.
        args: the kernel's arguments in order (CuPy arrays, ``np.int32``/``np.uint32``/``np.float32``,
            ``TensorMap`` for a ``__grid_constant__`` tensor map parameter; a launch with tensor
            maps goes through cuLaunchKernelEx, and raises ``RuntimeError`` without it).
        shared_mem: dynamic shared memory in bytes.
        programmatic: launch with programmatic dependent launch (the kernel must execute
            ``griddepcontrol.wait`` before it touches what the previous kernel in the stream
            writes or reads). Falls back to a plain launch when the driver lacks cuLaunchKernelEx.
        cluster: thread block cluster dimensions (x, y, z), each dividing the grid's; None: no
            clusters. Needs cuLaunchKernelEx (raises ``RuntimeError`` without it).
    """
    grid, block = _dim3(grid), _dim3(block)
    if cluster is not None:
        cluster = _check_cluster(cluster, grid)
    tensor_maps = any(isinstance(a, TensorMap) for a in args)
    launch_ex = _launch_kernel_ex() if programmatic or cluster or tensor_maps else None
    if launch_ex is None:
        if cluster or tensor_maps:
            what = "a cluster launch" if cluster else "a launch with tensor maps"
            raise RuntimeError(f"{what} needs cuLaunchKernelEx (CUDA driver >= 12.0)")
        kernel(grid, block, tuple(args), shared_mem=shared_mem)
        return
    cupy = require_gpu()
    config, _attributes = _launch_config(grid, block, shared_mem, cupy.cuda.get_current_stream().ptr,
                                         programmatic, cluster)
    holders = [_kernel_argument(a) for a in args]
    params = (ctypes.c_void_p * len(holders))(
        *[h.address if isinstance(h, TensorMap) else ctypes.addressof(h) for h in holders])
    function = getattr(kernel, "kernel", kernel)  # RawKernel -> its cupy.cuda.Function (CUfunction)
    status = launch_ex(ctypes.byref(config), ctypes.c_void_p(function.ptr), params, None)
    if status != 0:
        raise RuntimeError(f"cuLaunchKernelEx failed with CUresult {status} (grid {grid}, block {block})")
