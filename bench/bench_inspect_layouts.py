"""How long `icnn inspect` takes on a 10,000-leaf checkpoint, per Orbax layout.

    .venv/bin/python bench/bench_inspect_layouts.py [--leaves 10000] [--repeats 3] [--before REV]

For each layout it writes a checkpoint of ``--leaves`` tiny float32 leaves
(``params/layer_{i}/{kernel,bias}``), then times, best of ``--repeats``:

* ``orbax metadata()``: ``StandardCheckpointer().metadata(path)`` (opens every array);
* ``icnn leaf records``: what ``icnn inspect`` uses (Orbax's metadata files read directly);
* ``icnn inspect`` and ``icnn inspect --json``: the whole command as a user runs it
  (a fresh process: imports included);
* with ``--before REV``: ``icnn inspect --json`` of the code at git revision ``REV``
  (checked out in a temporary worktree, run with this venv), side by side, where that
  code can read the layout at all.

Layouts: the three storage layouts of a single-item save, a CheckpointManager step with
a Composite of the tree and a JSON item, an Orbax v1 ``save_pytree`` (tree under
``state/``, zarr3), and the same leaves as an ``.npz`` and a safetensors file.

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
    "CheckpointManager step, tree + JSON item": {"manager": True},
    "v1 save_pytree (state/, zarr3)": {"v1": True},
    ".npz file": {"npz": True},
    "safetensors file": {"safetensors": True},
}
ICNN = Path(sys.executable).with_name("icnn")


def write_checkpoint(path: Path, leaves: int, options: dict) -> Path:
    """Write the layout; returns the path to inspect."""
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
    if options.get("manager"):
        with ocp.CheckpointManager(path.absolute()) as manager:
            items = ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave({"lr": 0.001})
            )
            manager.save(0, args=items)
            manager.wait_until_finished()
        return path / "0"
    if options.get("v1"):
        ocp.v1.save_pytree(path.absolute(), tree)
        return path
    flat = {
        f"params/{layer}/{name}": array
        for layer, arrays in tree["params"].items()
        for name, array in arrays.items()
    }
    if options.get("npz"):
        np.savez(path.with_suffix(".npz"), **flat)
        return path.with_suffix(".npz")
    if options.get("safetensors"):
        import safetensors.numpy

        safetensors.numpy.save_file(flat, path.with_suffix(".safetensors"))
        return path.with_suffix(".safetensors")
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(**options)) as checkpointer:
        checkpointer.save(path.absolute(), args=ocp.args.PyTreeSave(tree))
    return path


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
    from icnn_cli.checkpoint.reader import CheckpointReader

    CheckpointReader.open(path)


def icnn_command(*args: str) -> None:
    subprocess.run([str(ICNN), *args], check=True, stdout=subprocess.DEVNULL)


def before_command(worktree: Path, *args: str) -> bool:
    """``icnn ARGS`` of the older code in ``worktree``; False where it cannot read it."""
    code = "import sys; from icnn_cli.cli import main; sys.argv[0] = 'icnn'; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(worktree)},
        cwd=worktree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return result.returncode == 0


def timed_or_none(repeats: int, action) -> float | None:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if not action():
            return None
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also time the code at this revision")
    arguments = parser.parse_args()
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    print(
        f"{arguments.leaves:,} leaves, best of {arguments.repeats}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    header = (
        "| layout | orbax metadata() | icnn leaf records | icnn inspect | icnn inspect --json |"
    )
    align = "|---|---:|---:|---:|---:|"
    if arguments.before:
        header += f" inspect --json at {arguments.before} | now / before |"
        align += "---:|---:|"
    print(header)
    print(align)
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "before"
        if arguments.before:
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(worktree), arguments.before],
                check=True,
                capture_output=True,
            )
        try:
            for index, (name, options) in enumerate(LAYOUTS.items()):
                path = write_checkpoint(
                    Path(scratch) / f"layout_{index}", arguments.leaves, options
                )
                target = str(path.absolute())
                orbax = None  # metadata() of a step with items answers nothing useful
                if path.is_dir() and not (options.get("manager") or options.get("v1")):
                    orbax = best_of(arguments.repeats, lambda path=path: orbax_metadata(path))
                cells = [
                    orbax,
                    best_of(arguments.repeats, lambda path=path: icnn_leaf_records(path)),
                    best_of(
                        arguments.repeats, lambda target=target: icnn_command("inspect", target)
                    ),
                    best_of(
                        arguments.repeats,
                        lambda target=target: icnn_command("inspect", target, "--json"),
                    ),
                ]
                if arguments.before:
                    before = timed_or_none(
                        arguments.repeats,
                        lambda target=target: before_command(worktree, "inspect", target, "--json"),
                    )
                    cells.append(before)
                ratio = ""
                if arguments.before:
                    ratio = f" {cells[3] / cells[4]:.2f}x |" if cells[4] else " (not read) |"
                print(
                    f"| {name} | "
                    + " | ".join("n/a" if c is None else f"{c:.2f} s" for c in cells)
                    + " |"
                    + ratio
                )
                sys.stdout.flush()
        finally:
            if arguments.before:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(worktree)], capture_output=True
                )


if __name__ == "__main__":
    main()
