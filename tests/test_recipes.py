"""`init.recipe`: principled (Hoedt & Klambauer) and data-dependent inits, and `ott` unchanged."""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import icnn_cli
from icnn_cli import model, recipes
from icnn_cli.config import IcnnConfig
from icnn_cli.pipeline import initialize_seed, prepare_init
from tests.helpers import assert_trees_identical, restore_plain, tiny_model

PRINCIPLED = {"name": "principled"}
DATA_DEPENDENT = {"name": "data-dependent"}


def config_with(recipe, **model_fields):
    return {"model": tiny_model(**model_fields), "init": {"recipe": recipe}}


def leaves_by_path(variables):
    from icnn_cli.tree_paths import flatten_with_paths

    return {"/".join(path): np.asarray(leaf) for path, leaf in flatten_with_paths(variables)}


# --- principled: the paper's formulas and the drawn weights ---------------------------------


def test_principled_formulas_give_the_papers_numbers():
    mean, variance = recipes.principled_weight_moments(64, rho=0.5, leaky_slope=0.0)

    assert mean == pytest.approx(0.0287, abs=5e-5)
    assert variance == pytest.approx(0.0156, abs=5e-5)
    assert recipes.principled_bias(64, rho=0.5, variance=1.0) == pytest.approx(-0.732, abs=5e-4)
    assert recipes.principled_bias(256, rho=0.5, variance=1.0) == pytest.approx(-0.738, abs=5e-4)


@pytest.fixture(scope="module")
def principled_fan_in_64():
    """w_zs_0 has fan-in 64 and 64 * 4096 log-normal weights."""
    cfg = {"model": {"dim_data": 2, "dim_hidden": [64, 4096]}, "init": {"recipe": PRINCIPLED}}
    _, variables = icnn_cli.init(cfg)
    return leaves_by_path(variables)


def test_principled_weights_are_log_normal_with_the_papers_moments(principled_fan_in_64):
    weights = principled_fan_in_64["params/w_zs_0/kernel"]
    logs = np.log(weights.astype(np.float64))
    # the log-moments are estimated far more tightly than the heavy-tailed raw ones
    implied_mean = math.exp(logs.mean() + logs.var() / 2)
    implied_variance = (math.exp(logs.var()) - 1) * implied_mean**2

    assert weights.min() > 0
    assert implied_mean == pytest.approx(0.0287, rel=0.03)
    assert implied_variance == pytest.approx(0.0156, rel=0.1)
    assert weights.mean() == pytest.approx(0.0287, rel=0.05)


def test_principled_bias_is_the_papers_constant_in_the_next_layers_potential(
    principled_fan_in_64,
):
    # OTT adds w_xs_{i+1}(x), whose bias is the only one, to w_zs_i(z)
    np.testing.assert_allclose(principled_fan_in_64["params/w_xs_1/bias"], -0.7323, atol=1e-4)
    expected_output_bias = recipes.principled_bias(4096, 0.5, 1.0)
    np.testing.assert_allclose(principled_fan_in_64["params/w_xs_2/bias"], expected_output_bias)


def test_principled_leaves_the_params_stream_and_other_leaves_as_ott_draws_them():
    ott = leaves_by_path(icnn_cli.init(config_with({"name": "ott"}))[1])
    principled = leaves_by_path(icnn_cli.init(config_with(PRINCIPLED))[1])

    changed = {
        path for path in ott if not np.array_equal(ott[path], principled[path], equal_nan=True)
    }
    assert changed == {
        "params/w_zs_0/kernel",
        "params/w_zs_1/kernel",
        "params/w_xs_1/bias",
        "params/w_xs_2/bias",
    }


