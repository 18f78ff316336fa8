"""Weights outside Orbax: safetensors, numpy .npz and Flax msgpack files, told by content."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
from flax import serialization

from icnn_cli.checkpoint import single_files
from tests.helpers import tiny_model

TREE = {
    "params": {
        "dense": {
            "kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
            "bias": np.array([-1.0, 0.0, 1.0], np.float32),
        }
    }
}
FLAT = {
    "params/dense/kernel": TREE["params"]["dense"]["kernel"],
    "params/dense/bias": TREE["params"]["dense"]["bias"],
}


@pytest.fixture
def weights(tmp_path):
    """The same weights in each format, under names that say nothing about the format."""
    paths = {
        "npz": tmp_path / "weights-a.bin",
        "safetensors": tmp_path / "weights-b.bin",
        "msgpack": tmp_path / "weights-c.bin",
    }
    with open(paths["npz"], "wb") as handle:
        np.savez(handle, **FLAT)
    dotted = {key.replace("/", "."): value for key, value in FLAT.items()}
    safetensors.numpy.save_file(dotted, paths["safetensors"])
    paths["msgpack"].write_bytes(serialization.to_bytes(TREE))
    return paths


@pytest.mark.parametrize("kind", ["npz", "safetensors", "msgpack"])
def test_each_format_is_told_by_its_content_and_lists_its_tree(icnn, weights, kind):
    report = json.loads(icnn("inspect", weights[kind], "--stats", "--json").stdout)

    leaves = {leaf["path"]: leaf for leaf in report["leaves"]}
    assert set(leaves) == set(FLAT)
    for path, array in FLAT.items():
        assert (leaves[path]["dtype"], leaves[path]["shape"]) == ("float32", list(array.shape))
        assert leaves[path]["mean"] == pytest.approx(float(array.mean()))
    assert single_files.sniff(weights[kind]) == kind


@pytest.mark.parametrize("kind", ["npz", "safetensors"])
def test_headers_are_enough_without_stats(icnn, weights, kind, monkeypatch):
    def no_array_reads(*args, **kwargs):
        raise AssertionError("inspect without --stats read array data")

    monkeypatch.setattr(single_files, f"_{kind}_values", no_array_reads)

    result = icnn("inspect", weights[kind], "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == 9


def test_a_diff_of_an_icnn_checkpoint_and_its_npz_export_is_identical(
    icnn, tiny_checkpoint, tmp_path
):
    out = tiny_checkpoint
    import icnn_cli

    _, variables = icnn_cli.load(out)
    from icnn_cli.tree_paths import flatten_with_paths

    export = tmp_path / "export.npz"
    np.savez(
        export,
        **{"/".join(parts): np.asarray(leaf) for parts, leaf in flatten_with_paths(variables)},
    )

    result = icnn("diff", out, export, "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["identical"] is True and len(report["leaves"]) == 18


def test_legacy_flax_training_checkpoints_are_read(icnn, tmp_path):
    from flax.training import checkpoints

    state = {"step": 7, "params": TREE["params"]}
    written = checkpoints.save_checkpoint(tmp_path / "run", state, step=7, keep=1)

    report = json.loads(icnn("inspect", written, "--json").stdout)

    leaves = {leaf["path"]: leaf for leaf in report["leaves"]}
    assert leaves["step"]["dtype"] == "int" and leaves["step"]["value"] == 7
    assert leaves["params/dense/kernel"]["shape"] == [2, 3]


def test_markdown_of_a_weights_file(icnn, weights):
    result = icnn("inspect", weights["safetensors"], "--format", "md")

    assert result.exit_code == 0
    assert "| layout | safetensors file |" in result.stdout
    assert "kernel | `(2, 3)` | float32 | 6 | 24 B |" in result.stdout


def test_pickles_in_an_npz_are_refused(icnn, tmp_path):
    archive = tmp_path / "objects.npz"
    np.savez(archive, evil=np.array([{"a": 1}], dtype=object))

    result = icnn("inspect", archive)

    # loading them would run code from the file: refused as bad input, never unpickled
    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: {archive}: evil holds Python objects")


def test_a_file_of_no_known_format_is_refused(icnn, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("not weights")

    result = icnn("inspect", other)

    assert result.exit_code == 2
    assert result.stderr == (
        f"icnn: error: {other}: not an Orbax checkpoint (it is a file, not a directory), nor a "
        "safetensors, .npz or Flax msgpack file\n"
    )


def test_check_reads_an_npz_export_with_its_config(icnn, write_config, tmp_path):
    """The analysis verbs read what inspect reads: an ICNN's params exported to .npz."""
    import icnn_cli
    from icnn_cli.tree_paths import flatten_with_paths

    config = write_config({"model": tiny_model(pos_weights=True)})
    _, variables = icnn_cli.init(config, seed=1)
    export = tmp_path / "params.npz"
    np.savez(
        export,
        **{"/".join(parts): np.asarray(leaf) for parts, leaf in flatten_with_paths(variables)},
    )

    result = icnn("check", export, "--config", config, "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "certified"
