"""Every ``--help`` in one style, the one Typer and Click users know, readable at 80 columns."""

from __future__ import annotations

import re

import pytest
import typer

from icnn_cli.cli import app


def _command_paths(command, prefix=()):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*prefix, name))


COMMANDS = list(_command_paths(typer.main.get_command(app)))


@pytest.fixture
def help_of(icnn, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    return lambda path: icnn(*path, "--help").stdout


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(("icnn", *path)))
def test_help_is_in_one_style(path, help_of):
    text = help_of(path)

    assert "Usage: icnn" in text
    assert "<bool>" not in text  # a flag takes no value
    assert not re.search(r"<[a-z][a-z \[\]|,]*>", text), "Typer's <type> placeholders"
    assert not re.search(r"Usage: .*[{}]", text), "README's PATH, not {path}"
    assert "…" not in text, "a word cut at 80 columns"
    assert not re.search(r"\(default[: ]", text), "defaults go in [default: ...]"


def test_usage_lines_read_as_in_readme(help_of):
    assert "Usage: icnn verify [OPTIONS] PATHS..." in help_of(("verify",))
    assert "Usage: icnn diff [OPTIONS] A B" in help_of(("diff",))
    assert "Usage: icnn inspect [OPTIONS] PATH" in help_of(("inspect",))


def test_kinds_of_values_are_named_as_click_names_them(help_of):
    text = help_of(("inspect",))

    assert re.search(r"--depth +INTEGER RANGE \[x>=1\]", text)
    assert re.search(r"--format +\[text\|md\|json\]", text)
    assert re.search(r"--stats +Read the arrays", text)
    assert "[default: (the latest)]" in text
