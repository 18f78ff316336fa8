"""``icnn check``: certify that the potential is convex in x, or find where it is not."""

from __future__ import annotations

from typing import Annotated

import typer

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import ArchitectureOpt, JsonOpt, NoCompileCacheOpt
from icnn_cli.cli.output import Output

# mirrors icnn_cli.analysis.convexity.DEFAULT_SAMPLES; importing it would load JAX
DEFAULT_SAMPLES = 2048


def check(
    paths: Annotated[
        list[str],
        typer.Argument(help="Checkpoint directories (or gs:// URLs) to check.", show_default=False),
    ],
    config: ArchitectureOpt = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Random chord tests per input scale in the search.")
    ] = DEFAULT_SAMPLES,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the counterexample search.")] = 0,
    no_compile_cache: NoCompileCacheOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Certify that f is convex in x, else search for a counterexample; exit 0 only if certified.

    With several checkpoints, each is checked in turn and exit 0 means every one is certified.
    """
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.analysis.convexity import CERTIFIED, check_checkpoints, check_model
        from icnn_cli.analysis.loading import load_model
        from icnn_cli.compile_cache import configure_compile_cache
        from icnn_cli.config import validate_seed
        from icnn_cli.errors import IcnnError
        from icnn_cli.render.reports import check_summary_line, render_checks, render_convexity

        if samples < 1:
            raise IcnnError(f"--samples: must be at least 1, got {samples}")
        try:
            validate_seed(seed)
        except ValueError as error:
            raise IcnnError(f"--seed: {error}") from None
        # a second check of the same architecture loads the search's compiled programs
        configure_compile_cache(enabled=not no_compile_cache)
        if len(paths) == 1:
            loaded = load_model(storage_path(paths[0]), config)
            with output.status("Checking convexity (certificate, then counterexample search)…"):
                report = check_model(loaded, samples=samples, seed=seed)
            output.result(report.as_json(), lambda: render_convexity(report))
            certified = report.verdict == CERTIFIED
        else:
            with output.progress(len(paths), "Checking") as step:
                outcome = check_checkpoints(
                    [storage_path(path) for path in paths],
                    config,
                    samples=samples,
                    seed=seed,
                    on_check=lambda check: step(f"{check.path}: {check.verdict}"),
                )
            output.result(outcome.as_json(), lambda: render_checks(outcome))
            Output.note(check_summary_line(outcome))
            certified = outcome.ok
    if not certified:
        raise typer.Exit(1)
