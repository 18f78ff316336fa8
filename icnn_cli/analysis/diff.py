"""``icnn diff A B``: structure and values of two Orbax checkpoints, leaf by leaf.

Both checkpoints are streamed in path order through
:class:`~icnn_cli.checkpoint.reader.CheckpointReader`, a few leaves at a time, so memory stays near
the largest leaf pair; icnn checkpoints have their fingerprints checked on the
way (a damaged one is an error, not a difference).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any, Literal

from icnn_cli.analysis.compare import value_differences
from icnn_cli.checkpoint.consistency import read_consistently
from icnn_cli.checkpoint.metadata import quiet_absl
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.errors import UsageError
from icnn_cli.records import LeafRecord
from icnn_cli.records.leaves import finite_or_none

Status = Literal["same", "changed", "only_a", "only_b", "shape", "dtype"]


@dataclasses.dataclass(frozen=True)
class LeafDiff:
    """One leaf path present in A, B or both, and how they differ."""

    path: str
    status: Status
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    detail: str = ""  # e.g. "(2, 3) -> (3, 2)"; human output only

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "max_abs_diff": finite_or_none(self.max_abs_diff),
            "max_rel_diff": finite_or_none(self.max_rel_diff),
        }


@dataclasses.dataclass(frozen=True)
class DiffReport:
    a: StoragePath
    b: StoragePath
    atol: float
    leaves: list[LeafDiff]

    @property
    def identical(self) -> bool:
        return all(leaf.status == "same" for leaf in self.leaves)

    def as_json(self) -> dict[str, Any]:
        return {"identical": self.identical, "leaves": [leaf.as_json() for leaf in self.leaves]}


def diff_checkpoints(a: StoragePath, b: StoragePath, atol: float = 0.0) -> DiffReport:
    """Compare every leaf of ``a`` and ``b``; values within ``atol`` count as the same."""
    return read_consistently([a, b], lambda: _diff_checkpoints(a, b, atol))


def _diff_checkpoints(a: StoragePath, b: StoragePath, atol: float = 0.0) -> DiffReport:
    if not (atol >= 0 and math.isfinite(atol)):
        raise UsageError("must be a finite number >= 0", "atol", atol)
    reader_a = CheckpointReader.open(a)
    reader_b = CheckpointReader.open(b)
    leaves: list[LeafDiff] = []
    with quiet_absl():
        for path, leaf_a, leaf_b in _merged(reader_a, reader_b):
            leaves.append(_leaf_diff(path, leaf_a, leaf_b, atol))
    return DiffReport(a, b, atol, leaves)


Side = tuple[LeafRecord, Any] | None


def _merged(
    reader_a: CheckpointReader, reader_b: CheckpointReader
) -> Iterator[tuple[str, Side, Side]]:
    """Merge-join both checkpoints' leaves, sorted by path; fingerprints checked at the end."""
    stream_a = reader_a.verified_arrays()
    stream_b = reader_b.verified_arrays()
    item_a, item_b = next(stream_a, None), next(stream_b, None)
    while item_a is not None or item_b is not None:
        if item_a is not None and (item_b is None or item_a[0].path < item_b[0].path):
            yield item_a[0].path_string, item_a, None
            item_a = next(stream_a, None)
        elif item_b is not None and (item_a is None or item_b[0].path < item_a[0].path):
            yield item_b[0].path_string, None, item_b
            item_b = next(stream_b, None)
        elif item_a is not None and item_b is not None:
            yield item_a[0].path_string, item_a, item_b
            item_a, item_b = next(stream_a, None), next(stream_b, None)


def _leaf_diff(path: str, side_a: Side, side_b: Side, atol: float) -> LeafDiff:
    if side_b is None:
        return LeafDiff(path, "only_a")
    if side_a is None:
        return LeafDiff(path, "only_b")
    (leaf_a, array_a), (leaf_b, array_b) = side_a, side_b
    if leaf_a.shape != leaf_b.shape:
        return LeafDiff(path, "shape", detail=f"{leaf_a.shape} -> {leaf_b.shape}")
    if leaf_a.dtype != leaf_b.dtype:
        return LeafDiff(path, "dtype", detail=f"{leaf_a.dtype} -> {leaf_b.dtype}")
    if isinstance(array_a, str) or isinstance(array_b, str):
        return LeafDiff(path, "same" if array_a == array_b else "changed")
    max_abs, max_rel = value_differences(array_a, array_b)
    status: Status = "same" if max_abs <= atol else "changed"
    return LeafDiff(path, status, max_abs, max_rel)
