"""What ``icnn init`` wrote or ``icnn inspect`` found: typed header facts and leaf records."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from icnn_cli.records.header import DryRun, ManagerStep, OrbaxFacts, Provenance
from icnn_cli.records.leaves import LeafFilter, LeafRecord
from icnn_cli.records.tree import limit_depth, tree_rows
from icnn_cli.resources import ResourceEstimate
from icnn_cli.units import format_bytes  # noqa: F401 - part of this module's interface

# Characters of JSON a summary shows: a JSON item's document up to this long is carried
# whole (else its keys), and the text cuts custom metadata and metrics here.
MAX_SHOWN_JSON = 200
DRY_RUN_PATH_NOTE = " (dry run: nothing written)"  # kept in --json's "path", as before


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

    Every fact the text shows above the tree is one of these typed fields (none is
    pre-worded), so ``--json`` and the Python API carry it too. With ``leaf_filter``
    set, ``leaves`` and the totals are those of the filtered leaves.

    Attributes:
      path: the checkpoint directory (a dry run's ``--out``).
      leaves: one record per leaf.
      spec: the embedded icnn spec as JSON; ``None`` for a checkpoint icnn did not write.
      leaf_filter: the globs leaves were filtered by, if any.
      written_at: Orbax's commit time, ISO 8601 UTC.
      warnings: what the reader could not tell, or installed versions that differ.
      manager_step: the step of a ``CheckpointManager`` root that was read.
      items: the items that are not PyTrees (JSON, unknown).
      orbax: what Orbax recorded: layout, items, start time, custom metadata, metrics.
      provenance: where an icnn checkpoint came from (from its spec), and whether this
        reading checked its fingerprint.
      dry_run: what a dry run planned (nothing written).
      resources: a dry run's memory and disk figures.
    """

    path: str
    leaves: Sequence[LeafRecord]
    spec: dict[str, Any] | None = None
    leaf_filter: LeafFilter | None = None
    written_at: str | None = None
    warnings: Sequence[str] = ()
    manager_step: ManagerStep | None = None
    items: Sequence[ItemRecord] = ()
    orbax: OrbaxFacts | None = None
    provenance: Provenance | None = None
    dry_run: DryRun | None = None
    resources: ResourceEstimate | None = None

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
                "path": self.path + (DRY_RUN_PATH_NOTE if self.dry_run else ""),
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
                "orbax": self.orbax.as_json() if self.orbax else None,
                "provenance": self.provenance.as_json() if self.provenance else None,
            }
            | ({"checkpoint_manager": self.manager_step.as_json()} if self.manager_step else {})
            | ({"items": [item.as_json() for item in self.items]} if self.items else {})
            | ({"dry_run": self.dry_run.as_json()} if self.dry_run else {})
            | ({"resources": self.resources.as_json()} if self.resources else {})
        )
