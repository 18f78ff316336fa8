"""Reading checkpoints safely: every array that leaves here matches its recorded fingerprint.

Orbax does not checksum array data, so flipped bytes come back as silently wrong
numbers; and it reports damaged metadata as ``None`` or ``{}`` rather than
raising. :class:`CheckpointReader` is the one way icnn's commands (``inspect
--stats``, ``load``, ``verify``, ``diff``, ``check``) read arrays: it checks the
metadata files, then streams the leaves in path order while recomputing the
sha256 fingerprint, and raises :class:`IcnnError` (exit 1) on any mismatch.

Example::

    reader = CheckpointReader.open(Path("ckpt"))
    for leaf, array in reader.verified_arrays():   # raises after the last leaf if damaged
        ...
    arrays = read_verified_arrays(Path("ckpt"))    # {"params/w_zs_0/kernel": ndarray, ...}
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from icnn_cli import checkpoint, model, provenance
from icnn_cli.config import IcnnConfig, ModelConfig
from icnn_cli.errors import RUNTIME_ERROR, IcnnError
from icnn_cli.spec import CheckpointSpec, SampleSpec, parse_spec
from icnn_cli.summary import LeafRecord

NPY_HEADER_BYTES = 1 << 16  # numpy caps .npy headers far below this
MAX_SAMPLE_ITEMSIZE = 16  # bytes per value of the widest float dtype


@dataclasses.dataclass
class CheckpointReader:
    """A committed checkpoint whose metadata has been checked, ready to stream its arrays.

    Attributes:
      path: the checkpoint directory.
      spec: the embedded icnn spec, or ``None`` for a checkpoint icnn did not write.
      leaves: one record per array, in the checkpoint's tree order.
      computed_fingerprint: set once :meth:`arrays` has yielded every leaf.
      written_at: Orbax's commit time, ISO 8601 UTC, when recorded.
    """

    path: Path
    spec: CheckpointSpec | None
    leaves: list[LeafRecord]
    computed_fingerprint: str | None = None
    written_at: str | None = None
    _step_metadata: Any = None

    @classmethod
    def open(cls, path: Path) -> CheckpointReader:
        """Check markers and metadata files; exit 2 for a non-checkpoint, 1 for damage.

        Opens no array: Orbax's ``metadata()`` (which opens every one) is only
        called when arrays are read, or when the metadata files look unfamiliar.
        """
        with checkpoint.quiet_absl():
            checkpoint.ensure_committed_checkpoint(path)
            step = checkpoint.check_checkpoint_metadata_file(path)
            leaves = checkpoint.read_leaf_records(path)
        spec = parse_spec(step.get("custom_metadata") or {}, str(path))
        written = provenance.written_at(step.get("commit_timestamp_nsecs"))
        return cls(path=path, spec=spec, leaves=leaves, written_at=written)

    @property
    def step_metadata(self) -> Any:
        """Orbax's step metadata (tree structure and custom metadata), read on first use."""
        if self._step_metadata is None:
            with checkpoint.quiet_absl():
                self._step_metadata = checkpoint.read_step_metadata(self.path)
        return self._step_metadata

    @property
    def recorded_fingerprint(self) -> str | None:
        return self.spec.fingerprint if self.spec else None

    def arrays(self) -> Iterator[tuple[LeafRecord, Any]]:
        """``(leaf, numpy array)`` sorted by path (the fingerprint's order), a few at a time.

        Unchecked: use :meth:`verified_arrays` unless you compare the fingerprint
        yourself (``icnn verify`` reports a mismatch instead of raising).
        """
        streaming = checkpoint.StreamingFingerprint()
        self.computed_fingerprint = None
        in_path_order = sorted(self.leaves, key=lambda leaf: leaf.path)
        with checkpoint.quiet_absl():
            for leaf, array in checkpoint.iter_leaf_arrays(
                self.path, self.step_metadata, in_path_order
            ):
                streaming.add(leaf.path, array)
                yield leaf, array
        self.computed_fingerprint = streaming.value()

    def arrays_of(self, leaves: Sequence[LeafRecord]) -> Iterator[tuple[LeafRecord, Any]]:
        """Just these leaves, unchecked: the fingerprint covers the whole tree."""
        with checkpoint.quiet_absl():
            yield from checkpoint.iter_leaf_arrays(self.path, self.step_metadata, leaves)

    def verified_arrays(self) -> Iterator[tuple[LeafRecord, Any]]:
        """Like :meth:`arrays`, then raise ``IcnnError`` (exit 1) if the fingerprint differs.

        The check can only happen after the last leaf: act on the data (print,
        write) only once the iterator is exhausted.
        """
        yield from self.arrays()
        self.check_fingerprint()

    def check_fingerprint(self) -> None:
        """Raise (exit 1) unless the streamed arrays match the recorded fingerprint.

        A checkpoint without a spec has nothing recorded and passes.
        """
        recorded = self.recorded_fingerprint
        if recorded is None:
            return
        if self.computed_fingerprint is None:
            raise ValueError("check_fingerprint() needs every leaf read first")
        if self.computed_fingerprint != recorded:
            raise fingerprint_mismatch(self.path, recorded, self.computed_fingerprint)


