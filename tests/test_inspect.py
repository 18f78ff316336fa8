"""`icnn inspect` on icnn's own checkpoints and on checkpoints any Orbax user writes."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import tiny_model


@pytest.fixture
def foreign_checkpoint(tmp_path):
    """A PyTreeCheckpointer save with lists, tuples, bf16, ints and a scalar; no icnn spec."""
    tree = {
        "layers": [np.arange(6, dtype=np.int32).reshape(2, 3), (jnp.ones((4,), jnp.bfloat16), 2.5)],
        "head": {"w": np.full((3, 2), -1.0, np.float32)},
    }
    path = tmp_path / "foreign"
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
    return path


def test_inspect_json_lists_every_leaf_of_a_foreign_checkpoint(icnn, foreign_checkpoint):
    result = icnn("inspect", foreign_checkpoint, "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["spec"] is None
    leaves = {leaf["path"]: leaf for leaf in report["leaves"]}
    assert set(leaves) == {"head/w", "layers/0", "layers/1/0", "layers/1/1"}
    assert leaves["layers/0"] == {
        "path": "layers/0",
        "shape": [2, 3],
        "dtype": "int32",
        "size": 6,
        "bytes": 24,
    }
    assert leaves["layers/1/0"]["dtype"] == "bfloat16" and leaves["layers/1/0"]["bytes"] == 8
    assert leaves["layers/1/1"]["shape"] == []
    assert report["total_params"] == 6 + 4 + 1 + 6
    assert report["total_bytes"] == sum(leaf["bytes"] for leaf in report["leaves"])


def test_inspect_stats_match_numpy(icnn, foreign_checkpoint):
    report = json.loads(icnn("inspect", foreign_checkpoint, "--stats", "--json").stdout)

    leaves = {leaf["path"]: leaf for leaf in report["leaves"]}
    ints = np.arange(6, dtype=np.float64)
    assert leaves["layers/0"]["mean"] == pytest.approx(ints.mean())
    assert leaves["layers/0"]["std"] == pytest.approx(ints.std())
    assert (leaves["layers/0"]["min"], leaves["layers/0"]["max"]) == (0.0, 5.0)
    assert leaves["head/w"]["negative_fraction"] == 1.0
    assert leaves["layers/1/1"]["mean"] == 2.5


def test_inspect_shows_the_embedded_spec(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model(), "init": {"rngs": {"params": 4}}})
    out = tmp_path / "ckpt"
    written = json.loads(icnn("init", "-c", config, "--seed", 9, "--out", out, "--json").stdout)

    report = json.loads(icnn("inspect", out, "--json").stdout)

    spec = report["spec"]
    assert spec["seed"] == 9
    assert spec["streams"] == [{"name": "params", "rule": "seed", "seed": 4, "key_data": [0, 4]}]
    assert spec["config"]["model"] == {"dim_data": 2, "dim_hidden": [8, 8]}
    assert spec["fingerprint"].startswith("sha256:")
    assert set(spec["versions"]) >= {"jax", "flax", "ott-jax", "orbax-checkpoint", "icnn-cli"}
    assert spec["device"].startswith("cpu")
    assert report["leaves"] == written["leaves"]


def test_inspect_human_output_is_plain_text_when_piped(icnn, write_config, tmp_path):
    out = tmp_path / "ckpt"
    icnn("init", "-c", write_config({"model": tiny_model()}), "--out", out)

    result = icnn("inspect", out)

    assert "\x1b[" not in result.stdout
    assert "└── w_zs_1" in result.stdout
    assert "total: " in result.stdout


def test_dry_run_writes_nothing_and_shows_the_same_tree(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"

    dry = json.loads(icnn("init", "-c", config, "--out", out, "--dry-run", "--json").stdout)
    assert not out.exists()
    real = json.loads(icnn("init", "-c", config, "--out", out, "--json").stdout)

    assert dry["leaves"] == real["leaves"]
    assert dry["spec"] is None
