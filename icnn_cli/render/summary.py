"""A checkpoint's summary as a rich table (terminal, plain text) or as Markdown.

The header lines above the tree are worded here, from the summary's typed facts:
times in UTC, fingerprints and digests shortened, JSON cut, settings as on/off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from icnn_cli.checkpoint.layout import steps_text
from icnn_cli.fingerprint import SHORT_DIGITS, short_fingerprint
from icnn_cli.records import (
    MAX_SHOWN_JSON,
    DryRun,
    ItemRecord,
    ManagerStep,
    OrbaxFacts,
    Provenance,
    Summary,
    SummaryRow,
    format_bytes,
    summary_rows,
)
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
from icnn_cli.resources import ResourceEstimate

HeaderLine = tuple[str, str]  # (label, text)


def short_json(value: Any, limit: int = MAX_SHOWN_JSON) -> str:
    """Compact JSON, cut at ``limit`` characters with the total said."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def utc_text(moment: str) -> str:
    """``2026-11-25T12:41:51Z`` -> ``2026-11-25 12:41:51 UTC``."""
    return moment.replace("T", " ").replace("Z", " UTC")


def versions_text(recorded: Mapping[str, str], installed: Mapping[str, str]) -> str:
    """``jax 0.10.2, ott-jax 0.5.0 (installed 0.6.0), ...``."""
    parts = []
    for package, version in recorded.items():
        now = installed.get(package)
        parts.append(
            f"{package} {version}" + (f" (installed {now})" if now and now != version else "")
        )
    return ", ".join(parts)


FINGERPRINT_NOTES = {
    "not checked": "",
    "checked": " (checked)",
    "checked, filtered": " (checked: every leaf read, the filtered ones shown)",
}


def step_lines(step: ManagerStep) -> list[HeaderLine]:
    steps = steps_text([(number, str(number)) for number in step.steps])
    return [
        ("manager root", step.root),
        ("step", f"{step.step}{' (latest)' if step.latest else ''} of steps {steps}"),
    ]


def orbax_lines(orbax: OrbaxFacts) -> list[HeaderLine]:
    lines = [("layout", orbax.layout)]
    if not orbax.single:
        lines.append(("items", ", ".join(f"{item.label}: {item.kind}" for item in orbax.items)))
    if orbax.started_at:
        lines.append(("started", utc_text(orbax.started_at)))
    if orbax.custom_metadata:
        lines.append(("custom metadata", short_json(orbax.custom_metadata)))
    if orbax.metrics is not None:
        lines.append(("metrics", short_json(orbax.metrics)))
    return lines


def provenance_lines(provenance: Provenance, written_at: str | None) -> list[HeaderLine]:
    streams = ", ".join(
        f"{stream.name}=derive" if stream.rule == "derive" else f"{stream.name}={stream.seed}"
        for stream in provenance.streams
    )
    lines = [
        ("seed", str(provenance.seed)),
        ("streams", streams),
        ("rng impl", provenance.rng_impl),
        ("threefry partitionable", "on" if provenance.threefry_partitionable else "off"),
        ("versions", versions_text(provenance.versions, provenance.installed_versions)),
        ("device", provenance.device),
        *([("written", utc_text(written_at))] if written_at else []),
        (
            "fingerprint",
            short_fingerprint(provenance.fingerprint)
            + FINGERPRINT_NOTES[provenance.fingerprint_check],
        ),
    ]
    if provenance.init_recipe is not None:
        lines.insert(2, ("init recipe", short_json(provenance.init_recipe)))
    for sample in [*provenance.gaussian_map_samples, *provenance.init_samples]:
        lines.append(
            (f"{sample.role} sample", f"sha256 {sample.sha256[:SHORT_DIGITS]}  {sample.path}")
        )
    return lines


def dry_run_lines(dry_run: DryRun, figures: ResourceEstimate | None) -> list[HeaderLine]:
    lines = [("seed", str(dry_run.seed)), ("device", dry_run.device)]
    if figures is None:
        return lines
    available = (
        "not reported by the backend"
        if figures.available_memory is None
        else f"{format_bytes(figures.available_memory)} available ({figures.memory_where})"
    )
    free = (
        f"free space of {figures.disk_where} not reported"
        if figures.free_disk is None
        else f"{format_bytes(figures.free_disk)} free on {figures.disk_where}"
    )
    return [
        *lines,
        ("peak memory", f"~{format_bytes(figures.peak_bytes)}; {available}"),
        ("checkpoint", f"~{format_bytes(figures.checkpoint_bytes)}; {free}"),
    ]


def header_lines(summary: Summary) -> list[HeaderLine]:
    """The ``label  text`` lines above the tree, each from a typed field of ``summary``."""
    if summary.dry_run is not None:
        return [
            ("path", f"{summary.path} (dry run: nothing written)"),
            *dry_run_lines(summary.dry_run, summary.resources),
        ]
    lines = [("path", summary.path)]
    if summary.manager_step is not None:
        lines += step_lines(summary.manager_step)
    if summary.orbax is not None:
        lines += orbax_lines(summary.orbax)
    if summary.provenance is not None:
        return lines + provenance_lines(summary.provenance, summary.written_at)
    if summary.orbax is not None:
        lines.append(("written by", "not icnn (no embedded spec)"))
    if summary.written_at:
        lines.append(("written", utc_text(summary.written_at)))
    return lines


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def tree_guide(row: SummaryRow) -> str:
    """The tree-drawing prefix of a row, e.g. ``│   ├── ``; none at the top level."""
    if row.depth == 0:
        return ""
    *ancestors, is_last = row.last_along_path[1:]
    prefix = "".join("    " if done else "│   " for done in ancestors)
    return prefix + ("└── " if is_last else "├── ")


def _tree_cell(row: SummaryRow) -> Cell:
    pieces = [Piece(tree_guide(row), "guide"), Piece(row.name, "leaf" if row.is_leaf else "module")]
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
            Column[SummaryRow](
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

    parts: list[Any] = [rich_facts(header_lines(summary)), Text("")]
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
    lines = markdown_facts(header_lines(summary), code=("path",))
    if summary.leaves or not summary.items:
        rows = summary_rows(summary.leaves, expand=expand, max_depth=max_depth)
        lines += ["", *markdown_table(tree_columns(summary), rows)]
        lines += ["", f"**{markdown_text(total_line(summary))}**"]
        lines += [f"\n{markdown_text(note)}" for note in flag_notes(summary)]
    if summary.items:
        lines += ["", *markdown_table(ITEM_COLUMNS, summary.items)]
    return "\n".join(lines) + "\n"
