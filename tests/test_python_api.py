"""`icnn_cli.init` / `icnn_cli.inspect`: the CLI's results in process, bit for bit."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import icnn_cli
from icnn_cli.config import IcnnConfig
from icnn_cli.errors import IcnnError, OutputExists
from tests.helpers import tiny_model

CONFIG = {"model": tiny_model(), "init": {"seed": 3}}


def _leaves(tree) -> dict[str, np.ndarray]:
    import jax

    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _restore(path) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    return _leaves(ocp.StandardCheckpointer().restore(path.resolve()))


def _assert_bit_identical(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype, name
        assert ours[name].tobytes() == theirs[name].tobytes(), name


def test_importing_icnn_cli_imports_no_jax():
    probe = "import icnn_cli, sys; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)

    loaded = set(eval(result.stdout))
    assert loaded.isdisjoint({"jax", "flax", "orbax", "ott", "numpy", "pydantic"})


def test_the_public_api_is_exported_and_typed():
    assert {"init", "inspect", "health", "load", "__version__"} <= set(icnn_cli.__all__)
    for name in ("init", "inspect", "health", "load"):
        function = getattr(icnn_cli, name)
        assert callable(function) and function.__doc__ and "Args:" in function.__doc__
        parameters = inspect.signature(function).parameters
        assert set(function.__annotations__) == {*parameters, "return"}, name


def test_init_stays_the_function_after_the_jitted_init_loads():
    jitted_init = importlib.import_module("icnn_cli.jitted_init")

    assert callable(icnn_cli.init) and icnn_cli.init is not jitted_init
    assert "config" in inspect.signature(icnn_cli.init).parameters
    assert callable(jitted_init.compiled_init)
    assert importlib.util.find_spec("icnn_cli.init") is None  # no submodule shadows it


@pytest.mark.parametrize("form", ["path", "str path", "yaml text", "mapping", "validated"])
def test_init_is_bit_identical_to_icnn_init(icnn, write_config, tmp_path, form):
    config_path = write_config(CONFIG)
    result = icnn("init", "-c", config_path, "--out", tmp_path / "cli-ckpt")
    assert result.exit_code == 0, result.stderr
    source = {
        "path": config_path,
        "str path": str(config_path),
        "yaml text": config_path.read_text(),
        "mapping": CONFIG,
        "validated": IcnnConfig.model_validate(CONFIG),
    }[form]

    module, variables = icnn_cli.init(source)

    _assert_bit_identical(_leaves(variables), _restore(tmp_path / "cli-ckpt"))
    assert type(module).__name__ == "ICNN"
    assert module.apply(variables, np.ones((4, 2), np.float32)).shape == (4,)


def test_seed_overrides_the_config_seed_like_dash_dash_seed(icnn, write_config, tmp_path):
    config_path = write_config(CONFIG)
    icnn("init", "-c", config_path, "--seed", "11", "--out", tmp_path / "cli-ckpt")

    _, variables = icnn_cli.init(config_path, seed=11)

    _assert_bit_identical(_leaves(variables), _restore(tmp_path / "cli-ckpt"))


def test_init_with_out_writes_the_same_checkpoint_and_spec(icnn, write_config, tmp_path):
    config_path = write_config(CONFIG)
    icnn("init", "-c", config_path, "--out", tmp_path / "cli-ckpt")

    _, variables = icnn_cli.init(config_path, out=tmp_path / "api-ckpt")

    ours = json.loads(icnn("inspect", tmp_path / "api-ckpt", "--json").stdout)
    theirs = json.loads(icnn("inspect", tmp_path / "cli-ckpt", "--json").stdout)
    assert ours["spec"]["fingerprint"] == theirs["spec"]["fingerprint"]
    assert ours["spec"]["config"] == theirs["spec"]["config"]
    assert ours["leaves"] == theirs["leaves"]
    _assert_bit_identical(_restore(tmp_path / "api-ckpt"), _leaves(variables))
    assert icnn("verify", tmp_path / "api-ckpt").exit_code == 0


def test_out_refuses_an_existing_checkpoint_unless_force(write_config, tmp_path):
    config_path = write_config(CONFIG)
    icnn_cli.init(config_path, out=tmp_path / "ckpt")

    with pytest.raises(IcnnError, match="already exists") as refused:
        icnn_cli.init(config_path, seed=1, out=tmp_path / "ckpt")

    assert isinstance(refused.value, OutputExists)
    icnn_cli.init(config_path, seed=1, out=tmp_path / "ckpt", force=True)
    assert icnn_cli.inspect(tmp_path / "ckpt").spec["seed"] == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"model": {"dim_data": 2}}, "<mapping>: model: missing required key 'dim_hidden'"),
        ("model:\n  dim_data: 2\n  dim_hiden: [8]\n", "<yaml text>:3"),
        ("no-such-config.yaml", "no-such-config.yaml"),
        (42, "expected a path, YAML text, a mapping or an IcnnConfig"),
    ],
)
def test_bad_configs_raise_one_line_errors(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(IcnnError) as refused:
        icnn_cli.init(source)

    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_inspect_returns_the_records_inspect_json_prints(icnn, write_config, tmp_path):
    config_path = write_config(CONFIG)
    icnn("init", "-c", config_path, "--out", tmp_path / "ckpt")

    for stats, flags in ((False, []), (True, ["--stats"])):
        summary = icnn_cli.inspect(tmp_path / "ckpt", stats=stats)
        printed = json.loads(icnn("inspect", tmp_path / "ckpt", "--json", *flags).stdout)
        assert json.loads(json.dumps(summary.as_json())) == printed
    assert summary.spec["seed"] == 3
    assert all(leaf.stats is not None for leaf in summary.leaves)


@pytest.mark.slow  # 2.3 s of CPU on a warm cache (--cpu-durations): two health probes
def test_health_returns_the_report_inspect_health_json_prints(icnn, tiny_checkpoint):
    report = icnn_cli.health(tiny_checkpoint, probe=16)

    printed = json.loads(
        icnn("inspect", tiny_checkpoint, "--health", "--probe", 16, "--json").stdout
    )
    assert json.loads(json.dumps(report.as_json())) == printed["health"]
    assert report.points == 16 and report.verdict.kind in {"healthy", "exploding"}
    with pytest.raises(IcnnError, match=r"^probe=0: must be at least 1, got 0$"):
        icnn_cli.health(tiny_checkpoint, probe=0)


@pytest.mark.slow  # 3.1 s of CPU on a warm cache (--cpu-durations)
def test_yaml_text_with_relative_samples_reads_them_from_the_current_directory(
    tmp_path, monkeypatch
):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "src.npy", rng.normal(size=(32, 2)).astype(np.float32))
    np.save(tmp_path / "tgt.npy", rng.normal(size=(32, 2)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    document = {
        "model": tiny_model(gaussian_map_samples={"source": "src.npy", "target": "tgt.npy"})
    }

    module, variables = icnn_cli.init(yaml.safe_dump(document))

    assert module.gaussian_map_samples is not None
    assert "params" in variables


def test_init_onto_an_existing_output_names_the_keyword_not_the_flag(tmp_path):
    config = {"model": {"dim_data": 2, "dim_hidden": [4]}}
    icnn_cli.init(config, out=tmp_path / "ckpt")

    with pytest.raises(IcnnError) as refused:
        icnn_cli.init(config, out=tmp_path / "ckpt")

    assert str(refused.value) == (
        f"out={str(tmp_path / 'ckpt')!r}: already exists (pass force=True to replace it)"
    )
    assert "--" not in str(refused.value)
