"""Orbax's metadata of a committed checkpoint: the step's JSON, the tree's leaf records.

The metadata fast path (``metadata_files``: Orbax's JSON read directly, milliseconds)
comes first, with Orbax's own ``metadata()`` as the fallback whenever the files
look unfamiliar; ``tests/test_layouts.py`` checks both against each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from icnn_cli.checkpoint import guarded_files, metadata_files
from icnn_cli.checkpoint.layout import MSGPACK_TREE, TREE_METADATA, Item, tree_file_missing
from icnn_cli.checkpoint.storage import StoragePath, file_size, files_under, is_remote, orbax_path
from icnn_cli.errors import DamagedCheckpoint, first_line
from icnn_cli.records import LeafRecord, records_of_values
from icnn_cli.tree_paths import flatten_with_paths


def read_step_metadata(path: StoragePath) -> Any:
    """Orbax's metadata of the PyTree item at ``path``; damaged metadata raises (exit 1).

    Orbax reports a broken ``_METADATA`` as ``item_metadata=None`` rather than raising.
    """
    import orbax.checkpoint as ocp

    if not (path / TREE_METADATA).exists() and not (path / MSGPACK_TREE).exists():
        raise tree_file_missing(path)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            step = checkpointer.metadata(orbax_path(path))
    except Exception as error:  # Orbax raises KeyError, JSONDecodeError... for broken files
        raise DamagedCheckpoint(
            f"{path}: {TREE_METADATA} is unreadable or damaged ({first_line(error)})"
        ) from None
    if getattr(step, "item_metadata", step) is None:
        raise DamagedCheckpoint(f"{path}: {TREE_METADATA} is unreadable or damaged")
    return step


def metadata_tree(step_metadata: Any) -> Any:
    item = getattr(step_metadata, "item_metadata", step_metadata)
    return getattr(item, "tree", item)


def is_value_metadata(node: Any) -> bool:
    return hasattr(node, "dtype") or hasattr(node, "shape")


def leaf_records(step_metadata: Any, path: StoragePath) -> list[LeafRecord]:
    """One :class:`LeafRecord` per leaf of the PyTree item at ``path``, from ``metadata()``."""
    import numpy as np
    from orbax.checkpoint.metadata import ScalarMetadata, StringMetadata

    records = []
    strings: dict[str, Any] | None = None
    inline: dict[tuple[str, ...], Any] | None = None
    for parts, meta in flatten_with_paths(metadata_tree(step_metadata), is_value_metadata):
        if isinstance(meta, StringMetadata):
            if strings is None:
                strings = _strings_or_empty(path)
            records.append(LeafRecord.of_scalar(parts, strings.get(".".join(parts)), "str"))
        elif isinstance(meta, ScalarMetadata):
            dtype = np.dtype(meta.dtype)
            records.append(
                LeafRecord.of_scalar(parts, None, metadata_files.python_type_name(dtype))
            )
        elif getattr(meta, "shape", None) is None or getattr(meta, "dtype", None) is None:
            # Orbax 0.4's aggregated leaves (all, or some beside placeholders): only the
            # msgpack tree knows them.
            if inline is None:
                inline = metadata_files.msgpack_inline_values(path)
            if parts not in inline:
                raise metadata_files.UnexpectedLayout(
                    f"no value of {'/'.join(parts)} in {MSGPACK_TREE}"
                )
            records += records_of_values({parts: inline[parts]})
        else:
            records.append(
                LeafRecord.of_array(parts, meta.shape, meta.dtype, sharding=_sharding_text(meta))
            )
    return records


def _strings_or_empty(path: StoragePath) -> dict[str, Any]:
    try:
        return metadata_files.strings(path)
    except metadata_files.UnexpectedLayout:
        return {}


def read_leaf_records(path: StoragePath) -> list[LeafRecord]:
    """One :class:`LeafRecord` per leaf of the PyTree item at ``path``, typed keys as keys.

    Reads Orbax's metadata files directly (``metadata_files``: milliseconds where
    ``metadata()`` takes seconds for thousands of leaves) and falls back to
    ``metadata()`` whenever they do not look as expected. A tree without ``_METADATA``
    (Orbax 0.4.0 to 0.4.2) is read from its msgpack file alone: ``metadata()`` lists no
    array of it.
    """
    if metadata_files.is_msgpack_tree_only(path):
        try:
            return metadata_files.msgpack_tree_records(path)
        except metadata_files.UnexpectedLayout as error:
            raise DamagedCheckpoint(f"{path}: {error}") from None
    try:
        records = metadata_files.leaf_records(path)
    except metadata_files.UnexpectedLayout:
        try:
            records = leaf_records(read_step_metadata(path), path)
        except metadata_files.UnexpectedLayout as error:
            raise DamagedCheckpoint(f"{path}: unreadable PyTree metadata ({error})") from None
    return with_key_impls(records, metadata_files.key_impls(path))


def with_key_impls(records: Sequence[LeafRecord], impls: dict[str, str]) -> list[LeafRecord]:
    """Show typed PRNG key leaves as keys: ``uint32 (3, 2)`` -> ``key<threefry2x32> (3,)``.

    Orbax stores a key array as its ``uint32`` key data, which has one more axis
    (2 words for threefry, 4 for rbg); ``impls`` maps Orbax param names to impls.
    """
    shown = []
    for record in records:
        impl = impls.get(".".join(record.path))
        words = metadata_files.KEY_DATA_WORDS.get(impl or "")
        if impl and words and record.shape[-1:] == (words,):
            record = dataclasses.replace(
                record, shape=record.shape[:-1], dtype=f"key<{impl}>", key_impl=impl
            )
        elif impl:
            record = dataclasses.replace(record, key_impl=impl)
        shown.append(record)
    return shown


def _sharding_text(meta: Any) -> str | None:
    from icnn_cli.sharding import describe_sharding_metadata

    return describe_sharding_metadata(meta)


@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Keep Orbax's logging off the user's terminal.

    Orbax logs damaged metadata files at ERROR level and carries on; icnn checks
    those files itself and reports them as one line, so only FATAL gets through.
    """
    from absl import logging as absl_logging

    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.FATAL)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)


MAX_JSON_ITEM_BYTES = 1 << 20  # JSON items hold metrics and small settings


def item_bytes(item: Item) -> int:
    """The bytes of an item's files on disk."""
    if is_remote(item.path):
        return sum(file_size(item.path / name) for name in files_under(item.path))
    return sum(file_size(file) for file in item.path.rglob("*") if file.is_file())


def read_json_item(item: Item) -> Any:
    """The document of a JSON item; exit 1 when it is unreadable or too large to show."""
    file = item.json_file
    if file is None:
        raise DamagedCheckpoint(f"{item.path}: JSON item without its document file")
    try:
        data = guarded_files.read_bytes(item.path, file, MAX_JSON_ITEM_BYTES)
        return guarded_files.load_json(data, item.path, file.name)
    except (ValueError, OSError) as error:
        raise DamagedCheckpoint(f"{file}: JSON item is unreadable ({first_line(error)})") from None
