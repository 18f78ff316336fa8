"""``icnn inspect``: what is in any Orbax checkpoint, from metadata unless stats are asked for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from icnn_cli import checkpoint
from icnn_cli.pipeline import header_lines
from icnn_cli.spec import CheckpointSpec, parse_spec
from icnn_cli.summary import Summary


def inspect_checkpoint(path: Path, with_stats: bool = False) -> Summary:
    """Summarise the checkpoint at ``path``; ``with_stats`` reads the arrays leaf by leaf."""
    with checkpoint.quiet_absl():
        step = checkpoint.read_step_metadata(path)
        spec = parse_spec(step.custom_metadata, str(path))
        leaves = checkpoint.leaf_records(step)
        if with_stats:
            leaves = [
                dataclasses.replace(leaf, stats=checkpoint.leaf_statistics(array))
                for leaf, array in checkpoint.iter_leaf_arrays(path, step, leaves)
            ]
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
