"""``icnn check``: certify that the potential is convex in x, or find where it is not."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import ArchitectureOpt, JsonOpt
from icnn_cli.cli.output import Output

DEFAULT_SAMPLES = 2048  # mirrors icnn_cli.convexity.DEFAULT_SAMPLES; importing it would load JAX


def check(
    path: Annotated[Path, typer.Argument(help="Checkpoint directory.", show_default=False)],
    config: ArchitectureOpt = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Random chord tests per input scale in the search.")
    ] = DEFAULT_SAMPLES,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the counterexample search.")] = 0,
    json_output: JsonOpt = False,
) -> None:
    """Certify that f is convex in x, else search for a counterexample; exit 0 only if certified."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.config import validate_seed
        from icnn_cli.convexity import CERTIFIED, check_model
        from icnn_cli.errors import IcnnError
        from icnn_cli.loading import load_model

        if samples < 1:
            raise IcnnError(f"--samples: must be at least 1, got {samples}")
        try:
            validate_seed(seed)
        except ValueError as error:
            raise IcnnError(f"--seed: {error}") from None
        loaded = load_model(path, config)
        with output.status("Checking convexity (certificate, then counterexample search)…"):
            report = check_model(loaded, samples=samples, seed=seed)
        output.result(report.as_json(), lambda: render_report(report))
    if report.verdict != CERTIFIED:
        raise typer.Exit(1)


def render_report(report: Any) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    style = {"certified": "bold green", "violated": "bold red"}.get(report.verdict, "bold yellow")
    parts: list[Any] = [Text(report.verdict, style=style), Text(" ".join(report.reasons))]
    if report.offending_leaves:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("offending leaf", "used as", "negative", "min"):
            table.add_column(column, justify="right" if column in ("negative", "min") else "left")
        for leaf in report.offending_leaves:
            table.add_row(
                leaf.path, leaf.effective, f"{leaf.negative_fraction:.1%}", f"{leaf.min:.4g}"
            )
        parts += [Text(""), table]
    example = report.counterexample
    if example is not None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for label, value in (
            ("x", _vector(example.x)),
            ("y", _vector(example.y)),
            ("t", f"{example.t:.6g}"),
            ("gap", f"{example.gap:.6g}"),
        ):
            grid.add_row(label, value)
        parts += [Text(""), Text("counterexample", style="bold"), grid]
    return Group(*parts)


def _vector(values: list[float], shown: int = 8) -> str:
    text = ", ".join(f"{value:.6g}" for value in values[:shown])
    more = f", … ({len(values)} values)" if len(values) > shown else ""
    return f"[{text}{more}]"
