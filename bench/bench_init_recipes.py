"""Does the init recipe change how OTT's W2NeuralDual trains? Gaussian to Gaussian, where
the Brenier map is known in closed form.

For each problem (dims 2 and 8, ICNN depths 3 and 6 of width 64) and each recipe (``ott``,
``principled``, ``data-dependent``), both potentials f and g start from icnn's init of that
recipe (seed s for f, s + 1000 for g) and are trained by ``ott.neural.methods.neuraldual.
W2NeuralDual`` with its defaults (Adam 1e-4, b1 0.5, b2 0.9; pos_weights on; parallel
updates; the LBFGS conjugate solver) except that the solver runs at most 5 iterations and 5
line-search steps (OTT's default 20 and 20 cost about 1.7 s per step on a shared 2-core CPU;
without any fine-tuning, ``conjugate_solver=None``, training diverged from every recipe).
Batches of 128, the same steps for every recipe.
The map is ``T_hat = grad f``; its relative error

    E|T_hat(x) - T(x)|^2 / E|T(x) - x|^2

on 4096 held-out source points is recorded after a fixed number of steps (1.0 is the
identity map's error), and the median over seeds is reported.

    python bench/bench_init_recipes.py [--steps 50,150] [--seeds 3] [--out FILE.json]

Prints a Markdown table; ``--out`` also writes the raw numbers as JSON. One
``W2NeuralDual`` is built per problem, and its jitted step is reused for every recipe and
seed (only the parameters and optimiser states are reset), so a problem compiles once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECIPES = ("ott", "principled", "data-dependent")
DIMS = (2, 8)
DEPTHS = (3, 6)
WIDTH = 64
BATCH = 128
CONJUGATE_ITERATIONS = 5
HELD_OUT = 4096
G_SEED_OFFSET = 1000


def gaussian_problem(dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Source and target Gaussians with random means and covariances (eigenvalues in
    [0.5, 2]), and the closed-form Brenier map ``T(x) = m_t + A (x - m_s)``."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(seed + 100 * dim)

    def covariance() -> np.ndarray:
        rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        return rotation @ np.diag(rng.uniform(0.5, 2.0, size=dim)) @ rotation.T

    mean_s, mean_t = rng.normal(size=dim) * 0.5, rng.normal(size=dim)
    cov_s, cov_t = covariance(), covariance()
    root = np.real(sqrtm(cov_s))
    inverse_root = np.linalg.inv(root)
    matrix = inverse_root @ np.real(sqrtm(root @ cov_t @ root)) @ inverse_root
    return {"mean_s": mean_s, "cov_s": cov_s, "mean_t": mean_t, "cov_t": cov_t, "A": matrix}


def sampler(mean: np.ndarray, cov: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    factor = np.linalg.cholesky(cov)
    while True:
        yield (mean + rng.normal(size=(BATCH, len(mean))) @ factor.T).astype(np.float32)


def relative_error(neural_f, params, problem, held_out: np.ndarray) -> float:
    import jax

    def potential(point):
        return neural_f.apply({"params": params}, point[None]).reshape(())

    predicted = np.asarray(jax.jit(jax.vmap(jax.grad(potential)))(held_out), np.float64)
    truth = problem["mean_t"] + (held_out - problem["mean_s"]) @ problem["A"].T
    error = np.mean(np.sum((predicted - truth) ** 2, axis=1))
    return float(error / np.mean(np.sum((truth - held_out) ** 2, axis=1)))


def prepared_inits(dim: int, depth: int) -> dict[str, object]:
    from icnn_cli.config import IcnnConfig
    from icnn_cli.pipeline import prepare_init

    prepared = {}
    for recipe in RECIPES:
        config = IcnnConfig.model_validate(
            {
                "model": {"dim_data": dim, "dim_hidden": [WIDTH] * depth, "pos_weights": True},
                "init": {"recipe": {"name": recipe}},
            }
        )
        prepared[recipe] = prepare_init(config, REPO, None)
    return prepared


def run_problem(
    dim: int,
    depth: int,
    steps: list[int],
    seeds: int,
    conjugate_iterations: int = CONJUGATE_ITERATIONS,
    deadline: float = float("inf"),
    rows_file: Path | None = None,
    recipes: tuple[str, ...] = RECIPES,
) -> list[dict]:
    """Train from each recipe, seed by seed (all recipes of a seed before the next seed, so
    a run stopped at ``deadline``, a ``time.perf_counter()`` value, still compares them);
    each row is also appended to ``rows_file`` as one JSON line when it is done."""
    import jax
    from ott.neural.methods.neuraldual import W2NeuralDual
    from ott.neural.networks.layers.conjugate import FenchelConjugateLBFGS

    from icnn_cli.pipeline import initialize_seed

    problem = gaussian_problem(dim)
    prepared = prepared_inits(dim, depth)
    module = prepared["ott"].module
    solver = W2NeuralDual(
        dim,
        neural_f=module,
        neural_g=module,
        num_train_iters=1,
        rng=jax.random.key(0),
        conjugate_solver=FenchelConjugateLBFGS(
            gtol=1e-5,
            max_iter=conjugate_iterations,
            max_linesearch_iter=conjugate_iterations,
            linesearch_type="backtracking",
        ),
    )
    fresh_f, fresh_g = solver.state_f, solver.state_g
    source_points = sampler(problem["mean_s"], problem["cov_s"], seed=98)
    held_out = np.concatenate([next(source_points) for _ in range(HELD_OUT // BATCH)])
    rows = []
    for seed in range(seeds):
        if time.perf_counter() > deadline:
            break
        for recipe in recipes:
            params_f = initialize_seed(prepared[recipe], seed)[0]["params"]
            params_g = initialize_seed(prepared[recipe], seed + G_SEED_OFFSET)[0]["params"]
            solver.state_f = fresh_f.replace(
                params=params_f, opt_state=fresh_f.tx.init(params_f), step=0
            )
            solver.state_g = fresh_g.replace(
                params=params_g, opt_state=fresh_g.tx.init(params_g), step=0
            )
            errors = {0: relative_error(module, params_f, problem, held_out)}
            source = sampler(problem["mean_s"], problem["cov_s"], seed=seed)
            target = sampler(problem["mean_t"], problem["cov_t"], seed=seed + 500)
            done, started = 0, time.perf_counter()
            for checkpoint in steps:
                solver.num_train_iters = checkpoint - done
                solver.train_fn(source, target, source, target)
                done = checkpoint
                errors[checkpoint] = relative_error(
                    module, solver.state_f.params, problem, held_out
                )
                if rows_file is not None and checkpoint != steps[-1]:
                    progress = {"dim": dim, "depth": depth, "recipe": recipe, "seed": seed}
                    progress.update(errors=errors, partial=True)
                    progress["train_seconds"] = time.perf_counter() - started
                    with rows_file.open("a") as file:
                        file.write(json.dumps(progress) + "\n")
            rows.append(
                {
                    "dim": dim,
                    "depth": depth,
                    "recipe": recipe,
                    "seed": seed,
                    "errors": errors,
                    "train_seconds": time.perf_counter() - started,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if rows_file is not None:
                with rows_file.open("a") as file:
                    file.write(json.dumps(rows[-1]) + "\n")
    return rows


def markdown(rows: list[dict], steps: list[int]) -> str:
    columns = [0, *steps]
    header = "| dim | depth | recipe | " + " | ".join(f"step {s}" for s in columns) + " |"
    lines = [header, "|" + "---|" * (3 + len(columns))]
    keys = sorted({(row["dim"], row["depth"]) for row in rows})
    for dim, depth in keys:
        group = [row for row in rows if (row["dim"], row["depth"]) == (dim, depth)]
        present = [recipe for recipe in RECIPES if any(r["recipe"] == recipe for r in group)]
        medians = {
            (recipe, step): statistics.median(values)
            for recipe in present
            for step in columns
            if (
                values := [
                    r["errors"][step]
                    for r in group
                    if r["recipe"] == recipe and step in r["errors"]
                ]
            )
        }
        best = {
            step: min(medians[recipe, step] for recipe in present if (recipe, step) in medians)
            for step in columns
            if any((recipe, step) in medians for recipe in present)
        }
        for recipe in present:
            cells = []
            for step in columns:
                if (recipe, step) not in medians:
                    cells.append("")
                    continue
                median = medians[recipe, step]
                text = f"{median:.3g}"
                cells.append(f"**{text}**" if median == best[step] else text)
            lines.append(f"| {dim} | {depth} | {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(
    table: str, seeds: int, seconds: float, conjugate_iterations: int = CONJUGATE_ITERATIONS
) -> str:
    """The BENCHMARKS.md section (item 8 of ``make bench``)."""
    return (
        "## 8. Training from each init recipe (`bench/bench_init_recipes.py`)\n\n"
        "OTT's `W2NeuralDual` trains f and g, both ICNNs of width "
        f"{WIDTH} with `pos_weights: true`, started from icnn's init of each recipe, on a "
        "Gaussian-to-Gaussian problem (random means, covariances with eigenvalues in [0.5, 2]) "
        "whose Brenier map T is known in closed form. Same optimiser (OTT's default Adam 1e-4, "
        f"b1 0.5, b2 0.9), batches of {BATCH}, the same steps for every recipe; OTT's LBFGS "
        f"conjugate solver at {conjugate_iterations} iterations and line-search steps (its "
        "default is 20; 20 cost about 1.7 s per step on a 2-core CPU; with no conjugate solver "
        "at all the training diverged from every recipe). Cell: the median over "
        f"{seeds} seeds of the relative map error E|grad f(x) - T(x)|^2 / E|T(x) - x|^2 on "
        f"{HELD_OUT} held-out source points (1.0 is the identity map; step 0 is the init "
        "itself); the best recipe of each problem and step in bold.\n\n"
        f"{table}\n\n({seconds / 60:.1f} min in all.)\n"
    )


def report_rows(files: list[Path], steps: list[int], conjugate_iterations: int) -> str:
    """The section for rows written by several runs (``--rows``): each seed's latest row."""
    latest: dict[tuple, dict] = {}
    for path in files:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            row["errors"] = {int(step): error for step, error in row["errors"].items()}
            latest[row["dim"], row["depth"], row["recipe"], row["seed"]] = row
    rows = list(latest.values())
    seeds = max(row["seed"] for row in rows) + 1
    seconds = max(row["train_seconds"] for row in rows)
    return section(markdown(rows, steps), seeds, seconds, conjugate_iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50,150")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dims", default=",".join(map(str, DIMS)))
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)))
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--conjugate-iterations",
        type=int,
        default=CONJUGATE_ITERATIONS,
        help="LBFGS iterations and line-search steps of the conjugate solver (OTT's default: 20)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=float("inf"),
        help="seconds after which no new seed starts (the rows done so far are reported)",
    )
    parser.add_argument(
        "--rows",
        type=Path,
        help="append each row here as JSON lines, and a partial one at each earlier step",
    )
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        help="print the table of these --rows files (runs in parallel, one per recipe) instead",
    )
    arguments = parser.parse_args()
    steps = [int(step) for step in arguments.steps.split(",")]
    if arguments.report:
        print(report_rows(arguments.report, steps, arguments.conjugate_iterations))
        return
    rows = []
    started = time.perf_counter()
    deadline = started + arguments.time_limit
    for dim in map(int, arguments.dims.split(",")):
        for depth in map(int, arguments.depths.split(",")):
            rows += run_problem(
                dim,
                depth,
                steps,
                arguments.seeds,
                arguments.conjugate_iterations,
                deadline,
                arguments.rows,
                tuple(arguments.recipes.split(",")),
            )
    seeds = min(
        sum(1 for row in rows if (row["dim"], row["depth"], row["recipe"]) == key)
        for key in {(row["dim"], row["depth"], row["recipe"]) for row in rows}
    )
    seconds = time.perf_counter() - started
    print(section(markdown(rows, steps), seeds, seconds, arguments.conjugate_iterations))
    if arguments.out:
        arguments.out.write_text(json.dumps({"steps": steps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
