"""``icnn verify``: integrity (fingerprint) and reproducibility (re-run) of checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import JsonOpt
from icnn_cli.cli.output import Output
from icnn_cli.errors import RUNTIME_ERROR


def verify(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Checkpoint directories (or gs:// URLs) to verify.", show_default=False
        ),
    ],
    atol: Annotated[
        float | None,
        typer.Option(
            "--atol",
            min=0.0,
            help="Accept re-run values within this absolute difference.",
            show_default="0, bit for bit",
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Check stored arrays against their fingerprint and re-run the init from the spec.

    Exit 0 when every checkpoint is intact and reproduces; 1 otherwise.
    """
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.analysis.verify import verify_checkpoints

        reports = verify_checkpoints([storage_path(path) for path in paths], atol)
        from icnn_cli.render.reports import render_verify

        data = {
            "ok": all(report.ok for report in reports),
            "checkpoints": [report.as_json() for report in reports],
        }
        output.result(data, lambda: render_verify(reports))
    for report in reports:
        if not report.ok:
            Output.error(report.problem())
    if not data["ok"]:
        raise typer.Exit(RUNTIME_ERROR)
