"""How long `icnn inspect` takes on a 10,000-leaf checkpoint, per Orbax layout.

    .venv/bin/python bench/bench_inspect_layouts.py [--leaves 10000] [--repeats 3]

For each layout it writes a checkpoint of ``--leaves`` tiny float32 leaves
(``params/layer_{i}/{kernel,bias}``), then times, best of ``--repeats``:

* ``orbax metadata()``: ``StandardCheckpointer().metadata(path)`` (opens every array);
* ``icnn leaf records``: what ``icnn inspect`` uses (Orbax's metadata files read directly);
* ``icnn inspect`` and ``icnn inspect --json``: the whole command as a user runs it
  (a fresh process: imports included).

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYOUTS = {
    "OCDBT, zarr2, zstd (default)": {},
    "per leaf (use_ocdbt=False)": {"use_ocdbt": False},
    "OCDBT, zarr3": {"use_zarr3": True},
}
ICNN = Path(sys.executable).with_name("icnn")


def write_checkpoint(path: Path, leaves: int, options: dict) -> None:
    import numpy as np
    import orbax.checkpoint as ocp

    layers = leaves // 2
    tree = {
        "params": {
            f"layer_{i}": {
                "kernel": np.full((4, 4), i, np.float32),
                "bias": np.zeros(4, np.float32),
            }
            for i in range(layers)
        }
    }
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(**options)) as checkpointer:
        checkpointer.save(path.absolute(), args=ocp.args.PyTreeSave(tree))


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def orbax_metadata(path: Path) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.metadata(path.absolute())


def icnn_leaf_records(path: Path) -> None:
    from icnn_cli.checkpoint import metadata

    metadata.read_leaf_records(path)


def icnn_command(*args: str) -> None:
    subprocess.run([str(ICNN), *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    print(
        f"{arguments.leaves:,} leaves, best of {arguments.repeats}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print("| layout | orbax metadata() | icnn leaf records | icnn inspect | icnn inspect --json |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, options) in enumerate(LAYOUTS.items()):
            path = Path(scratch) / f"layout_{index}"
            write_checkpoint(path, arguments.leaves, options)
            cells = [
                best_of(arguments.repeats, lambda path=path: orbax_metadata(path)),
                best_of(arguments.repeats, lambda path=path: icnn_leaf_records(path)),
                best_of(arguments.repeats, lambda path=path: icnn_command("inspect", str(path))),
                best_of(
                    arguments.repeats,
                    lambda path=path: icnn_command("inspect", str(path), "--json"),
                ),
            ]
            print(f"| {name} | " + " | ".join(f"{seconds:.2f} s" for seconds in cells) + " |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
