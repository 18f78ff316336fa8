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

import contextlib
import dataclasses
import gc
from collections.abc import Iterator, Sequence
from typing import Any

from icnn_cli.checkpoint import provenance, single_files
from icnn_cli.checkpoint.arrays import iter_leaf_arrays
from icnn_cli.checkpoint.layout import TREE_KINDS, Checkpoint, Item, open_checkpoint
from icnn_cli.checkpoint.metadata import quiet_absl, read_leaf_records, read_step_metadata
from icnn_cli.checkpoint.single_files import FILE_KINDS
from icnn_cli.checkpoint.spec import CheckpointSpec, parse_spec
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.errors import DamagedCheckpoint, IcnnError, NotACheckpoint, ResourcesExceeded
from icnn_cli.fingerprint import StreamingFingerprint, short_fingerprint
from icnn_cli.records import LeafRecord
from icnn_cli.units import format_bytes

# Reading a leaf holds it once, and its statistics or comparison one temporary of its size.
READ_MEMORY_PER_LEAF_BYTE = 2


@dataclasses.dataclass(frozen=True)
class TreePart:
    """One PyTree item of the checkpoint, and the prefix its leaf paths get."""

    item: Item
    prefix: tuple[str, ...]  # (item name,) where the checkpoint has several items


@dataclasses.dataclass
class CheckpointReader:
    """A committed checkpoint whose metadata has been checked, ready to stream its leaves.

    Reads every PyTree item of the checkpoint (or the one asked for); where a step
    has several items, leaf paths start with the item's name (``state/params/...``).

    Attributes:
      path: the checkpoint directory.
      checkpoint: what :func:`~icnn_cli.checkpoint.layout.open_checkpoint` found there.
      spec: the embedded icnn spec, or ``None`` for a checkpoint icnn did not write.
      leaves: one record per leaf, in tree order, item by item.
      computed_fingerprint: set once :meth:`arrays` has yielded every leaf.
      written_at: Orbax's commit time, ISO 8601 UTC, when recorded.
    """

    path: StoragePath
    checkpoint: Checkpoint
    parts: list[TreePart]
    spec: CheckpointSpec | None
    leaves: list[LeafRecord]
    computed_fingerprint: str | None = None
    written_at: str | None = None
    _step_metadata: dict[StoragePath, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def open(cls, path: StoragePath, item: str | None = None) -> CheckpointReader:
        """Check markers and metadata files; exit 2 for a non-checkpoint, 1 for damage."""
        return cls.of(open_checkpoint(path), item)

    @classmethod
    def of(cls, checkpoint: Checkpoint, item: str | None = None) -> CheckpointReader:
        """The PyTree items of ``checkpoint`` (just ``item``, when given).

        Opens no array: Orbax's ``metadata()`` (which opens every one) is only
        called when arrays are read, or when the metadata files look unfamiliar.
        """
        if item is not None:
            chosen = checkpoint.item(item)
            if chosen.kind not in TREE_KINDS:
                raise NotACheckpoint(f"is a {chosen.kind} item, not a PyTree", "item", item)
            trees = [chosen]
        else:
            trees = checkpoint.pytree_items()
        several = item is None and len(checkpoint.items) > 1
        parts = [TreePart(tree, (tree.label,) if several else ()) for tree in trees]
        leaves = []
        with quiet_absl(), collections_paused():
            for part in parts:
                records = _item_records(part.item)
                if part.prefix:
                    records = [
                        dataclasses.replace(leaf, path=part.prefix + leaf.path) for leaf in records
                    ]
                leaves += records
        metadata = checkpoint.metadata
        return cls(
            path=checkpoint.path,
            checkpoint=checkpoint,
            parts=parts,
            spec=parse_spec(checkpoint.custom_metadata, str(checkpoint.path)),
            leaves=leaves,
            written_at=provenance.written_at(metadata.commit_timestamp_nsecs),
        )

    def step_metadata(self, part: TreePart) -> Any:
        """Orbax's metadata of one item (its tree structure), read on first use."""
        if part.item.path not in self._step_metadata:
            with quiet_absl():
                self._step_metadata[part.item.path] = read_step_metadata(part.item.path)
        return self._step_metadata[part.item.path]

    @property
    def recorded_fingerprint(self) -> str | None:
        return self.spec.fingerprint if self.spec else None

    def _stream(self, leaves: Sequence[LeafRecord]) -> Iterator[tuple[LeafRecord, Any]]:
        """``leaves`` (prefixed paths) item by item, as ``(leaf, value)``."""
        check_leaves_fit(self.path, leaves)
        for part in sorted(self.parts, key=lambda part: part.prefix):
            size = len(part.prefix)
            mine = [
                dataclasses.replace(leaf, path=leaf.path[size:])
                for leaf in leaves
                if leaf.path[:size] == part.prefix
            ]
            if not mine:
                continue

            def metadata(part: TreePart = part) -> Any:
                return self.step_metadata(part)

            if part.item.kind in FILE_KINDS:
                values = single_files.iter_values(part.item.path, part.item.kind, mine)
            else:
                values = iter_leaf_arrays(part.item.path, metadata, mine)
            with quiet_absl():
                for leaf, value in values:
                    yield dataclasses.replace(leaf, path=part.prefix + leaf.path), value

    def arrays(self) -> Iterator[tuple[LeafRecord, Any]]:
        """``(leaf, value)`` sorted by path (the fingerprint's order), one leaf at a time.

        Values are numpy arrays, and a non-array leaf's Python value. Unchecked: use
        :meth:`verified_arrays` unless you compare the fingerprint yourself (``icnn
        verify`` reports a mismatch instead of raising).
        """
        streaming = StreamingFingerprint()
        self.computed_fingerprint = None
        for leaf, value in self._stream(sorted(self.leaves, key=lambda leaf: leaf.path)):
            streaming.add(leaf.path, value)
            yield leaf, value
        self.computed_fingerprint = streaming.value()

    def arrays_of(self, leaves: Sequence[LeafRecord]) -> Iterator[tuple[LeafRecord, Any]]:
        """Just these leaves, unchecked: the fingerprint covers the whole tree."""
        yield from self._stream(leaves)

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


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while records are built.

    A 200,000-leaf tree allocates millions of acyclic objects (arrays, key tuples,
    records), and the collector's passes over them took half of ``inspect``'s time;
    nothing built here forms a cycle, so nothing is left for the collector to find.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_leaves_fit(path: StoragePath, leaves: Sequence[LeafRecord]) -> None:
    """Refuse (exit 2) before any read when one leaf's declared size would not fit in memory.

    A checkpoint's headers declare the shapes: ``[2**40, 2**40]`` float64 in a 1 KiB
    checkpoint is a declaration, not data, and reading it would abort in the allocator.
    """
    from icnn_cli import resources

    arrays = [leaf for leaf in leaves if not leaf.scalar]
    if not arrays:
        return
    largest = max(arrays, key=lambda leaf: leaf.nbytes)
    needed = largest.nbytes * READ_MEMORY_PER_LEAF_BYTE
    available = resources.available_memory()
    if needed > available:
        shape = "[" + ", ".join(str(dim) for dim in largest.shape) + "]"
        raise ResourcesExceeded(
            f"{path}: leaf {largest.path_string} declares {largest.dtype} {shape} "
            f"({format_bytes(largest.nbytes)}); reading it needs ~{format_bytes(needed)} of "
            f"memory and {format_bytes(available)} is available: not read"
        )


def _item_records(item: Item) -> list[LeafRecord]:
    if item.kind in FILE_KINDS:
        return single_files.leaf_records(item.path, item.kind)
    return _with_scalar_values(item.path, read_leaf_records(item.path))


def _with_scalar_values(path: StoragePath, leaves: list[LeafRecord]) -> list[LeafRecord]:
    """Python scalars whose value the metadata fallback could not give, read (one element each)."""
    import numpy as np

    missing = [leaf for leaf in leaves if leaf.scalar and leaf.value is None]
    if not missing:
        return leaves
    values = {}
    for leaf, value in iter_leaf_arrays(path, lambda: read_step_metadata(path), missing):
        array = np.asarray(value)
        if array.size != 1:
            raise DamagedCheckpoint(
                f"{path}: scalar {leaf.path_string} holds {array.size} values, not one"
            )
        values[leaf.path] = array.item()
    return [
        dataclasses.replace(leaf, value=values[leaf.path]) if leaf.path in values else leaf
        for leaf in leaves
    ]


def fingerprint_mismatch(path: StoragePath, recorded: str, found: str) -> IcnnError:
    return DamagedCheckpoint(
        f"{path}: array data does not match the recorded fingerprint "
        f"(recorded {short_fingerprint(recorded)}, found {short_fingerprint(found)}): "
        "the checkpoint is damaged"
    )
