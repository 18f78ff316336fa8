"""Every ```sh block of README.md runs as it stands: in order, in one fresh directory.

A new user follows README from top to bottom; so does this test. Each block runs in bash
(``set -o pipefail``) in the same temporary directory, which starts with nothing but
``configs/`` (README's examples name ``configs/default.yaml`` from a clone), with the
installed ``icnn`` on PATH, HOME inside the directory (shell completion and the compile
cache write there) and ``$GITHUB_STEP_SUMMARY`` pointing at a file.

What is not run, and why, is written in README itself:

- a block right after ``<!-- readme-test: skip, REASON -->`` (a GPU, 8 devices, a bucket,
  several processes, files of the user's own);
- lines that install icnn (``pip install``, ``pipx install``, ``uv tool install``): the
  installed ``icnn`` is the one under test.

Every command must exit 0, except ``icnn diff`` and ``icnn check``, which README documents
as exiting 1 when the checkpoints differ or convexity is not certified; and no command may
print ``icnn: error:`` (an example refused because an earlier one made its path).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

FENCE = re.compile(
    r"^(?:<!-- readme-test: skip, (?P<skip>[^>]*?) -->\n)?```(?:sh|bash)\n(?P<body>.*?)^```",
    re.M | re.S,
)
INSTALL_COMMANDS = ("pip install", "pipx install", "uv tool install")
MAY_EXIT_1 = ("icnn diff", "icnn check")
FAILURE = re.compile(r"^readme-test: exit (\d+) at line (\d+)$", re.M)

README = (REPO / "README.md").read_text()
BLOCKS = [(match["skip"], match["body"]) for match in FENCE.finditer(README)]


def _script(body: str) -> str:
    lines = [
        f": {line}" if line.startswith(INSTALL_COMMANDS) else line for line in body.split("\n")
    ]
    return "set -o pipefail\ntrap 'echo \"readme-test: exit $? at line $LINENO\" >&2' ERR\n" + (
        "\n".join(lines)
    )


def test_readme_shell_blocks_are_found_and_skips_say_why():
    run = [body for skip, body in BLOCKS if skip is None]
    skipped = [skip for skip, _ in BLOCKS if skip is not None]

    assert len(run) >= 15
    assert all(reason.strip() for reason in skipped)
    assert README.count("readme-test: skip") == len(skipped), "a marker not before a ```sh block"
    assert any("icnn init" in body for body in run) and any("icnn verify" in body for body in run)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jq") is None, reason="README's examples pipe into jq")
def test_every_shell_block_runs_in_order_in_a_fresh_directory(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "home").mkdir()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ICNN_") and key != "XDG_CACHE_HOME"
    }
    environment.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        HOME=str(tmp_path / "home"),
        NO_COLOR="1",
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
    )

    for number, (skip, body) in enumerate(BLOCKS, start=1):
        if skip is not None:
            continue
        result = subprocess.run(
            ["bash", "-c", _script(body)],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
        )
        script_lines = _script(body).split("\n")
        for code, line in FAILURE.findall(result.stderr):
            command = script_lines[int(line) - 1]
            assert code == "1" and command.startswith(MAY_EXIT_1), (
                f"README shell block {number}: `{command}` exited {code}:\n{result.stderr[-3000:]}"
            )
        assert "icnn: error:" not in result.stderr, (
            f"README shell block {number}:\n{body}\n" + (result.stderr[-3000:])
        )
        assert "command not found" not in result.stderr, result.stderr[-3000:]
