"""`icnn init` gives exactly what the direct OTT call gives, bit for bit."""

from __future__ import annotations

import functools
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.neural.networks.icnn import ICNN

from tests.helpers import CONFIGS, assert_trees_identical, restore_plain


def direct_init(module, rngs, dim_data: int, **init_kwargs):
    return jax.jit(functools.partial(module.init, **init_kwargs))(rngs, jnp.ones((1, dim_data)))


CASES = {
    "defaults": (
        {"dim_data": 2, "dim_hidden": [64, 64]},
        {},
        lambda: ICNN(dim_data=2, dim_hidden=[64, 64]),
    ),
    "ranks-list-leaky-normal": (
        {
            "dim_data": 3,
            "dim_hidden": [16, 8],
            "ranks": [2, 1, 0, 3],
            "init_fn": {"name": "normal", "stddev": 0.05},
            "act_fn": {"name": "leaky_relu", "negative_slope": 0.2},
        },
        {},
        lambda: ICNN(
            dim_data=3,
            dim_hidden=[16, 8],
            ranks=(2, 1, 0, 3),
            init_fn=nn.initializers.normal(0.05),
            act_fn=functools.partial(nn.leaky_relu, negative_slope=0.2),
        ),
    ),
    "pos-weights-softplus": (
        {
            "dim_data": 4,
            "dim_hidden": [32],
            "pos_weights": True,
            "rectifier_fn": "softplus",
            "init_fn": "glorot_uniform",
        },
        {},
        lambda: ICNN(
            dim_data=4,
            dim_hidden=[32],
            pos_weights=True,
            rectifier_fn=nn.softplus,
            init_fn=nn.initializers.glorot_uniform(),
        ),
    ),
}


@pytest.mark.slow  # up to 5.0 s of CPU a case on a warm cache (--cpu-durations)
@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_init_equals_direct_ott_call(case, seed, icnn, write_config, tmp_path):
    model_fields, init_section, make_module = CASES[case]
    config = write_config({"model": model_fields, "init": init_section})
    out = tmp_path / "ckpt"

    result = icnn("init", "--config", config, "--seed", seed, "--out", out, "--json")

    assert result.exit_code == 0, result.stderr
    module = make_module()
    expected = direct_init(module, jax.random.key(seed), module.dim_data)
    assert_trees_identical(restore_plain(out), expected)


@pytest.mark.slow  # 3.5 s of CPU on a warm cache (--cpu-durations)
def test_gaussian_map_config_equals_direct_call(icnn, tmp_path):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    out = tmp_path / "ckpt"

    result = icnn("init", "-c", tmp_path / "configs" / "gaussian_map.yaml", "--out", out)

    assert result.exit_code == 0, result.stderr
    source = jnp.asarray(np.load(CONFIGS / "samples" / "source.npy"))
    target = jnp.asarray(np.load(CONFIGS / "samples" / "target.npy"))
    module = ICNN(dim_data=2, dim_hidden=[64, 64], gaussian_map_samples=(source, target))
    assert_trees_identical(restore_plain(out), direct_init(module, jax.random.key(0), 2))


@pytest.mark.slow  # 2.4 s of CPU on a warm cache (--cpu-durations)
def test_named_streams_follow_flax_rngs_dict(icnn, write_config, tmp_path):
    config = write_config(
        {"model": {"dim_data": 2, "dim_hidden": [8]}, "init": {"rngs": {"params": 11}}}
    )

    assert icnn("init", "-c", config, "--out", tmp_path / "a").exit_code == 0

    module = ICNN(dim_data=2, dim_hidden=[8])
    expected = direct_init(module, {"params": jax.random.key(11)}, 2)
    assert_trees_identical(restore_plain(tmp_path / "a"), expected)


def test_derived_stream_is_fold_in_of_master_key_by_crc32(icnn, write_config, tmp_path):
    import zlib

    config = write_config(
        {
            "model": {"dim_data": 2, "dim_hidden": [8]},
            "init": {"seed": 5, "rngs": {"params": "derive"}},
        }
    )

    assert icnn("init", "-c", config, "--out", tmp_path / "a").exit_code == 0

    key = jax.random.fold_in(jax.random.key(5), zlib.crc32(b"params"))
    expected = direct_init(ICNN(dim_data=2, dim_hidden=[8]), {"params": key}, 2)
    assert_trees_identical(restore_plain(tmp_path / "a"), expected)


@pytest.mark.slow  # 2.6 s of CPU on a warm cache (--cpu-durations)
def test_rng_impl_and_stored_dtype(icnn, write_config, tmp_path):
    config = write_config(
        {
            "model": {"dim_data": 2, "dim_hidden": [8]},
            "init": {"seed": 3, "rng_impl": "rbg", "dtype": "bfloat16"},
        }
    )

    assert icnn("init", "-c", config, "--out", tmp_path / "a").exit_code == 0

    expected = direct_init(ICNN(dim_data=2, dim_hidden=[8]), jax.random.key(3, impl="rbg"), 2)
    expected = jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), expected)
    assert_trees_identical(restore_plain(tmp_path / "a"), expected)


@pytest.mark.slow  # 3.6 s of CPU on a warm cache (--cpu-durations)
def test_capture_intermediates_stores_layer_outputs(icnn, write_config, tmp_path):
    config = write_config(
        {"model": {"dim_data": 2, "dim_hidden": [8]}, "init": {"capture_intermediates": True}}
    )

    assert icnn("init", "-c", config, "--out", tmp_path / "a").exit_code == 0

    module = ICNN(dim_data=2, dim_hidden=[8])
    expected = direct_init(module, jax.random.key(0), 2, capture_intermediates=True)
    restored = restore_plain(tmp_path / "a")
    assert set(restored) == {"params", "intermediates"}
    assert_trees_identical(restored, expected)