def fingerprint_mismatch(path: Path, recorded: str, found: str) -> IcnnError:
    return IcnnError(
        f"{path}: array data does not match the recorded fingerprint "
        f"(recorded {recorded[7:19]}, found {found[7:19]}): the checkpoint is damaged",
        RUNTIME_ERROR,
    )


def read_verified_arrays(path: Path) -> dict[str, Any]:
    """Every array of the checkpoint by ``/``-joined leaf path, fingerprint checked.

    Holds the whole checkpoint in memory; stream with :class:`CheckpointReader`
    for large ones.
    """
    reader = CheckpointReader.open(path)
    return {"/".join(leaf.path): array for leaf, array in reader.verified_arrays()}


def read_spec(path: Path) -> CheckpointSpec:
    """The embedded spec of an icnn checkpoint; exit 2 for a checkpoint without one."""
    spec = CheckpointReader.open(path).spec
    if spec is None:
        raise IcnnError(f"{path}: no embedded icnn spec (not written by icnn init)")
    return spec


def spec_config(spec: CheckpointSpec, path: Path) -> IcnnConfig:
    from pydantic import ValidationError

    try:
        return IcnnConfig.model_validate(spec.config)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"]))
        raise IcnnError(
            f"{path}: embedded config is invalid: {field}: {first['msg']}",
            RUNTIME_ERROR,
        ) from None


def recorded_samples(spec: CheckpointSpec, dim_data: int) -> tuple[Any, Any] | None:
    """The recorded Gaussian-map samples, or stand-ins of the right shape.

    The samples only feed the initializers; ``apply`` needs just the module's
    structure, so when the files moved or changed, random stand-ins will do.
    """
    if not spec.gaussian_map_samples:
        return None
    arrays = []
    for record in ordered_sample_records(spec):
        array = unchanged_sample(record, dim_data)
        arrays.append(stand_in_samples(dim_data) if array is None else array)
    return arrays[0], arrays[1]


def stand_in_samples(dim_data: int) -> Any:
    """Random points of the right shape: enough for ``apply``, which needs only structure."""
    import numpy as np

    return np.random.default_rng(0).standard_normal((dim_data + 1, dim_data))


def ordered_sample_records(spec: CheckpointSpec) -> list[SampleSpec]:
    """The recorded sample files, source first."""
    return sorted(spec.gaussian_map_samples, key=lambda record: record.role != "source")


def unchanged_sample(record: SampleSpec, dim_data: int) -> Any | None:
    """The recorded sample array if its file is still there with the same sha256, else None.

    The recorded path came from untrusted metadata, so it is loaded with the
    same checks as a config's sample file (regular file, no pickles, 2-D floats),
    and a file far larger than the recorded shape is not even read.
    """
    import math

    path = Path(record.path)
    largest = NPY_HEADER_BYTES + math.prod(record.shape) * MAX_SAMPLE_ITEMSIZE
    if not path.is_file() or path.stat().st_size > largest:
        return None
    if hashlib.sha256(path.read_bytes()).hexdigest() != record.sha256:
        return None
    array, _ = model.load_sample_file(path, record.role, dim_data)
    return array


