"""icnn: initialise and inspect checkpoints of input convex neural networks.

Importing this package is cheap; JAX, Flax, Orbax and OTT are imported only by the
functions that need them.

Example::

    import icnn_cli
    module, variables = icnn_cli.init("cfg.yaml", seed=0)   # what `icnn init` computes
    module, variables = icnn_cli.load("ckpt")                # what `icnn init` wrote
    summary = icnn_cli.inspect("ckpt")                       # what `icnn inspect` shows
    potential = module.apply(variables, x)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from icnn_cli.analysis.health import HealthReport
    from icnn_cli.python_api import ConfigSource
    from icnn_cli.records import Summary

    __version__: str  # read lazily by __getattr__ below

__all__ = ["__version__", "health", "init", "inspect", "load", "package_version"]

DISTRIBUTION = "icnn-cli"
"""The name pip knows icnn by; its version (pyproject.toml's) is the one version."""


def package_version() -> str:
    """The installed version of icnn, from the package metadata (pyproject.toml's ``version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    # Read lazily: the metadata lookup costs a few milliseconds that `icnn --help` need not pay.
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def init(
    config: ConfigSource,
    seed: int | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    platform: str | None = None,
) -> tuple[Any, Any]:
    """Build the OTT ICNN of a config and run its jitted init, as ``icnn init`` does.

    The variables are bit-identical to the arrays ``icnn init`` writes for the same
    config and seed (same RNG streams, same compiled init).

    Args:
      config: a config file path (``str`` or :class:`~pathlib.Path`); YAML text (a
        ``str`` containing a newline); a mapping shaped like the YAML; or a validated
        :class:`icnn_cli.config.IcnnConfig`. Relative Gaussian-map sample paths are read
        relative to the config file, or to the current directory when there is no file.
      seed: master seed, ``0..2**32-1``; default: the config's ``init.seed`` (0 unless
        set), as with ``icnn init`` without ``--seed``.
      out: also write the checkpoint there, as ``icnn init --out`` does (atomic commit,
        embedded spec and fingerprint); default: write nothing.
      force: with ``out``: replace an existing checkpoint there, atomically.
      platform: ``"cpu"``, ``"gpu"`` or ``"tpu"``: the JAX backend that runs the init;
        default: JAX's default backend.

    Returns:
      ``(module, variables)``: OTT's ``ICNN`` and its ``{"params": ...}`` (plus any
      collection the config's ``init`` asks for); ``module.apply(variables, x)`` evaluates
      the potential at ``x`` of shape ``[batch, dim_data]``.

    Raises:
      icnn_cli.errors.IcnnError: the config does not validate, or ``out`` exists
        without ``force`` (the same one-line messages as the CLI).
    """
    from icnn_cli.python_api import init_in_process

    return init_in_process(config, seed, out=out, force=force, platform=platform)


def inspect(path: str | os.PathLike[str], stats: bool = False) -> Summary:
    """Summarise an Orbax checkpoint: what ``icnn inspect --json`` prints, as records.

    Args:
      path: a checkpoint directory, or an Orbax ``CheckpointManager`` root (its latest
        step is summarised); a local path or a ``gs://`` URL.
      stats: read the arrays for per-leaf statistics (mean, std, min, max, NaN/Inf
        counts); the recorded fingerprint of an icnn checkpoint is checked on the way.

    Returns:
      The :class:`Summary`: ``leaves`` (one record per array: path, shape, dtype,
      bytes, statistics), every fact of the text header as a typed field
      (``written_at``; ``orbax``: layout, items, start time, custom metadata, metrics;
      ``provenance``: seed, streams, versions, device, fingerprint, ..., ``None`` for a
      checkpoint icnn did not write; ``manager_step`` for a root of steps), ``spec`` (the
      embedded spec of an icnn checkpoint, else ``None``); ``summary.as_json()`` is the
      document ``icnn inspect --json`` prints.

    Raises:
      icnn_cli.errors.IcnnError: not a checkpoint, or damaged data (exit code 1).
    """
    from icnn_cli.analysis.inspection import inspect_checkpoint
    from icnn_cli.checkpoint.storage import storage_path

    return inspect_checkpoint(storage_path(path), with_stats=stats)


def health(path: str | os.PathLike[str], probe: int = 256, step: int | None = None) -> HealthReport:
    """Run an icnn checkpoint's ICNN on a probe batch: what ``icnn inspect --health`` shows.

    Args:
      path: a checkpoint written by ``icnn init`` (a local path or ``gs://`` URL), or an
        Orbax ``CheckpointManager`` root of such checkpoints.
      probe: probe batch size (``--probe``); the batch is the recorded Gaussian-map
        samples when there are any, else standard-normal points drawn with a fixed seed.
      step: with a root of steps, the step to probe (default: the latest).

    Returns:
      The :class:`~icnn_cli.analysis.health.HealthReport`: per layer pre-activation mean,
      variance and correlation and dead units, the potential's mean and std, convexity at
      init, the transport map's distance from its reference, and a ``verdict``;
      ``report.as_json()`` is the ``"health"`` object of ``icnn inspect --health --json``.

    Raises:
      icnn_cli.errors.IcnnError: not an icnn checkpoint, or damaged data.
    """
    from icnn_cli.analysis.health import checkpoint_health
    from icnn_cli.checkpoint.storage import storage_path
    from icnn_cli.errors import UsageError

    if probe < 1:
        raise UsageError(f"must be at least 1, got {probe}", parameter="probe", value=probe)
    return checkpoint_health(storage_path(path), step, probe)


def load(path: str | Path) -> tuple[Any, Any]:
    """Rebuild the OTT ICNN of an icnn checkpoint and restore its variables.

    Args:
      path: checkpoint directory written by ``icnn init`` (a local path or ``gs://`` URL).

    Returns:
      ``(module, variables)`` such that ``module.apply(variables, x)`` evaluates
      the potential at ``x`` of shape ``[batch, dim_data]``.
    """
    from icnn_cli.analysis.loading import load_checkpoint

    return load_checkpoint(path)
