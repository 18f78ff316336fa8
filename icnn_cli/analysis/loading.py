"""An OTT ICNN and its variables from a checkpoint: for ``load``, ``check``, ``plot``, health.

Every path goes through :func:`load_model`: the module is rebuilt from the
embedded spec (or ``--config``), the variables are restored with their
fingerprint checked, and their names and shapes are checked against what the
module expects, so a wrong architecture is refused before any number is shown.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

from icnn_cli import model
from icnn_cli.checkpoint.consistency import read_consistently
from icnn_cli.checkpoint.layout import Checkpoint, open_checkpoint
from icnn_cli.checkpoint.metadata import quiet_absl
from icnn_cli.checkpoint.reader import CheckpointReader
from icnn_cli.checkpoint.spec import CheckpointSpec, SampleSpec
from icnn_cli.checkpoint.storage import StoragePath, is_remote, storage_path
from icnn_cli.config import IcnnConfig, ModelConfig
from icnn_cli.errors import DamagedCheckpoint, IcnnError, NotACheckpoint, is_bad_input, param
from icnn_cli.tree_paths import flatten_with_paths
from icnn_cli.validation_errors import describe_validation_error

NPY_HEADER_BYTES = 1 << 16  # numpy caps .npy headers far below this
MAX_SAMPLE_ITEMSIZE = 16  # bytes per value of the widest float dtype


def spec_config(spec: CheckpointSpec, path: StoragePath) -> IcnnConfig:
    from pydantic import ValidationError

    try:
        return IcnnConfig.model_validate(spec.config)
    except ValidationError as error:
        problems = describe_validation_error(error, IcnnConfig, data=spec.config)
        raise DamagedCheckpoint(f"{path}: embedded config is invalid: {problems}") from None


def recorded_samples(spec: CheckpointSpec, dim_data: int) -> tuple[Any, Any] | None:
    """The recorded Gaussian-map ``(source, target)`` samples, if both files are unchanged.

    ``None`` when the spec records none, or when a file is gone or has changed:
    the caller decides what that means (``verify`` cannot re-run the init; a
    loader can still build the module's structure from stand-ins).
    """
    by_role = {
        record.role: unchanged_sample(record, dim_data) for record in spec.gaussian_map_samples
    }
    if by_role.get("source") is None or by_role.get("target") is None:
        return None
    return by_role["source"], by_role["target"]


def missing_sample_file(spec: CheckpointSpec, dim_data: int) -> str | None:
    """The first recorded sample file that is gone or changed (source first), if any."""
    for record in sorted(spec.gaussian_map_samples, key=lambda record: record.role != "source"):
        if unchanged_sample(record, dim_data) is None:
            return record.path
    return None


def unchanged_sample(record: SampleSpec, dim_data: int) -> Any | None:
    """The recorded sample array if its file is still there with the same sha256, else None.

    The recorded path came from untrusted metadata, so it is loaded with the
    same checks as a config's sample file (regular file, no pickles, 2-D floats),
    and a file far larger than the recorded shape is not even read.
    """
    path = Path(record.path)
    largest = NPY_HEADER_BYTES + math.prod(record.shape) * MAX_SAMPLE_ITEMSIZE
    if not path.is_file() or path.stat().st_size > largest:
        return None
    if hashlib.sha256(path.read_bytes()).hexdigest() != record.sha256:
        return None
    array, _ = model.load_sample_file(path, record.role, dim_data)
    return array


def _structure_samples(dim_data: int) -> tuple[Any, Any]:
    """Random points of the right shape: ``apply`` needs only the module's structure."""
    import numpy as np

    stand_in = np.random.default_rng(0).standard_normal((dim_data + 1, dim_data))
    return stand_in, stand_in


def read_variables(reader: CheckpointReader) -> dict[str, Any]:
    """The reader's whole tree as nested dicts, fingerprint checked, typed keys as keys.

    Read leaf by leaf through the same reader as ``inspect --stats`` and ``diff``, so
    every layout they read loads too (and a sharded save onto one device).
    """
    import jax

    tree: dict[str, Any] = {}
    for leaf, value in reader.verified_arrays():
        if leaf.key_impl:
            value = jax.random.wrap_key_data(value, impl=leaf.key_impl)
        node = tree
        for part in leaf.path[:-1]:
            node = node.setdefault(part, {})
        node[leaf.path[-1]] = value
    return tree


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """An OTT ICNN checkpoint ready for analysis.

    ``variables`` holds only the ``'params'`` collection, as ``module.apply`` wants it;
    ``all_variables`` every collection the checkpoint holds. ``samples`` are the
    Gaussian-map ``(source, target)`` arrays when they are really available
    (recorded files unchanged, or given by ``--config``), else ``None``.
    """

    model: ModelConfig
    module: Any
    variables: Any
    samples: tuple[Any, Any] | None
    all_variables: Any = None


def load_checkpoint(path: str | StoragePath) -> tuple[Any, Any]:
    """``(module, variables)`` of an icnn checkpoint: what ``icnn_cli.load`` returns."""
    loaded = load_model(path, config_parameter=None)
    return loaded.module, loaded.all_variables


def load_model(
    path: str | StoragePath,
    config_path: Path | None = None,
    config_parameter: str | None = "config",
) -> LoadedModel:
    """Load an icnn checkpoint, or any Orbax checkpoint of an OTT ICNN given its config.

    Args:
      path: checkpoint directory.
      config_path: YAML config describing the architecture (``--config``); needed for
        checkpoints icnn did not write, and used instead of the embedded spec when given.
      config_parameter: the argument that gives ``config_path``, named in the error for a
        checkpoint without a spec; ``None`` where the caller has no such argument.
    """
    return read_consistently(
        [storage_path(path)], lambda: _load_model(path, config_path, config_parameter)
    )


def _load_model(
    path: str | StoragePath,
    config_path: Path | None = None,
    config_parameter: str | None = "config",
) -> LoadedModel:
    from icnn_cli.config import load_config

    checkpoint = open_checkpoint(storage_path(path))
    path = checkpoint.path
    tree = checkpoint.only_pytree(" (an ICNN has one)")
    reader = CheckpointReader.of(checkpoint, tree.name)
    spec = reader.spec
    if config_path is None:
        if spec is None:
            raise no_spec(path, config_parameter)
        config = spec_config(spec, path)
        samples = recorded_samples(spec, config.model.dim_data)
        structure = samples
        if samples is None and spec.gaussian_map_samples:
            structure = _structure_samples(config.model.dim_data)
    else:
        config = load_config(config_path)
        samples, _ = model.load_gaussian_map_samples(config.model, config_path.parent)
        structure = samples
    module = model.build_icnn(config.model, structure)
    variables = read_variables(reader)
    # a foreign checkpoint may hold the params collection itself, without the 'params' key
    params = {"params": variables.get("params", variables)}
    _check_architecture(path, config_path, module, config.model.dim_data, params)
    return LoadedModel(config.model, module, params, samples, variables)


def no_spec(path: StoragePath, config_parameter: str | None) -> NotACheckpoint:
    """The error for a checkpoint without a spec where no architecture config was given."""
    hint = (
        f"; give its architecture with {param(config_parameter)} CFG.yaml"
        if config_parameter
        else ""
    )
    return NotACheckpoint(f"{path}: no embedded icnn spec (not written by icnn init){hint}")


def _check_architecture(
    path: StoragePath, config_path: Path | None, module: Any, dim_data: int, params: Any
) -> None:
    """Refuse (exit 2) arrays whose names or shapes differ from what the module expects."""
    import jax
    import jax.numpy as jnp

    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.ones((1, dim_data)))
    wanted = {parts: tuple(leaf.shape) for parts, leaf in flatten_with_paths(expected)}
    found = {parts: tuple(getattr(leaf, "shape", ())) for parts, leaf in flatten_with_paths(params)}
    source = f"the config {config_path}" if config_path else "its embedded spec"
    for parts, shape in sorted(wanted.items()):
        name = "/".join(parts)
        if parts not in found:
            raise IcnnError(f"{path}: does not match {source}: no array {name}")
        if found[parts] != shape:
            raise IcnnError(
                f"{path}: does not match {source}: {name} has shape {found[parts]}, "
                f"the config gives {shape}"
            )
    extra = sorted("/".join(parts) for parts in set(found) - set(wanted))
    if extra:
        raise IcnnError(f"{path}: does not match {source}: unexpected array {extra[0]}")


PARALLEL_OPENS = 8  # object storage: many small metadata reads, each one round trip


def open_all(paths: list[StoragePath]) -> list[Checkpoint | None]:
    """Open every checkpoint's metadata (several at a time in object storage).

    Raises the first bad-input error (not a checkpoint, refused) in the order of
    ``paths``; a damaged checkpoint gives ``None``: damage is a finding of its report.
    """
    from concurrent.futures import ThreadPoolExecutor

    def opened(path: StoragePath) -> Checkpoint | IcnnError | None:
        try:
            return open_checkpoint(path)
        except IcnnError as error:
            return None if not is_bad_input(error) else error

    if sum(is_remote(path) for path in paths) > 1:
        with quiet_absl(), ThreadPoolExecutor(min(PARALLEL_OPENS, len(paths))) as pool:
            results = list(pool.map(opened, paths))
    else:
        results = [opened(path) for path in paths]
    for result in results:
        if isinstance(result, IcnnError):
            raise result
    return [result for result in results if not isinstance(result, IcnnError)]
