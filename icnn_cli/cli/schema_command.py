"""``icnn schema``: the config's JSON Schema, for editors' YAML completion."""

from __future__ import annotations

import json
import sys

from icnn_cli.cli.errors import reported_errors


def schema() -> None:
    """Print the JSON Schema of the YAML config (generated from the pydantic models)."""
    with reported_errors():
        from icnn_cli.config import json_schema

        sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
