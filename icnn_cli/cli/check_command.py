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
    path: Annotated[
        str, typer.Argument(help="Checkpoint directory (or gs:// URL).", show_default=False)
    ],
    config: ArchitectureOpt = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Random chord tests per input scale in the search.")
    ] = DEFAULT_SAMPLES,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the counterexample search.")] = 0,
    no_compile_cache: NoCompileCacheOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Certify that f is convex in x, else search for a counterexample; exit 0 only if certified."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.analysis.convexity import CERTIFIED, check_model
        from icnn_cli.analysis.loading import load_model
        from icnn_cli.compile_cache import configure_compile_cache
        from icnn_cli.config import validate_seed
        from icnn_cli.errors import IcnnError
        from icnn_cli.render.reports import render_convexity

        if samples < 1:
            raise IcnnError(f"--samples: must be at least 1, got {samples}")
        try:
            validate_seed(seed)
        except ValueError as error:
            raise IcnnError(f"--seed: {error}") from None
        # a second check of the same architecture loads the search's compiled programs
        configure_compile_cache(enabled=not no_compile_cache)
        loaded = load_model(storage_path(path), config)
        with output.status("Checking convexity (certificate, then counterexample search)…"):
            report = check_model(loaded, samples=samples, seed=seed)
        output.result(report.as_json(), lambda: render_convexity(report))
    if report.verdict != CERTIFIED:
        raise typer.Exit(1)
