"""``icnn check``: is the potential really convex in its input?

Two stages. The structural certificate reads the parameters and the config: when
the activation is convex and non-decreasing and every sign-constrained leaf (see
:func:`icnn_cli.model.effective_parameters`) is non-negative as the forward pass
uses it, the potential is convex, full stop. Otherwise a numerical search looks
for a chord that lies below the function: random pairs in boxes of several
scales, candidates from negative Hessian directions, then projected gradient
ascent on the convexity gap

    gap(x, y, t) = f((1 - t) x + t y) - ((1 - t) f(x) + t f(y)),

which is <= 0 everywhere exactly when f is convex. A gap above float32 noise is
a counterexample; the reported one is recomputed by plain ``module.apply``.

Example::

    report = check_model(load_model("ckpt"), samples=2048, seed=0)
    report.verdict  # "certified" | "violated" | "uncertified"

Longer than most modules on purpose: the structural reasons, the chord search and its
refinement are one argument, read top to bottom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from icnn_cli import model as icnn_model
from icnn_cli.analysis.loading import LoadedModel, load_model, no_spec, open_all
from icnn_cli.checkpoint.layout import Checkpoint
from icnn_cli.checkpoint.spec import parse_spec
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.errors import RuntimeFailure

Verdict = Literal["certified", "violated", "uncertified"]
CERTIFIED: Verdict = "certified"
VIOLATED: Verdict = "violated"
UNCERTIFIED: Verdict = "uncertified"
UNREADABLE = "unreadable"  # one checkpoint of several could not be loaded (damaged, missing)

DEFAULT_SAMPLES = 2048  # random chord tests per input scale
DEFAULT_SEED = 0
SEARCH_SCALES = (0.1, 1.0, 10.0)  # half-widths of the boxes [-s, s]^dim_data
CHUNK_PAIRS = 1024  # pairs per apply call, so large models stay within memory
REFINED_PER_BOX = 8  # best random candidates per box that get gradient ascent
REFINE_STEPS = 150
REFINE_STEP_SIZE = 0.05  # first step, as a share of the box width; it decays geometrically
REFINE_DECAY = 0.97
T_RANGE = (0.02, 0.98)
HESSIAN_POINTS_PER_BOX = 64
HESSIAN_MAX_DIM = 256  # jax.hessian costs dim_data backward passes per point
# XLA's backend optimisation level for the search's programs on small models: level 0
# halves the compile of the refinement (4.0 -> 1.9 s on a 2-core CPU for hidden [64, 64])
# while its run grows from 0.07 to 0.10 s; past this many parameters the run would cost
# more than the compile saves, and XLA's default level is kept.
QUICK_COMPILE_MAX_PARAMS = 1_000_000
QUICK_COMPILE = {"xla_backend_optimization_level": 0}
# float32 evaluation noise: a gap counts only above this share of |f| (plus a floor).
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class LeafCheck:
    """One sign-constrained parameter leaf and whether its effective values are >= 0."""

    path: str
    role: str
    effective: str
    size: int
    negative_fraction: float
    min: float

    @property
    def ok(self) -> bool:
        return self.negative_fraction == 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "role": self.role,
            "effective": self.effective,
            "size": self.size,
            "negative_fraction": self.negative_fraction,
            "min": self.min,
            "ok": self.ok,
        }


@dataclasses.dataclass(frozen=True)
class Counterexample:
    """Points where the chord lies below the potential by ``gap``."""

    x: list[float]
    y: list[float]
    t: float
    gap: float
    region: str  # which search box it came from, for the human report

    def as_json(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "t": self.t, "gap": self.gap}


@dataclasses.dataclass(frozen=True)
class ConvexityReport:
    """What ``icnn check`` found; ``as_json`` is its ``--json`` document."""

    verdict: Verdict
    reasons: list[str]
    leaves: list[LeafCheck]
    counterexample: Counterexample | None = None
    min_hessian_eig: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "leaves": [leaf.as_json() for leaf in self.leaves],
            "counterexample": self.counterexample.as_json() if self.counterexample else None,
            "min_hessian_eig": self.min_hessian_eig,
        }

    @property
    def offending_leaves(self) -> list[LeafCheck]:
        return [leaf for leaf in self.leaves if not leaf.ok]


@dataclasses.dataclass(frozen=True)
class SearchBox:
    """A box ``[low, high]`` of input space that the search samples and stays in."""

    label: str
    low: Any  # [dim_data]
    high: Any


# --- structural certificate -------------------------------------------------------------


def leaf_checks(model: Any, variables: Any) -> list[LeafCheck]:
    """The sign-constrained leaves, with the share of negative effective values."""
    import numpy as np

    checks = []
    for parameter in icnn_model.effective_parameters(model, variables):
        if not parameter.must_be_non_negative:
            continue
        values = parameter.values
        checks.append(
            LeafCheck(
                path=parameter.path_string,
                role=parameter.role,
                effective=parameter.expression,
                size=int(values.size),
                negative_fraction=float(np.count_nonzero(values < 0) / max(values.size, 1)),
                min=float(values.min()) if values.size else 0.0,
            )
        )
    return checks


def structural_reasons(model: Any, checks: Sequence[LeafCheck]) -> tuple[list[str], list[str]]:
    """The certificate's conditions as sentences: ``(those that hold, those that fail)``."""
    holds, fails = [], []
    activation = icnn_model.activation_name(model)
    problem = icnn_model.activation_problem(model)
    if problem:
        fails.append(f"act_fn: {problem}.")
    else:
        holds.append(f"act_fn {activation} is convex and non-decreasing.")
    weights = [check for check in checks if check.role == icnn_model.WEIGHT_ROLE]
    how = "after the rectifier (pos_weights on)" if model.pos_weights else "raw (pos_weights off)"
    bad = [check for check in weights if not check.ok]
    if bad:
        negative = sum(round(check.negative_fraction * check.size) for check in weights)
        total = sum(check.size for check in weights)
        fails.append(
            f"The w_zs weights are used {how} and {len(bad)} of {len(weights)} kernels have "
            f"negative entries ({negative:,} of {total:,} weights, {negative / total:.1%})."
        )
    else:
        holds.append(f"Every w_zs weight is >= 0 {how}.")
    diagonals = [check for check in checks if check.role == icnn_model.DIAGONAL_ROLE]
    bad_diagonals = [check for check in diagonals if not check.ok]
    if bad_diagonals:
        fails.append(
            f"{len(bad_diagonals)} quadratic diagonal(s) have negative entries after their "
            "rectifier, so those quadratic potentials are not PSD."
        )
    else:
        holds.append(
            "The quadratic potentials are PSD: diagonals >= 0 after their rectifiers, "
            "low-rank terms A A^T by construction."
        )
    return holds, fails


