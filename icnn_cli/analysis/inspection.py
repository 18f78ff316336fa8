"""``icnn inspect``: what is in any Orbax checkpoint, from metadata unless stats are asked for."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from icnn_cli.checkpoint.consistency import read_consistently
from icnn_cli.checkpoint.layout import TREE_KINDS, Checkpoint, Location, locate
from icnn_cli.checkpoint.metadata import item_bytes, read_json_item
from icnn_cli.checkpoint.provenance import orbax_facts, provenance_of, version_warnings
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.spec import installed_versions
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.errors import UsageError
from icnn_cli.records import (
    MAX_SHOWN_JSON,
    FingerprintCheck,
    ItemRecord,
    LeafFilter,
    LeafRecord,
    LeafStats,
    ManagerStep,
    Summary,
    filter_leaves,
    leaf_statistics,
)


def inspect_checkpoint(
    path: StoragePath,
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
    path: StoragePath,
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
        spec=spec.model_dump(mode="json") if spec else None,
        leaf_filter=leaf_filter,
        written_at=reader.written_at,
        warnings=[
            *checkpoint.warnings,
            *(version_warnings(spec.versions, installed) if spec else []),
        ],
        manager_step=_manager_step(location),
        items=items,
        orbax=orbax_facts(checkpoint, _metrics_item(checkpoint, items)),
        provenance=(
            provenance_of(spec, installed, _fingerprint_check(with_stats, leaf_filter))
            if spec
            else None
        ),
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


def _metrics_item(checkpoint: Checkpoint, items: Sequence[ItemRecord]) -> Any:
    """A v1 training step's metrics: the document of its ``metrics`` item, if any."""
    handlers = {item.label: item.handler or "" for item in checkpoint.items}
    for record in items:
        if record.kind == "json" and "Metrics" in handlers[record.name]:
            return record.content
    return None


def _manager_step(location: Location) -> ManagerStep | None:
    if location.root is None or location.step is None:
        return None
    steps = tuple(number for number, _ in location.root.steps)
    return ManagerStep(str(location.root.path), location.step, steps)


def _filtered(
    leaves: Sequence[LeafRecord], globs: tuple[str, ...]
) -> tuple[list[LeafRecord], LeafFilter]:
    kept = filter_leaves(leaves, globs)
    if not kept:
        examples = ", ".join(leaf.path_string for leaf in leaves[:3])
        raise UsageError(
            f"matches none of the {len(leaves)} leaf paths (they look like {examples})",
            "filter",
            " ".join(globs),
        )
    return kept, LeafFilter(globs=globs, kept=len(kept), of=len(leaves))


def _fingerprint_check(with_stats: bool, leaf_filter: LeafFilter | None) -> FingerprintCheck:
    if not with_stats:
        return "not checked"
    return "checked" if leaf_filter is None else "checked, filtered"
