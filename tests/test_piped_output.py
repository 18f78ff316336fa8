"""Piped output ends each line at its last character (``icnn ... | cat -A`` shows no runs of
spaces), at any COLUMNS rich accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import GOLDEN

TINY = GOLDEN / "icnn_tiny"
PER_LEAF = GOLDEN / "per_leaf"


def _args_of(command: str, tmp: Path) -> list:
    (tmp / "cfg.yaml").write_text("model: {dim_data: 2, dim_hidden: [4]}\n")
    return {
        "inspect": ["inspect", TINY],
        "inspect --stats": ["inspect", TINY, "--stats"],
        "inspect --format md": ["inspect", TINY, "--stats", "--format", "md"],
        "inspect --items": ["inspect", GOLDEN / "foreign" / "0.12.8" / "manager"],
        "diff": ["diff", TINY, PER_LEAF],
        "verify": ["verify", TINY],
        "check": ["check", TINY],
        "init": ["init", "-c", tmp / "cfg.yaml", "--out", tmp / "ckpt"],
        "init --dry-run": ["init", "-c", tmp / "cfg.yaml", "--out", tmp / "ckpt", "--dry-run"],
        "init --seeds (the sweep table)": [
            "init", "-c", tmp / "cfg.yaml", "--seeds", "0:2", "--out", tmp / "runs",
        ],
    }[command]  # fmt: skip


COMMANDS = [
    "inspect",
    "inspect --stats",
    "inspect --format md",
    "inspect --items",
    "diff",
    "verify",
    "check",
    "init",
    "init --dry-run",
    "init --seeds (the sweep table)",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_line_of_piped_output_ends_in_spaces(command, icnn, tmp_path):
    result = icnn(*_args_of(command, tmp_path))

    assert result.stdout.strip(), result.stderr
    padded = [line for line in result.stdout.splitlines() if line != line.rstrip()]
    assert padded == []
    assert result.stdout.endswith("\n")


@pytest.mark.parametrize("columns", ["abc", "", "0x50", "-3"])
def test_a_columns_rich_cannot_read_is_ignored(columns, icnn, monkeypatch):
    monkeypatch.setenv("COLUMNS", columns)

    result = icnn("inspect", TINY)

    assert result.exit_code == 0, result.stderr
    assert "tree" in result.stdout


def test_columns_still_sets_the_width(icnn, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")

    result = icnn("inspect", TINY, "--stats")

    assert max(map(len, result.stdout.splitlines())) <= 60
