"""Input checks shared by every public function: clear errors that say what was expected."""

from __future__ import annotations

import numpy as np


def as_matrix(name: str, array, dtypes: tuple[type, ...]) -> np.ndarray:
    """Return ``array`` as a 2-D NumPy array of one of ``dtypes`` or raise a clear error."""
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray; got {type(array).__name__} "
            "(convert with numpy.asarray, or use the gpu package for device arrays)"
        )
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got shape {array.shape} ({array.ndim}-D)")
    if array.dtype.type not in dtypes:
        expected = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must have dtype {expected}; got {array.dtype}")
    return array


def as_vector(name: str, array, dtype: type, length: int) -> np.ndarray:
    """Return ``array`` as a 1-D array of ``dtype`` and ``length`` or raise a clear error."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(array).__name__}")
    if array.dtype.type is not dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}; got {array.dtype}")
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},); got {array.shape}")
    return array


def require_finite(name: str, matrix: np.ndarray) -> None:
    """Raise naming the first row of ``matrix`` that holds a NaN or an infinity."""
    finite_rows = np.isfinite(matrix).all(axis=1)
    if not finite_rows.all():
        row = int(np.argmin(finite_rows))
        col = int(np.argmin(np.isfinite(matrix[row])))
        raise ValueError(
            f"{name} must be finite; row {row} holds {matrix[row, col]} at column {col}"
        )


def require_group_multiple(name: str, k: int, group_size: int) -> None:
    """Raise unless ``k`` is a positive multiple of ``group_size``."""
    if k <= 0 or k % group_size != 0:
        raise ValueError(
            f"{name}: K = {k} must be a positive multiple of the group size {group_size}"
        )


def require_positive_group_size(group_size) -> int:
    """Check a group size argument (a positive multiple of 4) and return it as an int."""
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise TypeError(f"group_size must be an int; got {type(group_size).__name__}")
    if group_size <= 0 or group_size % 4 != 0:
        raise ValueError(f"group_size must be a positive multiple of 4; got {group_size}")
    return int(group_size)
