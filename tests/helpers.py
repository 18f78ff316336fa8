"""Plain helpers shared by the test modules: paths, the installed ``icnn``, tree comparisons.

Test modules import these from here and never from one another; fixtures live in
``tests/conftest.py``. JAX, Orbax and rich are imported inside the helpers that use
them, so importing this module stays cheap.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.data import make_golden

if TYPE_CHECKING:
    from icnn_cli.records import Summary

REPO = Path(__file__).resolve().parent.parent
FOREIGN = REPO / "tests" / "data" / "golden" / "foreign"
"""Golden checkpoints written by other Orbax releases and APIs, with their manifest."""
FOREIGN_MANIFEST = json.loads((FOREIGN / "MANIFEST.json").read_text())["fixtures"]
CONFIGS = REPO / "configs"

# The console script installed beside this interpreter, as `make run` and users start it.
ICNN = Path(sys.executable).parent / "icnn"

# The committed golden checkpoints and the script that wrote them (tests/data/make_golden.py).
GOLDEN = make_golden.GOLDEN
ALL_GOLDEN = [*make_golden.LAYOUTS, make_golden.SHARDED, make_golden.ICNN]


def tiny_model(**fields: Any) -> dict[str, Any]:
    """The ``model`` section of a small config; ``fields`` override or add keys."""
    return {"dim_data": 2, "dim_hidden": [8, 8], **fields}


def run_icnn(
    *args: Any,
    cwd: Path | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``icnn ARGS`` as a real subprocess and capture its text output.

    The child gets this process's environment with ``NO_COLOR=1`` and then ``env`` on
    top. A test that calls this starts a process that may import JAX: mark it slow
    (tests/test_suite_rules.py checks).
    """
    environment = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [str(ICNN), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=input,
        env=environment,
    )


def restore_plain(path: Path):
    """What a user with nothing but Orbax gets back."""
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(path.absolute())


def restore_onto_one_device(path: Path):
    """README, "Restoring on fewer devices": the target comes from the metadata."""
    import jax
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path.absolute()).item_metadata.tree
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=device), metadata
        )
        return checkpointer.restore(path.absolute(), target)


def assert_trees_identical(actual, expected) -> None:
    """Same leaf paths, dtypes, shapes and bytes (Orbax stores tuples as lists)."""
    import jax
    import numpy as np

    flat_actual = jax.tree_util.tree_flatten_with_path(actual)[0]
    flat_expected = jax.tree_util.tree_flatten_with_path(expected)[0]
    paths = [jax.tree_util.keystr(path, simple=True) for path, _ in flat_actual]
    assert paths == [jax.tree_util.keystr(path, simple=True) for path, _ in flat_expected]
    for (path, a), (_, b) in zip(flat_actual, flat_expected, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), path
        assert a.tobytes() == b.tobytes(), path


def plain_text(summary: Summary, width: int = 80, **view) -> str:
    """The rich summary table as a terminal without colour shows it, at a pinned width."""
    from rich.console import Console

    from icnn_cli.render.summary import render_table

    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, no_color=True, color_system=None, force_terminal=False
    )
    console.print(render_table(summary, **view))
    return buffer.getvalue()


def largest_data_file(checkpoint: Path) -> Path:
    # Values over 1 KiB live in OCDBT data files without a checksum; smaller ones
    # sit inside CRC-checked b-tree nodes, so the largest file is the blind spot.
    return max(checkpoint.rglob("d/*"), key=lambda path: path.stat().st_size)


def flip_bytes(checkpoint: Path) -> None:
    data = largest_data_file(checkpoint)
    content = bytearray(data.read_bytes())
    for offset in range(len(content) // 2, len(content) // 2 + 4):
        content[offset] ^= 0xFF
    data.write_bytes(bytes(content))


# Generous: a reading command answers in well under a second; only a hang gets near it.
HANG_GUARD_SECONDS = 120


def invoke_unblocked(*args: Any) -> Any:
    """Run ``icnn ARGS`` in-process (stderr apart) on this thread; a command that blocks
    (a FIFO opened for reading, say) fails the test rather than hanging the suite.

    SIGALRM interrupts a blocked ``open()`` or ``read()``; the handler's exception ends it.
    """
    import signal

    from typer.testing import CliRunner

    from icnn_cli.cli import app

    def blocked(signum: int, frame: Any) -> None:
        raise TimeoutError(f"icnn {' '.join(map(str, args))} blocked")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(HANG_GUARD_SECONDS)
    try:
        return CliRunner().invoke(app, [str(arg) for arg in args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