# --- numerical search -------------------------------------------------------------------


def search_boxes(dim_data: int, source_samples: Any | None) -> list[SearchBox]:
    """Boxes ``[-s, s]^d`` for each scale, and the samples' bounding box when there are any."""
    import numpy as np

    boxes = [
        SearchBox(f"scale {scale:g}", np.full(dim_data, -scale), np.full(dim_data, scale))
        for scale in SEARCH_SCALES
    ]
    if source_samples is not None:
        source = np.asarray(source_samples, dtype=np.float32)
        boxes.append(SearchBox("data", source.min(axis=0), source.max(axis=0)))
    return boxes


def compiler_options(variables: Any) -> dict[str, Any] | None:
    """:data:`QUICK_COMPILE` for a model of at most :data:`QUICK_COMPILE_MAX_PARAMS`."""
    import jax

    size = sum(getattr(leaf, "size", 1) for leaf in jax.tree_util.tree_leaves(variables))
    return QUICK_COMPILE if size <= QUICK_COMPILE_MAX_PARAMS else None


def _gap_functions(module: Any, variables: Any) -> tuple[Any, Any, Any, Any]:
    """``(batched gap, margin gradient, hessian, batched gap unjitted)`` closures for one
    module; the first and third jitted, the last for use inside another jit."""
    import jax
    import jax.numpy as jnp

    options = compiler_options(variables)

    def potential(points: Any) -> Any:
        # ICNN.__call__ squeezes its output, so a batch of one comes back as a scalar.
        return module.apply(variables, points).reshape(points.shape[0])

    def gap_and_tolerance(x: Any, y: Any, t: Any) -> tuple[Any, Any]:
        z = (1 - t)[:, None] * x + t[:, None] * y
        fx, fy, fz = jnp.split(potential(jnp.concatenate([x, y, z])), 3)
        gap = fz - ((1 - t) * fx + t * fy)
        tolerance = RELATIVE_TOLERANCE * (jnp.abs(fx) + jnp.abs(fy) + jnp.abs(fz))
        return gap, tolerance + ABSOLUTE_TOLERANCE

    def single_gap(x: Any, y: Any, t: Any) -> Any:
        gap, _ = gap_and_tolerance(x[None], y[None], t[None])
        return gap[0]

    def hessian(point: Any) -> Any:
        return jax.hessian(lambda p: potential(p[None])[0])(point)

    return (
        jax.jit(gap_and_tolerance, compiler_options=options),
        jax.grad(single_gap, argnums=(0, 1, 2)),
        jax.jit(jax.vmap(hessian), compiler_options=options),
        gap_and_tolerance,
    )


