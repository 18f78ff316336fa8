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
            help="Read the arrays (leaf by leaf) for mean, std, min, max (of the finite "
            "entries), negative share and NaN/Inf counts; flag NaN, Inf and all-zero leaves.",
        ),
    ] = False,
    expand: Annotated[
        bool,
        typer.Option(
            "--expand",
            help="Show every module; by default repeated layers (w_zs_0, w_zs_1, ... with "
            "the same shapes) collapse into one row such as 'w_zs_{0..6}  x7'.",
        ),
    ] = False,
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            min=1,
            help="Stop the tree at this depth (1: just the collections, e.g. params); "
            "hidden parts are counted in the subtotals. With --json: the depth of 'modules'.",
            show_default=False,
        ),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            metavar="GLOB",
            help="Keep only leaves whose path (as in the JSON, e.g. 'params/w_xs_*') or "
            "module path matches GLOB; totals are then those of the kept leaves. Repeatable.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the tree of an Orbax checkpoint (any writer), and the icnn spec if it has one."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.inspection import inspect_checkpoint
        from icnn_cli.summary import render_table

        summary = inspect_checkpoint(path, with_stats=stats, globs=filters or ())
        for warning in summary.warnings:
            output.warn(warning)
        output.result(
            lambda: summary.as_json(max_depth=depth),
            lambda: render_table(summary, expand=expand, max_depth=depth),
        )
