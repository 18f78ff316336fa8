"""`icnn check`: the structural certificate, and counterexamples that OTT itself confirms."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from ott.neural.networks.icnn import ICNN

from tests.helpers import tiny_model

REPORT_KEYS = {"verdict", "reasons", "leaves", "counterexample", "min_hessian_eig"}


def ott_gap(module, variables, x, y, t):
    """f((1-t)x + ty) - ((1-t)f(x) + t f(y)) by plain module.apply."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    t = jnp.float32(t)
    f = lambda point: float(module.apply(variables, point[None]))  # noqa: E731
    return f((1 - t) * x + t * y) - ((1 - t) * f(x) + t * f(y))


@pytest.fixture(scope="module")
def violated(tmp_path_factory):
    """OTT's default init (dim_hidden [16, 16], seed 7) and its ``icnn check --json`` report."""
    from typer.testing import CliRunner

    from icnn_cli.cli import app

    directory = tmp_path_factory.mktemp("violated")
    config = directory / "cfg.yaml"
    config.write_text(json.dumps({"model": tiny_model(dim_hidden=[16, 16])}))
    out = directory / "ckpt"
    runner = CliRunner()
    assert (
        runner.invoke(app, ["init", "-c", str(config), "--seed", "7", "--out", str(out)]).exit_code
        == 0
    )
    result = runner.invoke(app, ["check", str(out), "--json", "--samples", "256", "--seed", "3"])
    assert result.exit_code == 1
    return out, json.loads(result.stdout)


@pytest.mark.slow  # with `violated`, 2.3 s of CPU on a warm cache (--cpu-durations)
def test_default_init_is_violated_and_ott_reproduces_the_counterexample(violated):
    out, report = violated

    assert set(report) == REPORT_KEYS
    assert report["verdict"] == "violated"
    example = report["counterexample"]
    assert set(example) == {"x", "y", "t", "gap"} and 0 < example["t"] < 1
    assert example["gap"] > 1e-3
    variables = ocp.StandardCheckpointer().restore(out.absolute())
    direct = ICNN(dim_data=2, dim_hidden=[16, 16])
    gap = ott_gap(direct, variables, example["x"], example["y"], example["t"])
    assert gap > 0
    assert gap == pytest.approx(example["gap"], rel=1e-3)
    assert isinstance(report["min_hessian_eig"], float)


@pytest.mark.slow  # with `violated`, 2.3 s of CPU on a warm cache (--cpu-durations)
def test_violated_report_gives_the_negative_share_of_each_kernel(violated):
    out, report = violated

    variables = ocp.StandardCheckpointer().restore(out.absolute())
    offending = {leaf["path"]: leaf for leaf in report["leaves"] if not leaf["ok"]}
    assert set(offending) == {"params/w_zs_0/kernel", "params/w_zs_1/kernel"}
    for name in ("w_zs_0", "w_zs_1"):
        kernel = np.asarray(variables["params"][name]["kernel"])
        leaf = offending[f"params/{name}/kernel"]
        assert leaf["negative_fraction"] == pytest.approx(np.mean(kernel < 0))
        assert leaf["min"] == pytest.approx(kernel.min())
        assert leaf["effective"] == "kernel"
    assert "kernels have negative entries" in report["reasons"][0]


@pytest.mark.slow  # with `violated`, 2.3 s of CPU on a warm cache (--cpu-durations)
def test_human_output_explains_and_repeats_the_same_search(icnn, violated):
    out, report = violated

    result = icnn("check", out, "--samples", 256, "--seed", 3)

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "violated"
    text = " ".join(result.stdout.split())
    assert "kernels have negative entries" in text and "A chord lies below f" in text
    assert any(line.startswith("params/w_zs_1/kernel") for line in lines)
    assert f"gap {report['counterexample']['gap']:.6g}" in text  # same seed, same search


def test_pos_weights_is_certified_from_the_structure(icnn, init_checkpoint):
    out = init_checkpoint(tiny_model(pos_weights=True, rectifier_fn="softplus"))

    result = icnn("check", out, "--json")

    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["verdict"] == "certified"
    assert report["counterexample"] is None and report["min_hessian_eig"] is None
    weights = [leaf for leaf in report["leaves"] if leaf["path"].endswith("kernel")]
    assert {leaf["effective"] for leaf in weights} >= {"softplus(kernel)", "relu(diag_kernel)"}
    assert all(leaf["ok"] and leaf["min"] >= 0 for leaf in report["leaves"])


def test_non_negative_raw_weights_are_certified_without_pos_weights(icnn, init_checkpoint):
    # flax's uniform initializer draws from [0, scale): every raw w_zs weight is >= 0
    out = init_checkpoint(tiny_model(init_fn={"name": "uniform", "scale": 0.1}))

    result = icnn("check", out)

    assert result.exit_code == 0
    assert result.stdout.startswith("certified\n")
    assert "Every w_zs weight is >= 0 raw (pos_weights off)." in " ".join(result.stdout.split())


