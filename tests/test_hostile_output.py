"""A hostile checkpoint through every output mode: nothing in it reaches a terminal raw.

Its keys and custom metadata hold what would clear the screen (``ESC [2J``), set the
window title (OSC 0), write the clipboard (OSC 52), split a row (a newline), reverse
the text after it (U+202E), or look like rich markup or a Markdown cell break. Every
human mode must show them as visible escapes, one row per leaf; ``--json`` must give
back the exact original strings.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ICNN

HOSTILE = [
    "\x1b[2J\x1b[H",
    "\x1b]0;pwned\x07",
    "\x1b]52;c;ZXZpbA==\x07",
    "a\nb",
    "\u202e",
    "[bold]markup[/bold]",
    "a|b",
]
# How each key reads once made visible (the form every human mode must show).
SHOWN = [
    "\\x1b[2J\\x1b[H",
    "\\x1b]0;pwned\\x07",
    "\\x1b]52;c;ZXZpbA==\\x07",
    "a\\nb",
    "\\u202e",
    "[bold]markup[/bold]",
    "a|b",
]
# What the terminal must never receive from a key: clear screen, OSC, BEL, raw bidi.
FORBIDDEN = ["\x1b[2J", "\x1b[H", "\x1b]", "\x07", "\u202e", "\x9b", "\x9d"]


def _tree(offset: float) -> dict[str, np.ndarray]:
    return {
        key: np.arange(3, dtype=np.float32) + index + offset for index, key in enumerate(HOSTILE)
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PyTree checkpoint with hostile keys, a Standard one with hostile custom metadata too,
    and a second with other values, to diff."""
    import orbax.checkpoint as ocp

    root = tmp_path_factory.mktemp("hostile")
    paths = {name: root / name for name in ("pytree", "standard", "other")}
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(paths["pytree"], _tree(0.0))
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = {"note": "\x1b]0;title\x07"} | {key: key for key in HOSTILE}
        checkpointer.save(paths["standard"], _tree(0.0), custom_metadata=metadata)
        checkpointer.save(paths["other"], _tree(0.5))
    return paths


def _assert_safe(text: str) -> None:
    for sequence in FORBIDDEN:
        assert sequence not in text, f"{sequence!r} reached the output"


def _tree_rows(text: str) -> list[str]:
    """Lines of the text tree table after its header, up to the blank line."""
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("tree"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("kind", ["pytree", "standard"])
@pytest.mark.parametrize("extra", [[], ["--stats"], ["--expand"]])
def test_plain_text_shows_escapes_one_row_per_leaf(icnn, hostile, kind, extra):
    result = icnn("inspect", hostile[kind], *extra)
    assert result.exit_code == 0, result.stderr
    _assert_safe(result.stdout + result.stderr)
    rows = _tree_rows(result.stdout)
    assert len(rows) == len(HOSTILE)  # "a\nb" is one row, not two
    for shown in SHOWN:
        assert sum(row.split()[0] == shown for row in rows) == 1, shown


def test_custom_metadata_in_the_header_is_escaped(icnn, hostile):
    result = icnn("inspect", hostile["standard"])
    assert result.exit_code == 0
    header = result.stdout.split("\ntree")[0]
    assert "custom metadata" in header
    assert "title" in header  # shown, not sent to the terminal
    _assert_safe(header)


@pytest.mark.parametrize("extra", [[], ["--stats"]])
def test_markdown_keeps_rows_and_cells_whole(icnn, hostile, extra):
    result = icnn("inspect", hostile["standard"], "--format", "md", *extra)
    assert result.exit_code == 0, result.stderr
    _assert_safe(result.stdout)
    lines = result.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("| tree |"))
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == len(HOSTILE)
    columns = lines[header].count(" | ") + 1
    for row in rows:
        # An escaped pipe does not end the cell: every row has the header's cell count.
        assert len(re.split(r"(?<!\\)\|", row)) - 2 == columns, row
    assert any(row.startswith("| a\\|b |") for row in rows)
    assert any(row.startswith("| a\\nb |") for row in rows)


@pytest.mark.parametrize("extra", [[], ["--stats"]])
def test_json_keeps_the_exact_strings(icnn, hostile, extra):
    result = icnn("inspect", hostile["standard"], "--json", *extra)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert sorted(leaf["path"] for leaf in document["leaves"]) == sorted(HOSTILE)
    # JSON's own escaping is the protection: no raw control character on stdout.
    _assert_safe(result.stdout)


