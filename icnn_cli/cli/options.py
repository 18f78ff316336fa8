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
