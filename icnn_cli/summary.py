"""A tree of leaf records -> rows -> rich table, plain text or JSON.

As in Flax's ``Module.tabulate``, the rows are plain data built first
(:func:`summary_rows`) and rendered second (:func:`render_table`), so tests
check the rows field by field and the renderers stay dumb. Shaping the tree for
a screen (collapsing repeated layers, cutting it at a depth) is a chain of
row-to-row transformations; filtering happens earlier, on the leaves.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

NAN_FLAG = "nan"
INF_FLAG = "inf"
ZEROS_FLAG = "all_zero"


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
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "min": _finite_or_none(self.min),
            "max": _finite_or_none(self.max),
            "negative_fraction": self.negative_fraction,
            "nan": self.nan,
            "inf": self.inf,
            "flags": list(self.flags),
        }


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN; a leaf with no finite entry has no mean.
    return value if math.isfinite(value) else None


def combine_stats(parts: Sequence[tuple[LeafStats, int]]) -> LeafStats:
    """Statistics of several arrays taken together, from each one's stats and size."""
    finite = [(stats, size - stats.nan - stats.inf) for stats, size in parts]
    count = sum(n for _, n in finite)
    total = sum(size for _, size in parts)
    if count:
        mean = sum(stats.mean * n for stats, n in finite if n) / count
        second = sum((stats.std**2 + stats.mean**2) * n for stats, n in finite if n) / count
        std = math.sqrt(max(second - mean**2, 0.0))
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
    """One array of a checkpoint: where it sits in the tree, its shape, dtype and size."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    stats: LeafStats | None = None
    key_impl: str | None = None  # a typed PRNG key array: shape and dtype are the keys'
    sharding: str | None = None  # layout on a device mesh, e.g. "P(None, 'x')"

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
        if self.key_impl is not None:
            record["key_impl"] = self.key_impl
        if self.sharding is not None:
            record["sharding"] = self.sharding
        if self.stats is not None:
            record.update(self.stats.as_json())
        return record


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


# --- the summary ---------------------------------------------------------------------------


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

    @property
    def total_params(self) -> int:
        return sum(leaf.size for leaf in self.leaves)

    @property
    def total_bytes(self) -> int:
        return sum(leaf.nbytes for leaf in self.leaves)

    def as_json(self, max_depth: int | None = None) -> dict[str, Any]:
        """Every leaf, never collapsed; ``modules`` gives subtotals down to ``max_depth``."""
        return {
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
                for row in limit_depth(tree_rows(self.leaves), max_depth)
                if not row.is_leaf
            ],
            "spec": self.spec,
        } | ({"checkpoint_manager": self.manager_step} if self.manager_step else {})


# --- rows ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of the tree table: a module (with subtotals) or a leaf.

    A collapsed row stands for ``count`` siblings with the same structure; its
    numbers are their sums (its shape and dtype are each one's).
    """

    guide: str  # tree-drawing prefix, e.g. "│   ├── "
    name: str
    depth: int
    params: int
    nbytes: int
    shape: tuple[int, ...] | None = None  # None for a module row
    dtype: str | None = None
    stats: LeafStats | None = None  # a module's: pooled over its leaves
    path: tuple[str, ...] = ()
    arrays: int = 1
    count: int = 1
    flags: tuple[str, ...] = ()  # of the leaf, or of every leaf below a module
    truncated: bool = False  # a module whose children --depth hides
    sharding: str | None = None

    @property
    def is_leaf(self) -> bool:
        return self.shape is not None


_INDEXED_NAME = re.compile(r"^(.*?)(\d+)$")


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
            rows.append(SummaryRow("", name, len(path), 0, 0))
            leaves_below = visit(child, (*path, name))
            rows[index] = _module_row(name, (*path, name), leaves_below)
            below.extend(leaves_below)
        return below

    visit(tree, ())
    return rows


def _leaf_row(leaf: LeafRecord, depth: int) -> SummaryRow:
    return SummaryRow(
        guide="",
        name=leaf.path[-1],
        depth=depth,
        params=leaf.size,
        nbytes=leaf.nbytes,
        shape=leaf.shape,
        dtype=leaf.dtype,
        stats=leaf.stats,
        path=leaf.path,
        flags=leaf.stats.flags if leaf.stats else (),
        sharding=leaf.sharding,
    )


