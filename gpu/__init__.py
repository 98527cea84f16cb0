"""liquidref's GPU layer: CUDA kernels in ``gpu/kernels`` run through CuPy.

``import gpu`` works without CuPy or a GPU; ``gpu.api`` (upload, quantize_activation, gemm,
linear, the backend registry) and ``gpu.runtime`` (compile_module, require_gpu, device_array)
raise a clear ``RuntimeError`` only when a function that needs the GPU is called.
"""

from .api import (
    DeviceWeight,
    available_backends,
    gemm,
    linear,
    quantize_activation,
    upload,
)

__all__ = ["DeviceWeight", "available_backends", "gemm", "linear", "quantize_activation", "upload"]
