"""``icnn inspect``: what is in any Orbax checkpoint, as a tree table, Markdown or JSON."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.cli.completion import complete_item_names
from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import JsonOpt
from icnn_cli.cli.output import Output


class OutputFormat(StrEnum):
    text = "text"
    md = "md"
    json = "json"


def inspect(
    path: Annotated[
        str,
        typer.Argument(
            help="Orbax checkpoint directory (one item, or a step with items), or a root of "
            "steps (a CheckpointManager's or a v1 training Checkpointer's directory); a "
            "local path or a gs:// URL.",
            show_default=False,
        ),
    ],
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
    step: Annotated[
        int | None,
        typer.Option(
            "--step",
            help="When PATH is a root of steps (Orbax CheckpointManager, v1 training "
            "Checkpointer): inspect this step.",
            show_default="the latest",
        ),
    ] = None,
    item: Annotated[
        str | None,
        typer.Option(
            "--item",
            metavar="NAME",
            help="When the checkpoint is a step with several items (e.g. 'state' and a "
            "JSON 'meta'): show only this one; leaf paths then lose the item prefix.",
            autocompletion=complete_item_names,
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            help="text (a tree table), md (Markdown, for CI job summaries) or json.",
        ),
    ] = OutputFormat.text,
    health: Annotated[
        bool,
        typer.Option(
            "--health",
            help="Run the ICNN on a probe batch: dead units, activation and potential stats, "
            "distance of grad f from its init map.",
        ),
    ] = False,
    probe: Annotated[
        int | None,
        typer.Option("--probe", help="Probe batch size for --health.", show_default="256"),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the tree of an Orbax checkpoint (any writer), and the icnn spec if it has one."""
    with reported_errors():
        from rich.console import Group
        from rich.text import Text

        from icnn_cli.analysis.inspection import inspect_checkpoint
        from icnn_cli.errors import IcnnError
        from icnn_cli.render.summary import render_markdown, render_table

        if json_output and output_format not in (OutputFormat.text, OutputFormat.json):
            raise IcnnError(f"--json: conflicts with --format {output_format.value}")
        if probe is not None and not health:
            raise IcnnError("--probe: only meaningful with --health")
        if probe is not None and probe < 1:
            raise IcnnError(f"--probe: must be at least 1, got {probe}")
        output = Output(
            json_mode=json_output or output_format == OutputFormat.json,
            markdown_mode=output_format == OutputFormat.md,
        )
        location = storage_path(path)
        summary = inspect_checkpoint(
            location, with_stats=stats, globs=filters or (), step=step, item=item
        )
        for warning in summary.warnings:
            output.warn(warning)
        if not health:
            output.result(
                lambda: summary.as_json(max_depth=depth),
                lambda: render_table(summary, expand=expand, max_depth=depth),
                lambda: render_markdown(summary, expand=expand, max_depth=depth),
            )
            return
        from icnn_cli.analysis.health import DEFAULT_PROBE, checkpoint_health
        from icnn_cli.render.reports import render_health, render_health_markdown

        report = checkpoint_health(location, step, probe or DEFAULT_PROBE)
        output.result(
            lambda: {**summary.as_json(max_depth=depth), "health": report.as_json()},
            lambda: Group(
                render_table(summary, expand=expand, max_depth=depth),
                Text(""),
                render_health(report),
            ),
            lambda: (
                render_markdown(summary, expand=expand, max_depth=depth)
                + "\n"
                + render_health_markdown(report)
            ),
        )
