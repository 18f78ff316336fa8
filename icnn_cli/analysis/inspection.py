"""``icnn inspect``: what is in any Orbax checkpoint, from metadata unless stats are asked for."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from icnn_cli.checkpoint.layout import ManagerStep, resolve_manager_step, steps_text
from icnn_cli.checkpoint.provenance import header_lines, version_warnings
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.spec import installed_versions
from icnn_cli.errors import IcnnError
from icnn_cli.records import LeafFilter, LeafRecord, Summary, filter_leaves, leaf_statistics


def inspect_checkpoint(
    path: Path, with_stats: bool = False, globs: Sequence[str] = (), step: int | None = None
) -> Summary:
    """Summarise the checkpoint at ``path``.

    Args:
      path: an Orbax checkpoint directory, or a ``CheckpointManager`` root (numbered
        step directories), whose step ``step`` (default: the latest) is summarised.
      with_stats: read the arrays (leaf by leaf) for statistics and NaN/Inf counts. The
        recorded fingerprint is checked too, so damaged data raises :class:`IcnnError`
        (exit 1) instead of giving wrong statistics; with ``globs`` every leaf is still
        read for that check (only a foreign checkpoint, with nothing to check, reads
        just the kept leaves).
      globs: keep only leaves whose path (or a module path above them) matches one of
        these ``fnmatch`` globs.
      step: with a ``CheckpointManager`` root, the step to summarise.
    """
    manager_step = resolve_manager_step(path, step)
    if manager_step is not None:
        path = manager_step.item
    reader = CheckpointReader.open(path)
    leaves = reader.leaves
    leaf_filter = None
    if globs:
        leaves, leaf_filter = _filtered(leaves, tuple(globs))
    if with_stats:
        if leaf_filter is None or reader.recorded_fingerprint is not None:
            # The fingerprint covers the whole tree, so every leaf is read (and only
            # the kept ones summarised): statistics are never shown from damaged data.
            kept = {leaf.path for leaf in leaves}
            arrays = (item for item in reader.verified_arrays() if item[0].path in kept)
        else:
            arrays = reader.arrays_of(leaves)
        # A typed key's stored data is random bits: no statistics to show.
        stats = {
            leaf.path: None if leaf.key_impl else leaf_statistics(array) for leaf, array in arrays
        }
        leaves = [dataclasses.replace(leaf, stats=stats[leaf.path]) for leaf in leaves]
    spec = reader.spec
    installed = installed_versions() if spec else {}
    return Summary(
        path=str(path),
        leaves=leaves,
        header=_step_header(manager_step)
        + header_lines(
            spec, reader.written_at, installed, _fingerprint_note(with_stats, leaf_filter)
        ),
        spec=spec.model_dump(mode="json") if spec else None,
        leaf_filter=leaf_filter,
        written_at=reader.written_at,
        warnings=version_warnings(spec.versions, installed) if spec else [],
        manager_step=manager_step.as_json() if manager_step else None,
    )


def _step_header(manager_step: ManagerStep | None) -> list[tuple[str, str]]:
    if manager_step is None:
        return []
    steps = [(number, str(number)) for number in manager_step.steps]
    latest = " (latest)" if manager_step.step == manager_step.steps[-1] else ""
    return [
        ("manager root", str(manager_step.root)),
        ("step", f"{manager_step.step}{latest} of steps {steps_text(steps)}"),
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
