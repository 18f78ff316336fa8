"""Init throughput of a large ICNN (the jitted init alone, compile excluded) vs numpy.

    python bench/init_throughput.py CONFIG REPEATS   # prints one JSON line

numpy's ``Generator.standard_normal`` runs on one core; JAX's CPU backend may use
every core. Both fill the same number of float32 values.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from icnn_cli.config import load_config
from icnn_cli.pipeline import leaf_records_of, prepare_init


def main() -> None:
    config = load_config(Path(sys.argv[1]))
    repeats = int(sys.argv[2])
    prepared = prepare_init(config, Path(sys.argv[1]).parent, None)
    key = jax.random.key(0)
    start = time.perf_counter()
    variables = jax.block_until_ready(prepared.init_variables(key))
    first_call = time.perf_counter() - start
    nbytes = sum(leaf.nbytes for leaf in leaf_records_of(variables))
    del variables
    init_times = []
    for seed in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(prepared.init_variables(jax.random.key(seed)))
        init_times.append(time.perf_counter() - start)
    generator = np.random.default_rng(0)
    numpy_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generator.standard_normal(nbytes // 4, dtype=np.float32)
        numpy_times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "bytes": nbytes,
                "compile_and_first_init_s": first_call,
                "init_s": statistics.median(init_times),
                "numpy_normal_s": statistics.median(numpy_times),
            }
        )
    )


if __name__ == "__main__":
    main()
