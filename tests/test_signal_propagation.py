"""`icnn inspect --health`: pre-activation statistics per layer, convexity at init, a verdict."""

from __future__ import annotations

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from ott.neural.networks.icnn import ICNN

from icnn_cli.analysis.health import LayerHealth, input_correlation, verdict_of

DEEP_POSITIVE = {"dim_data": 2, "dim_hidden": [64] * 5, "pos_weights": True}


def layers_with_variances(*variances, correlation=0.1, dead=0):
    return [
        LayerHealth(f"hidden {i}", "", 64, dead, 0.0, 1.0, 0.0, variance, correlation)
        for i, variance in enumerate(variances)
    ]


def test_verdict_reports_exploding_variance_from_the_first_layer_that_grows():
    verdict = verdict_of(layers_with_variances(1.0, 1.1, 8.0, 64.0, 512.0))

    assert verdict.kind == "exploding"
    assert verdict.variance_growth == pytest.approx(512 ** (1 / 4))
    assert verdict.from_layer == 2
    assert verdict.suggestion == "data-dependent"


def test_verdict_reports_vanishing_inputs_alike_dead_units_and_health():
    assert verdict_of(layers_with_variances(1.0, 0.1, 0.01)).kind == "vanishing"
    alike = verdict_of(layers_with_variances(1.0, 1.0, 1.0, correlation=0.99))
    assert (alike.kind, alike.from_layer, alike.suggestion) == ("inputs alike", 0, "principled")
    assert verdict_of(layers_with_variances(1.0, 1.0, dead=40)).kind == "dead units"
    healthy = verdict_of(layers_with_variances(1.0, 1.2, 0.9))
    assert (healthy.kind, healthy.suggestion) == ("healthy", None)


def test_input_correlation_is_the_mean_pearson_correlation_across_units():
    rng = np.random.default_rng(0)
    independent = rng.normal(size=(200, 512))
    shared = rng.normal(size=(1, 512)) * 10 + 0.01 * rng.normal(size=(200, 512))

    assert abs(input_correlation(independent)) < 0.01
    assert input_correlation(shared) == pytest.approx(1.0, abs=1e-3)
    pair = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert input_correlation(pair) == pytest.approx(-1.0)
    assert input_correlation(np.ones((5, 1))) is None


@pytest.fixture(scope="module")
def deep_checkpoints(tmp_path_factory):
    """The same deep positive-weight ICNN from OTT's init and from the data-dependent recipe."""
    import yaml
    from typer.testing import CliRunner

    from icnn_cli.cli import app

    directory = tmp_path_factory.mktemp("deep")
    paths = {}
    for recipe in ("ott", "data-dependent"):
        config = directory / f"{recipe}.yaml"
        config.write_text(
            yaml.safe_dump({"model": DEEP_POSITIVE, "init": {"recipe": {"name": recipe}}})
        )
        paths[recipe] = directory / recipe
        result = CliRunner().invoke(app, ["init", "-c", str(config), "--out", str(paths[recipe])])
        assert result.exit_code == 0, result.stderr
    return paths


def health_of(icnn, path, *args):
    result = icnn("inspect", path, "--health", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["health"]


def test_health_pre_activations_match_ott_and_ott_init_explodes(icnn, deep_checkpoints):
    health = health_of(icnn, deep_checkpoints["ott"], "--probe", 128)

    variables = ocp.StandardCheckpointer().restore(deep_checkpoints["ott"].absolute())
    bound = ICNN(**DEEP_POSITIVE).bind(variables)
    x = jax.random.normal(jax.random.key(0), (128, 2))
    z = jax.nn.relu(bound.w_xs[0](x))
    pre = bound.w_zs[0](z) + bound.w_xs[1](x)
    layer = health["layers"][1]["pre_activation"]
    assert layer["mean"] == pytest.approx(float(pre.mean()), rel=1e-4)
    assert layer["variance"] == pytest.approx(float(pre.var()), rel=1e-4)
    assert layer["correlation"] == pytest.approx(input_correlation(np.asarray(pre)), abs=1e-6)
    assert health["layers"][-1]["pre_activation"]["correlation"] is None
    verdict = health["verdict"]
    assert verdict["kind"] == "exploding" and verdict["variance_growth"] > 5
    assert verdict["suggestion"] == "data-dependent"
    assert health["convexity"]["certified"] is True


def test_health_of_the_data_dependent_recipe_is_healthy_and_certified(icnn, deep_checkpoints):
    health = health_of(icnn, deep_checkpoints["data-dependent"])

    assert health["verdict"]["kind"] == "healthy"
    assert health["convexity"]["certified"] is True


def test_health_text_gives_the_verdict_and_the_convexity_line(icnn, deep_checkpoints):
    result = icnn("inspect", deep_checkpoints["ott"], "--health")

    assert result.exit_code == 0, result.stderr
    assert "exploding from layer 1; try `init.recipe: data-dependent`" in result.stdout
    assert "convex at init  certified: act_fn relu is convex and non-decreasing." in result.stdout


def test_signed_weights_get_a_jensen_gap_probe_instead_of_a_certificate(
    icnn, write_config, tmp_path
):
    out = tmp_path / "ckpt"
    model = {"dim_data": 2, "dim_hidden": [64] * 5}
    assert icnn("init", "-c", write_config({"model": model}), "--out", out).exit_code == 0

    convexity = health_of(icnn, out)["convexity"]

    assert convexity["certified"] is False
    assert "pos_weights off" in convexity["conditions"][0]
    assert convexity["jensen_pairs"] == 1024
    assert 0 <= convexity["jensen_violations"] <= 1024