def test_principled_with_a_softplus_rectifier_inverts_it_so_the_used_weights_are_log_normal():
    plain = leaves_by_path(icnn_cli.init(config_with(PRINCIPLED))[1])
    rectified = leaves_by_path(
        icnn_cli.init(config_with(PRINCIPLED, pos_weights=True, rectifier_fn="softplus"))[1]
    )
    relu = leaves_by_path(icnn_cli.init(config_with(PRINCIPLED, pos_weights=True))[1])

    used = np.asarray(jax.nn.softplus(rectified["params/w_zs_0/kernel"]))
    np.testing.assert_allclose(used, plain["params/w_zs_0/kernel"], rtol=1e-4)
    # relu leaves positive draws as they are: the raw kernel is the draw itself
    assert np.array_equal(relu["params/w_zs_0/kernel"], plain["params/w_zs_0/kernel"])


# --- data-dependent at depth --------------------------------------------------------------

DEEP_CASES = {
    "dim 2, pos_weights": {"dim_data": 2, "dim_hidden": [256] * 8, "pos_weights": True},
    "dim 16, signed weights": {"dim_data": 16, "dim_hidden": [256] * 8, "pos_weights": False},
}


@functools.cache
def deep_data_dependent(case):
    """One init per case for the whole module (each compiles a depth-8 normalisation)."""
    fields = DEEP_CASES[case]
    module, variables = icnn_cli.init({"model": fields, "init": {"recipe": DATA_DEPENDENT}})
    return module, {"params": variables["params"]}


@pytest.mark.parametrize("case", sorted(DEEP_CASES))
def test_data_dependent_gives_every_layer_unit_variance_on_fresh_probes(case):
    module, variables = deep_data_dependent(case)
    fresh = jax.random.normal(jax.random.key(2024), (2048, module.dim_data))

    layers = model.pre_activations(module, variables, fresh)

    assert len(layers) == 9
    for index, pre_activation in enumerate(layers):
        variance, mean = float(jnp.var(pre_activation)), float(jnp.mean(pre_activation))
        assert 0.5 <= variance <= 2, (index, variance)
        assert abs(mean) <= 0.3, (index, mean)


@pytest.mark.slow  # 2.8 s of CPU on a warm cache (--cpu-durations)
def test_data_dependent_with_pos_weights_stays_convex():
    module, variables = deep_data_dependent("dim 2, pos_weights")
    keys = jax.random.split(jax.random.key(7), 3)
    x = 3 * jax.random.normal(keys[0], (4096, module.dim_data))
    y = 3 * jax.random.normal(keys[1], (4096, module.dim_data))
    t = jax.random.uniform(keys[2], (4096, 1))

    def f(points):
        return module.apply(variables, points)

    gap = t[:, 0] * f(x) + (1 - t[:, 0]) * f(y) - f(t * x + (1 - t) * y)
    scale = jnp.abs(f(x)) + jnp.abs(f(y)) + 1
    assert float(jnp.min(gap / scale)) >= -1e-5
    effective = model.effective_parameters(model_config(module), variables["params"])
    assert all(np.all(p.values >= 0) for p in effective if p.must_be_non_negative)


def model_config(module):
    from icnn_cli.config import ModelConfig

    return ModelConfig(
        dim_data=module.dim_data, dim_hidden=list(module.dim_hidden), pos_weights=True
    )


def test_data_dependent_moves_only_positive_scales_and_shifts():
    """Each unit's whole pre-activation is multiplied by one positive factor."""
    cfg = config_with(DATA_DEPENDENT, pos_weights=True, ranks=2)
    ott = leaves_by_path(icnn_cli.init(config_with({"name": "ott"}, pos_weights=True, ranks=2))[1])
    normalised = leaves_by_path(icnn_cli.init(cfg)[1])

    factor = normalised["params/w_xs_1/lin_kernel"] / ott["params/w_xs_1/lin_kernel"]
    per_unit = factor[0]
    assert np.all(per_unit > 0)
    np.testing.assert_allclose(factor, np.broadcast_to(per_unit, factor.shape), rtol=1e-5)
    np.testing.assert_allclose(
        normalised["params/w_zs_0/kernel"], ott["params/w_zs_0/kernel"] * per_unit, rtol=1e-5
    )
    np.testing.assert_allclose(
        normalised["params/w_xs_1/quad_kernel"],
        ott["params/w_xs_1/quad_kernel"] * np.sqrt(per_unit)[:, None, None],
        rtol=1e-5,
    )
    softplus = np.log1p(np.exp(ott["params/w_xs_1/diag_kernel"]))
    np.testing.assert_allclose(
        np.log1p(np.exp(normalised["params/w_xs_1/diag_kernel"])), softplus * per_unit, rtol=1e-4
    )


