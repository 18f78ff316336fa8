"""``icnn config``: make a config file from the schema (``icnn config new``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from icnn_cli.cli.errors import reported_errors
from icnn_cli.cli.help_style import IcnnCommand, IcnnGroup

config_app = typer.Typer(
    name="config",
    cls=IcnnGroup,
    help="Make config files from the schema.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _parse_dim_hidden(text: str) -> list[int]:
    from icnn_cli.errors import IcnnError

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise IcnnError(
            f"--dim-hidden: expected comma-separated layer sizes such as 64,64, got {text!r}"
        ) from None


@config_app.command(cls=IcnnCommand)
def new(
    dim_data: Annotated[
        int, typer.Option(help="Data dimensionality (model.dim_data).", show_default=True)
    ] = 2,
    dim_hidden: Annotated[
        str,
        typer.Option(
            help="Hidden layer sizes, comma-separated (model.dim_hidden).", show_default=True
        ),
    ] = "64,64",
    pos_weights: Annotated[
        bool | None,
        typer.Option(
            "--pos-weights/--no-pos-weights",
            help="Set model.pos_weights (rectified non-negative w_zs kernels).",
            show_default="left out: OTT's, off",
        ),
    ] = None,
    gaussian_map: Annotated[
        tuple[str, str] | None,
        typer.Option(
            metavar="SOURCE TARGET",
            help="Gaussian-map init from two .npy sample files, read relative to the config "
            "file; sets gaussian_map_samples in model.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Master seed, 0..2**32-1 (init.seed).", show_default=True)
    ] = 0,
    every_key: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Write every key of every section with its default, OTT's defaults included.",
        ),
    ] = False,
) -> None:
    """Print a complete, commented YAML config (for icnn init -c) to stdout."""
    with reported_errors():
        from icnn_cli.config_template import config_template, starter_config

        config = starter_config(
            dim_data=dim_data,
            dim_hidden=_parse_dim_hidden(dim_hidden),
            pos_weights=pos_weights,
            gaussian_map=gaussian_map,
            seed=seed,
        )
        sys.stdout.write(config_template(config, every_key=every_key))
