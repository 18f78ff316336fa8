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
            array = np.asarray(leaf)
            # A scalar is hashed with shape (1,): what np.ascontiguousarray made of it
            # when the fingerprint was first defined, so old checkpoints still verify.
            shape = array.shape if array.ndim else (1,)
            self._digest.update(f"|{array.dtype.str}|{shape}|".encode())
            # The bytes through the buffer protocol, never ``tobytes()``: a 100M-parameter
            # init would otherwise hold a second copy of its largest leaf while hashing.
            self._digest.update(_contiguous_bytes(array))
            return
        # Split across processes: no process holds it whole, so the same bytes
        # are gathered block by block (every process takes part).
        from icnn_cli.sharding import host_blocks

        shape = tuple(int(dim) for dim in leaf.shape)
        self._digest.update(f"|{np.dtype(leaf.dtype).str}|{shape}|".encode())
        for block in host_blocks(leaf):
            self._digest.update(_contiguous_bytes(np.asarray(block)))

    def value(self) -> str:
        return f"sha256:{self._digest.hexdigest()}"


def _contiguous_bytes(array: Any) -> memoryview:
    """``array``'s bytes in C order, as a view when it is C-contiguous (copied otherwise)."""
    import numpy as np

    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    # bool, bfloat16 and other dtypes without a buffer format are hashed as raw bytes.
    return memoryview(array.reshape(-1).view(np.uint8))