def verify_fingerprint(path: Path, spec: CheckpointSpec, variables: Any) -> None:
    actual = checkpoint.fingerprint(variables)
    if actual != spec.fingerprint:
        raise fingerprint_mismatch(path, spec.fingerprint, actual)


def load_checkpoint(path: str | Path) -> tuple[Any, Any]:
    """``(module, variables)`` for an icnn checkpoint, after checking its fingerprint."""
    path = Path(path)
    spec = read_spec(path)
    config = spec_config(spec, path)
    module = model.build_icnn(config.model, recorded_samples(spec, config.model.dim_data))
    with checkpoint.quiet_absl():
        variables = checkpoint.restore_variables(path)
    verify_fingerprint(path, spec, variables)
    return module, variables


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """An OTT ICNN checkpoint ready for analysis.

    ``variables`` holds only the ``'params'`` collection, as ``module.apply`` wants it.
    ``samples`` are the Gaussian-map ``(source, target)`` arrays when they are really
    available (recorded files unchanged, or given by ``--config``), else ``None``.
    """

    model: ModelConfig
    module: Any
    variables: Any
    samples: tuple[Any, Any] | None


def load_model(
    path: str | Path, config_path: Path | None = None, config_flag: str | None = "--config"
) -> LoadedModel:
    """Load an icnn checkpoint, or any Orbax checkpoint of an OTT ICNN given its config.

    Args:
      path: checkpoint directory.
      config_path: YAML config describing the architecture (``--config``); needed for
        checkpoints icnn did not write, and used instead of the embedded spec when given.
      config_flag: the flag that gives ``config_path``, named in the error for a
        checkpoint without a spec; ``None`` where the command has no such flag.
    """
    from icnn_cli.config import load_config

    path = Path(path)
    spec = CheckpointReader.open(path).spec
    if config_path is None:
        if spec is None:
            hint = f"; give its architecture with {config_flag} CFG.yaml" if config_flag else ""
            raise IcnnError(f"{path}: no embedded icnn spec (not written by icnn init){hint}")
        config = spec_config(spec, path)
        samples = _readable_recorded_samples(spec, config.model.dim_data)
        # Each sample file is read and hashed once: stand-ins give the structure otherwise.
        structure = samples
        if samples is None and spec.gaussian_map_samples:
            stand_in = stand_in_samples(config.model.dim_data)
            structure = (stand_in, stand_in)
    else:
        config = load_config(config_path)
        samples, _ = model.load_gaussian_map_samples(config.model, config_path.parent)
        structure = samples
    module = model.build_icnn(config.model, structure)
    with checkpoint.quiet_absl():
        variables = checkpoint.restore_variables(path)
    if spec is not None:
        verify_fingerprint(path, spec, variables)
    # a foreign checkpoint may hold the params collection itself, without the 'params' key
    params = {"params": variables.get("params", variables)}
    _check_architecture(path, config_path, module, config.model.dim_data, params)
    return LoadedModel(config.model, module, params, samples)


def _readable_recorded_samples(spec: CheckpointSpec, dim_data: int) -> tuple[Any, Any] | None:
    by_role = {
        record.role: unchanged_sample(record, dim_data) for record in spec.gaussian_map_samples
    }
    if by_role.get("source") is None or by_role.get("target") is None:
        return None
    return by_role["source"], by_role["target"]


def _check_architecture(
    path: Path, config_path: Path | None, module: Any, dim_data: int, params: Any
) -> None:
    """Refuse (exit 2) arrays whose names or shapes differ from what the module expects."""
    import jax
    import jax.numpy as jnp

    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.ones((1, dim_data)))
    wanted = {parts: tuple(leaf.shape) for parts, leaf in checkpoint.flatten_with_paths(expected)}
    found = {
        parts: tuple(getattr(leaf, "shape", ()))
        for parts, leaf in checkpoint.flatten_with_paths(params)
    }
    source = f"--config {config_path}" if config_path else "its embedded spec"
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