def test_tiny_negative_weights_under_a_smooth_activation_are_uncertified(icnn, init_checkpoint):
    # softplus with weights of size 1e-3: the quadratic potential dominates, f stays convex,
    # yet the weights' signs do not prove it
    model = tiny_model(act_fn="softplus", init_fn={"name": "normal", "stddev": 0.001})
    out = init_checkpoint(model)

    result = icnn("check", out, "--samples", 128)

    assert result.exit_code == 1
    assert result.stdout.startswith("uncertified\n")
    assert "No counterexample in 384 random chords" in " ".join(result.stdout.split())
    assert "params/w_zs_0/kernel" in result.stdout


@pytest.fixture
def foreign_icnn_checkpoint(tmp_path):
    """A plain Orbax save of OTT's own init (pos_weights on): no icnn spec inside."""
    module = ICNN(dim_data=2, dim_hidden=[8, 8], pos_weights=True)
    variables = module.init(jax.random.key(0), jnp.ones((1, 2)))
    path = tmp_path / "foreign"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path.absolute(), variables)
    return path


def test_foreign_checkpoint_is_checked_with_a_config(icnn, write_config, foreign_icnn_checkpoint):
    config = write_config({"model": tiny_model(pos_weights=True)})

    result = icnn("check", foreign_icnn_checkpoint, "--config", config, "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "certified"


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        (["check"], "; give its architecture with --config CFG.yaml"),
        (["plot", "--out", "fig.png"], "; give its architecture with --config CFG.yaml"),
        (["inspect", "--health"], ""),  # inspect has no --config to suggest
    ],
)
def test_foreign_checkpoint_without_config_is_refused(
    icnn, foreign_icnn_checkpoint, tmp_path, monkeypatch, command, hint
):
    monkeypatch.chdir(tmp_path)

    result = icnn(command[0], foreign_icnn_checkpoint, *command[1:])

    assert result.exit_code == 2
    assert result.stderr == (
        f"icnn: error: {foreign_icnn_checkpoint}: no embedded icnn spec "
        f"(not written by icnn init){hint}\n"
    )
    assert not (tmp_path / "fig.png").exists()


def test_config_that_does_not_match_the_arrays_is_refused(
    icnn, write_config, foreign_icnn_checkpoint
):
    config = write_config({"model": tiny_model(dim_hidden=[8, 4])})

    result = icnn("check", foreign_icnn_checkpoint, "--config", config)

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "does not match the config" in result.stderr
    assert "params/w_xs_1/bias has shape (8,), the config gives (4,)" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--samples", 0, "--samples: must be at least 1, got 0"), ("--seed", -1, "--seed: seed")],
)
def test_bad_search_flags_exit_2_naming_the_flag(icnn, tmp_path, flag, value, message):
    result = icnn("check", tmp_path, flag, value)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"icnn: error: {message}")


def test_search_boxes_add_the_samples_bounding_box():
    from icnn_cli.analysis.convexity import search_boxes

    boxes = search_boxes(2, np.array([[0.0, 1.0], [2.0, -1.0], [1.0, 0.0]]))

    assert [box.label for box in boxes] == ["scale 0.1", "scale 1", "scale 10", "data"]
    np.testing.assert_array_equal(boxes[1].low, [-1.0, -1.0])
    np.testing.assert_array_equal(boxes[-1].low, [0.0, -1.0])
    np.testing.assert_array_equal(boxes[-1].high, [2.0, 1.0])


def test_the_search_compiles_one_gap_program_whatever_the_chunks(violated, monkeypatch):
    """A last short chunk and the winner's recomputation run at the chunks' compiled shape."""
    from icnn_cli.analysis import convexity
    from icnn_cli.analysis.loading import load_model

    out, _ = violated
    loaded = load_model(out)
    compiled = []
    gap_functions = convexity._gap_functions

    def recorded(*args):
        functions = gap_functions(*args)
        compiled.append(functions[0])
        return functions

    monkeypatch.setattr(convexity, "_gap_functions", recorded)
    monkeypatch.setattr(convexity, "CHUNK_PAIRS", 96)
    boxes = convexity.search_boxes(2, None)

    counterexample, _, tested = convexity.search_counterexample(
        loaded.module, loaded.variables, boxes, samples=200, seed=3
    )

    assert tested == 600  # chunks of 96, 96 and 8 per box
    assert counterexample is not None and counterexample.gap > 0
    direct = ott_gap(
        loaded.module, loaded.variables, counterexample.x, counterexample.y, counterexample.t
    )
    assert counterexample.gap == pytest.approx(float(direct), rel=1e-3)
    (gap_batch,) = compiled
    assert gap_batch._cache_size() == 1


