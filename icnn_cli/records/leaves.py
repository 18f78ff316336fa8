"""One record per leaf of a checkpoint: where it sits, shape, dtype, size, statistics."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

NAN_FLAG = "nan"
INF_FLAG = "inf"
ZEROS_FLAG = "all_zero"
# Non-array leaves (Python scalars and strings in a PyTree checkpoint) carry their
# value; their dtype is the Python type's name, as `icnn inspect --json` shows it.


@dataclasses.dataclass(frozen=True)
class LeafStats:
    """Statistics of one array, computed while the rest stays on disk.

    ``mean``, ``std``, ``min`` and ``max`` are over the finite entries (NaN when
    there are none); ``nan`` and ``inf`` count the others.
    """

    mean: float
    std: float
    min: float
    max: float
    negative_fraction: float
    nan: int = 0
    inf: int = 0

    @property
    def flags(self) -> tuple[str, ...]:
        flags = []
        if self.nan:
            flags.append(NAN_FLAG)
        if self.inf:
            flags.append(INF_FLAG)
        if not self.nan and not self.inf and self.min == 0 and self.max == 0:
            flags.append(ZEROS_FLAG)
        return tuple(flags)

    def as_json(self) -> dict[str, Any]:
        return {
            "mean": finite_or_none(self.mean),
            "std": finite_or_none(self.std),
            "min": finite_or_none(self.min),
            "max": finite_or_none(self.max),
            "negative_fraction": self.negative_fraction,
            "nan": self.nan,
            "inf": self.inf,
            "flags": list(self.flags),
        }


def finite_or_none(value: float | None) -> float | None:
    """``value``, or ``None`` for NaN and infinities: JSON has neither (a leaf with no finite
    entry has no mean; an unbounded difference has no size)."""
    return value if value is not None and math.isfinite(value) else None


def leaf_statistics(array: Any) -> LeafStats:
    """Mean, std, min and max of the finite entries, NaN/Inf counts, share of negatives."""
    import numpy as np

    values = np.asarray(array, dtype=np.float64).ravel()
    if values.size == 0:
        return LeafStats(float("nan"), float("nan"), float("nan"), float("nan"), 0.0)
    finite_mask = np.isfinite(values)
    finite = values[finite_mask] if not finite_mask.all() else values
    nan_count = int(np.count_nonzero(np.isnan(values)))
    negative_fraction = float(np.count_nonzero(values < 0) / values.size)
    if finite.size == 0:
        mean = std = low = high = float("nan")
    else:
        mean, std = float(finite.mean()), float(finite.std())
        low, high = float(finite.min()), float(finite.max())
    return LeafStats(
        mean=mean,
        std=std,
        min=low,
        max=high,
        negative_fraction=negative_fraction,
        nan=nan_count,
        inf=int(values.size - finite.size - nan_count),
    )


def combine_stats(parts: Sequence[tuple[LeafStats, int]]) -> LeafStats:
    """Statistics of several arrays taken together, from each one's stats and size."""
    finite = [(stats, size - stats.nan - stats.inf) for stats, size in parts]
    count = sum(n for _, n in finite)
    total = sum(size for _, size in parts)
    if count:
        mean = sum(stats.mean * n for stats, n in finite if n) / count
        # within-part plus between-part variance (Chan et al.): E[x^2] - mean^2 would cancel
        # catastrophically for values far from zero with a small spread
        variance = sum((stats.std**2 + (stats.mean - mean) ** 2) * n for stats, n in finite if n)
        std = math.sqrt(variance / count)
        low = min(stats.min for stats, n in finite if n)
        high = max(stats.max for stats, n in finite if n)
    else:
        mean = std = low = high = float("nan")
    negative = sum(stats.negative_fraction * size for stats, size in parts)
    return LeafStats(
        mean=mean,
        std=std,
        min=low,
        max=high,
        negative_fraction=negative / total if total else 0.0,
        nan=sum(stats.nan for stats, _ in parts),
        inf=sum(stats.inf for stats, _ in parts),
    )


