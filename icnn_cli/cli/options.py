"""Option aliases shared by several commands (``Annotated`` types, as in the ``hf`` CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Write exactly one JSON document to stdout instead of text."),
]

ArchitectureOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config giving the OTT ICNN architecture, for checkpoints icnn did not write.",
    ),
]

NoCompileCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-compile-cache",
        help="Do not use JAX's persistent compilation cache nor the cached exported init "
        "(also: ICNN_NO_COMPILE_CACHE=1).",
    ),
]
