"""``icnn inspect``: what is in any Orbax checkpoint, human or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import JsonOpt
from icnn_cli.cli.output import Output


def inspect(
    path: Annotated[Path, typer.Argument(help="Orbax checkpoint directory.", show_default=False)],
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Read the arrays (leaf by leaf) for mean, std, min, max and negative share.",
        ),
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show the tree of an Orbax checkpoint (any writer), and the icnn spec if it has one."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.inspection import inspect_checkpoint
        from icnn_cli.summary import render_table

        summary = inspect_checkpoint(path, with_stats=stats)
        output.result(summary.as_json(), lambda: render_table(summary))
