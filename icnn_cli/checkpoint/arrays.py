"""Array data, one leaf in memory at a time: straight from zarr, Orbax as the fallback."""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from icnn_cli.checkpoint import metadata_files
from icnn_cli.checkpoint.metadata import is_value_metadata, metadata_tree
from icnn_cli.checkpoint.storage import StoragePath, orbax_path
from icnn_cli.errors import DamagedCheckpoint, first_line
from icnn_cli.records import LeafRecord
from icnn_cli.tree_paths import flatten_with_paths, leaf_path

READ_BATCH_BYTES = 64 << 20  # leaves are read in batches of about this size (Orbax fallback)
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _batches(leaves: Sequence[LeafRecord], budget: int) -> Iterator[list[LeafRecord]]:
    batch: list[LeafRecord] = []
    used = 0
    for leaf in leaves:
        if batch and used + leaf.nbytes > budget:
            yield batch
            batch, used = [], 0
        batch.append(leaf)
        used += leaf.nbytes
    if batch:
        yield batch


def iter_leaf_arrays(
    path: StoragePath,
    step_metadata: Callable[[], Any],
    leaves: Sequence[LeafRecord],
    budget: int = READ_BATCH_BYTES,
) -> Iterator[tuple[LeafRecord, Any]]:
    """Yield ``(leaf, numpy array)``, one leaf in memory at a time.

    Each leaf is read straight from its zarr array (:func:`metadata_files.array_reader`).
    ``step_metadata`` gives Orbax's metadata of the item, which only the fallback needs.
    Where the metadata files look unfamiliar, Orbax reads batches of about ``budget``
    bytes instead: a partial restore (other leaves are ``PLACEHOLDER``) into host
    numpy arrays, which also sidesteps Orbax's topology checks for sharded saves.
    """
    _unmap_large_buffers_when_freed()
    read = _leaf_reader(path)
    if read is not None:
        for leaf in leaves:
            yield leaf, leaf.value if _value_known(leaf) else read(leaf)
        return

    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    tree = metadata_tree(step_metadata())
    for batch in _batches(leaves, budget):
        wanted = {leaf.path for leaf in batch if not _value_known(leaf)}

        restore_args = jax.tree_util.tree_map_with_path(
            lambda key_path, _, wanted=wanted: (
                ocp.RestoreArgs(restore_type=np.ndarray)
                if leaf_path(key_path) in wanted
                else ocp.PLACEHOLDER
            ),
            tree,
            is_leaf=is_value_metadata,
        )
        restored = _restore_with(path, restore_args) if wanted else {}
        arrays = dict(flatten_with_paths(restored, lambda node: node is ocp.PLACEHOLDER))
        for leaf in batch:
            yield leaf, leaf.value if _value_known(leaf) else arrays[leaf.path]
        del restored, arrays


def _value_known(leaf: LeafRecord) -> bool:
    # A string's or a Python scalar's value is read with the metadata.
    return leaf.scalar and leaf.value is not None


def _leaf_reader(path: StoragePath) -> Any:
    """``leaf -> value`` without Orbax: the zarr arrays, or Orbax 0.4's inline msgpack values."""
    try:
        inline = metadata_files.msgpack_values(path)
        if inline is not None:
            return lambda leaf: inline[leaf.path]
        # A tree with some leaves aggregated keeps their values beside the placeholders.
        some_inline = metadata_files.msgpack_inline_values(path)
    except metadata_files.UnexpectedLayout as error:
        raise DamagedCheckpoint(f"{path}: cannot read array data ({error})") from None
    try:
        read = metadata_files.array_reader(path)
    except metadata_files.UnexpectedLayout:
        return None
    return lambda leaf: (
        some_inline[leaf.path] if leaf.path in some_inline else _read_leaf(path, read, leaf)
    )


def _read_leaf(path: StoragePath, read: Any, leaf: LeafRecord) -> Any:
    try:
        return read(leaf)
    except (ValueError, RuntimeError) as error:  # tensorstore: missing data, DATA_LOSS, ...
        raise DamagedCheckpoint(f"{path}: cannot read array data ({first_line(error)})") from None


def _unmap_large_buffers_when_freed() -> None:
    """Have glibc give freed buffers of 1 MiB and more straight back to the OS.

    Tensorstore decodes arrays on its own threads, and glibc keeps what those
    threads free in per-thread heaps: reading leaf after leaf then ratcheted the
    resident memory up towards the checkpoint's size (1.2 GB after 256 MB of
    16 MiB leaves; 0.5 GB flat with this). Not glibc: nothing to do.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def _restore_with(path: StoragePath, restore_args: Any) -> Any:
    import orbax.checkpoint as ocp

    handler = ocp.PyTreeCheckpointHandler()
    with ocp.Checkpointer(handler) as checkpointer, warnings.catch_warnings():
        # Restoring into numpy needs no sharding, yet Orbax warns it is missing.
        warnings.filterwarnings("ignore", message="Sharding info not provided")
        try:
            return checkpointer.restore(
                orbax_path(path), args=ocp.args.PyTreeRestore(restore_args=restore_args)
            )
        except Exception as error:  # Orbax raises plain Exception for a missing data file
            raise DamagedCheckpoint(
                f"{path}: cannot read array data ({first_line(error)})"
            ) from None
