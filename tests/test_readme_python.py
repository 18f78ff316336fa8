"""Every ```python block of README.md runs as it stands.

The blocks run in order, each in a fresh interpreter (so each needs its own imports), all
in one temporary directory: a block may read the files an earlier block wrote (the Python
API section's first block writes ``ckpt/``), which README says where it matters.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5
    assert any("icnn_cli.init(" in block for block in BLOCKS)
    assert any("icnn_cli.inspect(" in block for block in BLOCKS)


@pytest.mark.slow
def test_every_python_block_runs(tmp_path):
    for number, block in enumerate(BLOCKS, start=1):
        result = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"README python block {number} failed:\n{block}\n{result.stderr[-3000:]}"
        )
