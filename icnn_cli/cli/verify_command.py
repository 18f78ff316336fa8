"""``icnn verify``: integrity (fingerprint) and reproducibility (re-run) of checkpoints."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated

import typer

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.cli.errors import RUNTIME_ERROR, reported_errors
from icnn_cli.cli.options import JsonOpt, NoCompileCacheOpt
from icnn_cli.cli.output import Output

if TYPE_CHECKING:
    from icnn_cli.analysis.verify import VerifyReport


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
    fail_fast: Annotated[
        bool,
        typer.Option(
            "--fail-fast",
            help="Stop at the first checkpoint that is not verified; the rest are not checked.",
        ),
    ] = False,
    no_compile_cache: NoCompileCacheOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Check stored arrays against their fingerprint and re-run the init from the spec.

    Checkpoints that differ only in their seed share one prepared init. Exit 0 when
    every checkpoint is intact and reproduces; 1 otherwise.
    """
    output = Output(json_output)
    several = len(paths) > 1
    with reported_errors():
        from icnn_cli.analysis.verify import verify_checkpoints
        from icnn_cli.compile_cache import configure_compile_cache
        from icnn_cli.render.reports import render_verify, verify_summary_line

        locations = [storage_path(path) for path in paths]
        compile_cache = configure_compile_cache(enabled=not no_compile_cache)
        progress = (
            output.progress(len(paths), "Verifying")
            if several
            else contextlib.nullcontext(lambda text: None)
        )
        with progress as step:
            outcome = verify_checkpoints(
                locations,
                atol,
                compile_cache=compile_cache,
                fail_fast=fail_fast,
                on_report=lambda report: step(verdict_line(report)),
            )
        output.result(outcome.as_json(), lambda: render_verify(outcome.reports))
    for report in outcome.reports:
        if not report.ok:
            Output.error(report.problem())
    if several:
        Output.note(verify_summary_line(outcome.summary))
    if not outcome.ok:
        raise typer.Exit(RUNTIME_ERROR)


def verdict_line(report: VerifyReport) -> str:
    return f"{report.path}: {'verified' if report.ok else 'not verified'}"
