"""A tree of leaf records -> rows -> rich table, plain text or JSON.

As in Flax's ``Module.tabulate``, the rows are plain data built first
(:func:`summary_rows`) and rendered second (:func:`render_table`), so tests
check the rows field by field and the renderers stay dumb.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class LeafStats:
    """Statistics of one array, computed while the rest stays on disk."""

    mean: float
    std: float
    min: float
    max: float
    negative_fraction: float

    def as_json(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "negative_fraction": self.negative_fraction,
        }


@dataclasses.dataclass(frozen=True)
class LeafRecord:
    """One array of a checkpoint: where it sits in the tree, its shape, dtype and size."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    stats: LeafStats | None = None

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
        if self.stats is not None:
            record.update(self.stats.as_json())
        return record


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``icnn init`` wrote or ``icnn inspect`` found: header facts and leaves."""

    path: str
    leaves: Sequence[LeafRecord]
    header: Sequence[tuple[str, str]] = ()
    spec: dict[str, Any] | None = None

    @property
    def total_params(self) -> int:
        return sum(leaf.size for leaf in self.leaves)

    @property
    def total_bytes(self) -> int:
        return sum(leaf.nbytes for leaf in self.leaves)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "total_params": self.total_params,
            "total_bytes": self.total_bytes,
            "leaves": [leaf.as_json() for leaf in self.leaves],
            "spec": self.spec,
        }


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of the tree table: a module (with subtotals) or a leaf."""

    guide: str  # tree-drawing prefix, e.g. "│   ├── "
    name: str
    depth: int
    params: int
    nbytes: int
    shape: tuple[int, ...] | None = None  # None for a module row
    dtype: str | None = None
    stats: LeafStats | None = None

    @property
    def is_leaf(self) -> bool:
        return self.shape is not None


@dataclasses.dataclass
class _Node:
    name: str
    children: dict[str, _Node] = dataclasses.field(default_factory=dict)
    leaf: LeafRecord | None = None

    def totals(self) -> tuple[int, int]:
        if self.leaf is not None:
            return self.leaf.size, self.leaf.nbytes
        sums = [child.totals() for child in self.children.values()]
        return sum(params for params, _ in sums), sum(nbytes for _, nbytes in sums)


def _build_tree(leaves: Sequence[LeafRecord]) -> _Node:
    root = _Node("")
    for leaf in leaves:
        node = root
        for part in leaf.path:
            node = node.children.setdefault(part, _Node(part))
        node.leaf = leaf
    return root


def summary_rows(leaves: Sequence[LeafRecord]) -> list[SummaryRow]:
    """Rows for the tree table: collection -> module path -> leaf, depth first."""
    rows: list[SummaryRow] = []

    def visit(node: _Node, prefix: str, depth: int) -> None:
        children = list(node.children.values())
        for index, child in enumerate(children):
            last = index == len(children) - 1
            guide = prefix + ("└── " if last else "├── ") if depth else ""
            params, nbytes = child.totals()
            leaf = child.leaf
            rows.append(
                SummaryRow(
                    guide=guide,
                    name=child.name,
                    depth=depth,
                    params=params,
                    nbytes=nbytes,
                    shape=leaf.shape if leaf else None,
                    dtype=leaf.dtype if leaf else None,
                    stats=leaf.stats if leaf else None,
                )
            )
            child_prefix = prefix + ("    " if last else "│   ") if depth else ""
            visit(child, child_prefix, depth + 1)

    visit(_build_tree(leaves), "", 0)
    return rows


def format_bytes(count: int) -> str:
    """Human-readable binary size: ``16.0 KiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def render_table(summary: Summary) -> Any:
    """The summary as a rich renderable: header lines, the tree table and a total line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with_stats = any(leaf.stats is not None for leaf in summary.leaves)
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    for label, value in (("path", summary.path), *summary.header):
        header.add_row(label, value)

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("tree", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype")
    table.add_column("params", justify="right")
    table.add_column("bytes", justify="right")
    stat_names = ("mean", "std", "min", "max", "neg")
    if with_stats:
        for name in stat_names:
            table.add_column(name, justify="right")
    for row in summary_rows(summary.leaves):
        name = Text(row.guide, style="dim") + Text(
            row.name, style="cyan" if row.is_leaf else "bold"
        )
        cells = [
            name,
            str(row.shape) if row.is_leaf else "",
            row.dtype or "",
            f"{row.params:,}",
            format_bytes(row.nbytes),
        ]
        if with_stats:
            stats = row.stats
            cells += (
                [
                    _format_number(stats.mean),
                    _format_number(stats.std),
                    _format_number(stats.min),
                    _format_number(stats.max),
                    f"{stats.negative_fraction:.0%}",
                ]
                if stats
                else [""] * len(stat_names)
            )
        table.add_row(*cells, style=None if row.is_leaf else "bold")
    total = Text(
        f"total: {summary.total_params:,} params, {format_bytes(summary.total_bytes)} "
        f"in {len(summary.leaves)} arrays",
        style="bold",
    )
    return Group(header, Text(""), table, Text(""), total)
