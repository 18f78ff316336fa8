"""``icnn inspect --health``: how the ICNN behaves on a probe batch, right after init or later.

Per layer, what Hoedt & Klambauer (NeurIPS 2023) track for signal propagation: the
pre-activations' mean and variance and the mean correlation between the pre-activations
of different inputs (near 1: the layer sees every input alike); the share of dead units
(output exactly 0 at every probe point) and the activations' mean and std. Then whether
the ICNN is convex as initialised (the architecture's certificate, or a Jensen-gap probe),
a verdict on the signal (exploding, vanishing, inputs alike, dead) with the recipe to
try; for the potential f, its mean and std; and how far the
transport map grad f is from the map the init is meant to mimic: the identity
(the final quadratic potential of OTT's default init is |x|^2 / 2) or the
Gaussian (Bures) map between the recorded samples.

Example::

    report = probe_health(load_model("ckpt"), points=256)
    report.layers[0].dead_fraction
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from icnn_cli import model as icnn_model
from icnn_cli.analysis.loading import LoadedModel, load_model
from icnn_cli.checkpoint.storage import StoragePath

DEFAULT_PROBE = 256
PROBE_SEED = 0  # the standard-normal probe is the same on every run
JENSEN_PAIRS = 1024
JENSEN_SEED = 1

# verdict thresholds: a factor 2 per layer compounds to 256 over 8 layers
EXPLODING_GROWTH = 2.0
VANISHING_GROWTH = 0.5
ALIKE_CORRELATION = 0.95  # mean correlation between inputs above which they look alike
DEAD_SHARE = 0.5
SUGGESTED_RECIPE = "data-dependent"

VerdictKind = Literal["healthy", "exploding", "vanishing", "inputs alike", "dead units"]


@dataclasses.dataclass(frozen=True)
class LayerHealth:
    name: str
    formula: str
    units: int
    dead_units: int
    mean: float
    std: float
    pre_activation_mean: float = 0.0
    pre_activation_variance: float = 0.0
    correlation: float | None = None  # between different inputs; None for a one-unit layer

    @property
    def dead_fraction(self) -> float:
        return self.dead_units / self.units if self.units else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "layer": self.name,
            "computes": self.formula,
            "units": self.units,
            "dead_units": self.dead_units,
            "dead_fraction": self.dead_fraction,
            "mean": self.mean,
            "std": self.std,
            "pre_activation": {
                "mean": self.pre_activation_mean,
                "variance": self.pre_activation_variance,
                "correlation": self.correlation,
            },
        }


@dataclasses.dataclass(frozen=True)
class ConvexityAtInit:
    """Convex as it stands: ``certified`` by the architecture (every w_zs weight >= 0 as used,
    PSD quadratics, a convex non-decreasing act_fn), else what a Jensen-gap probe found."""

    certified: bool
    conditions: list[str]  # the certificate's conditions that hold, or those that fail
    pairs: int = 0  # Jensen-gap probe (only without a certificate)
    violations: int = 0
    worst_gap: float | None = None  # the largest f(mid) - chord over the pairs

    @property
    def convex_so_far(self) -> bool:
        return self.certified or self.violations == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "certified": self.certified,
            "conditions": self.conditions,
            "jensen_pairs": self.pairs,
            "jensen_violations": self.violations,
            "worst_gap": self.worst_gap,
        }


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the signal does through the layers, and the recipe to try when it is unhealthy."""

    kind: VerdictKind
    variance_growth: float  # geometric mean of the per-layer variance ratio
    from_layer: int | None = None  # the first layer where it shows
    correlation: float | None = None  # for "inputs alike"
    dead_fraction: float | None = None  # for "dead units"
    suggestion: str | None = None  # an init.recipe to try

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TransportHealth:
    """Distance of ``grad f`` from ``reference`` over the probe: RMS, and relative to the map."""

    reference: str  # "identity" or "bures"
    rms_distance: float
    relative_distance: float

    def as_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "rms_distance": self.rms_distance,
            "relative_distance": self.relative_distance,
        }


@dataclasses.dataclass(frozen=True)
class HealthReport:
    probe: str
    points: int
    layers: list[LayerHealth]
    potential_mean: float
    potential_std: float
    transport: TransportHealth | None
    note: str | None = None  # why the transport distance is missing
    convexity: ConvexityAtInit | None = None
    verdict: Verdict | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "points": self.points,
            "layers": [layer.as_json() for layer in self.layers],
            "potential": {"mean": self.potential_mean, "std": self.potential_std},
            "transport": self.transport.as_json() if self.transport else None,
            "note": self.note,
            "convexity": self.convexity.as_json() if self.convexity else None,
            "verdict": self.verdict.as_json() if self.verdict else None,
        }


