"""A checkpoint's summary as a rich table (terminal, plain text) or as Markdown."""

from __future__ import annotations

from typing import Any

from icnn_cli.checkpoint.provenance import short_json
from icnn_cli.records import ItemRecord, Summary, SummaryRow, format_bytes, summary_rows
from icnn_cli.records.leaves import ZEROS_FLAG, LeafStats
from icnn_cli.render.table import (
    Cell,
    Column,
    Piece,
    markdown_facts,
    markdown_table,
    markdown_text,
    rich_facts,
    rich_table,
    text_cell,
)


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def _tree_cell(row: SummaryRow) -> Cell:
    pieces = [Piece(row.guide, "guide"), Piece(row.name, "leaf" if row.is_leaf else "module")]
    if row.count > 1:
        pieces.append(Piece(f"  x{row.count}", "count"))
    if row.truncated:
        pieces.append(Piece(" …", "more"))
    return tuple(pieces)


def _shown_stats(row: SummaryRow) -> LeafStats | None:
    # A module row's pooled stats are shown where --depth hides its leaves.
    return row.stats if row.is_leaf or row.truncated else None


def _stat_column(header: str, value: Any) -> Column[SummaryRow]:
    def cell(row: SummaryRow) -> Cell:
        stats = _shown_stats(row)
        return text_cell(value(stats)) if stats is not None else ()

    return Column(header, cell, justify="right")


def _value_cell(row: SummaryRow) -> Cell:
    if not row.is_leaf or row.value is None:
        return ()
    return text_cell(repr(row.value) if isinstance(row.value, str) else row.value)


def tree_columns(summary: Summary) -> list[Column[SummaryRow]]:
    """The columns the summary's leaves need: sharding, values and stats only when present."""
    columns: list[Column[SummaryRow]] = [
        Column("tree", _tree_cell, no_wrap=True),
        Column(
            "shape", lambda row: text_cell(row.shape if row.is_leaf else "", "code"), no_wrap=True
        ),
        Column("dtype", lambda row: text_cell(row.dtype or "")),
        Column("params", lambda row: text_cell(f"{row.params:,}"), justify="right"),
        Column("bytes", lambda row: text_cell(format_bytes(row.nbytes)), justify="right"),
    ]
    if any(leaf.sharding is not None for leaf in summary.leaves):
        columns.append(Column("sharding", lambda row: text_cell(row.sharding or ""), no_wrap=True))
    if any(leaf.value is not None for leaf in summary.leaves):
        columns.append(Column("value", _value_cell))
    if summary.with_stats:
        columns += [
            _stat_column("mean", lambda stats: _format_number(stats.mean)),
            _stat_column("std", lambda stats: _format_number(stats.std)),
            _stat_column("min", lambda stats: _format_number(stats.min)),
            _stat_column("max", lambda stats: _format_number(stats.max)),
            _stat_column("neg", lambda stats: f"{stats.negative_fraction:.0%}"),
            Column(
                "flags",
                lambda row: text_cell(
                    row.flag_text if row.is_leaf or row.truncated else "", "flag"
                ),
            ),
        ]
    return columns


def total_line(summary: Summary) -> str:
    arrays = sum(1 for leaf in summary.leaves if leaf.is_array)
    others = len(summary.leaves) - arrays
    counted = f"{arrays:,}" + (
        f" array{'s' * (arrays != 1)} and {others:,} other leaves" if others else ""
    )
    totals = f"{summary.total_params:,} params, {format_bytes(summary.total_bytes)} in {counted}"
    chosen = summary.leaf_filter
    if chosen is None:
        return f"total: {totals}" + ("" if others else " arrays")
    globs = " ".join(chosen.globs)
    return f"total of filtered leaves ({globs}): {totals} of {chosen.of:,}" + (
        " leaves" if others else " arrays"
    )


ZEROS_NOTE = (
    f"{ZEROS_FLAG}: only zeros, as expected at init for biases and for kernels the init zeroes"
)


def flag_notes(summary: Summary) -> list[str]:
    """What the flags shown mean, when one of them is expected rather than a fault."""
    zero = any(leaf.stats is not None and ZEROS_FLAG in leaf.stats.flags for leaf in summary.leaves)
    return [ZEROS_NOTE] if zero else []


def _item_content(item: ItemRecord) -> str:
    if item.keys is not None:
        return f"keys: {', '.join(item.keys)}"
    return short_json(item.content) if item.kind == "json" else ""


ITEM_COLUMNS: list[Column[ItemRecord]] = [
    Column("item", lambda item: text_cell(item.name, "module")),
    Column("kind", lambda item: text_cell(item.kind)),
    Column("bytes", lambda item: text_cell(format_bytes(item.nbytes)), justify="right"),
    Column("content", lambda item: text_cell(_item_content(item), "code")),
]


def render_table(summary: Summary, *, expand: bool = False, max_depth: int | None = None) -> Any:
    """The summary as a rich renderable: header lines, the tree table and a total line."""
    from rich.console import Group
    from rich.text import Text

    from icnn_cli.render.safe_text import visible

    parts: list[Any] = [rich_facts([("path", summary.path), *summary.header]), Text("")]
    if summary.leaves or not summary.items:
        rows = summary_rows(summary.leaves, expand=expand, max_depth=max_depth)
        parts += [
            rich_table(
                tree_columns(summary), rows, row_style=lambda row: None if row.is_leaf else "bold"
            ),
            Text(""),
            Text(visible(total_line(summary)), style="bold"),
            *(Text(note) for note in flag_notes(summary)),
        ]
    if summary.items:
        parts += [Text(""), rich_table(ITEM_COLUMNS, summary.items)]
    return Group(*parts)


def render_markdown(summary: Summary, *, expand: bool = False, max_depth: int | None = None) -> str:
    """The summary as GitHub-flavoured Markdown: a facts table, the tree table, a total line.

    The tree keeps its guides, with no-break spaces so Markdown does not collapse them.
    """
    lines = markdown_facts([("path", summary.path), *summary.header], code=("path",))
    if summary.leaves or not summary.items:
        rows = summary_rows(summary.leaves, expand=expand, max_depth=max_depth)
        lines += ["", *markdown_table(tree_columns(summary), rows)]
        lines += ["", f"**{markdown_text(total_line(summary))}**"]
        lines += [f"\n{markdown_text(note)}" for note in flag_notes(summary)]
    if summary.items:
        lines += ["", *markdown_table(ITEM_COLUMNS, summary.items)]
    return "\n".join(lines) + "\n"
