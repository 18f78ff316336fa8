"""``icnn diff``: leaf-by-leaf structure and value differences of two checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import JsonOpt
from icnn_cli.cli.output import Output

DIFFERENT = 1


def diff(
    a: Annotated[
        str, typer.Argument(help="First checkpoint directory (or gs:// URL).", show_default=False)
    ],
    b: Annotated[
        str, typer.Argument(help="Second checkpoint directory (or gs:// URL).", show_default=False)
    ],
    atol: Annotated[
        float,
        typer.Option(help="Values within this absolute difference count as the same."),
    ] = 0.0,
    json_output: JsonOpt = False,
) -> None:
    """Compare two Orbax checkpoints leaf by leaf; exit 0 when identical, 1 when not."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.analysis.diff import diff_checkpoints
        from icnn_cli.render.reports import render_diff

        report = diff_checkpoints(storage_path(a), storage_path(b), atol)
        output.result(report.as_json(), lambda: render_diff(report))
    if not report.identical:
        raise typer.Exit(DIFFERENT)
