"""The jitted ``Module.init``, its ``eval_shape`` dry run, and backend selection."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from icnn_cli.config import InitConfig
from icnn_cli.errors import IcnnError

PLATFORMS = ("cpu", "gpu", "tpu")


def select_device(platform: str | None) -> Any:
    """The first device of ``platform`` (``None``: JAX's default backend)."""
    import jax

    if platform is None:
        return jax.devices()[0]
    try:
        return jax.devices(platform)[0]
    except RuntimeError:
        available = sorted({device.platform for device in jax.devices()})
        raise IcnnError(
            f"--platform {platform}: no {platform.upper()} backend is available here "
            f"(JAX found: {', '.join(available)})"
        ) from None


def _init_function(module: Any, init: InitConfig) -> Any:
    # Only arguments the config sets are passed, so the default case is the
    # very call users write: jax.jit(module.init)(key, x).
    options: dict[str, Any] = {}
    if init.method is not None:
        options["method"] = init.method
    if init.mutable is not None:
        options["mutable"] = init.mutable
    if init.capture_intermediates:
        options["capture_intermediates"] = True
    return functools.partial(module.init, **options) if options else module.init


def dummy_input(input_shape: tuple[int, ...]) -> Any:
    import jax.numpy as jnp

    return jnp.ones(input_shape)


def compiled_init(
    module: Any, init: InitConfig, input_shape: tuple[int, ...]
) -> Callable[[Any], Any]:
    """``rngs -> jax.jit(module.init)(rngs, ones(input_shape))``, cast to ``init.dtype``.

    The jitted function is built once and reused, so a seed sweep compiles once:
    keys of the same implementation and tree structure hit JAX's jit cache.
    """
    import jax

    jitted = jax.jit(_init_function(module, init))
    inputs = dummy_input(input_shape)

    def run(rngs: Any) -> Any:
        return cast_floating(jitted(rngs, inputs), init.dtype)

    return run


def abstract_variables(
    module: Any, rngs: Any, init: InitConfig, input_shape: tuple[int, ...]
) -> Any:
    """Shapes and dtypes of the variables, from ``jax.eval_shape``: nothing is computed."""
    import jax

    shapes = jax.eval_shape(_init_function(module, init), rngs, dummy_input(input_shape))
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
