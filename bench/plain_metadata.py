"""The plain alternative to ``icnn inspect``: Orbax's own metadata call, nothing else.

python bench/plain_metadata.py CKPT     # prints the number of leaves
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp


def main() -> None:
    path = Path(sys.argv[1]).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
    tree = getattr(metadata.item_metadata, "tree", metadata.item_metadata)
    print(len(jax.tree_util.tree_leaves(tree)))


if __name__ == "__main__":
    main()
