"""``gs://`` for every verb, against the local GCS emulator (tests/gcs_emulator.py).

In-process through the CLI runner where it can be; the cases that need a real
process (a killed write, what reaches the terminal's stderr) start ``icnn`` and are
marked slow. Each test uses a prefix of its own in the session's emulator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icnn_cli.checkpoint.storage import storage_path
from icnn_cli.errors import UnsupportedStorage
from tests.gcs_emulator import GcsEmulator
from tests.gcs_fixtures import forget_cached_filesystems
from tests.helpers import ICNN, run_icnn, tiny_model

BUCKET = "icnn-gcs"


@pytest.fixture(scope="module")
def bucket(gcs_emulator: GcsEmulator) -> str:
    return gcs_emulator.bucket(BUCKET)


def listing(prefix: str) -> list[str]:
    import gcsfs

    return sorted(gcsfs.GCSFileSystem().find(f"{BUCKET}/{prefix}"))


def leaves_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["leaves"]


def restored(path: str | Path) -> dict[tuple[str, ...], np.ndarray]:
    import jax
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore(path if isinstance(path, str) else path.absolute())
    return {
        tuple(str(getattr(key, "key", key)) for key in key_path): np.asarray(leaf)
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


@pytest.fixture(scope="module")
def twins(bucket: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """One config written by ``icnn init`` to the bucket and to a local directory."""
    from typer.testing import CliRunner

    from icnn_cli.cli import app

    directory = tmp_path_factory.mktemp("twins")
    config = directory / "cfg.yaml"
    config.write_text(json.dumps({"model": tiny_model()}))
    remote, local = f"{bucket}/round/ckpt", directory / "ckpt"
    for out in (remote, local):
        result = CliRunner().invoke(
            app, ["init", "-c", str(config), "--seed", "3", "--out", str(out)]
        )
        assert result.exit_code == 0, result.stderr
    return remote, local, config


def test_init_to_a_bucket_is_bit_for_bit_the_local_init(icnn, twins) -> None:
    remote, local, _ = twins

    remote_json = json.loads(icnn("inspect", remote, "--json").stdout)
    local_json = json.loads(icnn("inspect", local, "--json").stdout)

    assert remote_json["path"] == remote
    assert leaves_of(remote_json) == leaves_of(local_json)
    assert remote_json["spec"] == local_json["spec"]
    expected = restored(local)
    got = restored(remote)
    assert got.keys() == expected.keys()
    for key, array in expected.items():
        assert (got[key].dtype, got[key].tobytes()) == (array.dtype, array.tobytes()), key
    assert f"{BUCKET}/round/ckpt/commit_success.txt" in listing("round/ckpt")


def test_diff_of_the_bucket_and_its_local_twin_finds_them_identical(icnn, twins) -> None:
    remote, local, _ = twins

    result = icnn("diff", remote, local, "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["identical"] is True


@pytest.mark.slow  # 8.8 s of CPU on a warm cache (--cpu-durations)
def test_verify_check_plot_health_and_load_read_the_bucket(icnn, twins, tmp_path) -> None:
    import icnn_cli

    remote, local, config = twins

    verified = icnn("verify", remote, "--json")
    assert verified.exit_code == 0, verified.stderr
    report = json.loads(verified.stdout)["checkpoints"][0]
    assert report["path"] == remote
    assert report["reproducibility"]["status"] == "bit-identical"
    checked, checked_locally = (icnn("check", path, "--json") for path in (remote, local))
    assert checked.exit_code == checked_locally.exit_code, checked.stderr
    assert json.loads(checked.stdout) == json.loads(checked_locally.stdout)
    figure = tmp_path / "fig.png"
    assert icnn("plot", remote, "--out", figure).exit_code == 0 and figure.stat().st_size > 0
    health = icnn("inspect", remote, "--health", "--json")
    assert health.exit_code == 0 and "health" in json.loads(health.stdout)
    module, variables = icnn_cli.load(remote)
    local_module, local_variables = icnn_cli.load(local)
    x = np.ones((4, 2), np.float32)
    assert np.array_equal(module.apply(variables, x), local_module.apply(local_variables, x))


def save_plain_orbax_tree(path: str, num_layers: int = 25) -> None:
    """100 leaves saved by plain Orbax (the emulator's reference tree, by shape)."""
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(0)
    tree = {
        f"layer_{index:02d}": {
            "kernel": rng.standard_normal((index + 2, 3)).astype(np.float32),
            "bias": rng.standard_normal(3).astype(np.float16),
            "steps": np.array([index, -index], dtype=np.int32),
            "mask": rng.integers(0, 255, size=4, dtype=np.uint8),
        }
        for index in range(num_layers)
    }
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()


def test_inspect_makes_no_more_requests_than_orbax_metadata_and_reads_no_other_object(
    icnn, bucket: str, gcs_emulator: GcsEmulator
) -> None:
    import orbax.checkpoint as ocp

    path = f"{bucket}/counted/tree"
    save_plain_orbax_tree(path)
    icnn("inspect", path)  # credentials and the bucket probe, once per process
    forget_cached_filesystems()  # else gcsfs answers Orbax from what the save listed
    gcs_emulator.reset_counts()
    ocp.StandardCheckpointer().metadata(path)
    orbax = gcs_emulator.request_counts()
    forget_cached_filesystems()
    gcs_emulator.reset_counts()

    result = icnn("inspect", path, "--json")
    ours = gcs_emulator.request_counts()

    assert result.exit_code == 0, result.stderr
    assert len(leaves_of(json.loads(result.stdout))) == 100
    assert ours.total() <= orbax.total(), (ours, orbax)
    assert all(key.startswith("GET ") for key in ours)
    objects = {key.split("/o/", 1)[-1] for key in ours if "/o/" in key}
    assert objects <= {key.split("/o/", 1)[-1] for key in orbax if "/o/" in key}, ours


def test_stats_reads_the_arrays_with_a_request_count_that_does_not_grow_per_leaf(
    icnn, bucket: str, gcs_emulator: GcsEmulator
) -> None:
    path = f"{bucket}/counted/stats"
    save_plain_orbax_tree(path)
    icnn("inspect", path)
    gcs_emulator.reset_counts()

    result = icnn("inspect", path, "--stats", "--json")

    assert result.exit_code == 0, result.stderr
    assert gcs_emulator.request_counts().total() < 100 / 4  # 100 leaves


def test_a_seed_sweep_writes_each_seed_and_resume_skips_the_written_ones(
    icnn, bucket: str, write_config
) -> None:
    config = write_config({"model": tiny_model()})
    out = f"{bucket}/sweep"

    first = icnn("init", "-c", config, "--seeds", "0:2", "--out", out, "--json")
    again = icnn("init", "-c", config, "--seeds", "0:3", "--out", out, "--resume", "--json")

    assert first.exit_code == 0, first.stderr
    assert again.exit_code == 0, again.stderr
    statuses = [item["status"] for item in json.loads(again.stdout)["checkpoints"]]
    assert statuses == ["skipped", "skipped", "written"]
    for seed in range(3):
        verified = icnn("verify", f"{out}/seed-{seed}")
        assert verified.exit_code == 0, verified.stderr


def test_verify_of_a_sweep_in_a_bucket_reads_several_at_once_and_reports_as_one_by_one(
    icnn, bucket: str, write_config
) -> None:
    config = write_config({"model": tiny_model()})
    out = f"{bucket}/verify-many"
    assert icnn("init", "-c", config, "--seeds", "0:5", "--out", out).exit_code == 0
    paths = [f"{out}/seed-{seed}" for seed in range(5)]

    together = icnn("verify", *paths, "--json")
    alone = [json.loads(icnn("verify", path, "--json").stdout)["checkpoints"] for path in paths]

    assert together.exit_code == 0, together.stderr
    document = json.loads(together.stdout)
    assert document["checkpoints"] == [report for reports in alone for report in reports]
    assert document["summary"]["verified"] == 5
    assert together.stderr.splitlines()[-1].startswith("icnn: 5 checkpoints: 5 verified;")


def test_force_replaces_a_checkpoint_in_a_bucket_and_leaves_no_staging_copy(
    icnn, bucket: str, write_config
) -> None:
    config = write_config({"model": tiny_model()})
    out = f"{bucket}/forced/ckpt"
    assert icnn("init", "-c", config, "--seed", "1", "--out", out).exit_code == 0

    refused = icnn("init", "-c", config, "--seed", "2", "--out", out)
    replaced = icnn("init", "-c", config, "--seed", "2", "--out", out, "--force")

    assert refused.exit_code == 2
    assert (
        refused.stderr == f"icnn: error: --out {out}: already exists (pass --force to replace it)\n"
    )
    assert replaced.exit_code == 0, replaced.stderr
    assert json.loads(icnn("inspect", out, "--json").stdout)["spec"]["seed"] == 2
    assert icnn("verify", out).exit_code == 0
    assert [name for name in listing("forced") if ".icnn-staging-" in name] == []


def test_a_force_interrupted_while_copying_is_refused_then_finished_by_the_next_run(
    icnn, bucket: str, write_config
) -> None:
    from etils import epath

    config = write_config({"model": tiny_model()})
    out = f"{bucket}/interrupted/ckpt"
    staging = f"{bucket}/interrupted/.ckpt.icnn-staging-1-0000abcd"
    assert icnn("init", "-c", config, "--seed", "1", "--out", out).exit_code == 0
    second = icnn("init", "-c", config, "--seed", "2", "--out", staging)
    assert second.exit_code == 0, second.stderr
    # The moment after step 2: the old marker is gone, the new checkpoint is whole beside.
    epath.Path(f"{out}/commit_success.txt").unlink()

    refused = icnn("inspect", out)
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert "never committed" in refused.stderr and staging in refused.stderr
    finished = icnn("init", "-c", config, "--seed", "2", "--out", out)

    assert finished.exit_code == 2  # the interrupted --force is finished, then --out exists
    assert json.loads(icnn("inspect", out, "--json").stdout)["spec"]["seed"] == 2
    assert icnn("verify", out).exit_code == 0
    assert [name for name in listing("interrupted") if ".icnn-staging-" in name] == []


def test_a_killed_fresh_write_is_refused_by_readers_and_named_by_the_next_init(
    icnn, bucket: str, write_config
) -> None:
    from etils import epath

    config = write_config({"model": tiny_model()})
    out = f"{bucket}/unfinished/ckpt"
    assert icnn("init", "-c", config, "--seed", "1", "--out", out).exit_code == 0
    # What a write killed before its last object leaves: Orbax writes the marker last.
    epath.Path(f"{out}/commit_success.txt").unlink()

    inspected = icnn("inspect", out)
    loaded = icnn("check", out)
    again = icnn("init", "-c", config, "--seed", "1", "--out", out)
    forced = icnn("init", "-c", config, "--seed", "1", "--out", out, "--force")

    assert inspected.exit_code == 2 and "never committed (no commit_success.txt" in inspected.stderr
    assert loaded.exit_code == 2 and "never committed" in loaded.stderr
    assert again.exit_code == 2 and "holds an unfinished save" in again.stderr
    assert forced.exit_code == 0, forced.stderr
    assert icnn("verify", out).exit_code == 0


def test_a_missing_bucket_is_one_plain_line_and_an_init_there_writes_nothing(
    icnn, gcs_emulator: GcsEmulator, write_config, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config({"model": tiny_model()})

    inspected = icnn("inspect", "gs://no-such-bucket/ckpt")
    written = icnn("init", "-c", config, "--out", "gs://no-such-bucket/ckpt")

    assert inspected.exit_code == 2
    assert inspected.stderr == (
        "icnn: error: gs://no-such-bucket/ckpt: no such checkpoint: bucket gs://no-such-bucket "
        "does not exist\n"
    )
    assert written.exit_code == 2
    assert written.stderr == (
        "icnn: error: --out gs://no-such-bucket/ckpt: bucket gs://no-such-bucket does not exist\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"]  # no ./gs: directory


def test_without_credentials_a_private_bucket_is_one_plain_line_and_nothing_is_written(
    icnn, twins, bucket: str, gcs_emulator: GcsEmulator, write_config, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    remote, _, _ = twins
    config = write_config({"model": tiny_model()})
    out = f"{bucket}/private/ckpt"

    with gcs_emulator.requiring_authorization():
        inspected = icnn("inspect", remote)
        written = icnn("init", "-c", config, "--out", out)

    for result in (inspected, written):
        assert result.exit_code == 2
        assert result.stderr.startswith("icnn: error: no credentials accepted for object storage")
        assert result.stderr.count("\n") == 1 and "gcsfs" not in result.stderr
    assert listing("private") == []
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"]


def test_a_scheme_neither_orbax_nor_tensorstore_reach_is_refused(icnn) -> None:
    result = icnn("inspect", "ftp://host/ckpt")

    assert result.exit_code == 2
    assert result.stderr == (
        "icnn: error: ftp://host/ckpt: icnn reads and writes local paths and gs://, not ftp://\n"
    )


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs installed here")
@pytest.mark.parametrize("command", ["inspect", "verify", "diff"])
@pytest.mark.parametrize("url", ["s3://b/x", "s3://bucket/ckpt"])
def test_s3_without_its_package_is_one_line_before_any_library_sees_it(command, url) -> None:
    # In a real process: tensorstore's s3 driver writes absl lines to fd 2 itself.
    result = run_icnn(command, url, *([url] if command == "diff" else []))

    assert result.returncode == 2
    assert result.stderr == (
        f"icnn: error: {url}: icnn reads and writes local paths and gs://, not s3:// "
        "(s3:// needs the s3fs package)\n"
    )


def test_an_unsupported_scheme_is_unsupported_storage() -> None:
    with pytest.raises(UnsupportedStorage):
        storage_path("hdfs://namenode/ckpt")


# --- real processes: what reaches the terminal, and kills -------------------------------------


@pytest.mark.slow
def test_stderr_is_exactly_one_line_without_credentials_and_without_a_network(
    twins, gcs_emulator: GcsEmulator, write_config, tmp_path
) -> None:
    remote, _, _ = twins
    config = write_config({"model": tiny_model()})
    closed = {
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
        "TENSORSTORE_GCS_HTTP_URL": "http://127.0.0.1:9",
    }

    with gcs_emulator.requiring_authorization():
        private = run_icnn("inspect", remote, cwd=tmp_path)
    offline = run_icnn("inspect", remote, cwd=tmp_path, env=closed)
    offline_init = run_icnn("init", "-c", config, "--out", f"{remote}-x", cwd=tmp_path, env=closed)

    assert private.returncode == 2
    assert private.stderr.startswith("icnn: error: no credentials accepted")
    for result in (offline, offline_init):
        assert result.returncode == 1, result.stderr
        assert "cannot reach gs://icnn-gcs (connection refused" in result.stderr
    for result in (private, offline, offline_init):
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"]


def start_init(config: Path, out: str, seed: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ICNN), "init", "-c", str(config), "--seed", str(seed), "--out", out, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def wait_for_objects(process: subprocess.Popen[str], prefix: str) -> bool:
    """Whether the process wrote anything under ``prefix`` before it ended."""
    while process.poll() is None:
        if listing(prefix):
            return True
        time.sleep(0.01)
    return False


def seed_if_committed(icnn, out: str) -> int | None:
    """The seed of a whole checkpoint at ``out``; None when readers refuse it (exit 2)."""
    result = icnn("verify", out, "--json")
    if result.exit_code == 2:
        assert "never committed" in result.stderr or "no such checkpoint" in result.stderr
        return None
    assert result.exit_code == 0, result.stderr  # never half-written and taken as whole
    return json.loads(icnn("inspect", out, "--json").stdout)["spec"]["seed"]


@pytest.mark.slow
def test_writes_killed_at_random_moments_never_leave_a_half_checkpoint_taken_as_whole(
    icnn, bucket: str, write_config
) -> None:
    config = write_config({"model": tiny_model(dim_hidden=[256, 256, 256])})
    out = f"{bucket}/killed/ckpt"
    chooser = random.Random(20261126)
    seen = []
    for kill in range(4):
        force = ("--force",) if kill % 2 else ()
        before = seed_if_committed(icnn, out) if kill else None
        process = start_init(config, out, 10 + kill, *force)
        wait_for_objects(process, "killed")
        time.sleep(chooser.uniform(0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = seed_if_committed(icnn, out)
        # Whole (verified) and written by one of the runs so far, or refused as unfinished.
        assert after is None or after == before or 10 <= after <= 10 + kill
        seen.append(after)
    finisher = start_init(config, out, 99, "--force")
    assert finisher.wait() == 0, finisher.stderr.read() if finisher.stderr else ""
    assert seed_if_committed(icnn, out) == 99
    assert [name for name in listing("killed") if ".icnn-staging-" in name] == []
    print(f"after each kill, readers saw seeds {seen}")