def _module_row(name: str, path: tuple[str, ...], leaves: Sequence[LeafRecord]) -> SummaryRow:
    return SummaryRow(
        guide="",
        name=name,
        depth=len(path) - 1,
        params=sum(leaf.size for leaf in leaves),
        nbytes=sum(leaf.nbytes for leaf in leaves),
        path=path,
        arrays=len(leaves),
        stats=_pooled_stats(leaves),
        flags=_union(leaf.stats.flags for leaf in leaves if leaf.stats),
    )


def _pooled_stats(leaves: Sequence[LeafRecord]) -> LeafStats | None:
    # Leaves without stats (typed keys) are left out of the pool.
    parts = [(leaf.stats, leaf.size) for leaf in leaves if leaf.stats is not None]
    return combine_stats(parts) if parts else None


def _union(flag_sets: Iterable[Sequence[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for flags in flag_sets:
        seen.update(dict.fromkeys(flags))
    return tuple(seen)


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
    (say ``w_zs_7``, the output layer) keeps its own row.
    """
    groups: dict[Any, list[list[SummaryRow]]] = {}
    for block in _blocks(rows):
        match = _INDEXED_NAME.match(block[0].name)
        key = (match.group(1), _shape_signature(block)) if match else id(block)
        groups.setdefault(key, []).append(block)
    collapsed: list[SummaryRow] = []
    for key, members in groups.items():
        block = members[0] if len(members) == 1 else _merge_blocks(key[0], members)
        collapsed.append(block[0])
        collapsed.extend(collapse_repeated(block[1:]) if len(block) > 1 else [])
    return collapsed


def _merge_blocks(prefix: str, members: Sequence[Sequence[SummaryRow]]) -> list[SummaryRow]:
    indices = [int(_INDEXED_NAME.match(block[0].name).group(2)) for block in members]
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
    if all(row.stats is not None for row in rows):
        stats = combine_stats([(row.stats, row.params) for row in rows])
    return dataclasses.replace(
        first,
        params=sum(row.params for row in rows),
        nbytes=sum(row.nbytes for row in rows),
        arrays=sum(row.arrays for row in rows),
        stats=stats,
        flags=_union(row.flags for row in rows),
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


def with_guides(rows: Sequence[SummaryRow]) -> list[SummaryRow]:
    """Fill in the tree-drawing prefixes (``├──``, ``│``) from the depths alone."""
    last = [False] * len(rows)
    sibling_follows: dict[int, bool] = {}
    for index in reversed(range(len(rows))):
        depth = rows[index].depth
        last[index] = not sibling_follows.get(depth, False)
        sibling_follows = {d: seen for d, seen in sibling_follows.items() if d < depth}
        sibling_follows[depth] = True
    guided = []
    ancestors_last: list[bool] = []
    for row, is_last in zip(rows, last, strict=True):
        del ancestors_last[row.depth :]
        if row.depth:
            prefix = "".join("    " if done else "│   " for done in ancestors_last[1:])
            guide = prefix + ("└── " if is_last else "├── ")
        else:
            guide = ""
        ancestors_last.append(is_last)
        guided.append(dataclasses.replace(row, guide=guide))
    return guided


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
    return with_guides(limit_depth(rows, max_depth))


# --- rendering ---------------------------------------------------------------------------------


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


def _name_cell(row: SummaryRow) -> Any:
    from rich.text import Text

    # Text.append keeps each piece's own style; "+" would give them all the first one's.
    name = Text()
    name.append(row.guide, style="dim")
    name.append(row.name, style="cyan" if row.is_leaf else "bold")
    if row.count > 1:
        name.append(f"  x{row.count}", style="magenta")
    if row.truncated:
        name.append(" …", style="dim")
    return name


def _stat_cells(stats: LeafStats | None) -> list[str]:
    if stats is None:
        return [""] * 5
    return [
        _format_number(stats.mean),
        _format_number(stats.std),
        _format_number(stats.min),
        _format_number(stats.max),
        f"{stats.negative_fraction:.0%}",
    ]


def _flag_cell(row: SummaryRow) -> Any:
    from rich.text import Text

    shown = row.is_leaf or row.truncated
    return Text(" ".join(row.flags) if shown else "", style="bold red")


def _total_line(summary: Summary) -> str:
    totals = (
        f"{summary.total_params:,} params, {format_bytes(summary.total_bytes)} "
        f"in {len(summary.leaves):,}"
    )
    chosen = summary.leaf_filter
    if chosen is None:
        return f"total: {totals} arrays"
    globs = " ".join(chosen.globs)
    return f"total of filtered leaves ({globs}): {totals} of {chosen.of:,} arrays"


def render_table(summary: Summary, *, expand: bool = False, max_depth: int | None = None) -> Any:
    """The summary as a rich renderable: header lines, the tree table and a total line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with_stats = any(leaf.stats is not None for leaf in summary.leaves)
    with_sharding = any(leaf.sharding is not None for leaf in summary.leaves)
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
    if with_sharding:
        table.add_column("sharding", no_wrap=True)
    if with_stats:
        for name in ("mean", "std", "min", "max", "neg", "flags"):
            table.add_column(name, justify="left" if name == "flags" else "right")
    for row in summary_rows(summary.leaves, expand=expand, max_depth=max_depth):
        cells = [
            _name_cell(row),
            str(row.shape) if row.is_leaf else "",
            row.dtype or "",
            f"{row.params:,}",
            format_bytes(row.nbytes),
        ]
        if with_sharding:
            cells.append(row.sharding or "")
        if with_stats:
            # A module row's pooled stats are shown where --depth hides its leaves.
            shown = row.is_leaf or row.truncated
            cells += [*_stat_cells(row.stats if shown else None), _flag_cell(row)]
        table.add_row(*cells, style=None if row.is_leaf else "bold")
    total = Text(_total_line(summary), style="bold")
    return Group(header, Text(""), table, Text(""), total)


# --- Markdown (CI job summaries) ----------------------------------------------------------------


def render_markdown(summary: Summary, *, expand: bool = False, max_depth: int | None = None) -> str:
    """The summary as GitHub-flavoured Markdown: a facts table, the tree table, a total line.

    The tree keeps its guides, with no-break spaces so Markdown does not collapse them.
    """
    rows = summary_rows(summary.leaves, expand=expand, max_depth=max_depth)
    with_stats = any(leaf.stats is not None for leaf in summary.leaves)
    facts = [("path", f"`{summary.path}`"), *summary.header]
    lines = [f"| {_md_cell(facts[0][0])} | {_md_cell(facts[0][1])} |", "|---|---|"]
    lines += [f"| {_md_cell(label)} | {_md_cell(value)} |" for label, value in facts[1:]]
    header = ["tree", "shape", "dtype", "params", "bytes"]
    align = ["---", "---", "---", "--:", "--:"]
    if with_stats:
        header += ["mean", "std", "min", "max", "neg", "flags"]
        align += ["--:"] * 5 + ["---"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [
            _md_tree_cell(row),
            f"`{row.shape}`" if row.is_leaf else "",
            row.dtype or "",
            f"{row.params:,}",
            format_bytes(row.nbytes),
        ]
        if with_stats:
            shown = row.is_leaf or row.truncated
            cells += _stat_cells(row.stats if shown else None)
            cells.append(" ".join(row.flags) if shown else "")
        lines.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
    lines += ["", f"**{_md_cell(_total_line(summary))}**"]
    return "\n".join(lines) + "\n"


def _md_tree_cell(row: SummaryRow) -> str:
    name = row.name if row.is_leaf else f"**{row.name}**"
    if row.count > 1:
        name += f" ×{row.count}"
    if row.truncated:
        name += " …"
    return row.guide.replace(" ", "\u00a0") + name


def _md_cell(text: str) -> str:
    # A pipe would end the cell and a newline the row.
    return text.replace("|", "\\|").replace("\n", " ")