def test_data_dependent_reads_probes_from_a_samples_file(icnn, write_config, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "probes.npy", rng.normal(size=(256, 2)))
    recipe = {"name": "data-dependent", "samples_file": "probes.npy"}
    out = tmp_path / "ckpt"

    result = icnn("init", "-c", write_config(config_with(recipe)), "--out", out, "--json")

    assert result.exit_code == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert spec["init_samples"][0]["role"] == "probe"
    assert spec["init_samples"][0]["path"] == str((tmp_path / "probes.npy").resolve())
    assert [stream["name"] for stream in spec["streams"]] == ["params"]
    verified = icnn("verify", out, "--json")
    assert verified.exit_code == 0, verified.stdout
    (tmp_path / "probes.npy").write_bytes(b"changed")
    report = json.loads(icnn("verify", out, "--json").stdout)["checkpoints"][0]
    assert report["reproducibility"]["status"] == "skipped"
    assert "probe sample file" in report["reproducibility"]["detail"]


# --- recorded, verified, swept, cached ------------------------------------------------------


@pytest.mark.parametrize("recipe", [PRINCIPLED, DATA_DEPENDENT], ids=lambda r: r["name"])
def test_recipe_is_recorded_and_verify_reruns_it_bit_for_bit(recipe, icnn, write_config, tmp_path):
    out = tmp_path / "ckpt"
    config = write_config(config_with(recipe, pos_weights=True))

    result = icnn("init", "-c", config, "--seed", 3, "--out", out, "--json")

    assert result.exit_code == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert spec["config"]["init"]["recipe"] == recipe
    stream = recipes.PRINCIPLED_STREAM if recipe is PRINCIPLED else recipes.PROBE_STREAM
    assert {s["name"]: s["rule"] for s in spec["streams"]} == {
        "params": "master",
        stream: "derive",
    }
    verified = icnn("verify", out, "--json")
    assert verified.exit_code == 0, verified.stdout
    assert (
        json.loads(verified.stdout)["checkpoints"][0]["reproducibility"]["status"]
        == "bit-identical"
    )
    inspected = icnn("inspect", out)
    assert "init recipe" in inspected.stdout


def test_a_sweep_with_a_recipe_equals_each_single_seed(icnn, write_config, tmp_path):
    config = write_config(config_with(PRINCIPLED, pos_weights=True))
    swept = icnn("init", "-c", config, "--seeds", "0:2", "--out", tmp_path / "sweep")
    single = icnn("init", "-c", config, "--seed", 1, "--out", tmp_path / "one")

    assert swept.exit_code == 0 and single.exit_code == 0, swept.stderr + single.stderr
    assert_trees_identical(
        restore_plain(tmp_path / "sweep" / "seed-1"), restore_plain(tmp_path / "one")
    )
    assert not np.array_equal(
        restore_plain(tmp_path / "sweep" / "seed-0")["params"]["w_zs_0"]["kernel"],
        restore_plain(tmp_path / "one")["params"]["w_zs_0"]["kernel"],
    )


