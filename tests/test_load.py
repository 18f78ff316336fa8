"""`icnn_cli.load` rebuilds the OTT module so apply, gradients and the transport map work."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.neural.networks.icnn import ICNN

import icnn_cli
from tests.helpers import CONFIGS, tiny_model


@pytest.mark.slow  # 4.8 s of CPU on a warm cache (--cpu-durations)
def test_load_gives_a_module_that_applies(icnn, write_config, tmp_path):
    config = write_config({"model": tiny_model(act_fn="softplus", pos_weights=True)})
    out = tmp_path / "ckpt"
    assert icnn("init", "-c", config, "--seed", 3, "--out", out).exit_code == 0

    module, variables = icnn_cli.load(out)

    x = jnp.array([[0.5, -1.0], [2.0, 0.25]])
    direct = ICNN(dim_data=2, dim_hidden=[8, 8], act_fn=jax.nn.softplus, pos_weights=True)
    expected_vars = jax.jit(direct.init)(jax.random.key(3), jnp.ones((1, 2)))
    np.testing.assert_array_equal(module.apply(variables, x), direct.apply(expected_vars, x))
    transport = jax.vmap(jax.grad(lambda p: module.apply(variables, p)))(x)
    assert transport.shape == (2, 2) and bool(jnp.all(jnp.isfinite(transport)))


@pytest.mark.slow  # 4.9 s of CPU on a warm cache (--cpu-durations)
def test_load_of_a_gaussian_map_checkpoint_applies(icnn, tmp_path):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    out = tmp_path / "ckpt"
    assert (
        icnn("init", "-c", tmp_path / "configs" / "gaussian_map.yaml", "--out", out).exit_code == 0
    )
    shutil.rmtree(tmp_path / "configs")  # the samples are gone: the structure is all apply needs

    module, variables = icnn_cli.load(out)

    assert module.apply(variables, jnp.ones((3, 2))).shape == (3,)


def test_load_refuses_a_checkpoint_whose_arrays_changed(tiny_checkpoint, tmp_path):
    import orbax.checkpoint as ocp

    from icnn_cli.errors import DamagedCheckpoint, IcnnError

    out = tiny_checkpoint  # read here; the tampered copy is written beside the test
    checkpointer = ocp.StandardCheckpointer()
    variables = checkpointer.restore(out.absolute())
    metadata = checkpointer.metadata(out.absolute()).custom_metadata
    variables["params"]["w_zs_0"]["kernel"] = variables["params"]["w_zs_0"]["kernel"] + 1
    tampered = tmp_path / "tampered"
    checkpointer.save(tampered.absolute(), variables, custom_metadata=metadata)
    checkpointer.wait_until_finished()

    try:
        icnn_cli.load(tampered)
    except IcnnError as error:
        assert "does not match the recorded fingerprint" in error.message
        assert isinstance(error, DamagedCheckpoint)
    else:
        raise AssertionError("load accepted arrays that differ from the fingerprint")


def test_load_checks_the_architecture_against_the_embedded_spec(tiny_checkpoint, tmp_path):
    # The spec is not covered by the fingerprint: a spec edited to another
    # architecture must not give a module that silently mismatches the arrays.
    import json

    from icnn_cli.errors import IcnnError

    out = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, out)  # edited below: a copy of the shared one
    metadata_file = out / "_CHECKPOINT_METADATA"
    document = json.loads(metadata_file.read_text())
    document["custom_metadata"]["icnn"]["config"]["model"]["dim_hidden"] = [8, 4]
    metadata_file.write_text(json.dumps(document))

    try:
        icnn_cli.load(out)
    except IcnnError as error:
        assert "does not match its embedded spec" in error.message
    else:
        raise AssertionError("load accepted a spec whose architecture differs from the arrays")
