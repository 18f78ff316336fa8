"""Readers beside a writer that keeps replacing the checkpoint (`icnn init --force` in a loop).

A CI job regenerating a checkpoint while other jobs read it: every read must give the
old or the new checkpoint whole, never "damaged" for a mix of both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import icnn_cli
from tests.helpers import tiny_model

pytestmark = pytest.mark.slow  # the writer is a subprocess that imports JAX

WRITER = textwrap.dedent(
    """
    import sys, time, icnn_cli
    config, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    import pathlib
    swaps = 0
    while not pathlib.Path(stop).exists():
        icnn_cli.init(config, seed=1 + swaps % 2, out=out, force=True)
        swaps += 1
        print(swaps, flush=True)
        time.sleep(PAUSE)
    """
)
# Between two replacements. A reader slower than the writer's period cannot finish, by
# design (it gives up after 5 replaced reads in a row, README "Readers beside a writer"):
# with no pause, the init in a warm process (a few ms) made the period shorter than a read
# on a loaded machine. Twice a second is still far more often than any CI job rewrites.
WRITER_PAUSE_SECONDS = 0.5


@pytest.fixture
def looping_writer(write_config, tmp_path):
    config = write_config({"model": tiny_model(dim_hidden=[64, 64, 64])})
    out = tmp_path / "ckpt"
    icnn_cli.init(config, seed=1, out=out)
    stop = tmp_path / "stop"
    log = open(tmp_path / "writer.log", "w")  # noqa: SIM115 - closed below
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"PAUSE = {WRITER_PAUSE_SECONDS}\n{WRITER}",
            str(config),
            str(out),
            str(stop),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while (tmp_path / "writer.log").read_text().count("\n") < 2:
        assert writer.poll() is None and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.2)
    yield out, tmp_path / "writer.log"
    stop.touch()
    writer.wait(timeout=120)
    log.close()


def swaps(log) -> int:
    return log.read_text().count("\n")


def test_readers_see_a_whole_checkpoint_while_it_is_replaced(icnn, looping_writer):
    out, log = looping_writer
    first = swaps(log)
    outcomes = []
    loads = 0
    # Read until the writer has replaced the checkpoint a few times during the reads
    # (how many reads that takes depends on the machine's load), every reader at least
    # a few times; the deadline only guards against a writer that stopped.
    deadline = time.monotonic() + 600
    while swaps(log) - first < 4 or len(outcomes) < 24:
        assert time.monotonic() < deadline, "the writer did not replace the checkpoint"
        outcomes.append(("inspect --stats", icnn("inspect", out, "--stats", "--json")))
        outcomes.append(("diff", icnn("diff", out, out, "--json")))
        module, variables = icnn_cli.load(out)  # raises if it saw a mix
        points = np.array([[0.5, -1.0], [1.0, 2.0]], np.float32)
        assert module.apply(variables, points).shape == (2,)
        loads += 1
    for _ in range(2):
        outcomes.append(("verify", icnn("verify", out, "--json")))

    for name, result in outcomes:
        assert "damaged" not in result.stderr, (name, result.stderr)
        assert result.exit_code == 0, (name, result.stderr)
    diffs = [json.loads(result.stdout) for name, result in outcomes if name == "diff"]
    assert all(report["identical"] for report in diffs)
