"""`icnn init --seeds`: one compile, one checkpoint per seed, each equal to `--seed N`."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import orbax.checkpoint as ocp
import pytest

from icnn_cli.errors import IcnnError
from icnn_cli.sweep import parse_seeds, seed_output_path
from tests.helpers import ICNN, assert_trees_identical, restore_plain, run_icnn, tiny_model


def embedded_spec(path: Path) -> dict:
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.metadata(path.absolute()).custom_metadata["icnn"]


@pytest.fixture
def config(write_config):
    return write_config({"model": tiny_model(), "init": {"rngs": {"params": "derive"}}})


def test_every_seed_equals_a_single_init_with_that_seed(icnn, config, tmp_path):
    swept = icnn("init", "-c", config, "--seeds", "0:2,7", "--out", tmp_path / "sweep", "--json")

    assert swept.exit_code == 0, swept.stderr
    report = json.loads(swept.stdout)
    assert [item["seed"] for item in report["checkpoints"]] == [0, 1, 7]
    for seed in (1, 7):
        single = tmp_path / f"single-{seed}"
        assert icnn("init", "-c", config, "--seed", seed, "--out", single).exit_code == 0
        path = tmp_path / "sweep" / f"seed-{seed}"
        assert_trees_identical(restore_plain(path), restore_plain(single))
        assert embedded_spec(path) == embedded_spec(single)
    for item in report["checkpoints"]:
        assert item["path"] == str(tmp_path / "sweep" / f"seed-{item['seed']}")
        assert item["fingerprint"] == embedded_spec(Path(item["path"]))["fingerprint"]
        assert item["status"] == "written"
    assert len({item["fingerprint"] for item in report["checkpoints"]}) == 3
    assert report["written"] == 3 and report["skipped"] == 0


def test_out_template_and_plain_progress_lines(icnn, config, tmp_path):
    result = icnn("init", "-c", config, "--seeds", "3,5", "--out", tmp_path / "run-{seed}/ckpt")

    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "run-3" / "ckpt" / "_METADATA").is_file()
    assert (tmp_path / "run-5" / "ckpt" / "_METADATA").is_file()
    assert result.stderr.splitlines() == [
        f"icnn: [1/2] seed 3 written: {tmp_path / 'run-3' / 'ckpt'}",
        f"icnn: [2/2] seed 5 written: {tmp_path / 'run-5' / 'ckpt'}",
    ]
    assert "2 checkpoints (2 written), " in result.stdout


@pytest.mark.slow
def test_resume_skips_intact_seeds_and_rewrites_missing_or_damaged(icnn, config, tmp_path):
    out = tmp_path / "sweep"
    first = json.loads(icnn("init", "-c", config, "--seeds", "0:3", "--out", out, "--json").stdout)
    for data_file in (out / "seed-1").glob("**/d/*"):
        data_file.write_bytes(b"")
    (out / "seed-2" / "commit_success.txt").unlink()

    # A fresh process: tensorstore would serve this one's reads from its cache.
    result = run_icnn("init", "-c", config, "--seeds", "0:4", "--out", out, "--resume", "--json")

    assert result.returncode == 0, result.stderr
    statuses = {item["seed"]: item["status"] for item in json.loads(result.stdout)["checkpoints"]}
    assert statuses == {0: "skipped", 1: "replaced", 2: "replaced", 3: "written"}
    for item in first["checkpoints"]:
        inspected = json.loads(icnn("inspect", item["path"], "--json").stdout)
        assert inspected["spec"]["fingerprint"] == item["fingerprint"]


def test_resume_refuses_an_intact_checkpoint_of_another_config(
    icnn, config, write_config, tmp_path
):
    other = write_config({"model": tiny_model(dim_hidden=[4])}, name="other.yaml")
    out = tmp_path / "sweep"
    assert icnn("init", "-c", other, "--seeds", "0", "--out", out).exit_code == 0

    result = icnn("init", "-c", config, "--seeds", "0:2", "--out", out, "--resume")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: --resume: {out / 'seed-0'} holds an intact")
    assert not (out / "seed-1").exists()


def test_existing_seed_checkpoint_is_refused_before_any_work(icnn, config, tmp_path):
    out = tmp_path / "sweep"
    (out / "seed-2").mkdir(parents=True)
    (out / "seed-2" / "notes.txt").write_text("mine")

    result = icnn("init", "-c", config, "--seeds", "0:4", "--out", out)

    assert result.exit_code == 2
    assert result.stderr == (
        f"icnn: error: --out {out / 'seed-2'}: 1 of the 4 seeds' checkpoints exists already; "
        "pass --resume to keep it and write the rest, or --force to replace it\n"
    )
    assert sorted(path.name for path in out.iterdir()) == ["seed-2"]


def test_a_sweep_over_existing_output_counts_it_and_names_both_ways_on(icnn, config, tmp_path):
    out = tmp_path / "runs"
    assert icnn("init", "-c", config, "--seeds", "0:3", "--out", out).exit_code == 0

    refused = icnn("init", "-c", config, "--seeds", "0:8", "--out", out)
    forced = icnn("init", "-c", config, "--seeds", "0:2", "--out", out, "--force")

    assert refused.exit_code == 2
    assert refused.stderr == (
        f"icnn: error: --out {out}: 3 of the 8 seeds' checkpoints exist already (the first: "
        f"{out / 'seed-0'}); pass --resume to keep them and write the rest, or --force to "
        "replace them\n"
    )
    assert forced.exit_code == 0, forced.stderr
    assert "2 checkpoints (2 replaced), " in forced.stdout
    assert [line.split()[1] for line in forced.stdout.splitlines()[1:3]] == ["replaced"] * 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "'' is not N or START:STOP"),
        ("0:x", "'0:x' is not N or START:STOP"),
        ("-1", "'-1' is not N or START:STOP"),
        ("1:2:3", "'1:2:3' is not N or START:STOP"),
        ("5:2", "range 5:2 is empty"),
        ("0:4,2", "seed 2 is listed more than once"),
        ("4294967296", "seed must be in 0..4294967295"),
    ],
)
def test_bad_seeds_name_the_flag(icnn, config, tmp_path, text, problem):
    result = icnn("init", "-c", config, "--seeds", text, "--out", tmp_path / "sweep")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: --seeds {shlex.quote(text)}: ")
    assert problem in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "1", "--seeds", "0:2"], "--seeds: give either --seed or --seeds"),
        (["--resume"], "--resume: only works with --seeds"),
        (["--seeds", "0:2", "--dry-run"], "--seeds: --dry-run shows one tree"),
    ],
)
def test_flag_combinations_that_make_no_sense(icnn, config, tmp_path, extra, message):
    result = icnn("init", "-c", config, "--out", tmp_path / "o", *extra)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_parse_seeds_mixes_ranges_and_lists():
    assert parse_seeds("0:3, 10 ,4294967294:4294967296") == [0, 1, 2, 10, 4294967294, 4294967295]
    with pytest.raises(IcnnError):
        parse_seeds("0:2000000")


def test_seed_output_path_plain_directory_or_template():
    assert seed_output_path(Path("runs"), 12) == Path("runs/seed-12")
    assert seed_output_path(Path("runs/{seed}/init"), 12) == Path("runs/12/init")


@pytest.mark.slow
def test_killed_sweep_leaves_only_valid_checkpoints_and_resume_finishes(config, tmp_path):
    out = tmp_path / "sweep"
    command = [str(ICNN), "init", "-c", str(config), "--seeds", "0:12", "--out", str(out)]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    for line in process.stderr:
        if line.startswith("icnn: [3/12]"):
            break
    process.send_signal(signal.SIGKILL)
    process.wait()

    written = sorted(path for path in out.iterdir() if not path.name.startswith("."))
    assert 3 <= len(written) < 12
    for path in written:
        assert (path / "commit_success.txt").is_file() and (path / "_METADATA").is_file()
    resumed = subprocess.run(
        [*command, "--resume", "--json"], capture_output=True, text=True, check=True
    )
    statuses = [item["status"] for item in json.loads(resumed.stdout)["checkpoints"]]
    assert statuses.count("skipped") == len(written)
    assert statuses.count("written") == 12 - len(written)
    assert len([path for path in out.iterdir() if not path.name.startswith(".")]) == 12
