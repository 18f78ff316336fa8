"""Bad input: exit 2, one line on stderr naming file and field, no traceback, nothing written."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model

BAD_CONFIGS = {
    "missing file": (None, "config file not found"),
    "yaml syntax": ("model: [dim_data: 2\n", "cfg.yaml:2:1: YAML error"),
    "unknown key": (
        "model:\n  dim_data: 2\n  dim_hiden: [8]\n",
        "cfg.yaml:3:3: model: unknown key 'dim_hiden' (did you mean 'dim_hidden'?)",
    ),
    "dim_data out of range": (
        "model:\n  dim_data: 0\n  dim_hidden: [8]\n",
        "cfg.yaml:2:3: model.dim_data: Input should be greater than 0",
    ),
    "non-convex activation": (
        "model:\n  dim_data: 2\n  dim_hidden: [8]\n  act_fn: tanh\n",
        "cfg.yaml:4:3: model.act_fn: 'tanh' is not convex",
    ),
    "ranks list length": (
        "model:\n  dim_data: 2\n  dim_hidden: [8]\n  ranks: [1, 1]\n",
        "cfg.yaml:4:3: model.ranks: a list needs len(dim_hidden) + 2 = 3 entries",
    ),
    "seed too large": (
        "model: {dim_data: 2, dim_hidden: [8]}\ninit: {seed: 4294967296}\n",
        "cfg.yaml:2:8: init.seed: seed must be in 0..4294967295",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(case, icnn, write_config, tmp_path):
    text, expected = BAD_CONFIGS[case]
    config = tmp_path / "cfg.yaml" if text is None else write_config(text)
    out = tmp_path / "ckpt"

    result = icnn("init", "--config", config, "--out", out)

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("icnn: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_seed_flag_out_of_range_names_the_flag(icnn, write_config, tmp_path):
    result = icnn(
        "init", "-c", write_config({"model": tiny_model()}), "--seed", -1, "--out", tmp_path / "o"
    )

    assert result.exit_code == 2
    assert "icnn: error: --seed: seed must be in 0..4294967295, got -1" in result.stderr
    assert not (tmp_path / "o").exists()


def test_existing_out_is_refused_without_force(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out).exit_code == 0
    before = sorted(p.name for p in out.iterdir())

    again = icnn("init", "-c", config, "--out", out, "--seed", 1)

    assert again.exit_code == 2
    assert f"--out {out}: already exists (pass --force to replace it)" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_force_replaces_with_the_new_seed(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model()})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--out", out, "--seed", 1, "--json").exit_code == 0

    result = icnn("init", "-c", config, "--out", out, "--seed", 2, "--force", "--json")
    inspected = icnn("inspect", out, "--json")

    assert result.exit_code == 0
    assert '"seed": 2' in inspected.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unknown_platform_is_a_usage_error(icnn, write_config, tmp_path):
    result = icnn("init", "-c", write_config({"model": tiny_model()}), "--platform", "abacus")

    assert result.exit_code == 2
    assert "abacus" in result.stderr


def test_unavailable_platform_exits_2_naming_the_flag(icnn, write_config, tmp_path):
    result = icnn(
        "init",
        "-c",
        write_config({"model": tiny_model()}),
        "--platform",
        "tpu",
        "--out",
        tmp_path / "o",
    )

    assert result.exit_code == 2
    assert "icnn: error: --platform tpu: no TPU backend is available here" in result.stderr
    assert not (tmp_path / "o").exists()


def test_inspect_missing_path_exits_2(icnn, tmp_path):
    result = icnn("inspect", tmp_path / "nope")

    assert result.exit_code == 2
    assert result.stderr.strip() == f"icnn: error: {tmp_path / 'nope'}: no such checkpoint"


def test_inspect_directory_that_is_not_a_checkpoint_exits_2(icnn, tmp_path):
    (tmp_path / "plain").mkdir()

    result = icnn("inspect", tmp_path / "plain")

    assert result.exit_code == 2
    assert "not an Orbax checkpoint" in result.stderr
