"""icnn: initialise and inspect checkpoints of input convex neural networks.

Importing this package is cheap; JAX, Flax, Orbax and OTT are imported only by the
functions that need them.

Example::

    import icnn_cli
    module, variables = icnn_cli.load("ckpt")
    potential = module.apply(variables, x)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["__version__", "load"]


def load(path: str | Path) -> tuple[Any, Any]:
    """Rebuild the OTT ICNN of an icnn checkpoint and restore its variables.

    Args:
      path: checkpoint directory written by ``icnn init``.

    Returns:
      ``(module, variables)`` such that ``module.apply(variables, x)`` evaluates
      the potential at ``x`` of shape ``[batch, dim_data]``.
    """
    from icnn_cli.loading import load_checkpoint

    return load_checkpoint(path)
