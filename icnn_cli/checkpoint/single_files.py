"""Weights kept in one file rather than by Orbax: safetensors, ``.npz``, Flax msgpack.

The JAX world also keeps weights as ``flax.serialization.to_bytes`` files (the
legacy ``flax.training.checkpoints`` writes its ``checkpoint_N`` files that way),
safetensors and numpy ``.npz`` archives. They are told apart by their content,
never by their name. Metadata comes first, as for Orbax: a safetensors header and
the ``.npy`` headers inside an ``.npz`` give every shape and dtype without reading
the arrays; a msgpack file has no header and is parsed whole.

Leaf paths: keys with ``/`` are split on it (an export of an icnn checkpoint, say
``np.savez(f, **{"params/w_zs_0/kernel": ...})``), otherwise on ``.`` (the
``a.b.c`` names of safetensors files).
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from icnn_cli.checkpoint import guarded_files
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.errors import DamagedCheckpoint, IcnnError, first_line
from icnn_cli.records import LeafRecord, records_of_values

FileKind = Literal["safetensors", "npz", "msgpack"]
FILE_KINDS: tuple[FileKind, ...] = ("safetensors", "npz", "msgpack")
LAYOUTS = {
    "safetensors": "safetensors file",
    "npz": "numpy .npz archive",
    "msgpack": "Flax msgpack file (flax.serialization / flax.training.checkpoints)",
}
ZIP_MAGIC = b"PK\x03\x04"
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit on its JSON header
MAX_MSGPACK_BYTES = 4 << 30  # parsed whole: beyond this, use a format with a header
SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "F16": "float16",
    "BF16": "bfloat16",
    "U32": "uint32",
    "I32": "int32",
    "F32": "float32",
    "U64": "uint64",
    "I64": "int64",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def sniff(path: StoragePath) -> FileKind | None:
    """The format of the file at ``path`` from its first bytes, or ``None``."""
    with os.fdopen(guarded_files.open_regular(path, path), "rb") as handle:
        head = handle.read(16)
    if head.startswith(ZIP_MAGIC):
        return "npz" if _looks_like_npz(path) else None
    if len(head) >= 9:
        (header_bytes,) = struct.unpack("<Q", head[:8])
        if 2 <= header_bytes <= MAX_SAFETENSORS_HEADER and head[8:9] == b"{":
            return "safetensors"
    # A msgpack map: fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf).
    if head and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "msgpack"
    return None


def _looks_like_npz(path: StoragePath) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _split(keys: Sequence[str]) -> dict[str, tuple[str, ...]]:
    separator = "/" if any("/" in key for key in keys) else "."
    return {key: tuple(key.split(separator)) for key in keys}


def _damaged(path: StoragePath, error: BaseException) -> IcnnError:
    return DamagedCheckpoint(f"{path}: unreadable ({first_line(error)})")


# --- records (metadata first) ---------------------------------------------------------


def leaf_records(path: StoragePath, kind: FileKind) -> list[LeafRecord]:
    """One record per leaf, from headers where the format has them."""
    try:
        if kind == "safetensors":
            return _safetensors_records(path)
        if kind == "npz":
            return _npz_records(path)
        return _msgpack_records(path)
    except IcnnError:
        raise
    except Exception as error:  # each format's reader raises its own types for bad bytes
        raise _damaged(path, error) from None


def _safetensors_records(path: StoragePath) -> list[LeafRecord]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        keys = list(handle.keys())
        parts = _split(keys)
        records = []
        for key in keys:
            piece = handle.get_slice(key)
            dtype = SAFETENSORS_DTYPES.get(piece.get_dtype())
            if dtype is None:
                raise IcnnError(f"{path}: {key}: dtype {piece.get_dtype()} is not supported")
            records.append(LeafRecord.of_array(parts[key], piece.get_shape(), _numpy_dtype(dtype)))
    return records


def _numpy_dtype(name: str) -> Any:
    import ml_dtypes
    import numpy as np

    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)


def _npz_records(path: StoragePath) -> list[LeafRecord]:
    import numpy as np

    records = []
    with zipfile.ZipFile(path) as archive:
        keys = [name.removesuffix(".npy") for name in archive.namelist()]
        parts = _split(keys)
        for key in keys:
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
                header_bytes = member.tell()
            if dtype.hasobject:
                raise IcnnError(f"{path}: {key} holds Python objects (a pickle): not read")
            record = LeafRecord.of_array(parts[key], shape, dtype)
            # The zip header declares the member's inflated size: an .npy header that
            # declares more data than that is damage, found before anything is inflated.
            stored = archive.getinfo(f"{key}.npy").file_size
            if stored < header_bytes + record.nbytes:
                raise DamagedCheckpoint(
                    f"{path}: {key} declares {record.nbytes} bytes of data but its zip entry "
                    f"holds {max(stored - header_bytes, 0)}"
                )
            records.append(record)
    return records


def _msgpack_tree(path: StoragePath) -> dict[tuple[str, ...], Any]:
    from icnn_cli.tree_paths import flatten_with_paths

    guarded_files.check_msgpack_fits(path, path)
    data = guarded_files.read_bytes(path, path, MAX_MSGPACK_BYTES)
    tree = guarded_files.restore_msgpack(data, path, "msgpack file", ValueError)
    if not isinstance(tree, dict):
        raise IcnnError(f"{path}: msgpack file does not hold a tree of arrays")
    return dict(flatten_with_paths(tree))


def _msgpack_records(path: StoragePath) -> list[LeafRecord]:
    return records_of_values(_msgpack_tree(path))


# --- values ------------------------------------------------------------------------------


def iter_values(
    path: StoragePath, kind: FileKind, leaves: Sequence[LeafRecord]
) -> Iterator[tuple[LeafRecord, Any]]:
    """``(leaf, value)`` for ``leaves``, one array in memory at a time (msgpack: all)."""
    try:
        if kind == "safetensors":
            yield from _safetensors_values(path, leaves)
        elif kind == "npz":
            yield from _npz_values(path, leaves)
        else:
            tree = _msgpack_tree(path)
            for leaf in leaves:
                yield leaf, tree[leaf.path]
    except IcnnError:
        raise
    except Exception as error:
        raise _damaged(path, error) from None


def _safetensors_values(
    path: StoragePath, leaves: Sequence[LeafRecord]
) -> Iterator[tuple[LeafRecord, Any]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        by_path = {parts: key for key, parts in _split(list(handle.keys())).items()}
        for leaf in leaves:
            yield leaf, handle.get_tensor(by_path[leaf.path])


def _npz_values(
    path: StoragePath, leaves: Sequence[LeafRecord]
) -> Iterator[tuple[LeafRecord, Any]]:
    import numpy as np

    with np.load(path, allow_pickle=False) as archive:
        by_path = {parts: key for key, parts in _split(list(archive.files)).items()}
        for leaf in leaves:
            yield leaf, archive[by_path[leaf.path]]
