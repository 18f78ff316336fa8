"""Names a config may use for activations, rectifiers and initializers.

The registry is plain data so that validating a config (and printing its JSON
Schema) never imports JAX. Only :func:`resolve_activation` and
:func:`resolve_initializer` import Flax, when a model is actually built.

An ICNN is convex in its input only when every activation is convex and
non-decreasing (Amos et al., 2017), so each activation records both facts, and
``rectifier_fn`` must map weights to non-negative values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class ParameterRange:
    """Closed bounds for one keyword argument; ``None`` means unbounded."""

    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False

    def describe(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_exclusive else '['}{low}, {high}]"

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_exclusive else value < self.low):
            return False
        return self.high is None or value <= self.high


@dataclasses.dataclass(frozen=True)
class ActivationEntry:
    """One activation function, where it lives, and its shape properties.

    ``convex_range`` gives, per keyword argument, the values for which the
    function stays convex and non-decreasing (e.g. ``leaky_relu`` needs a slope
    in [0, 1]).
    """

    module: str
    convex: bool
    non_decreasing: bool
    non_negative: bool
    parameters: Mapping[str, type] = dataclasses.field(default_factory=dict)
    convex_range: Mapping[str, ParameterRange] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class InitializerEntry:
    """One ``flax.linen.initializers`` factory and the keyword arguments it takes.

    ``factory`` is the attribute called with the keyword arguments to build the
    initializer (``zeros`` and ``ones`` are initializers already, so their
    factories are ``zeros_init`` / ``ones_init``).
    """

    factory: str
    parameters: Mapping[str, type] = dataclasses.field(default_factory=dict)


_LINEN = "flax.linen"
_JAX_NN = "jax.nn"
_NUMBER = float
_AXES = int

ACTIVATIONS: Mapping[str, ActivationEntry] = {
    # convex and non-decreasing: usable as act_fn
    "relu": ActivationEntry(_LINEN, True, True, True),
    "leaky_relu": ActivationEntry(
        _LINEN,
        True,
        True,
        False,
        {"negative_slope": _NUMBER},
        {"negative_slope": ParameterRange(0.0, 1.0)},
    ),
    "softplus": ActivationEntry(_LINEN, True, True, True),
    "elu": ActivationEntry(
        _LINEN, True, True, False, {"alpha": _NUMBER}, {"alpha": ParameterRange(0.0, 1.0)}
    ),
    "celu": ActivationEntry(
        _LINEN,
        True,
        True,
        False,
        {"alpha": _NUMBER},
        {"alpha": ParameterRange(0.0, None, low_exclusive=True)},
    ),
    "squareplus": ActivationEntry(
        _JAX_NN, True, True, True, {"b": _NUMBER}, {"b": ParameterRange(0.0, None)}
    ),
    "sparse_plus": ActivationEntry(_JAX_NN, True, True, True),
    # known, but an ICNN built with them is not input-convex
    "gelu": ActivationEntry(_LINEN, False, False, False, {"approximate": bool}),
    "silu": ActivationEntry(_LINEN, False, False, False),
    "swish": ActivationEntry(_LINEN, False, False, False),
    "mish": ActivationEntry(_JAX_NN, False, False, False),
    "selu": ActivationEntry(_LINEN, False, True, False),
    "tanh": ActivationEntry(_LINEN, False, True, False),
    "sigmoid": ActivationEntry(_LINEN, False, True, True),
    "relu6": ActivationEntry(_LINEN, False, True, True),
    "hard_tanh": ActivationEntry(_LINEN, False, True, False),
    "hard_sigmoid": ActivationEntry(_LINEN, False, True, True),
    "hard_silu": ActivationEntry(_LINEN, False, False, False),
    "hard_swish": ActivationEntry(_LINEN, False, False, False),
    "soft_sign": ActivationEntry(_LINEN, False, True, False),
    "log_sigmoid": ActivationEntry(_LINEN, False, True, False),
}

_FAN_AXES = {"in_axis": _AXES, "out_axis": _AXES, "batch_axis": _AXES}

INITIALIZERS: Mapping[str, InitializerEntry] = {
    "lecun_normal": InitializerEntry("lecun_normal", _FAN_AXES),
    "lecun_uniform": InitializerEntry("lecun_uniform", _FAN_AXES),
    "glorot_normal": InitializerEntry("glorot_normal", _FAN_AXES),
    "glorot_uniform": InitializerEntry("glorot_uniform", _FAN_AXES),
    "xavier_normal": InitializerEntry("xavier_normal", _FAN_AXES),
    "xavier_uniform": InitializerEntry("xavier_uniform", _FAN_AXES),
    "he_normal": InitializerEntry("he_normal", _FAN_AXES),
    "he_uniform": InitializerEntry("he_uniform", _FAN_AXES),
    "kaiming_normal": InitializerEntry("kaiming_normal", _FAN_AXES),
    "kaiming_uniform": InitializerEntry("kaiming_uniform", _FAN_AXES),
    "normal": InitializerEntry("normal", {"stddev": _NUMBER}),
    "uniform": InitializerEntry("uniform", {"scale": _NUMBER}),
    "truncated_normal": InitializerEntry(
        "truncated_normal", {"stddev": _NUMBER, "lower": _NUMBER, "upper": _NUMBER}
    ),
    "variance_scaling": InitializerEntry(
        "variance_scaling",
        {"scale": _NUMBER, "mode": str, "distribution": str, **_FAN_AXES},
    ),
    "orthogonal": InitializerEntry("orthogonal", {"scale": _NUMBER, "column_axis": _AXES}),
    "constant": InitializerEntry("constant", {"value": _NUMBER}),
    "zeros": InitializerEntry("zeros_init"),
    "ones": InitializerEntry("ones_init"),
}

_REQUIRED_INITIALIZER_ARGUMENTS = {
    "variance_scaling": ("scale", "mode", "distribution"),
    "constant": ("value",),
}
_VARIANCE_SCALING_CHOICES = {
    "mode": ("fan_in", "fan_out", "fan_avg", "fan_geo_avg"),
    "distribution": ("truncated_normal", "normal", "uniform"),
}

CONVEX_ACTIVATIONS = tuple(
    name for name, entry in ACTIVATIONS.items() if entry.convex and entry.non_decreasing
)
RECTIFIERS = tuple(name for name, entry in ACTIVATIONS.items() if entry.non_negative)


def _check_keyword_arguments(
    kind: str, name: str, given: Mapping[str, Any], accepted: Mapping[str, type]
) -> None:
    for key, value in given.items():
        if key not in accepted:
            allowed = ", ".join(accepted) or "none"
            raise ValueError(f"{kind} '{name}' takes no argument '{key}' (accepted: {allowed})")
        expected = accepted[key]
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise ValueError(
                f"{kind} '{name}': argument '{key}' must be {_type_word(expected)}, got {value!r}"
            )


def _type_word(expected: type) -> str:
    return {float: "a finite number", int: "an integer", bool: "true or false", str: "a string"}[
        expected
    ]


def check_activation(name: str, arguments: Mapping[str, Any], role: str) -> None:
    """Raise ``ValueError`` unless ``name(**arguments)`` is valid for ``role``.

    Args:
      name: registry name, e.g. ``"leaky_relu"``.
      arguments: keyword arguments bound to the function.
      role: ``"act_fn"`` (must be convex and non-decreasing) or
        ``"rectifier_fn"`` (must be non-negative).
    """
    entry = ACTIVATIONS.get(name)
    if entry is None:
        choices = CONVEX_ACTIVATIONS if role == "act_fn" else RECTIFIERS
        raise ValueError(f"unknown activation '{name}' (choose from: {', '.join(choices)})")
    _check_keyword_arguments("activation", name, arguments, entry.parameters)
    if role == "act_fn":
        if not (entry.convex and entry.non_decreasing):
            missing = " and ".join(
                word
                for word, holds in (
                    ("convex", entry.convex),
                    ("non-decreasing", entry.non_decreasing),
                )
                if not holds
            )
            raise ValueError(
                f"'{name}' is not {missing}, so the ICNN would not be input-convex "
                f"(use one of: {', '.join(CONVEX_ACTIVATIONS)})"
            )
        for key, bounds in entry.convex_range.items():
            if key in arguments and not bounds.contains(arguments[key]):
                raise ValueError(
                    f"'{name}' with {key}={arguments[key]!r} is not convex and non-decreasing "
                    f"({key} must be in {bounds.describe()})"
                )
    elif role == "rectifier_fn" and not entry.non_negative:
        raise ValueError(
            f"'{name}' can return negative values, so it cannot keep weights non-negative "
            f"(use one of: {', '.join(RECTIFIERS)})"
        )


def check_initializer(name: str, arguments: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``flax.linen.initializers.<name>(**arguments)`` is valid."""
    entry = INITIALIZERS.get(name)
    if entry is None:
        raise ValueError(f"unknown initializer '{name}' (choose from: {', '.join(INITIALIZERS)})")
    _check_keyword_arguments("initializer", name, arguments, entry.parameters)
    missing = [key for key in _REQUIRED_INITIALIZER_ARGUMENTS.get(name, ()) if key not in arguments]
    if missing:
        raise ValueError(f"initializer '{name}' needs argument(s): {', '.join(missing)}")
    for key, choices in _VARIANCE_SCALING_CHOICES.items():
        if name == "variance_scaling" and arguments.get(key) not in choices:
            raise ValueError(
                f"initializer 'variance_scaling': {key} must be one of {', '.join(choices)}"
            )


