"""`icnn inspect --health`: layer, potential and transport-map diagnostics on a probe batch."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from ott.neural.networks.icnn import ICNN

from tests.helpers import CONFIGS


@pytest.mark.slow  # 7.1 s of CPU on a warm cache (--cpu-durations)
def test_health_json_matches_a_direct_ott_computation(icnn, tiny_checkpoint):
    out = tiny_checkpoint  # icnn init of tiny_model() at seed 0

    result = icnn("inspect", out, "--health", "--probe", 64, "--json")

    assert result.exit_code == 0, result.stderr
    health = json.loads(result.stdout)["health"]
    assert health["probe"] == "standard normal (64 points, seed 0)" and health["points"] == 64
    variables = ocp.StandardCheckpointer().restore(out.absolute())
    module = ICNN(dim_data=2, dim_hidden=[8, 8])
    x = jax.random.normal(jax.random.key(0), (64, 2))
    # the layers, rebuilt here from OTT's own submodules
    bound = module.bind(variables)
    z0 = jax.nn.relu(bound.w_xs[0](x))
    z1 = jax.nn.relu(bound.w_zs[0](z0) + bound.w_xs[1](x))
    z2 = jax.nn.relu(bound.w_zs[1](z1) + bound.w_xs[2](x))
    assert [layer["units"] for layer in health["layers"]] == [8, 8, 1]
    for layer, z in zip(health["layers"], (z0, z1, z2), strict=True):
        assert layer["dead_units"] == int(jnp.sum(jnp.all(z == 0, axis=0)))
        assert layer["mean"] == pytest.approx(float(z.mean()), rel=1e-5)
        assert layer["std"] == pytest.approx(float(z.std()), rel=1e-4)
    f = module.apply(variables, x)
    np.testing.assert_allclose(z2[:, 0] + bound.pos_def_potentials(x)[:, 0], f, rtol=1e-5)
    assert health["potential"]["mean"] == pytest.approx(float(f.mean()), rel=1e-5)
    grad_f = jax.vmap(jax.grad(lambda p: module.apply(variables, p[None]).reshape(())))(x)
    rms = float(jnp.sqrt(jnp.mean(jnp.sum((grad_f - x) ** 2, axis=1))))
    assert health["transport"]["reference"] == "identity"
    assert health["transport"]["rms_distance"] == pytest.approx(rms, rel=1e-4)


@pytest.mark.slow  # 2.7 s of CPU on a warm cache (--cpu-durations)
def test_gaussian_map_health_probes_the_samples_and_compares_with_bures(icnn, tmp_path):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    out = tmp_path / "ckpt"
    config = tmp_path / "configs" / "gaussian_map.yaml"
    assert icnn("init", "-c", config, "--out", out).exit_code == 0

    health = json.loads(icnn("inspect", out, "--health", "--json").stdout)["health"]
    shutil.rmtree(tmp_path / "configs")
    moved = json.loads(icnn("inspect", out, "--health", "--json").stdout)["health"]

    source = np.load(CONFIGS / "samples" / "source.npy")
    assert health["probe"] == f"Gaussian-map source samples ({min(256, len(source))} points)"
    assert health["transport"]["reference"] == "bures"
    assert 0 < health["transport"]["relative_distance"] < 1
    assert moved["probe"].startswith("standard normal")
    assert moved["transport"] is None and "moved or changed" in moved["note"]


@pytest.mark.slow  # 2.0 s of CPU on a warm cache (--cpu-durations)
def test_health_human_output_has_a_row_per_layer(icnn, tiny_checkpoint):
    out = tiny_checkpoint

    result = icnn("inspect", out, "--health", "--probe", 32)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "health on standard normal (32 points, seed 0)" in lines
    assert any(line.startswith("hidden 1  act(w_zs_0(z) + w_xs_1(x))") for line in lines)
    assert any(line.startswith("map grad f   RMS distance from x") for line in lines)

    markdown = icnn("inspect", out, "--health", "--probe", 32, "--format", "md").stdout
    assert "**health on standard normal (32 points, seed 0)**" in markdown
    assert "| hidden 1 | `act(w_zs_0(z) + w_xs_1(x))` | 8 |" in markdown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--probe", "8"], "--probe: only meaningful with --health"),
        (["--health", "--probe", "0"], "--probe: must be at least 1, got 0"),
    ],
)
def test_bad_probe_flags_exit_2(icnn, tmp_path, args, message):
    result = icnn("inspect", tmp_path, *args)

    assert result.exit_code == 2
    assert result.stderr == f"icnn: error: {message}\n"
