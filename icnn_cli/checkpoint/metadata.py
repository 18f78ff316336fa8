"""Orbax's metadata of a committed checkpoint: the step's JSON, the tree's leaf records.

The metadata fast path (``metadata_files``: Orbax's JSON read directly, milliseconds)
comes first, with Orbax's own ``metadata()`` as the fallback whenever the files
look unfamiliar; ``tests/test_layouts.py`` checks both against each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint import metadata_files
from icnn_cli.checkpoint.layout import (
    CHECKPOINT_METADATA,
    TREE_METADATA,
    ensure_committed_checkpoint,
)
from icnn_cli.errors import RUNTIME_ERROR, IcnnError, first_line
from icnn_cli.records import LeafRecord
from icnn_cli.tree_paths import flatten_with_paths

MAX_CHECKPOINT_METADATA_BYTES = 4 << 20  # Orbax's own entries plus an icnn spec are a few KiB


def read_step_metadata(path: Path) -> Any:
    """Orbax's step metadata of a committed checkpoint; damaged metadata files raise (exit 1).

    Orbax reports neither kind of damage: a broken ``_METADATA`` gives
    ``item_metadata=None`` and a broken ``_CHECKPOINT_METADATA`` gives
    ``custom_metadata={}``, which would make an icnn checkpoint look foreign.
    """
    import orbax.checkpoint as ocp

    ensure_committed_checkpoint(path)
    check_checkpoint_metadata_file(path)
    with ocp.StandardCheckpointer() as checkpointer:
        step = checkpointer.metadata(path.absolute())
    if step.item_metadata is None:
        raise IcnnError(f"{path}: {TREE_METADATA} is unreadable or damaged", RUNTIME_ERROR)
    return step


def check_checkpoint_metadata_file(path: Path) -> dict[str, Any]:
    """Refuse (exit 1) a ``_CHECKPOINT_METADATA`` that Orbax could not have written.

    Returns its content (``{}`` when there is none): Orbax's step metadata, with the
    ``custom_metadata`` and the ``commit_timestamp_nsecs``.
    """
    file = path / CHECKPOINT_METADATA
    if not file.exists():
        return {}  # older Orbax writers did not have it; nothing is lost
    problem = None
    content: Any = None
    if file.stat().st_size > MAX_CHECKPOINT_METADATA_BYTES:
        problem = f"is larger than {MAX_CHECKPOINT_METADATA_BYTES} bytes"
    else:
        try:
            content = json.loads(file.read_bytes())
        except (ValueError, OSError) as error:
            problem = f"is not valid JSON ({first_line(error)})"
        else:
            if not isinstance(content, dict):
                problem = "is not a JSON object"
            elif not isinstance(content.get("custom_metadata", {}), dict):
                problem = "has a custom_metadata that is not a JSON object"
    if problem:
        raise IcnnError(
            f"{path}: {CHECKPOINT_METADATA} {problem}: the checkpoint's metadata is damaged",
            RUNTIME_ERROR,
        )
    return content


def metadata_tree(step_metadata: Any) -> Any:
    item = step_metadata.item_metadata
    return getattr(item, "tree", item)


def is_value_metadata(node: Any) -> bool:
    return hasattr(node, "dtype") or hasattr(node, "shape")


def leaf_records(step_metadata: Any) -> list[LeafRecord]:
    """One :class:`LeafRecord` per array in the checkpoint, from Orbax's ``metadata()``."""
    return [
        LeafRecord.of_array(
            parts,
            getattr(meta, "shape", None) or (),
            getattr(meta, "dtype", None) or "float32",
            sharding=_sharding_text(meta),
        )
        for parts, meta in flatten_with_paths(metadata_tree(step_metadata), is_value_metadata)
    ]


def read_leaf_records(path: Path) -> list[LeafRecord]:
    """One :class:`LeafRecord` per array of a committed checkpoint, typed keys as keys.

    Reads Orbax's metadata files directly (``metadata_files``: milliseconds where
    ``metadata()`` takes seconds for thousands of leaves) and falls back to
    ``metadata()`` whenever they do not look as expected.
    """
    try:
        records = metadata_files.leaf_records(path)
    except metadata_files.UnexpectedLayout:
        records = leaf_records(read_step_metadata(path))
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
