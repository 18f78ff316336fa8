"""Write the golden checkpoints under tests/data/golden/ (run from the repository root).

    .venv/bin/python tests/data/make_golden.py

One small checkpoint per Orbax layout icnn must read, all holding the same mixed
tree (float32, bfloat16, int, bool, a scalar, a list, typed PRNG keys of two
impls, NaN/Inf and all-zero leaves), plus one sharded over 8 forced CPU devices
(written in a child process, since the device count is fixed when JAX starts)
and one of icnn's own format. tests/test_layouts.py checks that the installed
Orbax still reads every one of them as this script describes them, so an
upgrade that changes the on-disk format fails `make test`.

Written with orbax-checkpoint 0.12.8, jax 0.10.2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden"
DEVICES = 8

# name -> PyTreeCheckpointHandler options
LAYOUTS: dict[str, dict[str, Any]] = {
    "ocdbt_zstd": {},  # Orbax's default: OCDBT, zarr2, zstd level 1
    "per_leaf": {"use_ocdbt": False},  # one zarr directory per leaf
    "zarr3": {"use_zarr3": True},
    "uncompressed": {"use_compression": False},
}
SHARDED = "sharded_8_devices"
ICNN = "icnn_tiny"
ICNN_CONFIG = {"model": {"dim_data": 2, "dim_hidden": [3, 3, 3]}, "init": {"seed": 7}}


def mixed_tree() -> dict[str, Any]:
    """The tree in every layout checkpoint; its numbers are easy to check by hand."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    return {
        "params": {
            "dense_0": {
                "kernel": np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5,
                "bias": jnp.array([0.5, -0.5], jnp.bfloat16),
            },
            "dense_1": {
                "kernel": np.arange(6, dtype=np.float32).reshape(3, 2) / 4,
                "bias": jnp.array([1.0, 2.0], jnp.bfloat16),
            },
        },
        "anomalies": {
            "nan_inf": np.array([1.0, np.nan, np.inf, -np.inf, 3.0], np.float32),
            "zeros": np.zeros((2, 2), np.float32),
        },
        "mask": np.array([True, False, True, True]),
        "counts": np.array([-3, 0, 7], np.int8),
        "step": np.int64(12),
        "layers": [np.ones(2, np.float32), np.full(2, -2.0, np.float32)],
        "rngs": {
            "dropout": jax.random.key(3),
            "noise": jax.random.split(jax.random.key(1, impl="rbg"), 2),
        },
    }


def write_layouts() -> None:
    import orbax.checkpoint as ocp

    for name, options in LAYOUTS.items():
        target = GOLDEN / name
        shutil.rmtree(target, ignore_errors=True)
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(**options)) as checkpointer:
            checkpointer.save(target, args=ocp.args.PyTreeSave(mixed_tree()))


def sharded_tree() -> dict[str, Any]:
    """Needs 8 devices: ``w`` split over all of them, ``b`` replicated, a key on device 0."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((DEVICES,), ("x",))
    return {
        "params": {
            "w": jax.device_put(
                jnp.arange(32, dtype=jnp.float32).reshape(8, 4) - 8, NamedSharding(mesh, P("x"))
            ),
            "b": jax.device_put(jnp.zeros(4, jnp.float32), NamedSharding(mesh, P())),
        },
        "rng": jax.random.key(5),
    }


def write_sharded(target: Path) -> None:
    """Save :func:`sharded_tree` in a child process that sees 8 CPU devices."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import make_golden as g; "
        "import jax; assert jax.device_count() == g.DEVICES; "
        "import orbax.checkpoint as ocp; from pathlib import Path; "
        "c = ocp.StandardCheckpointer(); c.save(Path(sys.argv[2]).absolute(), g.sharded_tree()); "
        "c.wait_until_finished(); c.close()"
    )
    environment = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
        "JAX_PLATFORMS": "cpu",
    }
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(target)],
        env=environment,
        check=True,
    )


def write_icnn(target: Path) -> None:
    from icnn_cli.config import IcnnConfig
    from icnn_cli.pipeline import InitRequest, run_init

    config = IcnnConfig.model_validate(ICNN_CONFIG)
    run_init(InitRequest(config=config, config_dir=Path("."), output=target, force=True))


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    write_layouts()
    write_sharded(GOLDEN / SHARDED)
    write_icnn(GOLDEN / ICNN)


if __name__ == "__main__":
    main()