def test_the_export_cache_runs_a_recipe_like_the_plain_jit(tmp_path):
    config = IcnnConfig.model_validate(config_with(DATA_DEPENDENT, pos_weights=True))
    cache = tmp_path / "cache"

    cold = prepare_init(config, tmp_path, None, cache)
    warm = prepare_init(config, tmp_path, None, cache)
    plain = prepare_init(config, tmp_path, None)

    assert (cold.exported, warm.exported) == ("stored", "loaded")
    reference, _ = initialize_seed(plain, 4)
    assert_trees_identical(initialize_seed(warm, 4)[0], reference)


def test_the_export_key_covers_the_recipe_and_the_probe_file(tmp_path):
    from icnn_cli import export_cache

    device = jax.local_devices()[0]

    def key(recipe, sha=()):
        config = IcnnConfig.model_validate(config_with(recipe))
        return export_cache.export_key(tmp_path, config, list(sha), {}, device).digest

    file_recipe = {"name": "data-dependent", "samples_file": "p.npy"}
    digests = {
        key({"name": "ott"}),
        key(PRINCIPLED),
        key({"name": "principled", "rho": 0.25}),
        key(file_recipe, ["a" * 64]),
        key(file_recipe, ["b" * 64]),
    }
    assert len(digests) == 5


def test_ott_recipe_written_out_is_the_plain_ott_call(icnn, write_config, tmp_path):
    from ott.neural.networks.icnn import ICNN

    out = tmp_path / "ckpt"
    result = icnn(
        "init", "-c", write_config(config_with({"name": "ott"})), "--seed", 9, "--out", out
    )

    assert result.exit_code == 0, result.stderr
    module = ICNN(dim_data=2, dim_hidden=[8, 8])
    expected = jax.jit(module.init)(jax.random.key(9), jnp.ones((1, 2)))
    assert_trees_identical(restore_plain(out), expected)


# --- the config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            {"name": "xavier"},
            "unknown recipe 'xavier' (choose from: ott, principled, data-dependent)",
        ),
        ({"name": "principled", "rho": 1.0}, "rho must be below 1"),
        ({"name": "principled", "rho": 0}, "rho must be in (0, inf]"),
        ({"name": "principled", "samples": 3}, "takes no argument 'samples'"),
        (
            {"name": "data-dependent", "samples": 10, "samples_file": "x.npy"},
            "give samples or samples_file, not both",
        ),
        ({"name": "data-dependent", "samples": 1}, "samples must be in [2, inf]"),
    ],
)
def test_a_bad_recipe_is_refused_with_one_line(recipe, message, icnn, write_config, tmp_path):
    result = icnn("init", "-c", write_config(config_with(recipe)), "--out", tmp_path / "ckpt")

    assert result.exit_code == 2
    assert message in result.stderr
    assert "init.recipe" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_probe_file_is_refused_naming_the_key(icnn, write_config, tmp_path):
    recipe = {"name": "data-dependent", "samples_file": "nowhere.npy"}
    result = icnn("init", "-c", write_config(config_with(recipe)), "--out", tmp_path / "ckpt")

    assert result.exit_code == 2
    assert "init.recipe.samples_file: sample file not found" in result.stderr


def test_config_new_all_and_the_schema_show_the_recipe(icnn):
    template = icnn("config", "new", "--all").stdout
    schema = json.loads(icnn("schema").stdout)

    assert "recipe: {name: ott}" in template
    assert yaml.safe_load(template)["init"]["recipe"] == {"name": "ott"}
    recipe_schema = schema["$defs"]["InitConfig"]["properties"]["recipe"]
    assert recipe_schema["anyOf"][0]["enum"] == ["ott", "principled", "data-dependent"]


# --- overrides ----------------------------------------------------------------------------

CELLOT_RULE = {"path": "params/w_zs_*/kernel", "init": {"name": "uniform", "scale": 0.1}}


def config_with_overrides(overrides, recipe=None):
    init = {"overrides": overrides}
    if recipe is not None:
        init["recipe"] = recipe
    return {"model": tiny_model(), "init": init}


