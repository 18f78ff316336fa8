"""One comparison of two arrays, for ``diff`` (two checkpoints) and ``verify`` (stored vs re-run).

Equal values count as equal whatever they are: the same infinity on both sides,
or NaN on both sides, is no difference. NaN against a number, or infinities
that differ, are an infinite difference.
"""

from __future__ import annotations

from typing import Any


def bit_identical(a: Any, b: Any) -> bool:
    """Same dtype, shape and bytes."""
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    return np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()


def value_differences(a: Any, b: Any) -> tuple[float, float]:
    """Max ``|a - b|`` and max ``|a - b| / max(|a|, |b|)`` (0 where both are 0), in float64.

    NaN in the same place on both sides counts as equal; NaN against a number,
    or infinities that differ, count as an infinite difference.
    """
    import numpy as np

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0:
        return 0.0, 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        absolute = np.abs(x - y)
        both_nan = np.isnan(x) & np.isnan(y)
        equal = (x == y) | both_nan
        absolute = np.where(equal, 0.0, np.where(np.isnan(absolute), np.inf, absolute))
        scale = np.maximum(np.abs(x), np.abs(y))
        relative = np.where(absolute == 0, 0.0, absolute / np.where(np.isnan(scale), np.inf, scale))
    relative = np.where(np.isnan(relative), np.inf, relative)
    return float(absolute.max()), float(relative.max())
