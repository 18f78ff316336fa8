"""Write the foreign Orbax checkpoints the inspect benchmark reads (any writer's trees).

    python bench/make_checkpoints.py DIR   # DIR/small (1 MB), DIR/large (1 GB), DIR/many

``small`` is 4 leaves of 256 KiB; ``large`` is 16 leaves of 64 MiB, so the peak
memory of ``inspect --stats`` can be told apart from the checkpoint size; ``many``
is 10,000 leaves of 4 floats.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

MIB = 1 << 20


def trees() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    floats = MIB // 4
    return {
        "small": {
            f"layer_{i}": rng.standard_normal(floats // 4, dtype=np.float32) for i in range(4)
        },
        "large": {
            f"layer_{i:02d}": rng.standard_normal(64 * floats, dtype=np.float32) for i in range(16)
        },
        "many": {f"leaf_{i:05d}": np.full(4, i, dtype=np.float32) for i in range(10_000)},
    }


def main() -> None:
    root = Path(sys.argv[1]).absolute()
    root.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        for name, tree in trees().items():
            if not (root / name).exists():
                checkpointer.save(root / name, tree)
                checkpointer.wait_until_finished()


if __name__ == "__main__":
    main()