def test_an_override_draws_the_matched_leaves_from_its_own_stream(icnn, write_config, tmp_path):
    out = tmp_path / "ckpt"
    config = write_config(config_with_overrides([CELLOT_RULE]))

    result = icnn("init", "-c", config, "--out", out, "--json")

    assert result.exit_code == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert [(s["name"], s["rule"]) for s in spec["streams"]] == [
        ("params", "master"),
        ("override:params/w_zs_*/kernel", "derive"),
    ]
    written = leaves_by_path(restore_plain(out))
    ott = leaves_by_path(icnn_cli.init(config_with({"name": "ott"}))[1])
    for path in ("params/w_zs_0/kernel", "params/w_zs_1/kernel"):
        assert written[path].min() >= 0 and written[path].max() < 0.1
        assert not np.array_equal(written[path], ott[path])
    assert not np.array_equal(
        written["params/w_zs_0/kernel"][:, :1], written["params/w_zs_1/kernel"]
    )
    untouched = [path for path in ott if "w_zs" not in path]
    assert all(np.array_equal(written[path], ott[path]) for path in untouched)
    assert icnn("verify", out).exit_code == 0


def test_the_first_matching_override_wins():
    rules = [
        {"path": "params/w_zs_0/kernel", "init": {"name": "constant", "value": 1.0}},
        {"path": "params/w_zs_*/kernel", "init": "zeros"},
    ]
    variables = leaves_by_path(icnn_cli.init(config_with_overrides(rules))[1])

    assert np.all(variables["params/w_zs_0/kernel"] == 1)
    assert np.all(variables["params/w_zs_1/kernel"] == 0)


def test_overrides_run_before_the_recipe():
    """CellOT's U(0, 0.1) weights, then normalised by the data-dependent recipe."""
    _, plain = icnn_cli.init(config_with_overrides([CELLOT_RULE]))
    _, normalised = icnn_cli.init(config_with_overrides([CELLOT_RULE], DATA_DEPENDENT))
    plain, normalised = leaves_by_path(plain), leaves_by_path(normalised)

    ratio = normalised["params/w_zs_0/kernel"] / plain["params/w_zs_0/kernel"]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape), rtol=1e-4)


def test_an_override_that_matches_no_leaf_is_refused(icnn, write_config, tmp_path):
    rule = {"path": "params/w_z_*/kernel", "init": "zeros"}
    config = write_config(config_with_overrides([rule]))

    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt")

    assert result.exit_code == 2
    assert "init.overrides[0].path: 'params/w_z_*/kernel' matches no leaf" in result.stderr


def test_an_override_path_given_twice_is_refused(icnn, write_config, tmp_path):
    config = write_config(config_with_overrides([CELLOT_RULE, {**CELLOT_RULE, "init": "zeros"}]))

    result = icnn("init", "-c", config, "--out", tmp_path / "ckpt")

    assert result.exit_code == 2
    assert "is given twice" in result.stderr


def test_a_recipe_on_a_mesh_gives_the_one_device_values(icnn, write_config, tmp_path):
    config = write_config(config_with(DATA_DEPENDENT, pos_weights=True))

    meshed = icnn("init", "-c", config, "--mesh", "1", "--out", tmp_path / "meshed")
    plain = icnn("init", "-c", config, "--out", tmp_path / "plain")

    assert meshed.exit_code == 0 and plain.exit_code == 0, meshed.stderr + plain.stderr
    assert_trees_identical(restore_plain(tmp_path / "meshed"), restore_plain(tmp_path / "plain"))


def test_the_readme_recipes_and_overrides_are_valid_configs():
    import re

    from tests.helpers import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Choosing an initialisation", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)

    assert len(blocks) == 6
    for block in blocks:
        document = yaml.safe_load(block)
        document.setdefault("model", tiny_model())
        config = IcnnConfig.model_validate(document)
        assert recipes.changes_ott_init(config.init)