def probe_points(loaded: LoadedModel, count: int) -> tuple[Any, str]:
    """The recorded source samples (up to ``count``) when there are any, else N(0, I) draws."""
    import jax
    import numpy as np

    if loaded.samples is not None:
        source = np.asarray(loaded.samples[0], np.float32)[:count]
        return source, f"Gaussian-map source samples ({len(source)} points)"
    shape = (count, loaded.model.dim_data)
    points = np.asarray(jax.random.normal(jax.random.key(PROBE_SEED), shape), np.float32)
    return points, f"standard normal ({count} points, seed {PROBE_SEED})"


def transport_map(loaded: LoadedModel, points: Any) -> Any:
    """``grad f`` at each point, ``[n, dim_data]``."""
    import jax

    def potential(point: Any) -> Any:
        return loaded.module.apply(loaded.variables, point[None]).reshape(())

    return jax.jit(jax.vmap(jax.grad(potential)))(points)


def _layer_health(name: str, formula: str, activations: Any, pre_activation: Any) -> LayerHealth:
    import numpy as np

    values = np.asarray(activations, np.float64)
    pre = np.asarray(pre_activation, np.float64)
    dead = int(np.count_nonzero(np.all(values == 0, axis=0)))
    return LayerHealth(
        name,
        formula,
        values.shape[1],
        dead,
        float(values.mean()),
        float(values.std()),
        pre_activation_mean=float(pre.mean()),
        pre_activation_variance=float(pre.var()),
        correlation=input_correlation(pre),
    )


def input_correlation(pre_activation: Any) -> float | None:
    """Mean Pearson correlation, across a layer's units, between the pre-activations of two
    different inputs (Hoedt & Klambauer's signal-propagation correlation); ``None`` with
    fewer than two units or inputs. An input whose units are all equal counts as 1."""
    import numpy as np

    values = np.asarray(pre_activation, np.float64)
    count, units = values.shape
    if units < 2 or count < 2:
        return None
    centred = values - values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    flat = norms[:, 0] == 0
    unit_rows = np.where(norms > 0, centred / np.where(norms > 0, norms, 1), 0.0)
    correlations = unit_rows @ unit_rows.T
    correlations[np.ix_(flat, flat)] = 1.0
    off_diagonal = correlations.sum() - np.trace(correlations)
    return float(off_diagonal / (count * (count - 1)))


def verdict_of(layers: list[LayerHealth]) -> Verdict:
    """Exploding or vanishing variance first (the recipe fixes those), then inputs alike,
    then dead units; ``healthy`` when none shows."""
    import math

    variances = [max(layer.pre_activation_variance, 1e-300) for layer in layers]
    steps = len(variances) - 1
    growth = (variances[-1] / variances[0]) ** (1 / steps) if steps else 1.0
    if not math.isfinite(growth):
        growth = math.inf
    ratios = [variances[k] / variances[k - 1] for k in range(1, len(variances))]
    if growth > EXPLODING_GROWTH:
        first = next((k + 1 for k, ratio in enumerate(ratios) if ratio > EXPLODING_GROWTH), 1)
        return Verdict("exploding", growth, first, suggestion=SUGGESTED_RECIPE)
    if growth < VANISHING_GROWTH:
        first = next((k + 1 for k, ratio in enumerate(ratios) if ratio < VANISHING_GROWTH), 1)
        return Verdict("vanishing", growth, first, suggestion=SUGGESTED_RECIPE)
    alike = [
        (index, layer.correlation)
        for index, layer in enumerate(layers)
        if layer.correlation is not None and layer.correlation > ALIKE_CORRELATION
    ]
    if alike:
        index, correlation = alike[0]
        return Verdict(
            "inputs alike", growth, index, correlation=correlation, suggestion="principled"
        )
    dead = [(index, layer.dead_fraction) for index, layer in enumerate(layers)]
    worst = max(dead, key=lambda item: item[1])
    if worst[1] > DEAD_SHARE:
        return Verdict(
            "dead units", growth, worst[0], dead_fraction=worst[1], suggestion=SUGGESTED_RECIPE
        )
    return Verdict("healthy", growth)


