"""``icnn init``: YAML spec -> jitted ICNN.init -> Orbax checkpoint + tree summary."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.options import JsonOpt
from icnn_cli.cli.output import Output


class Platform(StrEnum):
    cpu = "cpu"
    gpu = "gpu"
    tpu = "tpu"


def init(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="YAML config: model fields of OTT's ICNN, init options."
        ),
    ],
    seed: Annotated[
        int | None,
        typer.Option(help="Master seed, 0..2**32-1; overrides init.seed from the config."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory to create; overrides 'output' (default ckpt)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing checkpoint at --out, atomically."),
    ] = False,
    platform: Annotated[
        Platform | None,
        typer.Option(help="JAX backend to run the init on (default: JAX's default backend)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show the tree from jax.eval_shape; compute and write nothing."
        ),
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Initialise an ICNN from a YAML config and write it as an Orbax checkpoint."""
    output = Output(json_output)
    with reported_errors():
        from icnn_cli.config import load_config, validate_seed
        from icnn_cli.errors import IcnnError

        loaded = load_config(config)
        if seed is not None:
            try:
                loaded = loaded.with_seed(validate_seed(seed))
            except ValueError as error:
                raise IcnnError(f"--seed: {error}") from None
        request_output = out if out is not None else Path(loaded.output)

        from icnn_cli.pipeline import InitRequest, run_init
        from icnn_cli.summary import render_table

        request = InitRequest(
            config=loaded,
            config_dir=config.parent,
            output=request_output,
            force=force,
            platform=platform.value if platform else None,
            dry_run=dry_run,
        )
        with output.status("Initialising ICNN (jit compile + init + save)…"):
            result = run_init(request)
        output.result(result.summary.as_json(), lambda: render_table(result.summary))
