"""README is the user's manual: every command, flag and config key appears in it."""

from __future__ import annotations

import json
import re

import pytest

from icnn_cli.cli import app
from icnn_cli.config import (
    GaussianMapSamples,
    IcnnConfig,
    InitConfig,
    InitOverride,
    ModelConfig,
    ShardingConfig,
    ShardingRule,
    json_schema,
)
from tests.helpers import REPO

README = (REPO / "README.md").read_text()
COMMANDS = {command.callback.__name__: command.callback for command in app.registered_commands}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_an_example(name):
    assert re.search(rf"^icnn {name}\b", README, re.MULTILINE), f"no example of `icnn {name}`"


def test_every_option_is_documented(icnn):
    for name in COMMANDS:
        help_text = icnn(name, "--help").stdout
        for flag in set(re.findall(r"--[a-z][a-z-]+", help_text)) - {"--help"}:
            assert f"`{flag}" in README, f"README does not document {flag} of icnn {name}"


@pytest.mark.parametrize(
    "model",
    [
        IcnnConfig,
        ModelConfig,
        InitConfig,
        InitOverride,
        GaussianMapSamples,
        ShardingConfig,
        ShardingRule,
    ],
)
def test_every_config_key_is_documented(model):
    for key in model.model_fields:
        assert f"`{key}`" in README, f"README does not document config key {key}"


def test_schema_command_prints_the_pydantic_schema(icnn):
    result = icnn("schema")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == json_schema()
    assert "dim_hidden" in json.loads(result.stdout)["$defs"]["ModelConfig"]["properties"]


GROUP_COMMANDS = [
    (group.name or group.typer_instance.info.name, command.name or command.callback.__name__)
    for group in app.registered_groups
    for command in group.typer_instance.registered_commands
]


@pytest.mark.parametrize(("group", "name"), GROUP_COMMANDS)
def test_every_group_command_and_its_options_are_documented(icnn, group, name):
    assert re.search(rf"^icnn {group} {name}\b", README, re.MULTILINE), f"no `icnn {group} {name}`"
    help_text = icnn(group, name, "--help").stdout
    for flag in set(re.findall(r"--[a-z][a-z-]+", help_text)) - {"--help"}:
        assert f"`{flag}" in README, f"README does not document {flag} of icnn {group} {name}"
