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


def check_grouped_codes(q4, group_size, metadata: dict, s1) -> tuple[np.ndarray, int]:
    """Shared checks of a two-level 4-bit weight (LiquidQuant, QoQ).

    Args:
        q4: uint8 [N, K] codes 0..15; K a positive multiple of ``group_size``.
        group_size: k-elements per group.
        metadata: name -> (array, dtype) of the per-group arrays, each [N, K / group_size].
        s1: float32 [N] level-1 scales, finite and positive.

    Returns:
        the checked ``q4`` and the group size as an int.
    """
    from .constants import Q4_MAX

    group_size = require_positive_group_size(group_size)
    q4 = as_matrix("q4", q4, (np.uint8,))
    n, k = q4.shape
    require_group_multiple("q4", k, group_size)
    groups = k // group_size
    for name, (array, dtype) in metadata.items():
        m = as_matrix(name, array, (dtype,))
        if m.shape != (n, groups):
            raise ValueError(
                f"{name} must have shape (N, K/group_size) = ({n}, {groups}); got {m.shape}"
            )
    as_vector("s1", s1, np.float32, n)
    if n and q4.max() > Q4_MAX:
        raise ValueError(f"q4 codes must be 0..{Q4_MAX}; found {int(q4.max())}")
    if not np.isfinite(s1).all() or (s1 <= 0).any():
        raise ValueError("s1 must be finite and positive")
    return q4, group_size
