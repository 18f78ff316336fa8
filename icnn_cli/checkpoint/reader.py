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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint import provenance
from icnn_cli.checkpoint.arrays import iter_leaf_arrays
from icnn_cli.checkpoint.layout import ensure_committed_checkpoint
from icnn_cli.checkpoint.metadata import (
    check_checkpoint_metadata_file,
    quiet_absl,
    read_leaf_records,
    read_step_metadata,
)
from icnn_cli.checkpoint.spec import CheckpointSpec, parse_spec
from icnn_cli.errors import RUNTIME_ERROR, IcnnError
from icnn_cli.fingerprint import StreamingFingerprint, short_fingerprint
from icnn_cli.records import LeafRecord


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
        with quiet_absl():
            ensure_committed_checkpoint(path)
            step = check_checkpoint_metadata_file(path)
            leaves = read_leaf_records(path)
        spec = parse_spec(step.get("custom_metadata") or {}, str(path))
        written = provenance.written_at(step.get("commit_timestamp_nsecs"))
        return cls(path=path, spec=spec, leaves=leaves, written_at=written)

    @property
    def step_metadata(self) -> Any:
        """Orbax's step metadata (tree structure and custom metadata), read on first use."""
        if self._step_metadata is None:
            with quiet_absl():
                self._step_metadata = read_step_metadata(self.path)
        return self._step_metadata

    @property
    def recorded_fingerprint(self) -> str | None:
        return self.spec.fingerprint if self.spec else None

    def arrays(self) -> Iterator[tuple[LeafRecord, Any]]:
        """``(leaf, numpy array)`` sorted by path (the fingerprint's order), a few at a time.

        Unchecked: use :meth:`verified_arrays` unless you compare the fingerprint
        yourself (``icnn verify`` reports a mismatch instead of raising).
        """
        streaming = StreamingFingerprint()
        self.computed_fingerprint = None
        in_path_order = sorted(self.leaves, key=lambda leaf: leaf.path)
        with quiet_absl():
            for leaf, array in iter_leaf_arrays(self.path, self.step_metadata, in_path_order):
                streaming.add(leaf.path, array)
                yield leaf, array
        self.computed_fingerprint = streaming.value()

    def arrays_of(self, leaves: Sequence[LeafRecord]) -> Iterator[tuple[LeafRecord, Any]]:
        """Just these leaves, unchecked: the fingerprint covers the whole tree."""
        with quiet_absl():
            yield from iter_leaf_arrays(self.path, self.step_metadata, leaves)

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
        f"(recorded {short_fingerprint(recorded)}, found {short_fingerprint(found)}): "
        "the checkpoint is damaged",
        RUNTIME_ERROR,
    )