def _random_pairs(
    seed: int, box_index: int, chunk_index: int, low: Any, high: Any, count: int
) -> tuple[Any, Any, Any]:
    """``count`` chords in the box, from numpy's generator: drawing them with
    ``jax.random`` compiled a threefry program per chunk shape, 3 s of a cold check."""
    import numpy as np

    generator = np.random.default_rng([seed, box_index, chunk_index])
    dim_data = np.asarray(low).shape[0]
    x = generator.uniform(low, high, (count, dim_data)).astype(np.float32)
    y = generator.uniform(low, high, (count, dim_data)).astype(np.float32)
    # half midpoint tests, half chords at a random t
    t = generator.uniform(*T_RANGE, count).astype(np.float32)
    t[::2] = 0.5
    return x, y, t


class Chord(NamedTuple):
    """A chord to refine: its ends ``x``, ``y`` ``[dim_data]``, the point ``t`` on it, its box."""

    x: Any
    y: Any
    t: float
    box: int


# The refinement's arrays are NamedTuples: JAX flattens them as they are (jit, scan),
# so they need no pytree registration and no JAX import when this module loads.
class Candidates(NamedTuple):
    """Chords to refine, stacked: ends ``x``, ``y`` ``[n, dim_data]``, ``t`` ``[n]``, boxes."""

    x: Any
    y: Any
    t: Any
    low: Any  # ``[n, dim_data]``: the box of each chord
    high: Any


class SearchState(NamedTuple):
    """The gradient ascent's carry: where each path is, and the best chord it has met."""

    x: Any
    y: Any
    t: Any
    margin: Any  # ``[n]``: the best gap above tolerance so far
    best_x: Any
    best_y: Any
    best_t: Any


def _refine(gap_gradient: Any, gap_batch: Any, candidates: Candidates, steps: int) -> SearchState:
    """Projected, normalised gradient ascent on the gap; the best point of each path is kept."""
    import jax
    import jax.numpy as jnp

    low, high = candidates.low, candidates.high
    width = high - low

    def step(state: SearchState, index: Any) -> tuple[SearchState, None]:
        gx, gy, gt = jax.vmap(gap_gradient)(state.x, state.y, state.t)
        # scale by the box width so each coordinate moves in its own units
        gx, gy = gx * width, gy * width
        norm = jnp.sqrt(jnp.sum(gx**2, 1) + jnp.sum(gy**2, 1) + gt**2) + 1e-12
        size = REFINE_STEP_SIZE * REFINE_DECAY**index / norm
        x = jnp.clip(state.x + size[:, None] * gx * width, low, high)
        y = jnp.clip(state.y + size[:, None] * gy * width, low, high)
        t = jnp.clip(state.t + size * gt, *T_RANGE)
        gap, tolerance = gap_batch(x, y, t)
        better = gap - tolerance > state.margin

        def kept(new: Any, old: Any) -> Any:
            return jnp.where(better[:, None] if old.ndim == 2 else better, new, old)

        margin = jnp.maximum(gap - tolerance, state.margin)
        best_x, best_y, best_t = kept(x, state.best_x), kept(y, state.best_y), kept(t, state.best_t)
        return SearchState(x, y, t, margin, best_x, best_y, best_t), None

    x, y, t = candidates.x, candidates.y, candidates.t
    gap, tolerance = gap_batch(x, y, t)
    start = SearchState(x, y, t, margin=gap - tolerance, best_x=x, best_y=y, best_t=t)
    final, _ = jax.lax.scan(step, start, jnp.arange(steps))
    return final