def test_small_models_compile_quickly_and_large_ones_at_the_default_level():
    from icnn_cli.analysis.convexity import (
        QUICK_COMPILE,
        QUICK_COMPILE_MAX_PARAMS,
        compiler_options,
    )

    small = {"params": {"kernel": np.zeros((10, 10), np.float32)}}
    large = {
        "params": {"kernel": jax.ShapeDtypeStruct((QUICK_COMPILE_MAX_PARAMS + 1,), jnp.float32)}
    }

    assert compiler_options(small) == QUICK_COMPILE
    assert compiler_options(large) is None


# --- several checkpoints -----------------------------------------------------------------


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """Two certified checkpoints (pos_weights, seeds 0 and 1) and a violated one (OTT's default)."""
    from typer.testing import CliRunner

    from icnn_cli.cli import app

    directory = tmp_path_factory.mktemp("several")
    runner = CliRunner()
    made = []
    for name, model, seed in (
        ("pos0", tiny_model(pos_weights=True), 0),
        ("pos1", tiny_model(pos_weights=True), 1),
        ("neg", tiny_model(dim_hidden=[16, 16]), 7),
    ):
        config = directory / f"{name}.yaml"
        config.write_text(json.dumps({"model": model}))
        out = directory / name
        args = ["init", "-c", str(config), "--seed", str(seed), "--out", str(out)]
        assert runner.invoke(app, args).exit_code == 0
        made.append(out)
    return made


def test_several_certified_checkpoints_exit_0_with_one_document(icnn, three_checkpoints):
    pos0, pos1, _ = three_checkpoints

    result = icnn("check", pos0, pos1, "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["summary"] == {
        "checkpoints": 2,
        "certified": 2,
        "violated": 0,
        "uncertified": 0,
        "unreadable": 0,
    }
    for path, entry in zip((pos0, pos1), document["checkpoints"], strict=True):
        alone = json.loads(icnn("check", path, "--json").stdout)
        assert entry == {"path": str(path), **alone}
    assert "2 checkpoints: 2 certified, 0 violated, 0 uncertified" in result.stderr


@pytest.mark.slow  # two counterexample searches: 2.6 s of CPU on a warm cache (--cpu-durations)
def test_one_violated_checkpoint_among_several_exits_1_with_its_own_report(icnn, three_checkpoints):
    pos0, pos1, neg = three_checkpoints
    options = ["--samples", "256", "--seed", "3"]

    result = icnn("check", pos0, neg, pos1, *options, "--json")
    text = icnn("check", pos0, neg, pos1, *options)

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert [entry["verdict"] for entry in document["checkpoints"]] == [
        "certified",
        "violated",
        "certified",
    ]
    alone = json.loads(icnn("check", neg, *options, "--json").stdout)
    assert document["checkpoints"][1] == {"path": str(neg), **alone}
    assert text.exit_code == 1
    assert (
        text.stdout.index(str(pos0)) < text.stdout.index("violated") < text.stdout.index(str(pos1))
    )
    assert text.stderr.splitlines()[-1] == (
        "icnn: 3 checkpoints: 2 certified, 1 violated, 0 uncertified"
    )


def test_a_damaged_checkpoint_among_several_is_unreadable_and_the_rest_are_checked(
    icnn, three_checkpoints, tmp_path
):
    import shutil

    from tests.helpers import flip_bytes

    pos0, pos1, _ = three_checkpoints
    damaged = tmp_path / "damaged"
    shutil.copytree(pos0, damaged)
    flip_bytes(damaged)

    result = icnn("check", damaged, pos1, "--json")

    assert result.exit_code == 1
    first, second = json.loads(result.stdout)["checkpoints"]
    assert first["path"] == str(damaged) and first["verdict"] == "unreadable"
    assert "fingerprint" in first["problem"] or "damaged" in first["problem"]
    assert second["verdict"] == "certified"
    assert "2 checkpoints: 1 certified, 0 violated, 0 uncertified, 1 unreadable" in result.stderr


def test_bad_input_among_several_is_refused_before_any_check(icnn, three_checkpoints, tmp_path):
    pos0, pos1, _ = three_checkpoints
    foreign = tmp_path / "foreign"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(foreign.absolute(), {"params": {"w": np.ones(3, np.float32)}})
    (tmp_path / "empty").mkdir()

    for paths, message in (
        ([pos0, tmp_path / "empty", pos1], str(tmp_path / "empty")),
        ([pos0, foreign], "no embedded icnn spec"),
    ):
        result = icnn("check", *paths, "--json")

        assert result.exit_code == 2
        assert result.stdout == ""
        assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert "--config CFG.yaml" in result.stderr
