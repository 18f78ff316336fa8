"""`icnn inspect` for CI logs: `--format md`, and Orbax CheckpointManager roots with `--step`."""

from __future__ import annotations

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from icnn_cli.records import DryRun, LeafRecord, Summary, format_bytes, summary_rows
from icnn_cli.render.summary import render_markdown
from tests.helpers import plain_text


@pytest.fixture
def manager_root(tmp_path):
    """A CheckpointManager root with steps 0, 5 and 10; each step's array is filled with it."""
    root = tmp_path / "run"
    with ocp.CheckpointManager(root.absolute()) as manager:
        for step in (0, 5, 10):
            tree = {"w": np.full((2, 3), float(step), np.float32)}
            manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()
    return root


def test_markdown_has_one_table_row_per_summary_row(icnn, tiny_checkpoint):
    out = tiny_checkpoint

    result = icnn("inspect", out, "--format", "md")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"| path | `{out}` |", "|---|---|"]
    assert "| seed | 0 |" in lines
    tree_header = lines.index("| tree | shape | dtype | params | bytes |")
    assert lines[tree_header + 1] == "|---|---|---|--:|--:|"
    table = lines[tree_header + 2 : lines.index("", tree_header)]
    summary = json.loads(icnn("inspect", out, "--json").stdout)
    leaves = [
        LeafRecord(
            tuple(leaf["path"].split("/")), tuple(leaf["shape"]), leaf["dtype"], leaf["bytes"]
        )
        for leaf in summary["leaves"]
    ]
    assert len(table) == len(summary_rows(leaves))
    total, size = summary["total_params"], format_bytes(summary["total_bytes"])
    assert table[0] == f"| **params** |  |  | {total:,} | {size} |"
    assert "| │\u00a0\u00a0\u00a0└──\u00a0kernel | `(8, 8)` | float32 | 64 | 256 B |" in table
    assert lines[-1] == f"**total: {total:,} params, {size} in 18 arrays**"
    assert "\x1b[" not in result.stdout


def test_markdown_escapes_pipes_and_shows_stats_columns():
    leaf = LeafRecord(("params", "a|b"), (2,), "float32", 8)

    text = render_markdown(Summary(path="x", leaves=[leaf], dry_run=DryRun("x", 0, "1 | 2")))

    assert "| device | 1 \\| 2 |" in text
    assert "| └── a\\|b | `(2,)` | float32 | 2 | 8 B |" in text.replace("\u00a0", " ")


def test_json_is_an_alias_of_format_json_and_conflicts_with_md(icnn, manager_root):
    assert (
        icnn("inspect", manager_root, "--json").stdout
        == icnn("inspect", manager_root, "--format", "json").stdout
    )

    result = icnn("inspect", manager_root, "--json", "--format", "md")

    assert result.exit_code == 2
    assert result.stderr == "icnn: error: --json: conflicts with --format md\n"


def test_manager_root_shows_the_latest_step_and_lists_all(icnn, manager_root):
    result = icnn("inspect", manager_root, "--stats", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checkpoint_manager"] == {
        "root": str(manager_root),
        "steps": [0, 5, 10],
        "step": 10,
    }
    # the step directory is the checkpoint: its one item ("default") needs no prefix
    assert report["path"] == str(manager_root / "10")
    assert report["leaves"][0]["path"] == "w"
    assert report["leaves"][0]["mean"] == 10.0
    human = icnn("inspect", manager_root).stdout
    assert "step          10 (latest) of steps 0, 5, 10" in human


def test_step_picks_an_earlier_step(icnn, manager_root):
    report = json.loads(icnn("inspect", manager_root, "--step", "5", "--stats", "--json").stdout)

    assert report["checkpoint_manager"]["step"] == 5
    assert report["leaves"][0]["mean"] == 5.0


@pytest.mark.parametrize(
    ("target", "step", "message"),
    [
        ("run", "7", "--step 7: {root} has no step 7 (steps: 0, 5, 10)"),
        ("run/5/default", "5", "--step 5: {root}/5/default is not a CheckpointManager root"),
    ],
)
def test_bad_step_exits_2(icnn, manager_root, target, step, message):
    path = manager_root.parent / target

    result = icnn("inspect", path, "--step", step)

    assert result.exit_code == 2
    assert result.stderr.startswith("icnn: error: " + message.format(root=manager_root))


def test_other_commands_name_the_step_checkpoint_to_use(icnn, manager_root):
    result = icnn("diff", manager_root, manager_root)

    assert result.exit_code == 2
    assert "it holds step directories 0, 5, 10 of a CheckpointManager root" in result.stderr
    assert f"e.g. {manager_root / '10'};" in result.stderr


def test_markdown_has_the_same_columns_and_marks_as_the_text_table():
    leaves = [
        LeafRecord(("params", f"w_{index}", "kernel"), (2, 2), "float32", 16, sharding="P('x')")
        for index in range(2)
    ]
    summary = Summary(path="x", leaves=leaves)

    markdown = render_markdown(summary).replace("\u00a0", " ")
    text = plain_text(summary, width=100)

    assert "| tree | shape | dtype | params | bytes | sharding |" in markdown
    assert "└── **w_{0,1}**  x2 |" in markdown and "w_{0,1}  x2" in text
    assert "| P('x') |" in markdown and "P('x')" in text
    assert "×" not in markdown