def _padded(gap_batch: Any, batch: int, x: Any, y: Any, t: Any) -> tuple[Any, Any]:
    """``gap_batch`` of fewer than ``batch`` chords, evaluated at the shape it was compiled
    for (rows repeated), so a last short chunk or the final recomputation of the winner
    compiles nothing new; the gaps of the given rows come back."""
    import numpy as np

    count = len(t)
    if count == batch:
        return gap_batch(x, y, t)
    repeat = -(-batch // count)
    gap, tolerance = gap_batch(
        *(np.concatenate([np.asarray(value)] * repeat)[:batch] for value in (x, y, t))
    )
    return gap[:count], tolerance[:count]


def _hessian_candidates(
    hessian_batch: Any, points: Any, box_of_point: Any, boxes: Sequence[SearchBox]
) -> tuple[float, list[Chord]]:
    """Smallest Hessian eigenvalue over ``points``; chords along negative-curvature directions."""
    import numpy as np

    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(hessian_batch(points), np.float64))
    smallest = eigenvalues[:, 0]
    chords = []
    for index in np.argsort(smallest)[:REFINED_PER_BOX]:
        if smallest[index] >= 0:
            break
        box_index = int(box_of_point[index])
        box = boxes[box_index]
        half = 0.05 * float(np.max(box.high - box.low))
        direction = eigenvectors[index, :, 0] * half
        point = np.asarray(points[index])
        chords.append(Chord(point - direction, point + direction, 0.5, box_index))
    return float(smallest.min()), chords


def search_counterexample(
    module: Any,
    variables: Any,
    boxes: Sequence[SearchBox],
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    refine_steps: int = REFINE_STEPS,
) -> tuple[Counterexample | None, float | None, int]:
    """Look for a convexity violation; deterministic for a given ``seed``.

    Returns:
      ``(counterexample or None, smallest Hessian eigenvalue or None, chords tested)``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    gap_batch, gap_gradient, hessian_batch, gap_inside = _gap_functions(module, variables)
    dim_data = int(np.asarray(boxes[0].low).shape[0])
    chords: list[Chord] = []
    hessian_points, hessian_boxes = [], []
    tested = 0
    batch = min(CHUNK_PAIRS, samples)  # every chunk is evaluated at this one compiled shape
    for box_index, box in enumerate(boxes):
        low, high = np.asarray(box.low, np.float32), np.asarray(box.high, np.float32)
        best: list[tuple[float, Chord]] = []  # (margin, chord)
        remaining, chunk_index = samples, 0
        while remaining > 0:
            count = min(CHUNK_PAIRS, remaining)
            x, y, t = _random_pairs(seed, box_index, chunk_index, low, high, count)
            gap, tolerance = _padded(gap_batch, batch, x, y, t)
            margin = np.asarray(gap - tolerance)
            for index in np.argsort(margin)[::-1][:REFINED_PER_BOX]:
                chord = Chord(x[index], y[index], float(t[index]), box_index)
                best.append((float(margin[index]), chord))
            if chunk_index == 0:
                hessian_points.append(x[:HESSIAN_POINTS_PER_BOX])
                hessian_boxes.append(np.full(min(count, HESSIAN_POINTS_PER_BOX), box_index))
            remaining -= count
            chunk_index += 1
            tested += count
        best.sort(key=lambda row: row[0], reverse=True)
        chords += [chord for _, chord in best[:REFINED_PER_BOX]]

    min_eigenvalue = None
    if dim_data <= HESSIAN_MAX_DIM:
        min_eigenvalue, extra = _hessian_candidates(
            hessian_batch,
            jnp.concatenate(hessian_points),
            np.concatenate(hessian_boxes),
            boxes,
        )
        chords += extra

    low = jnp.stack([jnp.asarray(boxes[chord.box].low, jnp.float32) for chord in chords])
    high = jnp.stack([jnp.asarray(boxes[chord.box].high, jnp.float32) for chord in chords])
    candidates = Candidates(
        x=jnp.clip(jnp.stack([jnp.asarray(chord.x, jnp.float32) for chord in chords]), low, high),
        y=jnp.clip(jnp.stack([jnp.asarray(chord.y, jnp.float32) for chord in chords]), low, high),
        t=jnp.asarray([chord.t for chord in chords], jnp.float32),
        low=low,
        high=high,
    )
    refine = jax.jit(
        _refine, static_argnums=(0, 1, 3), compiler_options=compiler_options(variables)
    )
    final = refine(gap_gradient, gap_inside, candidates, refine_steps)
    winner = int(np.argmax(np.asarray(final.margin)))
    if float(final.margin[winner]) <= 0:
        return None, min_eigenvalue, tested
    x = np.asarray(final.best_x[winner], np.float32)
    y = np.asarray(final.best_y[winner], np.float32)
    t = float(np.float32(final.best_t[winner]))
    at_t = np.asarray([t], np.float32)
    gap, tolerance = (
        float(value[0]) for value in _padded(gap_batch, batch, x[None], y[None], at_t)
    )
    if gap <= tolerance:
        return None, min_eigenvalue, tested
    region = boxes[chords[winner].box].label
    return Counterexample(x.tolist(), y.tolist(), t, gap, region), min_eigenvalue, tested


# --- the whole check --------------------------------------------------------------------


def check_model(
    loaded: LoadedModel, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED
) -> ConvexityReport:
    """Certificate first; a numerical search only when the certificate does not hold.

    ``reasons`` are the failing conditions plus what the search found, or, for a
    certified model, the conditions that hold.
    """
    checks = leaf_checks(loaded.model, loaded.variables)
    holds, fails = structural_reasons(loaded.model, checks)
    if not fails:
        return ConvexityReport(CERTIFIED, [*holds, "So f is convex in x everywhere."], checks)
    source = loaded.samples[0] if loaded.samples is not None else None
    boxes = search_boxes(loaded.model.dim_data, source)
    counterexample, min_eigenvalue, tested = search_counterexample(
        loaded.module, loaded.variables, boxes, samples, seed
    )
    curvature = (
        f" (smallest Hessian eigenvalue at {HESSIAN_POINTS_PER_BOX} points per box: "
        f"{min_eigenvalue:.4g})"
        if min_eigenvalue is not None
        else ""
    )
    if counterexample is not None:
        fails.append(
            f"A chord lies below f ({counterexample.region}): f((1-t)x + ty) exceeds "
            f"(1-t)f(x) + t f(y) by {counterexample.gap:.4g} at t = {counterexample.t:.3g}"
            f"{curvature}."
        )
        return ConvexityReport(VIOLATED, fails, checks, counterexample, min_eigenvalue)
    regions = ", ".join(box.label for box in boxes)
    fails.append(
        f"No counterexample in {tested:,} random chords ({regions}) and their refinement"
        f"{curvature}, but convexity is not proven either."
    )
    return ConvexityReport(UNCERTIFIED, fails, checks, None, min_eigenvalue)


# --- several checkpoints -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckpointCheck:
    """One checkpoint of ``icnn check PATH...``: its report, or why it could not be loaded."""

    path: str
    report: ConvexityReport | None
    problem: str | None = None

    @property
    def verdict(self) -> str:
        return self.report.verdict if self.report is not None else UNREADABLE

    def as_json(self) -> dict[str, Any]:
        if self.report is None:
            return {"path": self.path, "verdict": UNREADABLE, "problem": self.problem}
        return {"path": self.path, **self.report.as_json()}


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    """Every checkpoint's check, in the order the paths were given."""

    checks: list[CheckpointCheck]

    @property
    def ok(self) -> bool:
        return all(check.verdict == CERTIFIED for check in self.checks)

    @property
    def summary(self) -> dict[str, int]:
        verdicts = (CERTIFIED, VIOLATED, UNCERTIFIED, UNREADABLE)
        counts = {verdict: 0 for verdict in verdicts}
        for check in self.checks:
            counts[check.verdict] += 1
        return {"checkpoints": len(self.checks), **counts}

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "checkpoints": [check.as_json() for check in self.checks],
        }