def resolve_activation(name: str, arguments: Mapping[str, Any]) -> Callable[..., Any]:
    """The activation function for a validated registry name, with its arguments bound."""
    import functools
    import importlib

    function = getattr(importlib.import_module(ACTIVATIONS[name].module), name)
    return functools.partial(function, **arguments) if arguments else function


def resolve_initializer(name: str, arguments: Mapping[str, Any]) -> Callable[..., Any]:
    """The Flax initializer for a validated registry name."""
    from flax.linen import initializers

    return getattr(initializers, INITIALIZERS[name].factory)(**arguments)


# --- init recipes (icnn_cli/recipes.py does the math) ------------------------------------


@dataclasses.dataclass(frozen=True)
class RecipeEntry:
    """One ``init.recipe``: the keyword arguments it takes, their ranges and defaults."""

    summary: str
    parameters: Mapping[str, type] = dataclasses.field(default_factory=dict)
    ranges: Mapping[str, ParameterRange] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


OTT_RECIPE = "ott"
PRINCIPLED_RECIPE = "principled"
DATA_DEPENDENT_RECIPE = "data-dependent"
DEFAULT_PROBE_SAMPLES = 1024

RECIPES: Mapping[str, RecipeEntry] = {
    OTT_RECIPE: RecipeEntry("OTT's ICNN.init, unchanged"),
    PRINCIPLED_RECIPE: RecipeEntry(
        "Hoedt & Klambauer (NeurIPS 2023): log-normal w_zs kernels, a negative bias per layer",
        {"rho": _NUMBER, "variance": _NUMBER, "leaky_slope": _NUMBER},
        {
            # rho = 0 gives E[w] = 0 and rho = 1 a zero variance: no log-normal has either
            "rho": ParameterRange(0.0, None, low_exclusive=True),
            "variance": ParameterRange(0.0, None, low_exclusive=True),
            "leaky_slope": ParameterRange(0.0, 1.0),
        },
        {"rho": 0.5, "variance": 1.0, "leaky_slope": 0.0},
    ),
    DATA_DEPENDENT_RECIPE: RecipeEntry(
        "scale and shift every layer's pre-activation to mean 0, variance 1 on probe inputs",
        {"samples": int, "samples_file": str},
        {"samples": ParameterRange(2.0, None)},
        {"samples": DEFAULT_PROBE_SAMPLES},
    ),
}


def check_recipe(name: str, arguments: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``init.recipe`` ``{name, **arguments}`` is valid."""
    entry = RECIPES.get(name)
    if entry is None:
        raise ValueError(f"unknown recipe '{name}' (choose from: {', '.join(RECIPES)})")
    _check_keyword_arguments("recipe", name, arguments, entry.parameters)
    for key, bounds in entry.ranges.items():
        if key in arguments and not bounds.contains(arguments[key]):
            raise ValueError(f"recipe '{name}': {key} must be in {bounds.describe()}")
    if name == PRINCIPLED_RECIPE and arguments.get("rho", 0.5) >= 1:
        raise ValueError(f"recipe '{name}': rho must be below 1 (rho = 1 leaves no variance)")
    if name == DATA_DEPENDENT_RECIPE and {"samples", "samples_file"} <= set(arguments):
        raise ValueError(f"recipe '{name}': give samples or samples_file, not both")


def recipe_arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A validated recipe's arguments with its defaults filled in."""
    entry = RECIPES[spec["name"]]
    given = {key: value for key, value in spec.items() if key != "name"}
    defaults = dict(entry.defaults)
    if "samples_file" in given:
        defaults.pop("samples", None)
    return {**defaults, **given}
