"""``icnn inspect``: what is in any Orbax checkpoint, from metadata unless stats are asked for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from icnn_cli import checkpoint
from icnn_cli.loading import CheckpointReader
from icnn_cli.pipeline import header_lines
from icnn_cli.spec import CheckpointSpec
from icnn_cli.summary import Summary


def inspect_checkpoint(path: Path, with_stats: bool = False) -> Summary:
    """Summarise the checkpoint at ``path``; ``with_stats`` reads the arrays leaf by leaf.

    With ``with_stats`` the recorded fingerprint is checked too, so damaged data
    raises :class:`IcnnError` (exit 1) instead of giving wrong statistics.
    """
    reader = CheckpointReader.open(path)
    leaves = reader.leaves
    if with_stats:
        stats = {
            leaf.path: checkpoint.leaf_statistics(array) for leaf, array in reader.verified_arrays()
        }
        leaves = [dataclasses.replace(leaf, stats=stats[leaf.path]) for leaf in leaves]
    spec = reader.spec
    return Summary(
        path=str(path),
        leaves=leaves,
        header=_header(spec),
        spec=spec.model_dump(mode="json") if spec else None,
    )


def _header(spec: CheckpointSpec | None) -> list[tuple[str, str]]:
    if spec is None:
        return [("written by", "not icnn (no embedded spec)")]
    return header_lines(spec)
