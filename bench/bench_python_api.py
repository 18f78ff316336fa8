"""``icnn_cli.init`` in a loop over seeds, beside the plain jitted ``ICNN.init`` in a loop.

What a notebook or a training script does with the Python API: init one architecture at
many seeds in one process, nothing written. The plain alternative is the hand-written
loop a user would write (build OTT's ICNN once, ``jax.jit(module.init)`` once, call it per
seed); icnn also validates the config, derives the named RNG streams, plans the init
(memory check included) and casts the result, every call. Both run in fresh processes on
the same (warm) compile cache, interleaved; the first call of a process and the median of
the later ones are reported separately. Prints a Markdown section for BENCHMARKS.md
(``bench/run.py --only 10``).

    python bench/bench_python_api.py [--seeds 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HIDDEN = [64, 64, 64, 64]
DIM_DATA = 2

ICNN_LOOP = """
import json, sys, time
started = time.perf_counter()
import icnn_cli
config = {"model": {"dim_data": %(dim)d, "dim_hidden": %(hidden)r}}
times = []
for seed in range(%(seeds)d):
    start = time.perf_counter()
    module, variables = icnn_cli.init(config, seed=seed)
    variables["params"]["w_zs_0"]["kernel"].block_until_ready()
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "process": time.perf_counter() - started}))
"""

PLAIN_LOOP = """
import json, sys, time
started = time.perf_counter()
import jax, jax.numpy as jnp
from ott.neural.networks.icnn import ICNN
module = ICNN(dim_data=%(dim)d, dim_hidden=%(hidden)r)
init = jax.jit(module.init)
times = []
for seed in range(%(seeds)d):
    start = time.perf_counter()
    variables = init(jax.random.key(seed), jnp.ones((1, %(dim)d)))
    jax.block_until_ready(variables)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "process": time.perf_counter() - started}))
"""


def run_loop(source: str, seeds: int, env: dict[str, str]) -> dict[str, float]:
    code = source % {"dim": DIM_DATA, "hidden": HIDDEN, "seeds": seeds}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"bench_python_api: a loop failed:\n{result.stderr[-2000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    times = measured["times"]
    return {
        "first": times[0],
        "later": statistics.median(times[1:]),
        "process": measured["process"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="icnn-bench-api-") as cache:
        env = {**os.environ, "ICNN_COMPILE_CACHE_DIR": cache}
        run_loop(ICNN_LOOP, 2, env)  # warms icnn's compile cache and its exported init
        runs: dict[str, list[dict[str, float]]] = {"icnn": [], "plain": []}
        for _ in range(args.repeats):
            runs["icnn"].append(run_loop(ICNN_LOOP, args.seeds, env))
            runs["plain"].append(run_loop(PLAIN_LOOP, args.seeds, env))
    median = {
        name: {field: statistics.median(run[field] for run in values) for field in values[0]}
        for name, values in runs.items()
    }
    icnn, plain = median["icnn"], median["plain"]
    parameters = f"dim_data {DIM_DATA}, dim_hidden {HIDDEN}"
    lines = [
        "## 10. The Python API: `icnn_cli.init` in a loop over seeds (`bench/bench_python_api.py`)",
        "",
        f"One process inits {args.seeds} seeds of one architecture ({parameters}), nothing "
        "written, on a warm compile cache; the plain loop builds OTT's `ICNN` once and calls "
        "`jax.jit(module.init)` per seed. Medians of "
        f"{args.repeats} fresh processes of each, interleaved. Every icnn call validates the "
        "config, derives the RNG streams, plans the init (memory check included) and casts "
        "the result; a second call of the same architecture reuses the compiled program. "
        "icnn's first call includes importing JAX and pydantic (`import icnn_cli` imports "
        "neither), where the plain script imports before its timer starts: the whole-process "
        "row compares like with like.",
        "",
        "| | icnn_cli.init | plain jitted ICNN.init | icnn / plain |",
        "|---|---|---|---|",
    ]
    for field, label in (
        ("first", "first call of the process"),
        ("later", "each later call (median)"),
        ("process", f"whole process ({args.seeds} seeds, imports included)"),
    ):
        lines.append(
            f"| {label} | {icnn[field] * 1000:.1f} ms | {plain[field] * 1000:.1f} ms "
            f"| {icnn[field] / plain[field]:.2f}x |"
        )
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
