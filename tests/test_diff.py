"""`icnn diff A B`: leaf-by-leaf structure and value differences, exit 0 only when identical."""

from __future__ import annotations

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from icnn_cli.analysis.compare import value_differences
from tests.helpers import tiny_model


def save(path, tree):
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path.absolute(), tree)
    return path


def base_tree():
    return {
        "dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.ones(3)},
        "steps": np.array([1, 2], dtype=np.int32),
        "gone": np.zeros(2, dtype=np.float32),
    }


def test_identical_checkpoints_exit_0(icnn, tmp_path):
    a, b = save(tmp_path / "a", base_tree()), save(tmp_path / "b", base_tree())

    result = icnn("diff", a, b, "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "identical": True,
        "leaves": [
            {"path": path, "status": "same", "max_abs_diff": 0.0, "max_rel_diff": 0.0}
            for path in ("dense/bias", "dense/kernel", "gone", "steps")
        ],
    }


def test_every_kind_of_difference_is_reported(icnn, tmp_path):
    changed = base_tree()
    changed["dense"]["kernel"] = changed["dense"]["kernel"].T.copy()
    changed["dense"]["bias"] = np.array([1.0, 1.5, 0.0])
    changed["steps"] = changed["steps"].astype(np.float32)
    del changed["gone"]
    changed["new"] = np.ones(1, dtype=np.float32)
    a, b = save(tmp_path / "a", base_tree()), save(tmp_path / "b", changed)

    result = icnn("diff", a, b, "--json")

    assert result.exit_code == 1
    leaves = {leaf["path"]: leaf for leaf in json.loads(result.stdout)["leaves"]}
    assert leaves == {
        "dense/bias": {
            "path": "dense/bias",
            "status": "changed",
            "max_abs_diff": 1.0,
            "max_rel_diff": 1.0,  # 1 -> 0: |1 - 0| / max(1, 0)
        },
        "dense/kernel": {
            "path": "dense/kernel",
            "status": "shape",
            "max_abs_diff": None,
            "max_rel_diff": None,
        },
        "steps": {"path": "steps", "status": "dtype", "max_abs_diff": None, "max_rel_diff": None},
        "gone": {"path": "gone", "status": "only_a", "max_abs_diff": None, "max_rel_diff": None},
        "new": {"path": "new", "status": "only_b", "max_abs_diff": None, "max_rel_diff": None},
    }
    assert json.loads(result.stdout)["identical"] is False


def test_atol_accepts_small_value_differences(icnn, tmp_path):
    nudged = base_tree()
    nudged["dense"]["bias"] = nudged["dense"]["bias"] + 1e-3
    a, b = save(tmp_path / "a", base_tree()), save(tmp_path / "b", nudged)

    strict = icnn("diff", a, b)
    tolerant = icnn("diff", a, b, "--atol", "1e-2", "--json")

    assert strict.exit_code == 1
    assert "dense/bias" in strict.stdout and "changed" in strict.stdout
    assert "different: 1 of 4 leaves differ" in strict.stdout
    assert tolerant.exit_code == 0
    bias = json.loads(tolerant.stdout)["leaves"][0]
    assert bias["status"] == "same" and bias["max_abs_diff"] == pytest.approx(1e-3)


def test_two_seeds_differ_and_a_bad_fingerprint_is_an_error(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    assert icnn("init", "-c", config, "--seeds", "0:2", "--out", tmp_path / "s").exit_code == 0
    seed_0, seed_1 = tmp_path / "s" / "seed-0", tmp_path / "s" / "seed-1"

    different = json.loads(icnn("diff", seed_0, seed_1, "--json").stdout)
    metadata = seed_1 / "_CHECKPOINT_METADATA"
    recorded = json.loads(metadata.read_text())["custom_metadata"]["icnn"]["fingerprint"]
    metadata.write_text(metadata.read_text().replace(recorded, "sha256:" + "0" * 64))
    damaged = icnn("diff", seed_0, seed_1)

    statuses = {leaf["path"]: leaf["status"] for leaf in different["leaves"]}
    assert statuses["params/w_zs_0/kernel"] == statuses["params/w_xs_0/lin_kernel"] == "changed"
    assert different["identical"] is False
    assert damaged.exit_code == 1
    assert damaged.stderr.startswith(f"icnn: error: {seed_1}: array data does not match")
    assert damaged.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing", "b"], "missing: no such checkpoint"),
        (["a", "b", "--atol", "-1"], "--atol -1.0: must be a finite number >= 0"),
    ],
)
def test_bad_input_exits_2(icnn, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "a", base_tree())
    save(tmp_path / "b", base_tree())

    result = icnn("diff", *args)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_value_differences_treat_matching_nans_as_equal():
    a = np.array([np.nan, 1.0, 0.0, -2.0])
    assert value_differences(a, a.copy()) == (0.0, 0.0)
    assert value_differences(a, np.array([np.nan, 1.0, 0.0, -1.0])) == (1.0, 0.5)
    assert value_differences(np.array([np.nan]), np.array([1.0])) == (np.inf, np.inf)
