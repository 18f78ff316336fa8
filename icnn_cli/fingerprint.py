"""The sha256 fingerprint icnn records over every array of a checkpoint.

Orbax does not checksum array data (flipped bytes come back as silently wrong
numbers), so icnn records this digest in the spec and every reader checks it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from icnn_cli.tree_paths import LeafPath, flatten_with_paths

SHORT_DIGITS = 16  # hex digits of a fingerprint shown to people


def short_fingerprint(fingerprint: str) -> str:
    """``sha256:0a1b...`` -> its first 16 hex digits, as every message shows it."""
    return fingerprint.removeprefix("sha256:")[:SHORT_DIGITS]


def fingerprint(tree: Any) -> str:
    """sha256 over every array's path, dtype, shape and bytes, in path order."""
    streaming = StreamingFingerprint()
    for parts, leaf in sorted(flatten_with_paths(tree), key=lambda item: item[0]):
        streaming.add(parts, leaf)
    return streaming.value()


class StreamingFingerprint:
    """The same digest as :func:`fingerprint`, fed one leaf at a time in path order.

    Reading a checkpoint leaf by leaf keeps memory bounded; this lets the
    fingerprint be checked on the way without holding the whole tree.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._last: LeafPath | None = None

    def add(self, parts: LeafPath, leaf: Any) -> None:
        import numpy as np

        if self._last is not None and parts <= self._last:
            raise ValueError(f"leaves must come in path order: {parts} after {self._last}")
        self._last = parts
        self._digest.update("/".join(parts).encode())
        if getattr(leaf, "is_fully_addressable", True):
            array = np.ascontiguousarray(np.asarray(leaf))
            self._digest.update(f"|{array.dtype.str}|{array.shape}|".encode())
            self._digest.update(array.tobytes())
            return
        # Split across processes: no process holds it whole, so the same bytes
        # are gathered block by block (every process takes part).
        from icnn_cli.sharding import host_blocks

        shape = tuple(int(dim) for dim in leaf.shape)
        self._digest.update(f"|{np.dtype(leaf.dtype).str}|{shape}|".encode())
        for block in host_blocks(leaf):
            self._digest.update(np.ascontiguousarray(block).tobytes())

    def value(self) -> str:
        return f"sha256:{self._digest.hexdigest()}"
