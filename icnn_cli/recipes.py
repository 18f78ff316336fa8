"""``init.recipe`` and ``init.overrides``: how an ICNN's parameters start, beyond OTT's init.

Every recipe starts from OTT's own ``ICNN.init`` (the ``params`` stream, untouched) and
changes some leaves after it, drawing from streams of its own, so adding a recipe never
changes what the ``params`` stream gives:

* ``ott``: nothing changes; the init is the very call ``jax.jit(module.init)(key, x)``.
* ``principled`` (Hoedt & Klambauer, NeurIPS 2023, "Principled Weight Initialisation for
  Input-Convex Neural Networks"; ml-jku/convex-init ``convex_init.py``): every ``w_zs``
  kernel is drawn log-normal with the mean and variance of the paper's fan-in formulas
  (stream ``principled``), and the bias added to ``w_zs_i(z)`` (OTT: ``w_xs_{i+1}/bias``)
  is the constant ``-n E[w] sqrt(variance / 2 pi)``. With ``pos_weights`` the raw kernel is
  the rectifier's inverse of the draw, so the weights the forward pass uses are log-normal.
* ``data-dependent`` (LSUV / ActNorm, restricted to what keeps an ICNN convex): layer by
  layer on probe inputs (stream ``probe``, or a samples file), each unit's whole
  pre-activation is multiplied by a positive factor and shifted, to mean 0 and variance 1.
  A positive factor and a shift keep every convexity property the architecture has.

``init.overrides`` replace leaves by path glob before the recipe runs, each rule from the
stream ``override:<path>``.

Which leaf plays which role in OTT's ICNN is :mod:`icnn_cli.model`'s knowledge
(:func:`~icnn_cli.model.icnn_layers`); this module only does the arithmetic.
"""

from __future__ import annotations

import fnmatch
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icnn_cli import registry
from icnn_cli.config import IcnnConfig, InitConfig, InitOverride
from icnn_cli.errors import ConfigError

PRINCIPLED_STREAM = "principled"
PROBE_STREAM = "probe"
OVERRIDE_STREAM_PREFIX = "override:"
PROBE_ROLE = "probe"
PROBE_FIELD = "init.recipe.samples_file"
# A unit whose pre-activation is constant over the probes (dead) is shifted, not scaled.
MIN_PROBE_VARIANCE = 1e-12
BISECTION_STEPS = 80  # halves a bracket of width 2 * BRACKET to float32 resolution
BRACKET = 128.0


def recipe_name(init: InitConfig) -> str:
    return init.recipe["name"]


def override_stream(rule: InitOverride) -> str:
    return f"{OVERRIDE_STREAM_PREFIX}{rule.path}"


def stream_names(init: InitConfig) -> list[str]:
    """The RNG streams the recipe and overrides draw from, besides Flax's ``params``."""
    names = [override_stream(rule) for rule in init.overrides]
    arguments = registry.recipe_arguments(init.recipe)
    if recipe_name(init) == registry.PRINCIPLED_RECIPE:
        names.append(PRINCIPLED_STREAM)
    elif recipe_name(init) == registry.DATA_DEPENDENT_RECIPE and "samples_file" not in arguments:
        names.append(PROBE_STREAM)
    return names


def changes_ott_init(init: InitConfig) -> bool:
    return recipe_name(init) != registry.OTT_RECIPE or bool(init.overrides)


def load_probe_samples(config: IcnnConfig, base_dir: Path) -> tuple[Any, list[Any]]:
    """The ``data-dependent`` recipe's ``samples_file`` (relative to ``base_dir``) as a
    float32 array ``[n, dim_data]`` and its :class:`~icnn_cli.model.SampleFile`; ``None``
    and ``[]`` when the config names no such file."""
    from icnn_cli import model

    name = registry.recipe_arguments(config.init.recipe).get("samples_file")
    if recipe_name(config.init) != registry.DATA_DEPENDENT_RECIPE or name is None:
        return None, []
    array, record = model.load_sample_file(
        base_dir / name, PROBE_ROLE, config.model.dim_data, field=PROBE_FIELD
    )
    return array.astype("float32"), [record]


# --- the principled recipe's formulas ---------------------------------------------------


def principled_weight_moments(fan_in: int, rho: float, leaky_slope: float) -> tuple[float, float]:
    """``(E[w], Var[w])`` of a layer's non-negative weights (Hoedt & Klambauer, eq. for
    ``f_c``; ``ConvexInitialiser.compute_parameters`` in ml-jku/convex-init)."""
    n = fan_in
    correlation_term = math.sqrt(1 - rho**2) + rho * math.acos(-rho)
    f_c = n * (math.pi - n + (n - 1) * correlation_term) / (2 * math.pi)
    mean = math.sqrt(rho / f_c)
    variance = 2 / (1 + leaky_slope**2) * (1 - rho) / n
    return mean, variance


def principled_bias(fan_in: int, rho: float, variance: float, leaky_slope: float = 0.0) -> float:
    """The constant bias ``-n sqrt(E[w]^2 variance / (2 pi))`` of a layer of fan-in ``n``."""
    mean, _ = principled_weight_moments(fan_in, rho, leaky_slope)
    return -fan_in * math.sqrt(mean**2 * variance / (2 * math.pi))


