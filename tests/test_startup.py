"""`icnn --help` and every subcommand's help import none of jax, flax, orbax, ott."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from icnn_cli.cli import app

HEAVY = ("jax", "jaxlib", "flax", "orbax", "ott", "tensorstore", "numpy")
COMMANDS = sorted(command.name or command.callback.__name__ for command in app.registered_commands)
GROUP_COMMANDS = [
    [group.name or group.typer_instance.info.name, command.name or command.callback.__name__]
    for group in app.registered_groups
    for command in group.typer_instance.registered_commands
]

PROBE = """
import json, sys
from icnn_cli.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"]]
    + [[c, "--help"] for c in COMMANDS]
    + [[group[0], "--help"] for group in GROUP_COMMANDS]
    + [[*group, "--help"] for group in GROUP_COMMANDS],
)
def test_help_imports_no_heavy_module(argv):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )

    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "Usage" in result.stdout or result.stdout.startswith("icnn ")


@pytest.mark.parametrize("argv", [["config", "new"], ["config", "new", "--all"]])
def test_config_new_imports_no_heavy_module(argv):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )

    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "model:" in result.stdout


def test_core_commands_are_registered():
    assert {"init", "inspect", "schema"} <= set(COMMANDS)
