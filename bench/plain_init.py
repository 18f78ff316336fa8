"""The plain hand-written alternative to ``icnn init``: import OTT, jit the init, save with Orbax.

This is what a CI job would run once per checkpoint without icnn, and the
baseline the benchmarks compare against. No config file, no checks, no spec:

    python bench/plain_init.py OUT --seed 0 --dim-data 2 --dim-hidden 64,64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from ott.neural.networks.icnn import ICNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim-data", type=int, default=2)
    parser.add_argument("--dim-hidden", default="64,64")
    args = parser.parse_args()

    module = ICNN(dim_data=args.dim_data, dim_hidden=[int(n) for n in args.dim_hidden.split(",")])
    variables = jax.jit(module.init)(jax.random.key(args.seed), jnp.ones((1, args.dim_data)))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(args.out.absolute(), variables)


if __name__ == "__main__":
    main()
