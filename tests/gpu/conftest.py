"""GPU test set-up: tests marked ``gpu`` skip, with the reason, where CuPy or a CUDA device is
missing; fixtures for CuPy, torch on CUDA, and poisoned output buffers.

Usage in any test module of this folder (``test_hopper.py`` too)::

    pytestmark = pytest.mark.gpu          # whole module needs the GPU

    def test_x(cp):                        # the cupy module (the test skips without a GPU)
        ...

    def test_y(torch_cuda):                # the torch module with CUDA (skips otherwise)
        ...
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu import runtime

# An fp16 NaN with a payload no kernel produces: output bytes still holding it were never written.
POISON_FP16 = np.uint16(0x7DEA)
POISON_INT8 = np.int8(0x5A)
POISON_FLOAT32 = np.uint32(0x7FBADBAD)


def gpu_skip_reason() -> str | None:
    """Why GPU tests cannot run here (None when they can)."""
    try:
        runtime.require_gpu()
    except RuntimeError as error:
        return f"needs CuPy and a CUDA GPU: {error}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    checked = False
    for item in items:
        if item.get_closest_marker("gpu") is None:
            continue
        if not checked:
            reason, checked = gpu_skip_reason(), True
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def cp():
    """The cupy module, once CuPy and a CUDA device are there."""
    reason = gpu_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    import cupy

    return cupy


@pytest.fixture(scope="session")
def torch_cuda(cp):
    """The torch module with a CUDA device (skips without torch)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return torch


@pytest.fixture(scope="session")
def poisoned(cp):
    """``poisoned(shape, dtype)``: a device array filled with a recognizable never-written pattern."""

    def make(shape, dtype):
        dtype = np.dtype(dtype)
        pattern = {
            np.dtype(np.float16): POISON_FP16,
            np.dtype(np.int8): POISON_INT8,
            np.dtype(np.float32): POISON_FLOAT32,
        }[dtype]
        bits = cp.full(shape, pattern, dtype=pattern.dtype)
        return bits.view(dtype)

    return make
