"""The installed `icnn` as a real subprocess, as `make run` uses it; every shipped config."""

from __future__ import annotations

import json
import shutil

import pytest

from icnn_cli.config import load_config
from tests.helpers import CONFIGS, run_icnn

SHIPPED = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_every_shipped_config_validates(config):
    loaded = load_config(config)

    assert loaded.model.dim_data > 0


@pytest.mark.slow  # 3.7 s of CPU on a warm cache (--cpu-durations)
@pytest.mark.parametrize(
    "config", [path for path in SHIPPED if path.stem != "large"], ids=lambda path: path.stem
)
def test_every_shipped_config_inits(config, icnn, tmp_path):
    shutil.copytree(CONFIGS, tmp_path / "configs")

    result = icnn(
        "init", "-c", tmp_path / "configs" / config.name, "--out", tmp_path / "out", "--json"
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] > 0


@pytest.mark.slow
def test_subprocess_init_then_inspect(tmp_path):
    out = tmp_path / "ckpt"

    written = run_icnn("init", "--seed", 0, "--config", CONFIGS / "default.yaml", "--out", out)
    inspected = run_icnn("inspect", out, "--json")

    assert written.returncode == 0, written.stderr
    assert "total: 5,070 params" in written.stdout
    assert "\x1b[" not in written.stdout
    assert inspected.returncode == 0
    assert json.loads(inspected.stdout)["total_params"] == 5070


def test_subprocess_bad_input_is_one_line_and_exit_2(tmp_path):
    result = run_icnn("init", "--config", tmp_path / "missing.yaml")

    assert result.returncode == 2
    assert result.stderr == f"icnn: error: {tmp_path / 'missing.yaml'}: config file not found\n"


@pytest.mark.slow
def test_large_config_dry_run_counts_tens_of_millions(tmp_path):
    result = run_icnn("init", "-c", CONFIGS / "large.yaml", "--dry-run", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == 35_930_498
    assert not (tmp_path / "ckpt-large").exists()