def convexity_at_init(loaded: LoadedModel, points: Any) -> ConvexityAtInit:
    """The architecture's certificate when it holds, else a Jensen-gap probe on pairs of
    probe points (a violation disproves convexity; none found proves nothing)."""
    import jax
    import numpy as np

    from icnn_cli.analysis.convexity import _gap_functions, leaf_checks, structural_reasons

    holds, fails = structural_reasons(
        loaded.model, leaf_checks(loaded.model, loaded.variables["params"])
    )
    if not fails:
        return ConvexityAtInit(True, holds)
    gap_batch, *_ = _gap_functions(loaded.module, loaded.variables)
    points = np.asarray(points, np.float32)
    keys = jax.random.split(jax.random.key(JENSEN_SEED), 3)
    first = jax.random.randint(keys[0], (JENSEN_PAIRS,), 0, len(points))
    second = jax.random.randint(keys[1], (JENSEN_PAIRS,), 0, len(points))
    t = jax.random.uniform(keys[2], (JENSEN_PAIRS,))
    gap, tolerance = gap_batch(points[first], points[second], t)
    gap, tolerance = np.asarray(gap, np.float64), np.asarray(tolerance, np.float64)
    return ConvexityAtInit(
        False,
        fails,
        pairs=JENSEN_PAIRS,
        violations=int(np.count_nonzero(gap > tolerance)),
        worst_gap=float(gap.max()),
    )


def _transport_health(
    loaded: LoadedModel, points: Any
) -> tuple[TransportHealth | None, str | None]:
    import numpy as np

    if loaded.model.gaussian_map_samples is None:
        reference, target = "identity", np.asarray(points, np.float64)
    elif loaded.samples is not None:
        matrix, offset = icnn_model.bures_map(*loaded.samples)
        reference = "bures"
        target = np.asarray(points, np.float64) @ np.asarray(matrix).T + np.asarray(offset)
    else:
        return None, "the Gaussian-map sample files moved or changed, so the Bures map is unknown"
    difference = np.asarray(transport_map(loaded, points), np.float64) - target
    rms = float(np.sqrt(np.mean(np.sum(difference**2, axis=1))))
    scale = float(np.sqrt(np.mean(np.sum(target**2, axis=1))))
    return TransportHealth(reference, rms, rms / scale if scale else float("inf")), None


def probe_health(loaded: LoadedModel, points: int = DEFAULT_PROBE) -> HealthReport:
    """Run the model on a probe batch and summarise layers, potential and transport map."""
    import numpy as np

    batch, description = probe_points(loaded, points)
    potential, layers = _potential_and_layers(loaded, batch)
    values = np.asarray(potential, np.float64).reshape(-1)
    transport, note = _transport_health(loaded, batch)
    return HealthReport(
        probe=description,
        points=len(batch),
        layers=layers,
        potential_mean=float(values.mean()),
        potential_std=float(values.std()),
        transport=transport,
        note=note,
        convexity=convexity_at_init(loaded, batch),
        verdict=verdict_of(layers),
    )


def checkpoint_health(
    path: StoragePath, step: int | None = None, points: int = DEFAULT_PROBE
) -> HealthReport:
    """:func:`probe_health` of the icnn checkpoint at ``path`` (of step ``step`` of a root
    of steps, default: the latest): what ``icnn inspect --health`` and
    ``icnn_cli.health`` report."""
    from icnn_cli.checkpoint.layout import locate

    checkpoint_path = locate(path, step).checkpoint.path
    return probe_health(load_model(checkpoint_path, config_parameter=None), points)


def signal_layers(loaded: LoadedModel, points: int = DEFAULT_PROBE) -> list[LayerHealth]:
    """Per layer statistics on the same probe batch as :func:`probe_health` (for ``plot``)."""
    batch, _ = probe_points(loaded, points)
    return _potential_and_layers(loaded, batch)[1]


def _potential_and_layers(loaded: LoadedModel, batch: Any) -> tuple[Any, list[LayerHealth]]:
    potential, outputs = icnn_model.layer_outputs(loaded.module, loaded.variables, batch)
    pre_activations = _jitted_pre_activations(loaded.module)(loaded.variables, batch)
    layers = [
        _layer_health(*output, pre) for output, pre in zip(outputs, pre_activations, strict=True)
    ]
    return potential, layers


def _jitted_pre_activations(module: Any) -> Any:
    import functools

    import jax

    return jax.jit(functools.partial(icnn_model.pre_activations, module))