def check_checkpoints(
    paths: Sequence[StoragePath],
    config_path: Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    on_check: Callable[[CheckpointCheck], None] | None = None,
) -> CheckOutcome:
    """:func:`check_model` of each checkpoint, one loaded at a time.

    Bad input is refused before any search: a path that is no checkpoint, or one without
    an embedded spec when no ``config_path`` gives the architecture. A checkpoint that
    cannot be loaded (damaged, a file missing) is a finding of its own check
    (``unreadable``), and the others are still checked. Checkpoints of one architecture
    share the search's compiled programs. ``on_check(check)`` hears about each as it is done.
    """
    opened = open_all(list(paths))
    if config_path is None:
        for path, checkpoint in zip(paths, opened, strict=True):
            if checkpoint is not None and _without_spec(checkpoint):
                raise no_spec(path, "config")
    checks = []
    for path in paths:
        try:
            loaded = load_model(path, config_path)
        except RuntimeFailure as error:
            check = CheckpointCheck(str(path), None, error.message)
        else:
            check = CheckpointCheck(str(path), check_model(loaded, samples, seed))
        checks.append(check)
        if on_check is not None:
            on_check(check)
    return CheckOutcome(checks)


def _without_spec(checkpoint: Checkpoint) -> bool:
    try:
        return parse_spec(checkpoint.custom_metadata, str(checkpoint.path)) is None
    except RuntimeFailure:  # a malformed spec: load_model reports it as that checkpoint's finding
        return False