def test_diff_report_is_escaped(icnn, hostile):
    result = icnn("diff", hostile["standard"], hostile["other"])
    assert result.exit_code == 1, result.stderr
    _assert_safe(result.stdout + result.stderr)
    for shown in SHOWN:
        assert shown in result.stdout
    differing = [line for line in result.stdout.splitlines() if " changed " in line]
    assert len(differing) == len(HOSTILE)  # one row per leaf, "a\nb" included
    assert "different: 7 of 7 leaves differ" in result.stdout


def test_diff_json_keeps_the_exact_strings(icnn, hostile):
    result = icnn("diff", hostile["standard"], hostile["other"], "--json")
    document = json.loads(result.stdout)
    paths = {leaf["path"] for leaf in document["leaves"]}
    assert paths == set(HOSTILE)


def test_verify_report_is_escaped(icnn, hostile, tmp_path):
    link = tmp_path / "ck\x1b]0;pwned\x07pt"
    link.symlink_to(hostile["standard"], target_is_directory=True)
    result = icnn("verify", link)
    _assert_safe(result.stdout + result.stderr)
    assert "ck\\x1b]0;pwned\\x07pt" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{tmp}/no\x1b]0;pwned\x07such"],
        ["inspect", "{standard}", "--filter", "\x1b[2J*zz"],
        ["inspect", "{tmp}"],
        ["diff", "{standard}", "{tmp}/gone\x1b[2J"],
    ],
    ids=["missing-path", "filter-glob", "not-a-checkpoint", "diff-missing"],
)
def test_error_messages_quote_hostile_text_escaped(icnn, hostile, tmp_path, args):
    hostile_dir = tmp_path / "d\x1b[2Jir"
    hostile_dir.mkdir()
    filled = [
        arg.format(tmp=hostile_dir if arg == "{tmp}" else tmp_path, standard=hostile["standard"])
        for arg in args
    ]
    result = icnn(*filled)
    assert result.exit_code == 2
    _assert_safe(result.stderr)
    assert result.stderr.startswith("icnn: error: ")
    assert result.stderr.count("\n") == 1
    assert "\\x1b" in result.stderr


def _read_pty(command: list[str], columns: int = 160) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a pseudo-terminal; its exit code and bytes."""
    import fcntl
    import struct
    import termios

    main, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    environment |= {"TERM": "xterm-256color", "COLUMNS": str(columns), "FORCE_COLOR": "1"}
    child = subprocess.Popen(
        command, stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL, env=environment
    )
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            child.kill()
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    return child.wait(), b"".join(chunks).decode("utf-8", errors="replace")


SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra", [[], ["--stats"], ["--format", "md"]], ids=["tree", "stats", "markdown"]
)
def test_rich_output_on_a_real_terminal_sends_no_escape_from_the_checkpoint(hostile, extra):
    code, output = _read_pty([str(ICNN), "inspect", str(hostile["standard"]), *extra])
    assert code == 0, output
    assert "\x1b[" in output or extra[:1] == ["--format"]  # rich styled it: a real terminal
    _assert_safe(output)
    # Only rich's own SGR styling remains once the shown escapes are accounted for.
    bare = SGR.sub("", output)
    assert "\x1b" not in bare
    for shown in SHOWN:
        assert shown.replace("|", "\\|" if extra[:1] == ["--format"] else "|") in bare
    # One line per leaf: the pty turns "\n" into "\r\n", so count those.
    lines = bare.replace("\r\n", "\n").splitlines()
    assert sum(line.lstrip("| ").startswith("a\\nb") for line in lines) == 1


@pytest.mark.slow
def test_diff_and_errors_on_a_real_terminal_are_escaped(hostile, tmp_path):
    code, output = _read_pty([str(ICNN), "diff", str(hostile["standard"]), str(hostile["other"])])
    assert code == 1, output
    _assert_safe(output)
    assert "\x1b" not in SGR.sub("", output)
    code, output = _read_pty([str(ICNN), "inspect", str(tmp_path / "x\x1b]52;c;ZXZpbA==\x07")])
    assert code == 2, output
    _assert_safe(output)
    assert "\\x1b]52;c;ZXZpbA==\\x07" in output
