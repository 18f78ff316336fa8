"""``icnn plot``: contour of f with grad f arrows (2-D data) and a histogram per leaf."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import ArchitectureOpt, JsonOpt
from icnn_cli.cli.output import Output


def plot(
    path: Annotated[
        str, typer.Argument(help="Checkpoint directory (or gs:// URL).", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Image file to write; the suffix picks the format (.png, .svg, .pdf).",
        ),
    ],
    config: ArchitectureOpt = None,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="A second checkpoint (or gs:// URL) whose per-layer variance and input "
            "correlation are drawn beside this one's.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Draw the potential (2-D data: contour + grad f arrows), the signal per layer and a
    histogram per parameter leaf."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.analysis.loading import load_model
        from icnn_cli.analysis.plot import check_output_file, plot_checkpoint

        check_output_file(out)
        loaded = load_model(storage_path(path), config)
        other = load_model(storage_path(compare), config_parameter=None) if compare else None
        labels = (path, compare or "")
        with output.status("Drawing…"):
            result = plot_checkpoint(loaded, out, other, labels)
        output.result(
            result.as_json(),
            lambda: (
                f"wrote {result.path} ({result.width}x{result.height} px, "
                f"{len(result.panels)} panels)"
            ),
        )
