"""Leaf paths of a pytree as tuples of strings: ``('params', 'w_zs_0', 'kernel')``.

Every module that names a leaf (records, fingerprints, sharding rules, the model's
effective parameters) names it this way, so one function owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LeafPath = tuple[str, ...]


def leaf_path(key_path: Any) -> LeafPath:
    """``(DictKey('params'), SequenceKey(0))`` -> ``('params', '0')``.

    What ``jax.tree_util.keystr((entry,), simple=True)`` gives for each entry, read off
    the entry's field directly: keystr's per-call work was most of the time of a
    200,000-leaf tree.
    """
    return tuple(_entry_text(entry) for entry in key_path)


def _entry_text(entry: Any) -> str:
    field = _ENTRY_FIELDS.get(type(entry).__name__)
    if field is None:
        from jax.tree_util import keystr

        return keystr((entry,), simple=True)
    return str(getattr(entry, field))


# jax's key entry types and the field keystr(simple=True) shows (jax/_src/tree_util.py).
_ENTRY_FIELDS = {
    "DictKey": "key",
    "SequenceKey": "idx",
    "GetAttrKey": "name",
    "FlattenedIndexKey": "key",
}


def flatten_with_paths(
    tree: Any, is_leaf: Callable[[Any], bool] | None = None
) -> list[tuple[LeafPath, Any]]:
    """``[(leaf path, leaf), ...]`` in jax's flattening order."""
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [(leaf_path(key_path), leaf) for key_path, leaf in flat]
