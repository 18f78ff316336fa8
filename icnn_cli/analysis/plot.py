"""``icnn plot``: a picture of the potential and of every parameter leaf.

For ``dim_data == 2`` the top panel is a contour plot of f with grad f arrows over
the probe region, plus, for a Gaussian-map checkpoint whose samples are still
there, the source samples, the target samples and the source pushed through
grad f. Below it (any ``dim_data``), the signal propagation: each layer's pre-activation
variance (log scale) and the mean correlation between different inputs' pre-activations,
beside a second checkpoint's with ``compare``; then one histogram per parameter leaf,
showing the values the forward pass uses (after OTT's rectifiers).

Matplotlib is an optional dependency (``pip install 'icnn-cli[plot]'``); it is
imported only here, and only its object-oriented API is used (``Figure`` with the
Agg canvas), so no GUI backend or global pyplot state is involved.

Example::

    written = plot_checkpoint(load_model("ckpt"), Path("fig.png"))
    written.width, written.height  # pixels
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from icnn_cli import model as icnn_model
from icnn_cli.analysis.health import probe_points, signal_layers, transport_map
from icnn_cli.analysis.loading import LoadedModel
from icnn_cli.errors import IcnnError, UsageError

DPI = 80
GRID_POINTS = 80  # contour resolution per axis
ARROWS = 15  # grad f arrows per axis
HISTOGRAM_COLUMNS = 4
HISTOGRAM_BINS = 40
PROBE_POINTS = 256
MARGIN = 0.15  # share of the probe box added on each side
SIGNAL_HEIGHT = 3.5  # inches
SIGNAL_PANEL = "signal"


@dataclasses.dataclass(frozen=True)
class PlotResult:
    """What was written: the file, its size in pixels and the panels drawn."""

    path: str
    width: int
    height: int
    panels: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "panels": self.panels,
        }


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise IcnnError(
            "icnn plot needs matplotlib: pip install 'icnn-cli[plot]' (make install does)"
        ) from None


def check_output_file(out: Path) -> None:
    """Refuse (exit 2) an ``--out`` in a format matplotlib cannot write, or in no folder."""
    _require_matplotlib()
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise UsageError(
            f"unknown image format '{out.suffix}' (use one of: "
            f"{', '.join('.' + name for name in sorted(formats))})",
            "out",
            out,
        )
    if not out.parent.absolute().is_dir():
        raise UsageError(f"directory {out.parent} does not exist", "out", out)
    if out.is_dir():
        raise UsageError("is a directory", "out", out)


def _region(points: Any) -> tuple[Any, Any]:
    import numpy as np

    low, high = points.min(axis=0), points.max(axis=0)
    pad = MARGIN * np.maximum(high - low, 1e-3)
    return low - pad, high + pad


def draw_potential(axes: Any, loaded: LoadedModel) -> None:
    """Contour of f, grad f arrows and, when recorded, source / target / pushed samples."""
    import jax
    import numpy as np

    probe, description = probe_points(loaded, PROBE_POINTS)
    pushed = target = None
    if loaded.samples is not None:
        pushed = np.asarray(transport_map(loaded, probe))
        target = np.asarray(loaded.samples[1])
        low, high = _region(np.concatenate([probe, target, pushed]))
    else:
        low, high = _region(probe)
    xs = np.linspace(low[0], high[0], GRID_POINTS, dtype=np.float32)
    ys = np.linspace(low[1], high[1], GRID_POINTS, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    values = np.asarray(jax.jit(loaded.module.apply)(loaded.variables, grid))
    contour = axes.contourf(grid_x, grid_y, values.reshape(grid_x.shape), levels=30, cmap="viridis")
    axes.figure.colorbar(contour, ax=axes, label="f(x)")

    ax_, ay_ = np.linspace(low[0], high[0], ARROWS), np.linspace(low[1], high[1], ARROWS)
    arrow_x, arrow_y = np.meshgrid(ax_, ay_)
    arrow_points = np.stack([arrow_x.ravel(), arrow_y.ravel()], axis=1).astype(np.float32)
    gradients = np.asarray(transport_map(loaded, arrow_points))
    axes.quiver(
        arrow_points[:, 0],
        arrow_points[:, 1],
        gradients[:, 0],
        gradients[:, 1],
        color="white",
        alpha=0.8,
        label="grad f(x)",
    )
    if pushed is not None and target is not None:
        axes.scatter(*probe.T, s=8, c="tab:blue", label="source")
        axes.scatter(*target.T, s=8, c="tab:green", label="target")
        axes.scatter(*pushed.T, s=8, c="tab:orange", label="grad f(source)")
    axes.legend(loc="upper right", fontsize="small")
    axes.set_title(f"potential f and its map grad f (region: {description})", fontsize="medium")
    axes.set_xlabel("x[0]")
    axes.set_ylabel("x[1]")
    axes.set_aspect("equal", adjustable="box")


def draw_histograms(figure: Any, loaded: LoadedModel) -> list[str]:
    """One histogram per leaf of effective parameters; returns the leaves drawn."""
    import numpy as np

    parameters = icnn_model.effective_parameters(loaded.model, loaded.variables)
    rows = math.ceil(len(parameters) / HISTOGRAM_COLUMNS)
    axes = figure.subplots(rows, HISTOGRAM_COLUMNS, squeeze=False)
    for panel, parameter in zip(axes.ravel(), parameters, strict=False):
        values = np.asarray(parameter.values, np.float64).ravel()
        values = values[np.isfinite(values)]
        panel.hist(values, bins=HISTOGRAM_BINS, color="tab:blue")
        if parameter.must_be_non_negative:
            negative = float(np.mean(values < 0)) if values.size else 0.0
            panel.axvline(0.0, color="tab:red", linewidth=1)
            note = f", {negative:.0%} < 0" if negative else ", all >= 0"
        else:
            note = ""
        layer = "/".join(parameter.path[1:-1] or parameter.path[:-1])
        panel.set_title(f"{layer}: {parameter.expression}{note}", fontsize="x-small")
        panel.tick_params(labelsize="xx-small")
    for panel in axes.ravel()[len(parameters) :]:
        panel.set_visible(False)
    figure.subplots_adjust(left=0.04, right=0.98, bottom=0.05, top=0.93, wspace=0.25, hspace=0.6)
    return [parameter.path_string for parameter in parameters]


def draw_signal(
    figure: Any, curves: list[tuple[str, LoadedModel]], points: int = PROBE_POINTS
) -> None:
    """Pre-activation variance (log scale) and input correlation per layer, one line each."""
    variance_axes, correlation_axes = figure.subplots(1, 2, squeeze=True)
    for label, loaded in curves:
        layers = signal_layers(loaded, points)
        indices = list(range(len(layers)))
        variances = [max(layer.pre_activation_variance, 1e-30) for layer in layers]
        variance_axes.semilogy(indices, variances, marker="o", label=label)
        correlated = [(i, layer.correlation) for i, layer in enumerate(layers)]
        shown = [(i, value) for i, value in correlated if value is not None]
        correlation_axes.plot(*zip(*shown, strict=True), marker="o", label=label)
    variance_axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    variance_axes.set_title("pre-activation variance per layer", fontsize="medium")
    correlation_axes.set_title("correlation between inputs per layer", fontsize="medium")
    correlation_axes.set_ylim(-0.05, 1.05)
    from matplotlib.ticker import MaxNLocator

    for axes in (variance_axes, correlation_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("layer")
        axes.legend(loc="best", fontsize="small")
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.88, wspace=0.2)


def plot_checkpoint(
    loaded: LoadedModel,
    out: Path,
    compare: LoadedModel | None = None,
    labels: tuple[str, str] = ("checkpoint", "compare"),
) -> PlotResult:
    """Draw the figure and write it to ``out`` (replaced atomically when it exists).

    Args:
      compare: a second checkpoint whose signal propagation is drawn beside this one's.
      labels: the legend's names for ``loaded`` and ``compare``.
    """
    check_output_file(out)
    from matplotlib.figure import Figure

    parameters = icnn_model.effective_parameters(loaded.model, loaded.variables)
    histogram_rows = math.ceil(len(parameters) / HISTOGRAM_COLUMNS)
    with_potential = loaded.model.dim_data == 2
    potential_height = 7.0 if with_potential else 0.0
    heights = [SIGNAL_HEIGHT, 2.0 * histogram_rows]
    if with_potential:
        heights.insert(0, potential_height)
    # fixed margins rather than layout="constrained", which doubles the drawing time
    figure = Figure(figsize=(12, sum(heights)), dpi=DPI)
    subfigures = list(
        figure.subfigures(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    )
    panels = []
    if with_potential:
        draw_potential(subfigures.pop(0).subplots(), loaded)
        panels.append("potential")
    curves = [(labels[0], loaded)] + ([(labels[1], compare)] if compare is not None else [])
    draw_signal(subfigures[0], curves)
    panels.append(SIGNAL_PANEL)
    bottom = subfigures[1]
    panels += draw_histograms(bottom, loaded)
    if not with_potential:
        figure.suptitle(f"parameters as used (dim_data {loaded.model.dim_data}: no contour)")
    staging = out.with_name(f".{out.name}.icnn-tmp{out.suffix}")
    try:
        figure.savefig(staging, dpi=DPI)
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    width, height = (int(round(size * DPI)) for size in figure.get_size_inches())
    return PlotResult(str(out), width, height, panels)
