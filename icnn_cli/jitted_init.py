"""The jitted ``Module.init`` (on one device or a mesh), its ``eval_shape`` dry run, backends."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from icnn_cli.config import InitConfig
from icnn_cli.errors import IcnnError, UsageError

PLATFORMS = ("cpu", "gpu", "tpu")


def select_device(platform: str | None) -> Any:
    """This process's first device of ``platform`` (``None``: JAX's default backend).

    Local, not ``jax.devices()[0]``: in a multi-process run that one belongs to process 0.
    """
    import jax

    if platform is None:
        return jax.local_devices()[0]
    try:
        return jax.local_devices(backend=platform)[0]
    except RuntimeError:
        available = sorted({device.platform for device in jax.devices()})
        raise UsageError(
            f"no {platform.upper()} backend is available here (JAX found: {', '.join(available)})",
            "platform",
            platform,
        ) from None


def init_function(module: Any, init: InitConfig, probes: Any = None) -> Any:
    """``module.init`` with the options the config sets (method, mutable, intermediates),
    followed by ``init.overrides`` and ``init.recipe`` (:mod:`icnn_cli.recipes`).

    Args:
      probes: the ``data-dependent`` recipe's probe points ``[n, dim_data]`` when the
        config names a ``samples_file`` (:func:`icnn_cli.recipes.load_probe_samples`).
    """
    from icnn_cli import recipes

    # Only arguments the config sets are passed, so the default case is the
    # very call users write: jax.jit(module.init)(key, x).
    options: dict[str, Any] = {}
    if init.method is not None:
        options["method"] = init.method
    if init.mutable is not None:
        options["mutable"] = init.mutable
    if init.capture_intermediates:
        options["capture_intermediates"] = True
    plain = functools.partial(module.init, **options) if options else module.init
    return recipes.with_recipe(plain, module, init, probes)


def dummy_input(input_shape: tuple[int, ...]) -> Any:
    import jax.numpy as jnp

    return jnp.ones(input_shape)


def compiled_init(
    module: Any,
    init: InitConfig,
    input_shape: tuple[int, ...],
    out_shardings: Any = None,
    probes: Any = None,
) -> Callable[[Any], Any]:
    """``rngs -> jax.jit(module.init)(rngs, ones(input_shape))``, cast to ``init.dtype``.

    The jitted function is built once and reused, so a seed sweep compiles once:
    keys of the same implementation and tree structure hit JAX's jit cache.

    With ``out_shardings`` (a tree of ``NamedSharding``, see :mod:`icnn_cli.sharding`)
    each device computes only its own shards. With ``jax_threefry_partitionable``
    (on by default since JAX 0.5) the random bits do not depend on the layout,
    so the values equal the one-device init bit for bit.
    """
    import jax

    inputs = dummy_input(input_shape)
    if out_shardings is None:
        jitted = jax.jit(init_function(module, init, probes))

        def run(rngs: Any) -> Any:
            return cast_floating(jitted(rngs, inputs), init.dtype)

        return run
    if not jax.config.values["jax_threefry_partitionable"]:
        raise IcnnError(
            "a sharded init needs jax_threefry_partitionable on (unset "
            "JAX_THREEFRY_PARTITIONABLE): without it the values would depend on the mesh"
        )
    function = init_function(module, init, probes)

    def init_and_cast(rngs: Any, inputs: Any) -> Any:
        # Cast inside the jit, so no float32 copy of a shard outlives it.
        return cast_floating(function(rngs, inputs), init.dtype)

    sharded = jax.jit(init_and_cast, out_shardings=out_shardings)
    return lambda rngs: sharded(rngs, inputs)


def abstract_variables(
    module: Any, rngs: Any, init: InitConfig, input_shape: tuple[int, ...], probes: Any = None
) -> Any:
    """Shapes and dtypes of the variables, from ``jax.eval_shape``: nothing is computed."""
    import jax

    # The dummy input stays abstract too: a dry run of dim_data 2e12 must not allocate 8 TB.
    abstract_input = jax.eval_shape(lambda: dummy_input(input_shape))
    shapes = jax.eval_shape(init_function(module, init, probes), rngs, abstract_input)
    return cast_floating(shapes, init.dtype)


def cast_floating(tree: Any, dtype: str) -> Any:
    """Cast floating leaves to ``dtype``; a no-op (same arrays) for float32."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    target = np.dtype(jnp.dtype(dtype))

    def cast(leaf: Any) -> Any:
        if not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == target:
            return leaf
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(leaf.shape, target)
        return leaf.astype(target)

    return jax.tree.map(cast, tree)
