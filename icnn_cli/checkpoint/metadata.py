"""Orbax's metadata of a committed checkpoint: the step's JSON, the tree's leaf records.

The metadata fast path (``metadata_files``: Orbax's JSON read directly, milliseconds)
comes first, with Orbax's own ``metadata()`` as the fallback whenever the files
look unfamiliar; ``tests/test_layouts.py`` checks both against each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint import guarded_files, metadata_files
from icnn_cli.checkpoint.layout import TREE_METADATA, Item
from icnn_cli.checkpoint.storage import file_size, files_under, is_remote, orbax_path
from icnn_cli.errors import RUNTIME_ERROR, IcnnError, first_line
from icnn_cli.records import LeafRecord
from icnn_cli.tree_paths import flatten_with_paths


def read_step_metadata(path: Path) -> Any:
    """Orbax's metadata of the PyTree item at ``path``; damaged metadata raises (exit 1).

    Orbax reports a broken ``_METADATA`` as ``item_metadata=None`` rather than raising.
    """
    import orbax.checkpoint as ocp

    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            step = checkpointer.metadata(orbax_path(path))
    except Exception as error:  # Orbax raises KeyError, JSONDecodeError... for broken files
        raise IcnnError(
            f"{path}: {TREE_METADATA} is unreadable or damaged ({first_line(error)})",
            RUNTIME_ERROR,
        ) from None
    if getattr(step, "item_metadata", step) is None:
        raise IcnnError(f"{path}: {TREE_METADATA} is unreadable or damaged", RUNTIME_ERROR)
    return step


def metadata_tree(step_metadata: Any) -> Any:
    item = getattr(step_metadata, "item_metadata", step_metadata)
    return getattr(item, "tree", item)


def is_value_metadata(node: Any) -> bool:
    return hasattr(node, "dtype") or hasattr(node, "shape")


def leaf_records(step_metadata: Any, path: Path) -> list[LeafRecord]:
    """One :class:`LeafRecord` per leaf of the PyTree item at ``path``, from ``metadata()``."""
    import numpy as np

    records = []
    strings: dict[str, Any] | None = None
    for parts, meta in flatten_with_paths(metadata_tree(step_metadata), is_value_metadata):
        kind = type(meta).__name__
        if kind == "StringMetadata":
            if strings is None:
                strings = _strings_or_empty(path)
            records.append(LeafRecord.of_scalar(parts, strings.get(".".join(parts)), "str"))
        elif kind == "ScalarMetadata":
            dtype = np.dtype(meta.dtype)
            records.append(
                LeafRecord.of_scalar(parts, None, metadata_files.python_type_name(dtype))
            )
        elif getattr(meta, "shape", None) is None or getattr(meta, "dtype", None) is None:
            # Orbax 0.4's aggregated leaves: only the msgpack tree knows them.
            return metadata_files.msgpack_leaf_records(path)
        else:
            records.append(
                LeafRecord.of_array(parts, meta.shape, meta.dtype, sharding=_sharding_text(meta))
            )
    return records


def _strings_or_empty(path: Path) -> dict[str, Any]:
    try:
        return metadata_files.strings(path)
    except metadata_files.UnexpectedLayout:
        return {}


def read_leaf_records(path: Path) -> list[LeafRecord]:
    """One :class:`LeafRecord` per leaf of the PyTree item at ``path``, typed keys as keys.

    Reads Orbax's metadata files directly (``metadata_files``: milliseconds where
    ``metadata()`` takes seconds for thousands of leaves) and falls back to
    ``metadata()`` whenever they do not look as expected.
    """
    try:
        records = metadata_files.leaf_records(path)
    except metadata_files.UnexpectedLayout:
        try:
            records = leaf_records(read_step_metadata(path), path)
        except metadata_files.UnexpectedLayout as error:
            raise IcnnError(
                f"{path}: unreadable PyTree metadata ({error})", RUNTIME_ERROR
            ) from None
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
        raise IcnnError(f"{item.path}: JSON item without its document file", RUNTIME_ERROR)
    try:
        data = guarded_files.read_bytes(item.path, file, MAX_JSON_ITEM_BYTES)
        return guarded_files.load_json(data, item.path, file.name)
    except (ValueError, OSError) as error:
        raise IcnnError(
            f"{file}: JSON item is unreadable ({first_line(error)})", RUNTIME_ERROR
        ) from None