def log_normal_parameters(mean: float, variance: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the log-normal with that mean and variance."""
    sigma_squared = math.log1p(variance / mean**2)
    return math.log(mean) - sigma_squared / 2, math.sqrt(sigma_squared)


# --- the init with a recipe -------------------------------------------------------------


def with_recipe(
    base_init: Callable[..., Any], module: Any, init: InitConfig, probes: Any = None
) -> Callable[..., Any]:
    """``base_init`` (``module.init`` with the config's options), followed by the overrides
    and the recipe; ``base_init`` itself when neither changes anything (``ott``).

    The returned function takes the ``rngs`` that :func:`icnn_cli.rngs.derive_stream_keys`
    gives (the recipe's streams included) and the dummy input, like ``module.init``.
    """
    if not changes_ott_init(init):
        return base_init
    own_streams = stream_names(init)
    arguments = registry.recipe_arguments(init.recipe)
    name = recipe_name(init)
    if name == registry.DATA_DEPENDENT_RECIPE and "samples_file" in arguments and probes is None:
        raise ValueError("init.recipe.samples_file is configured but no probe array was given")

    def init_with_recipe(rngs: Any, inputs: Any) -> Any:
        module_rngs, keys = _split_streams(rngs, own_streams, plain=init.rngs is None)
        variables = dict(base_init(module_rngs, inputs))
        variables = apply_overrides(variables, init.overrides, keys)
        if "params" not in variables:
            return variables
        if name == registry.PRINCIPLED_RECIPE:
            params = principled(module, variables["params"], keys[PRINCIPLED_STREAM], arguments)
            variables["params"] = params
        elif name == registry.DATA_DEPENDENT_RECIPE:
            points = probes
            if points is None:
                points = _standard_normal_probes(
                    keys[PROBE_STREAM], arguments["samples"], module.dim_data
                )
            variables["params"] = data_dependent(module, variables["params"], points)
        return variables

    # named like module.init, so the compile cache's entries read the same
    init_with_recipe.__name__ = "init"
    return init_with_recipe


def _split_streams(rngs: Any, own: Sequence[str], plain: bool) -> tuple[Any, dict[str, Any]]:
    """Flax's streams and the recipe's; with no ``init.rngs`` Flax gets the bare master key,
    exactly the key the plain call passes."""
    if not isinstance(rngs, Mapping):
        return rngs, {}
    keys = {name: rngs[name] for name in own}
    flax_streams = {name: key for name, key in rngs.items() if name not in own}
    return (flax_streams["params"] if plain else flax_streams), keys


def _standard_normal_probes(key: Any, count: int, dim_data: int) -> Any:
    import jax

    return jax.random.normal(key, (count, dim_data))


# --- tree surgery ------------------------------------------------------------------------


def get_leaf(tree: Any, path: Sequence[str]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def has_leaf(tree: Any, path: Sequence[str]) -> bool:
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            return False
        tree = tree[part]
    return True


def set_leaf(tree: Any, path: Sequence[str], value: Any) -> Any:
    """A copy of ``tree`` with the leaf at ``path`` replaced (dicts keep their key order)."""
    head, *rest = path
    copy = dict(tree)
    copy[head] = set_leaf(tree[head], rest, value) if rest else value
    return copy


# --- overrides ---------------------------------------------------------------------------


def apply_overrides(
    variables: Any, overrides: Sequence[InitOverride], keys: Mapping[str, Any]
) -> Any:
    """Each leaf matched by a rule (the first that matches) drawn by that rule's initializer.

    Each leaf gets its own key, ``fold_in(stream key, crc32(leaf path))``, so two leaves of
    one rule differ and a leaf's values do not depend on which other leaves match.
    """
    if not overrides:
        return variables
    import jax

    from icnn_cli.tree_paths import flatten_with_paths

    leaves = flatten_with_paths(variables)
    paths = ["/".join(path) for path, _ in leaves]
    for index, rule in enumerate(overrides):
        if not any(fnmatch.fnmatchcase(path, rule.path) for path in paths):
            raise ConfigError(
                f"init.overrides[{index}].path: {rule.path!r} matches no leaf "
                f"(paths look like {paths[0]!r})"
            )
    for path, leaf in leaves:
        text = "/".join(path)
        rule = next((rule for rule in overrides if fnmatch.fnmatchcase(text, rule.path)), None)
        if rule is None:
            continue
        spec = rule.init
        initializer = registry.resolve_initializer(
            spec["name"], {key: value for key, value in spec.items() if key != "name"}
        )
        key = jax.random.fold_in(keys[override_stream(rule)], zlib.crc32(text.encode("utf-8")))
        variables = set_leaf(variables, path, initializer(key, leaf.shape, leaf.dtype))
    return variables


# --- principled ----------------------------------------------------------------------------


def principled(module: Any, params: Any, key: Any, arguments: Mapping[str, Any]) -> Any:
    """Log-normal ``w_zs`` kernels and the paper's constant bias on every layer after the first."""
    import jax
    import jax.numpy as jnp

    from icnn_cli import model

    rho, variance, slope = arguments["rho"], arguments["variance"], arguments["leaky_slope"]
    params = {"params": params}
    for layer in model.icnn_layers(module):
        if layer.weights is None:
            continue
        kernel = get_leaf(params, layer.weights)
        fan_in = kernel.shape[0]
        mean, weight_variance = principled_weight_moments(fan_in, rho, slope)
        mu, sigma = log_normal_parameters(mean, weight_variance)
        normal = jax.random.normal(jax.random.fold_in(key, layer.index), kernel.shape)
        weights = jnp.exp(mu + sigma * normal).astype(kernel.dtype)
        if layer.weight_rectifier is not None:
            weights = invert_increasing(layer.weight_rectifier, weights)
        params = set_leaf(params, layer.weights, weights)
        bias = get_leaf(params, layer.bias)
        constant = principled_bias(fan_in, rho, variance, slope)
        params = set_leaf(params, layer.bias, jnp.full_like(bias, constant))
    return params["params"]


def invert_increasing(function: Callable[[Any], Any], target: Any) -> Any:
    """``x`` with ``function(x) == target`` elementwise, for a non-decreasing ``function``:
    ``target`` itself where ``function`` leaves it unchanged (relu on positive values, so
    exact), else by bisection on ``[-BRACKET, max(target) + BRACKET]``."""
    import jax
    import jax.numpy as jnp

    low = jnp.full_like(target, -BRACKET)
    high = jnp.full_like(target, jnp.max(target) + BRACKET)

    def halve(_: int, bounds: tuple[Any, Any]) -> tuple[Any, Any]:
        low, high = bounds
        middle = 0.5 * (low + high)
        below = function(middle) < target
        return jnp.where(below, middle, low), jnp.where(below, high, middle)

    low, high = jax.lax.fori_loop(0, BISECTION_STEPS, halve, (low, high))
    return jnp.where(function(target) == target, target, 0.5 * (low + high))


# --- data-dependent --------------------------------------------------------------------------


def data_dependent(module: Any, params: Any, probes: Any) -> Any:
    """Each layer in turn: every unit's pre-activation scaled by ``1 / std`` and shifted by
    ``-mean / std`` over the probes, the layers before it already normalised.

    The factor multiplies the whole pre-activation ``w_zs(z) + w_xs(x)``: the ``w_zs``
    column (through the rectifier's inverse with ``pos_weights``), the linear kernel, the
    low-rank factor by its square root, the diagonal through softplus's inverse, and the bias.
    """
    import jax.numpy as jnp

    from icnn_cli import model

    probes = jnp.asarray(probes, jnp.float32)
    variables = {"params": params}
    for layer in model.icnn_layers(module):
        pre_activation = model.pre_activations(module, variables, probes)[layer.index]
        mean = jnp.mean(pre_activation, axis=0)
        spread = jnp.var(pre_activation, axis=0)
        scale = jnp.where(spread > MIN_PROBE_VARIANCE, 1 / jnp.sqrt(spread), 1.0)
        variables = scale_layer(variables, layer, scale, mean)
    return variables["params"]


def scale_layer(variables: Any, layer: Any, scale: Any, mean: Any) -> Any:
    """``layer``'s pre-activation ``h`` becomes ``scale * (h - mean)`` (per unit, ``scale > 0``)."""
    import jax.numpy as jnp

    from icnn_cli import model

    if layer.weights is not None:
        kernel = get_leaf(variables, layer.weights)
        variables = set_leaf(
            variables, layer.weights, scale_rectified(kernel, scale, layer.weight_rectifier)
        )
    diagonal = get_leaf(variables, layer.diagonal)
    softplus = model.diagonal_rectifier()
    variables = set_leaf(
        variables,
        layer.diagonal,
        inverse_softplus(scale * softplus(diagonal)).astype(diagonal.dtype),
    )
    if has_leaf(variables, layer.low_rank):
        factor = get_leaf(variables, layer.low_rank)
        variables = set_leaf(variables, layer.low_rank, factor * jnp.sqrt(scale)[:, None, None])
    linear = get_leaf(variables, layer.linear)
    variables = set_leaf(variables, layer.linear, linear * scale)
    bias = get_leaf(variables, layer.bias)
    return set_leaf(variables, layer.bias, scale * (bias - mean))


def scale_rectified(kernel: Any, scale: Any, rectifier: Callable[[Any], Any] | None) -> Any:
    """A kernel whose columns, as the forward pass uses them, are ``scale`` times the old ones."""
    import jax.numpy as jnp

    scaled = kernel * scale
    if rectifier is None:
        return scaled
    target = scale * rectifier(kernel)
    # a positively homogeneous rectifier (relu) commutes with the factor: exact
    return jnp.where(rectifier(scaled) == target, scaled, invert_increasing(rectifier, target))


def inverse_softplus(values: Any) -> Any:
    """``log(expm1(y))``, written to stay finite for small and large ``y > 0``."""
    import jax.numpy as jnp

    return values + jnp.log(-jnp.expm1(-values))
