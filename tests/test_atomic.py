"""No checkpoint is ever lost or half-written: SIGKILL at random moments, racing writers.

Orbax's own ``force=True`` deletes the old checkpoint before writing the new one;
``icnn init --force`` writes beside it and swaps it in atomically. These tests
kill a real ``icnn init --force`` of a ~21M-parameter model at random moments and
check that the output path always holds the complete old or the complete new
checkpoint, verified by its fingerprint, and that the next run cleans up.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from icnn_cli.checkpoint import writing
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.temporaries import ASIDE_TAG, ORBAX_TMP_SUFFIX, STAGING_TAG
from icnn_cli.config import load_config
from icnn_cli.errors import IcnnError, RuntimeFailure
from icnn_cli.pipeline import initialize_seed, prepare_init
from tests.helpers import ICNN, tiny_model

# 5 kernels of 2048 x 2048 plus small layers: 21,059,598 parameters, 80 MiB.
LARGE_MODEL = {"dim_data": 2, "dim_hidden": [2048] * 6}
KILLS = int(os.environ.get("ICNN_KILLS", "8"))
TEMPORARY_TAGS = (STAGING_TAG, ASIDE_TAG, ORBAX_TMP_SUFFIX)


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if any(t in p.name for t in TEMPORARY_TAGS))


def start_init(config: Path, out: Path, seed: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1"}
    command = [str(ICNN), "init", "-c", str(config), "--out", str(out), "--seed", str(seed)]
    return subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def intact_seed(out: Path, expected: dict[int, str]) -> int:
    """The seed of the complete checkpoint at ``out``; fails unless every array verifies."""
    reader = CheckpointReader.open(out)
    for _ in reader.verified_arrays():
        pass
    assert reader.spec is not None
    assert reader.spec.fingerprint == expected[reader.spec.seed]
    return reader.spec.seed


def wait_for_staging(process: subprocess.Popen, out: Path) -> float | None:
    """Seconds until the process starts writing beside ``out`` (None if it ended first)."""
    start = time.monotonic()
    prefix = f".{out.name}{STAGING_TAG}"
    while process.poll() is None:
        if any(name.startswith(prefix) for name in os.listdir(out.parent)):
            return time.monotonic() - start
        time.sleep(0.005)
    return None


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_checkpoint(tmp_path):
    config = tmp_path / "large.yaml"
    config.write_text(yaml.safe_dump({"model": LARGE_MODEL}))
    out = tmp_path / "ckpt"
    # The same pipeline as `icnn init` gives each seed's fingerprint.
    prepared = prepare_init(load_config(config), tmp_path, None)
    fingerprints = {seed: initialize_seed(prepared, seed)[1].fingerprint for seed in (1, 2)}
    del prepared

    first = start_init(config, out, 1)
    staging_after = wait_for_staging(first, out)
    written_at = time.monotonic()
    assert first.wait() == 0, first.stderr.read()
    write_phase = time.monotonic() - written_at
    assert staging_after is not None and intact_seed(out, fingerprints) == 1

    chooser = random.Random(20261125)
    outcomes = []
    for kill in range(KILLS):
        before = intact_seed(out, fingerprints)
        process = start_init(config, out, 3 - before, "--force")
        # Most kills land while the new checkpoint is written, fsynced and swapped in;
        # every fourth at any moment of the whole run.
        if kill % 4 == 3:
            time.sleep(chooser.uniform(0, staging_after + write_phase))
        elif wait_for_staging(process, out) is not None:
            time.sleep(chooser.uniform(0, write_phase))
        finished_first = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = intact_seed(out, fingerprints)
        outcomes.append("finished" if finished_first else "old" if after == before else "new")

    assert len(outcomes) == KILLS
    finisher = start_init(config, out, 3 - intact_seed(out, fingerprints), "--force")
    assert finisher.wait() == 0, finisher.stderr.read()
    assert temporaries(tmp_path) == []
    counts = {outcome: outcomes.count(outcome) for outcome in ("old", "new", "finished")}
    print(f"{KILLS} SIGKILLs, output intact after each: {counts}")


@pytest.mark.slow
def test_two_writers_racing_for_a_fresh_out_leave_exactly_the_winner(write_config, tmp_path):
    config = write_config({"model": tiny_model(dim_hidden=[256, 256])})
    out = tmp_path / "ckpt"

    racers = [start_init(config, out, seed, "--json") for seed in (1, 2)]
    results = [(racer.wait(), *racer.communicate()) for racer in racers]

    winners = [result for result in results if result[0] == 0]
    losers = [result for result in results if result[0] != 0]
    assert len(winners) == 1 and len(losers) == 1, results
    code, stdout, stderr = losers[0]
    assert stdout == ""
    assert len(stderr.splitlines()) == 1, stderr
    # Both usually pass the early check and meet at the no-replace rename (exit 1); a
    # loser that starts late is refused before any work (exit 2).
    if code == 1:
        assert f"--out {out}: another process created it while this one was writing" in stderr
    else:
        assert code == 2 and f"--out {out}: already exists" in stderr
    won = json.loads(winners[0][1])
    reader = CheckpointReader.open(out)
    assert reader.spec.fingerprint == won["spec"]["fingerprint"]
    assert len(list(reader.verified_arrays())) == len(won["leaves"])
    assert temporaries(tmp_path) == []


# --- the fallback for filesystems without renameat2 flags ------------------------------------


@pytest.fixture
def without_renameat2_flags(monkeypatch):
    def unsupported(source, target, flags):
        raise OSError(errno.EINVAL, "Invalid argument", str(target))

    monkeypatch.setattr(writing, "_renameat2", unsupported)


def test_force_without_rename_exchange_swaps_by_renaming_aside(
    without_renameat2_flags, icnn, write_config, tmp_path
):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out, "--seed", 1).exit_code == 0

    result = icnn("init", "-c", config, "--out", out, "--seed", 2, "--force")

    assert result.exit_code == 0, result.stderr
    assert CheckpointReader.open(out).spec.seed == 2
    assert temporaries(tmp_path) == []


def test_fresh_out_without_renameat2_still_refuses_to_overwrite_a_racer(
    without_renameat2_flags, tmp_path
):
    out = tmp_path / "ckpt"
    writing.write_checkpoint_atomically(out, {"w": [1.0]}, {}, force=False)
    racer_dir = tmp_path / "other"
    shutil.copytree(out, racer_dir)

    with pytest.raises(IcnnError) as raised:
        # A racer committed first: plain rename(2) will not replace a non-empty directory.
        writing._move_in(racer_dir, out)

    assert isinstance(raised.value, RuntimeFailure)
    assert "another process created it while this one was writing" in raised.value.message


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_swap_killed_between_its_renames_is_put_back_by_the_next_run(
    icnn, write_config, tmp_path
):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out, "--seed", 1).exit_code == 0
    assert icnn("init", "-c", config, "--out", tmp_path / "new", "--seed", 2).exit_code == 0
    # The state SIGKILL leaves between the fallback's two renames: the old checkpoint
    # aside, the new one staged, nothing at --out.
    pid = dead_pid()
    aside = tmp_path / f".ckpt{ASIDE_TAG}{pid}"
    out.rename(aside)
    (tmp_path / "new").rename(tmp_path / f".ckpt{STAGING_TAG}{pid}")

    missing = icnn("inspect", out)
    again = icnn("init", "-c", config, "--out", out, "--seed", 3, "--force")

    assert missing.exit_code == 2
    assert f"left the previous checkpoint at {aside}" in missing.stderr
    assert again.exit_code == 0, again.stderr
    assert CheckpointReader.open(out).spec.seed == 3
    assert temporaries(tmp_path) == []


def test_without_force_the_put_back_checkpoint_is_kept(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out, "--seed", 1).exit_code == 0
    out.rename(tmp_path / f".ckpt{ASIDE_TAG}{dead_pid()}")

    result = icnn("init", "-c", config, "--out", out, "--seed", 2)

    assert result.exit_code == 2
    assert "already exists (pass --force to replace it)" in result.stderr
    assert CheckpointReader.open(out).spec.seed == 1
