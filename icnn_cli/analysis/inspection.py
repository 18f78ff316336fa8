"""``icnn inspect``: what is in any Orbax checkpoint, from metadata unless stats are asked for."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint.consistency import read_consistently
from icnn_cli.checkpoint.layout import TREE_KINDS, Checkpoint, Location, locate, steps_text
from icnn_cli.checkpoint.metadata import item_bytes, read_json_item
from icnn_cli.checkpoint.provenance import (
    MAX_SHOWN_JSON,
    header_lines,
    orbax_lines,
    short_json,
    version_warnings,
)
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.spec import installed_versions
from icnn_cli.errors import IcnnError
from icnn_cli.records import (
    ItemRecord,
    LeafFilter,
    LeafRecord,
    LeafStats,
    Summary,
    filter_leaves,
    leaf_statistics,
)


def inspect_checkpoint(
    path: Path,
    with_stats: bool = False,
    globs: Sequence[str] = (),
    step: int | None = None,
    item: str | None = None,
) -> Summary:
    """Summarise the checkpoint at ``path``.

    Args:
      path: an Orbax checkpoint directory (one item, or a step with items), or a root
        of steps, whose step ``step`` (default: the latest) is summarised.
      with_stats: read the leaves (one at a time) for statistics and NaN/Inf counts. The
        recorded fingerprint is checked too, so damaged data raises :class:`IcnnError`
        (exit 1) instead of giving wrong statistics; with ``globs`` every leaf is still
        read for that check (only a foreign checkpoint, with nothing to check, reads
        just the kept leaves).
      globs: keep only leaves whose path (or a module path above them) matches one of
        these ``fnmatch`` globs.
      step: with a root of steps, the step to summarise.
      item: summarise only this item of a step with items.
    """
    return read_consistently(
        [path], lambda: _inspect_checkpoint(path, with_stats, globs, step, item)
    )


def _inspect_checkpoint(
    path: Path,
    with_stats: bool = False,
    globs: Sequence[str] = (),
    step: int | None = None,
    item: str | None = None,
) -> Summary:
    location = locate(path, step)
    checkpoint = location.checkpoint
    tree_item = item if _is_tree(checkpoint, item) else None
    reader = CheckpointReader.of(checkpoint, tree_item)
    leaves = reader.leaves if item is None or tree_item is not None else []
    leaf_filter = None
    if globs:
        leaves, leaf_filter = _filtered(leaves, tuple(globs))
    if with_stats and leaves:
        if leaf_filter is None or reader.recorded_fingerprint is not None:
            # The fingerprint covers the whole tree, so every leaf is read (and only
            # the kept ones summarised): statistics are never shown from damaged data.
            kept = {leaf.path for leaf in leaves}
            values = (pair for pair in reader.verified_arrays() if pair[0].path in kept)
        else:
            values = reader.arrays_of(leaves)
        stats = {leaf.path: _statistics(leaf, value) for leaf, value in values}
        leaves = [dataclasses.replace(leaf, stats=stats[leaf.path]) for leaf in leaves]
    spec = reader.spec
    installed = installed_versions() if spec else {}
    items = _other_items(checkpoint, item)
    return Summary(
        path=str(checkpoint.path),
        leaves=leaves,
        header=_step_header(location)
        + orbax_lines(checkpoint)
        + _metrics_lines(checkpoint, items)
        + header_lines(
            spec, reader.written_at, installed, _fingerprint_note(with_stats, leaf_filter)
        ),
        spec=spec.model_dump(mode="json") if spec else None,
        leaf_filter=leaf_filter,
        written_at=reader.written_at,
        warnings=[
            *checkpoint.warnings,
            *(version_warnings(spec.versions, installed) if spec else []),
        ],
        manager_step=location.as_json(),
        items=items,
    )


def _is_tree(checkpoint: Checkpoint, item: str | None) -> bool:
    return item is None or checkpoint.item(item).kind in TREE_KINDS


def _statistics(leaf: LeafRecord, value: Any) -> LeafStats | None:
    # A typed key's stored data is random bits, and a string has no statistics.
    if leaf.key_impl or isinstance(value, str | bytes):
        return None
    return leaf_statistics(value)


def _other_items(checkpoint: Checkpoint, chosen: str | None) -> list[ItemRecord]:
    """The items that are not PyTrees (only the chosen one, with ``--item``)."""
    records = []
    for item in checkpoint.items:
        if item.kind in TREE_KINDS or (chosen is not None and item.name != chosen):
            continue
        nbytes = item_bytes(item)
        if item.kind != "json":
            records.append(ItemRecord(item.label, item.kind, nbytes))
            continue
        document = read_json_item(item)
        shown = len(json.dumps(document)) <= MAX_SHOWN_JSON or chosen is not None
        keys = None if shown or not isinstance(document, dict) else tuple(map(str, document))
        records.append(ItemRecord(item.label, "json", nbytes, document, keys))
    return records


def _metrics_lines(checkpoint: Checkpoint, items: Sequence[ItemRecord]) -> list[tuple[str, str]]:
    """A v1 training step's metrics (its ``metrics`` item), shown with the step's facts."""
    handlers = {item.label: item.handler or "" for item in checkpoint.items}
    return [
        ("metrics", short_json(record.content))
        for record in items
        if record.kind == "json" and record.keys is None and "Metrics" in handlers[record.name]
    ]


def _step_header(location: Location) -> list[tuple[str, str]]:
    if location.root is None:
        return []
    steps = location.root.steps
    latest = " (latest)" if location.step == steps[-1][0] else ""
    return [
        ("manager root", str(location.root.path)),
        ("step", f"{location.step}{latest} of steps {steps_text(steps)}"),
    ]


def _filtered(
    leaves: Sequence[LeafRecord], globs: tuple[str, ...]
) -> tuple[list[LeafRecord], LeafFilter]:
    kept = filter_leaves(leaves, globs)
    if not kept:
        examples = ", ".join(leaf.path_string for leaf in leaves[:3])
        raise IcnnError(
            f"--filter {' '.join(globs)}: matches none of the {len(leaves)} leaf paths "
            f"(they look like {examples})"
        )
    return kept, LeafFilter(globs=globs, kept=len(kept), of=len(leaves))


def _fingerprint_note(with_stats: bool, leaf_filter: LeafFilter | None) -> str:
    if not with_stats:
        return ""
    if leaf_filter is not None:
        return "checked: every leaf read, the filtered ones shown"
    return "checked"
