"""Leaf records -> rows of a tree table: modules with subtotals, then leaves, depth first.

Shaping the tree for a screen (collapsing repeated layers, cutting it at a depth,
marking which rows end their branch) is a chain of row-to-row transformations on
plain data; ``icnn_cli.render`` turns finished rows into cells and draws the guides.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from icnn_cli.records.leaves import LeafRecord, LeafStats, combine_stats

FlagCounts = tuple[tuple[str, int], ...]  # (flag, how many of the row's leaves carry it)


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of the tree table: a module (with subtotals) or a leaf.

    A collapsed row stands for ``count`` siblings with the same structure; its
    numbers are their sums (its shape and dtype are each one's).
    """

    name: str
    depth: int
    params: int
    nbytes: int
    shape: tuple[int, ...] | None = None  # None for a module row
    dtype: str | None = None
    stats: LeafStats | None = None  # a module's: pooled over its leaves
    path: tuple[str, ...] = ()
    arrays: int = 1  # leaves this row stands for
    count: int = 1
    flag_counts: FlagCounts = ()  # over the leaves this row stands for
    truncated: bool = False  # a module whose children --depth hides
    sharding: str | None = None
    value: Any = None  # a non-array leaf's value
    # For each row on the path from the top level down to this one: is it the last of
    # its siblings? (Where a tree drawing ends a branch and stops its vertical line.)
    last_along_path: tuple[bool, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return self.shape is not None

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(flag for flag, _ in self.flag_counts)

    @property
    def flag_text(self) -> str:
        """``nan``, or ``all_zero 3/12`` when only some of the row's leaves carry a flag."""
        return " ".join(
            flag if count == self.arrays else f"{flag} {count}/{self.arrays}"
            for flag, count in self.flag_counts
        )


_INDEXED_NAME = re.compile(r"^(.*?)(\d+)$")


@functools.lru_cache(maxsize=1 << 16)  # sibling names repeat in every module of a big tree
def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def tree_rows(leaves: Sequence[LeafRecord]) -> list[SummaryRow]:
    """Every module and leaf, depth first, siblings in natural order (``w_2`` before ``w_10``)."""
    tree: dict[str, Any] = {}
    for leaf in leaves:
        node = tree
        for part in leaf.path[:-1]:
            node = node.setdefault(part, {})
        node[leaf.path[-1]] = leaf
    rows: list[SummaryRow] = []

    def visit(node: dict[str, Any], path: tuple[str, ...]) -> list[LeafRecord]:
        below: list[LeafRecord] = []
        for name in sorted(node, key=_natural_key):
            child = node[name]
            if isinstance(child, LeafRecord):
                rows.append(_leaf_row(child, len(path)))
                below.append(child)
                continue
            index = len(rows)
            rows.append(SummaryRow(name, len(path), 0, 0))
            leaves_below = visit(child, (*path, name))
            rows[index] = _module_row(name, (*path, name), leaves_below)
            below.extend(leaves_below)
        return below

    visit(tree, ())
    return rows


def _leaf_row(leaf: LeafRecord, depth: int) -> SummaryRow:
    return SummaryRow(
        name=leaf.path[-1],
        depth=depth,
        params=leaf.size,
        nbytes=leaf.nbytes,
        shape=leaf.shape,
        dtype=leaf.dtype,
        stats=leaf.stats,
        path=leaf.path,
        flag_counts=tuple((flag, 1) for flag in leaf.stats.flags) if leaf.stats else (),
        sharding=leaf.sharding,
        value=leaf.value,
    )


def _module_row(name: str, path: tuple[str, ...], leaves: Sequence[LeafRecord]) -> SummaryRow:
    return SummaryRow(
        name=name,
        depth=len(path) - 1,
        params=sum(leaf.size for leaf in leaves),
        nbytes=sum(leaf.nbytes for leaf in leaves),
        path=path,
        arrays=len(leaves),
        stats=_pooled_stats(leaves),
        flag_counts=_count_flags(
            tuple((flag, 1) for flag in leaf.stats.flags) for leaf in leaves if leaf.stats
        ),
    )


def _pooled_stats(leaves: Sequence[LeafRecord]) -> LeafStats | None:
    # Leaves without stats (typed keys, strings) are left out of the pool.
    parts = [(leaf.stats, leaf.size) for leaf in leaves if leaf.stats is not None]
    return combine_stats(parts) if parts else None


def _count_flags(flag_counts: Iterable[FlagCounts]) -> FlagCounts:
    totals: dict[str, int] = {}
    for counts in flag_counts:
        for flag, count in counts:
            totals[flag] = totals.get(flag, 0) + count
    return tuple(totals.items())


def _blocks(rows: Sequence[SummaryRow]) -> list[list[SummaryRow]]:
    """Split depth-first rows into subtrees: a root row and the rows below it."""
    blocks: list[list[SummaryRow]] = []
    for row in rows:
        if not blocks or row.depth <= blocks[0][0].depth:
            blocks.append([row])
        else:
            blocks[-1].append(row)
    return blocks


def _shape_signature(block: Sequence[SummaryRow]) -> tuple[Any, ...]:
    head = block[0]
    return (
        (head.shape, head.dtype, head.sharding),
        *(
            (row.depth - head.depth, row.name, row.shape, row.dtype, row.sharding)
            for row in block[1:]
        ),
    )


def collapse_repeated(rows: Sequence[SummaryRow]) -> list[SummaryRow]:
    """Fold siblings named ``<prefix><index>`` with the same structure into one row.

    ``w_zs_0`` ... ``w_zs_6`` with equal shapes and dtypes below them become
    ``w_zs_{0..6}`` with ``count=7`` and summed numbers; a sibling that differs
    (say ``w_zs_7``, the output layer) keeps its own row. Non-array leaves never
    fold: each has its own value.
    """
    groups: dict[Any, list[list[SummaryRow]]] = {}
    for block in _blocks(rows):
        match = _INDEXED_NAME.match(block[0].name)
        scalar = any(row.is_leaf and row.value is not None for row in block)
        key = (match.group(1), _shape_signature(block)) if match and not scalar else id(block)
        groups.setdefault(key, []).append(block)
    collapsed: list[SummaryRow] = []
    for key, members in groups.items():
        block = members[0] if len(members) == 1 else _merge_blocks(key[0], members)
        collapsed.append(block[0])
        collapsed.extend(collapse_repeated(block[1:]) if len(block) > 1 else [])
    return collapsed


def _merge_blocks(prefix: str, members: Sequence[Sequence[SummaryRow]]) -> list[SummaryRow]:
    indices = []
    for block in members:
        match = _INDEXED_NAME.match(block[0].name)
        assert match is not None  # collapse_repeated grouped them by this very match
        indices.append(int(match.group(2)))
    merged = [
        _merge_rows([block[position] for block in members]) for position in range(len(members[0]))
    ]
    merged[0] = dataclasses.replace(
        merged[0], name=f"{prefix}{{{_index_ranges(indices)}}}", count=len(members)
    )
    return merged


def _merge_rows(rows: Sequence[SummaryRow]) -> SummaryRow:
    first = rows[0]
    stats = None
    parts = [(row.stats, row.params) for row in rows if row.stats is not None]
    if len(parts) == len(rows):
        stats = combine_stats(parts)
    return dataclasses.replace(
        first,
        params=sum(row.params for row in rows),
        nbytes=sum(row.nbytes for row in rows),
        arrays=sum(row.arrays for row in rows),
        stats=stats,
        flag_counts=_count_flags(row.flag_counts for row in rows),
    )


def _index_ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 5]`` -> ``"0..3,5"``."""
    ranges: list[list[int]] = []
    for index in sorted(indices):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ",".join(
        str(low) if low == high else f"{low},{high}" if high == low + 1 else f"{low}..{high}"
        for low, high in ranges
    )


def limit_depth(rows: Sequence[SummaryRow], max_depth: int | None) -> list[SummaryRow]:
    """Keep rows above ``max_depth`` (``1``: the collections only); mark the cut modules."""
    if max_depth is None:
        return list(rows)
    return [
        dataclasses.replace(row, truncated=not row.is_leaf and row.depth == max_depth - 1)
        for row in rows
        if row.depth < max_depth
    ]


def mark_last_siblings(rows: Sequence[SummaryRow]) -> list[SummaryRow]:
    """Fill in ``last_along_path`` from the depths alone."""
    last = [False] * len(rows)
    sibling_follows: dict[int, bool] = {}
    for index in reversed(range(len(rows))):
        depth = rows[index].depth
        last[index] = not sibling_follows.get(depth, False)
        sibling_follows = {d: seen for d, seen in sibling_follows.items() if d < depth}
        sibling_follows[depth] = True
    marked = []
    ancestors_last: list[bool] = []
    for row, is_last in zip(rows, last, strict=True):
        del ancestors_last[row.depth :]
        ancestors_last.append(is_last)
        marked.append(dataclasses.replace(row, last_along_path=tuple(ancestors_last)))
    return marked


def summary_rows(
    leaves: Sequence[LeafRecord], *, expand: bool = False, max_depth: int | None = None
) -> list[SummaryRow]:
    """Rows for the tree table: collection -> module path -> leaf, depth first.

    Args:
      leaves: the (possibly filtered) leaves.
      expand: show every repeated module instead of one collapsed row per group.
      max_depth: keep rows at depths ``0 .. max_depth - 1``; ``None`` keeps all.
    """
    rows = tree_rows(leaves)
    if not expand:
        rows = collapse_repeated(rows)
    return mark_last_siblings(limit_depth(rows, max_depth))
