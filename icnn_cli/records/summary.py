"""What ``icnn init`` wrote or ``icnn inspect`` found: header facts and leaf records."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from icnn_cli.records.leaves import LeafFilter, LeafRecord
from icnn_cli.records.tree import limit_depth, tree_rows
from icnn_cli.units import format_bytes  # noqa: F401 - part of this module's interface


@dataclasses.dataclass(frozen=True)
class ItemRecord:
    """An item of a checkpoint that is not a PyTree: a JSON document, or something unknown.

    A JSON item carries its ``content`` when short, else the ``keys`` of its object.
    """

    name: str
    kind: str
    nbytes: int
    content: Any = None
    keys: tuple[str, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name, "kind": self.kind, "bytes": self.nbytes}
        if self.keys is not None:
            record["keys"] = list(self.keys)
        elif self.kind == "json":
            record["content"] = self.content
        return record


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``icnn init`` wrote or ``icnn inspect`` found: header facts and leaves.

    With ``leaf_filter`` set, ``leaves`` and the totals are those of the filtered leaves.
    """

    path: str
    leaves: Sequence[LeafRecord]
    header: Sequence[tuple[str, str]] = ()
    spec: dict[str, Any] | None = None
    leaf_filter: LeafFilter | None = None
    written_at: str | None = None  # Orbax's commit time, ISO 8601 UTC
    warnings: Sequence[str] = ()  # e.g. installed versions that differ from the writer's
    manager_step: dict[str, Any] | None = None  # CheckpointManager root, steps, chosen step
    items: Sequence[ItemRecord] = ()  # the items that are not PyTrees (JSON, unknown)
    resources: dict[str, Any] | None = None  # a dry run's memory and disk figures

    @property
    def total_params(self) -> int:
        return sum(leaf.size for leaf in self.leaves if leaf.is_array)

    @property
    def total_bytes(self) -> int:
        return sum(leaf.nbytes for leaf in self.leaves)

    @property
    def with_stats(self) -> bool:
        return any(leaf.stats is not None for leaf in self.leaves)

    def as_json(self, max_depth: int | None = None) -> dict[str, Any]:
        """Every leaf, never collapsed; ``modules`` gives subtotals down to ``max_depth``."""
        with_stats = self.with_stats
        return (
            {
                "path": self.path,
                "written_at": self.written_at,
                "warnings": list(self.warnings),
                "total_params": self.total_params,
                "total_bytes": self.total_bytes,
                "filter": self.leaf_filter.as_json() if self.leaf_filter else None,
                "leaves": [leaf.as_json() for leaf in self.leaves],
                "modules": [
                    {
                        "path": "/".join(row.path),
                        "depth": row.depth,
                        "params": row.params,
                        "bytes": row.nbytes,
                        "arrays": row.arrays,
                    }
                    # how many of the module's leaves carry each flag
                    | ({"flags": dict(row.flag_counts)} if with_stats else {})
                    for row in limit_depth(tree_rows(self.leaves), max_depth)
                    if not row.is_leaf
                ],
                "spec": self.spec,
            }
            | ({"checkpoint_manager": self.manager_step} if self.manager_step else {})
            | ({"items": [item.as_json() for item in self.items]} if self.items else {})
            | ({"resources": self.resources} if self.resources else {})
        )
