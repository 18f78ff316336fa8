"""``icnn inspect --health``: how the ICNN behaves on a probe batch, right after init or later.

Per layer, the share of dead units (output exactly 0 at every probe point) and the
activations' mean and std; for the potential f, its mean and std; and how far the
transport map grad f is from the map the init is meant to mimic: the identity
(the final quadratic potential of OTT's default init is |x|^2 / 2) or the
Gaussian (Bures) map between the recorded samples.

Example::

    report = probe_health(load_model("ckpt"), points=256)
    report.layers[0].dead_fraction
"""

from __future__ import annotations

import dataclasses
from typing import Any

from icnn_cli import model as icnn_model
from icnn_cli.analysis.loading import LoadedModel

DEFAULT_PROBE = 256
PROBE_SEED = 0  # the standard-normal probe is the same on every run


@dataclasses.dataclass(frozen=True)
class LayerHealth:
    name: str
    formula: str
    units: int
    dead_units: int
    mean: float
    std: float

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
        }


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

    def as_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "points": self.points,
            "layers": [layer.as_json() for layer in self.layers],
            "potential": {"mean": self.potential_mean, "std": self.potential_std},
            "transport": self.transport.as_json() if self.transport else None,
            "note": self.note,
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


def _layer_health(name: str, formula: str, activations: Any) -> LayerHealth:
    import numpy as np

    values = np.asarray(activations, np.float64)
    dead = int(np.count_nonzero(np.all(values == 0, axis=0)))
    return LayerHealth(
        name, formula, values.shape[1], dead, float(values.mean()), float(values.std())
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
    potential, outputs = icnn_model.layer_outputs(loaded.module, loaded.variables, batch)
    layers = [_layer_health(*output) for output in outputs]
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
    )
