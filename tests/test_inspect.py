"""`icnn inspect` on icnn's own checkpoints and on checkpoints any Orbax user writes."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import yaml
from typer.testing import CliRunner

from icnn_cli.cli import app
from tests.helpers import tiny_model


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
    # A Python float is a non-array leaf: its real type and value, not a float32 array.
    assert leaves["layers/1/1"] == {
        "path": "layers/1/1",
        "shape": [],
        "dtype": "float",
        "size": 1,
        "bytes": 8,
        "value": 2.5,
    }
    assert report["total_params"] == 6 + 4 + 6
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


def test_inspect_human_output_is_plain_text_when_piped(icnn, tiny_checkpoint):
    out = tiny_checkpoint

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


@pytest.fixture(scope="module")
def deep_checkpoint(tmp_path_factory):
    """icnn's own checkpoint of an ICNN with eight hidden layers (written once per module)."""
    directory = tmp_path_factory.mktemp("deep")
    config = directory / "cfg.yaml"
    config.write_text(yaml.safe_dump({"model": {"dim_data": 2, "dim_hidden": [4] * 8}}))
    out = directory / "ckpt"
    result = CliRunner().invoke(app, ["init", "-c", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.slow  # 4.8 s of CPU on a warm cache (--cpu-durations)
def test_inspect_collapses_repeated_layers_unless_expanded(icnn, deep_checkpoint):
    collapsed = icnn("inspect", deep_checkpoint).stdout
    expanded = icnn("inspect", deep_checkpoint, "--expand").stdout

    assert "├── w_zs_{0..6}  x7" in collapsed and "w_zs_3" not in collapsed
    assert "├── w_xs_{0..7}  x8" in collapsed
    assert "└── w_zs_7" in collapsed
    assert all(f"w_zs_{index}" in expanded for index in range(8))
    assert "x7" not in expanded
    total = "total: 354 params, 1.4 KiB in 48 arrays"
    assert total in collapsed and total in expanded


def test_inspect_json_is_never_collapsed(icnn, deep_checkpoint):
    report = json.loads(icnn("inspect", deep_checkpoint, "--json").stdout)

    paths = [leaf["path"] for leaf in report["leaves"]]
    assert len(paths) == 48
    assert {f"params/w_zs_{index}/kernel" for index in range(8)} <= set(paths)


def test_inspect_depth(icnn, deep_checkpoint):
    text = icnn("inspect", deep_checkpoint, "--depth", "1").stdout
    report = json.loads(icnn("inspect", deep_checkpoint, "--depth", "2", "--json").stdout)

    tree_lines = text.split("\n\n")[1].splitlines()
    assert [line.split() for line in tree_lines] == [
        ["tree", "shape", "dtype", "params", "bytes"],
        ["params", "…", "354", "1.4", "KiB"],
    ]
    assert {module["path"] for module in report["modules"]} == {
        "params",
        "params/pos_def_potentials",
        *(f"params/w_xs_{index}" for index in range(9)),
        *(f"params/w_zs_{index}" for index in range(8)),
    }
    assert len(report["leaves"]) == 48


def test_inspect_filter_keeps_matching_leaves_and_their_totals(icnn, deep_checkpoint):
    text = icnn("inspect", deep_checkpoint, "--filter", "params/w_zs_*").stdout
    report = json.loads(
        icnn("inspect", deep_checkpoint, "--filter", "params/w_zs_*", "--stats", "--json").stdout
    )

    assert "w_xs" not in text
    assert "total of filtered leaves (params/w_zs_*): 116 params, 464 B in 8 of 48 arrays" in text
    assert [leaf["path"] for leaf in report["leaves"]] == [
        f"params/w_zs_{index}/kernel" for index in range(8)
    ]
    assert report["total_params"] == 7 * 16 + 4
    assert report["filter"] == {"globs": ["params/w_zs_*"], "arrays": 8, "of_arrays": 48}
    assert all(leaf["flags"] == [] for leaf in report["leaves"])


def test_inspect_filter_that_matches_nothing_is_an_error(icnn, deep_checkpoint):
    result = icnn("inspect", deep_checkpoint, "--filter", "params/w_q*")

    assert result.exit_code == 2
    assert result.stderr.startswith("icnn: error: --filter 'params/w_q*': matches none of the 48")
    assert result.stdout == ""


def test_inspect_stats_count_and_flag_nan_inf_and_zeros(icnn, tmp_path):
    tree = {
        "bad": np.array([1.0, np.nan, np.inf, -np.inf, 3.0], np.float32),
        "zeros": np.zeros((2, 3), np.float32),
        "good": np.array([-1.0, 1.0], np.float32),
    }
    path = tmp_path / "anomalies"
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, tree)

    report = json.loads(icnn("inspect", path, "--stats", "--json").stdout)
    text = icnn("inspect", path, "--stats").stdout

    leaves = {leaf["path"]: leaf for leaf in report["leaves"]}
    assert (leaves["bad"]["nan"], leaves["bad"]["inf"], leaves["bad"]["flags"]) == (
        1,
        2,
        ["nan", "inf"],
    )
    assert (leaves["bad"]["mean"], leaves["bad"]["min"], leaves["bad"]["max"]) == (2.0, 1.0, 3.0)
    assert leaves["zeros"]["flags"] == ["all_zero"]
    assert (leaves["good"]["nan"], leaves["good"]["inf"], leaves["good"]["flags"]) == (0, 0, [])
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert lines["bad"].rstrip().endswith("nan inf")
    assert lines["zeros"].rstrip().endswith("all_zero")


def test_a_cut_module_says_how_many_of_its_leaves_carry_each_flag(icnn, tmp_path):
    # A trained `params` with zero biases is not "all_zero": only some of its leaves are.
    tree = {
        "params": {
            "dense": {"kernel": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)},
            "out": {"kernel": np.full((2, 1), 0.5, np.float32), "bias": np.zeros(1, np.float32)},
        }
    }
    path = tmp_path / "trained"
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, tree)

    text = icnn("inspect", path, "--stats", "--depth", "1").stdout
    report = json.loads(icnn("inspect", path, "--stats", "--depth", "1", "--json").stdout)

    (params_line,) = [line for line in text.splitlines() if line.startswith("params")]
    assert params_line.rstrip().endswith("all_zero 2/4")
    assert report["modules"] == [
        {
            "path": "params",
            "depth": 0,
            "params": 9,
            "bytes": 36,
            "arrays": 4,
            "flags": {"all_zero": 2},
        }
    ]


def test_zero_biases_at_init_are_described_as_expected(icnn):
    from tests.helpers import GOLDEN

    with_stats = icnn("inspect", GOLDEN / "icnn_tiny", "--stats").stdout
    as_markdown = icnn("inspect", GOLDEN / "icnn_tiny", "--stats", "--format", "md").stdout
    without_stats = icnn("inspect", GOLDEN / "icnn_tiny").stdout

    note = "all_zero: only zeros, as expected at init for biases"
    assert "bias            (3,)       float32       9   36 B         0" in with_stats
    assert note in with_stats.splitlines()[-1]
    assert note in as_markdown
    assert "all_zero" not in without_stats