@dataclasses.dataclass(frozen=True)
class LeafRecord:
    """One leaf of a checkpoint: where it sits in the tree, its shape, dtype and size.

    An array leaf has a numpy dtype name; a non-array leaf (a Python ``str``,
    ``int``, ``float`` or ``bool`` in a PyTree checkpoint) has that type's name as
    ``dtype``, shape ``()`` and its ``value``.
    """

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    stats: LeafStats | None = None
    key_impl: str | None = None  # a typed PRNG key array: shape and dtype are the keys'
    sharding: str | None = None  # layout on a device mesh, e.g. "P(None, 'x')"
    value: str | int | float | bool | None = None  # a non-array leaf's value, when known
    scalar: bool = False  # a non-array leaf: dtype is its Python type's name

    @classmethod
    def of_array(
        cls, path: tuple[str, ...], shape: Sequence[int], dtype: Any, sharding: str | None = None
    ) -> LeafRecord:
        """The record of an array of ``shape`` and ``dtype`` (anything ``np.dtype`` takes)."""
        import numpy as np

        name, itemsize = _dtype_facts(dtype if isinstance(dtype, np.dtype) else np.dtype(dtype))
        shape = tuple(int(dim) for dim in shape)
        return cls(path, shape, name, math.prod(shape) * itemsize, sharding=sharding)

    @classmethod
    def of_scalar(cls, path: tuple[str, ...], value: Any, type_name: str) -> LeafRecord:
        """The record of a non-array leaf: its Python type's name and its value (if known)."""
        # Orbax stores a number as one 8-byte element; a string as its UTF-8 bytes.
        text = value if isinstance(value, str) else ""
        size = len(text.encode()) if type_name == "str" else 8
        return cls(path, (), type_name, size, value=value, scalar=True)

    @property
    def is_array(self) -> bool:
        return not self.scalar

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def path_string(self) -> str:
        return "/".join(self.path)

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path": self.path_string,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "size": self.size,
            "bytes": self.nbytes,
        }
        if not self.is_array:
            record["value"] = self.value
        if self.key_impl is not None:
            record["key_impl"] = self.key_impl
        if self.sharding is not None:
            record["sharding"] = self.sharding
        if self.stats is not None:
            record.update(self.stats.as_json())
        return record


def records_of_tree(
    tree: Any, sharding_of: Callable[[tuple[str, ...]], str | None] | None = None
) -> list[LeafRecord]:
    """Records of an in-memory pytree of arrays or ``ShapeDtypeStruct``s, in tree order."""
    from icnn_cli.tree_paths import flatten_with_paths

    return [
        LeafRecord.of_array(
            parts, leaf.shape, leaf.dtype, sharding_of(parts) if sharding_of else None
        )
        for parts, leaf in flatten_with_paths(tree)
    ]


@functools.lru_cache(maxsize=256)
def _dtype_facts(dtype: Any) -> tuple[str, int]:
    # str(dtype) costs ~20 us: once per dtype, not once per leaf of a 200,000-leaf tree.
    return str(dtype), dtype.itemsize


def records_of_values(values: dict[tuple[str, ...], Any]) -> list[LeafRecord]:
    """Records of leaves held in memory by path: numpy arrays, Python scalars, anything else
    as its text (a msgpack tree, say, whose values came with it)."""
    import numpy as np

    records = []
    for parts, value in values.items():
        if isinstance(value, np.ndarray):
            records.append(LeafRecord.of_array(parts, value.shape, value.dtype))
        elif isinstance(value, bool | int | float | str):
            records.append(LeafRecord.of_scalar(parts, value, type(value).__name__))
        else:
            records.append(LeafRecord.of_scalar(parts, str(value), "str"))
    return records


# --- filtering (on leaves, before anything is read) ------------------------------------


def leaf_matches(leaf: LeafRecord, globs: Sequence[str]) -> bool:
    """Whether a glob matches the leaf's path or the path of a module holding it.

    ``params/w_xs_*`` and ``params/w_xs_0`` both select every leaf under ``w_xs_0``.
    """
    prefixes = ["/".join(leaf.path[:end]) for end in range(1, len(leaf.path) + 1)]
    return any(fnmatch.fnmatchcase(prefix, glob) for glob in globs for prefix in prefixes)


def filter_leaves(leaves: Sequence[LeafRecord], globs: Sequence[str]) -> list[LeafRecord]:
    return [leaf for leaf in leaves if leaf_matches(leaf, globs)]


@dataclasses.dataclass(frozen=True)
class LeafFilter:
    """The ``--filter`` globs and how many of the checkpoint's arrays they kept."""

    globs: tuple[str, ...]
    kept: int
    of: int

    def as_json(self) -> dict[str, Any]:
        return {"globs": list(self.globs), "arrays": self.kept, "of_arrays": self.of}
