"""Every file a checkpoint names, opened one way: inside it, a regular file, with a byte cap.

A checkpoint is untrusted input down to its files. An item name in
``_CHECKPOINT_METADATA`` can be ``/etc/passwd`` or ``../../x``, a metadata file can be
a symbolic link to a file outside the checkpoint or to ``/dev/zero``, a FIFO that
blocks whoever opens it, or a sparse file that claims gigabytes. So every reader in
:mod:`icnn_cli.checkpoint` reads a file a checkpoint names through this module:

- :func:`inside` resolves a name against the checkpoint and refuses an absolute name,
  one with ``..``, and one that resolves (through symbolic links) outside it;
- :func:`read_bytes` opens the resolved file without following a link swapped in
  meanwhile (``O_NOFOLLOW``) and without blocking (``O_NONBLOCK``), checks the *opened
  descriptor* is a regular file, and reads at most a cap per kind of file, counting
  the bytes as it reads (``st_size`` is 0 for a device and says nothing of a file
  growing under the reader);
- :func:`load_json` decodes with a depth and a node-count bound;
- :func:`check_tree` walks a checkpoint directory once before Orbax or tensorstore
  (which open their own files) are let in: no special file, no link out of it.

In object storage (``gs://``) there are neither links nor special files: the same
rules hold for object names and sizes. A refusal is :class:`CheckpointRefused` (exit 2)
naming the file: ``_sharding is not a regular file``.

Example::

    data = read_bytes(item_path, item_path / "_METADATA", TREE_METADATA_BYTES)
    document = load_json(data, "_METADATA")
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import PurePosixPath
from typing import Any

from icnn_cli.checkpoint.storage import StoragePath, file_size, is_remote
from icnn_cli.errors import CheckpointRefused, ResourcesExceeded, first_line
from icnn_cli.units import format_bytes

# Caps per kind of file. Orbax's own metadata is a few KiB per leaf at most:
# _METADATA, _sharding and array_metadatas/process_* of a 200,000-leaf tree are ~60 MiB.
SMALL_JSON_BYTES = 4 << 20  # _CHECKPOINT_METADATA, _ROOT_METADATA, a JSON item
PER_LEAF_JSON_BYTES = 256 << 20  # _METADATA, _sharding, array_metadatas, _strings.json
ZARR_HEADER_BYTES = 1 << 20  # one array's .zarray / zarr.json
# Files Orbax or tensorstore read whole, by name, with their caps: checked by the walk
# before they open them. A 1 TiB sparse OCDBT manifest aborted tensorstore in its
# allocator (a manifest lists b-tree roots and data file names: KiB), and Orbax's own
# metadata() (the fallback for unfamiliar files) read a 3 GiB sparse _sharding whole.
READ_WHOLE_BY_NAME = {
    "manifest.ocdbt": 64 << 20,
    "_CHECKPOINT_METADATA": SMALL_JSON_BYTES,
    "_ROOT_METADATA": SMALL_JSON_BYTES,
    "_METADATA": PER_LEAF_JSON_BYTES,
    "_sharding": PER_LEAF_JSON_BYTES,
    "_strings.json": PER_LEAF_JSON_BYTES,
    ".zarray": ZARR_HEADER_BYTES,
    ".zattrs": ZARR_HEADER_BYTES,
    "zarr.json": ZARR_HEADER_BYTES,
}
READ_WHOLE_BY_DIRECTORY = {"array_metadatas": PER_LEAF_JSON_BYTES}
READ_CHUNK_BYTES = 1 << 20
# Decoded trees: Orbax's deepest real document (_METADATA) nests 6 levels.
MAX_JSON_DEPTH = 100
MAX_JSON_NODES = 20_000_000  # ~ what PER_LEAF_JSON_BYTES of dense JSON can hold
MAX_TREE_ENTRIES = 2_000_000  # files and directories of one checkpoint walked by check_tree


def _refused(root: Any, problem: str) -> CheckpointRefused:
    return CheckpointRefused(f"{root}: {problem}")


def _relative(root: Any, file: Any) -> str:
    text, base = str(file), str(root).rstrip("/")
    return text[len(base) + 1 :] if text.startswith(base + "/") else text


def inside(root: Any, name: str, what: str = "item name", resolve: bool = True) -> Any:
    """``root / name`` after checking that ``name`` stays inside ``root``.

    ``resolve=False`` checks the name alone (for many names at once, after
    :func:`check_tree` has refused every link out of ``root``).

    Raises:
      CheckpointRefused: ``name`` is empty, absolute, has a ``..`` part, or (locally)
        resolves through symbolic links to a place outside ``root``.
    """
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith(("/", "\\"))
        or ".." in parts
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
    ):
        raise _refused(root, f"{what} {name!r} leaves the checkpoint")
    target = root / name
    if resolve and not is_remote(root) and not _within(_real(root), _real(target)):
        raise _refused(root, f"{what} {name!r} leaves the checkpoint")
    return target


def _real(path: Any) -> str:
    return os.path.realpath(os.fspath(path))


def _within(real_root: str, real: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def read_bytes(root: Any, file: Any, cap: int) -> bytes:
    """The bytes of the checkpoint file ``file`` (under ``root``), at most ``cap`` of them.

    Raises:
      FileNotFoundError: there is no such file (callers say what that means).
      CheckpointRefused: the file resolves outside ``root``, is not a regular file, or
        holds more than ``cap`` bytes.
    """
    if is_remote(file):
        return _read_remote(root, file, cap)
    descriptor = open_regular(root, file)
    with os.fdopen(descriptor, "rb", buffering=0) as handle:
        if os.fstat(descriptor).st_size > cap:  # a quick refusal; the count below decides
            raise _too_large(root, file, cap)
        chunks, total = [], 0
        while True:
            chunk = handle.read(min(READ_CHUNK_BYTES, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise _too_large(root, file, cap)
    return b"".join(chunks)


def _too_large(root: Any, file: Any, cap: int) -> CheckpointRefused:
    return _refused(
        root, f"{_relative(root, file)} is larger than {format_bytes(cap)} ({cap} bytes): not read"
    )


def open_regular(root: Any, file: Any) -> int:
    """A read-only descriptor of the regular file ``file`` inside ``root`` (local only).

    The path is resolved first and checked against ``root``; the resolved path is
    opened with ``O_NOFOLLOW`` (a link swapped in since is refused) and ``O_NONBLOCK``
    (a FIFO opens at once rather than waiting for a writer); the descriptor itself is
    then checked to be a regular file, and where ``/proc`` tells, to be inside ``root``.
    """
    real_root, real = _real(root), _real(file)
    name = _relative(root, file)
    if not _within(real_root, real):
        raise _refused(root, f"{name} leaves the checkpoint (it resolves to a place outside it)")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        descriptor = os.open(real, flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        if os.path.islink(real):
            raise _refused(root, f"{name} changed into a symbolic link while read") from None
        raise error
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise _refused(root, f"{name} is not a regular file ({_file_type(status.st_mode)})")
        opened = _descriptor_path(descriptor)
        if opened is not None and not _within(real_root, opened):
            raise _refused(root, f"{name} leaves the checkpoint (it was moved while opened)")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _descriptor_path(descriptor: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return None


def _file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def _read_remote(root: Any, file: Any, cap: int) -> bytes:
    name = _relative(root, file)
    inside(root, name, "file name")
    if not file.is_file():
        raise FileNotFoundError(str(file))
    if file_size(file) > cap:
        raise _too_large(root, file, cap)
    with file.open("rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise _too_large(root, file, cap)
    return bytes(data)


def is_regular_file(root: Any, file: Any) -> bool:
    """Whether ``file`` exists; a refusal when it exists as anything but a regular file
    inside ``root`` (a local FIFO, device or directory, a link out)."""
    if is_remote(file):
        return bool(file.is_file())
    if not os.path.lexists(file):
        return False
    os.close(open_regular(root, file))
    return True


def regular_file_size(root: Any, file: Any) -> int:
    """The size of the regular file ``file`` inside ``root``, from its opened descriptor."""
    if is_remote(file):
        return file_size(file)
    descriptor = open_regular(root, file)
    try:
        return os.fstat(descriptor).st_size
    finally:
        os.close(descriptor)


# --- decoded trees ------------------------------------------------------------------------


def load_json(data: bytes, where: Any, what: str) -> Any:
    """``json.loads(data)`` with the depth and node-count bounds.

    Raises:
      ValueError: the bytes are not JSON (callers word it as damage).
      CheckpointRefused: nested deeper than :data:`MAX_JSON_DEPTH` or more than
        :data:`MAX_JSON_NODES` values.
    """
    try:
        document = json.loads(data)
    except RecursionError:
        raise _too_deep(where, what) from None
    check_tree_bounds(document, where, what)
    return document


def _too_deep(where: Any, what: str, depth: int = MAX_JSON_DEPTH) -> CheckpointRefused:
    return _refused(where, f"{what} nests deeper than {depth} levels: not read")


def check_tree_bounds(
    document: Any,
    where: Any,
    what: str,
    max_depth: int = MAX_JSON_DEPTH,
    max_nodes: int = MAX_JSON_NODES,
) -> None:
    """Refuse a decoded tree (JSON or msgpack) deeper or larger than the bounds.

    Iterative, so that a tree deep enough to break Python's recursion is refused by
    name rather than by ``RecursionError``.
    """
    stack = [(document, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise _refused(where, f"{what} holds more than {max_nodes} values: not read")
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth >= max_depth and children:
            raise _too_deep(where, what, max_depth)
        stack.extend((child, depth + 1) for child in children)


# Decoding a msgpack tree holds its bytes and the arrays made from them, with room to spare.
MSGPACK_MEMORY_PER_FILE_BYTE = 3


def check_msgpack_fits(root: Any, file: Any) -> None:
    """Refuse (exit 2) a msgpack file that, parsed whole, would not fit in memory.

    A msgpack file has no header: its size is all it says before it is read, so a
    sparse 3 GiB file is held against the memory available, not read to find out.
    """
    from icnn_cli import resources

    size = regular_file_size(root, file)
    needed = size * MSGPACK_MEMORY_PER_FILE_BYTE
    available = resources.available_memory()
    if needed > available:
        raise ResourcesExceeded(
            f"{root}: {_relative(root, file) if file != root else 'the msgpack file'} is "
            f"{format_bytes(size)}; parsing it needs ~{format_bytes(needed)} of memory and "
            f"{format_bytes(available)} is available: not read"
        )


def restore_msgpack(data: bytes, where: Any, what: str, damaged: type[Exception]) -> Any:
    """``flax.serialization.msgpack_restore(data)`` with the depth and count bounds.

    Raises:
      damaged: (the caller's class) for bytes that are not a msgpack tree.
      CheckpointRefused: nested deeper than :data:`MAX_JSON_DEPTH` levels.
    """
    from flax.serialization import msgpack_restore

    try:
        tree = msgpack_restore(data)
    except RecursionError:
        raise _too_deep(where, what) from None
    except Exception as error:  # msgpack raises its own types for broken data
        if "depth" in str(error).lower() or "stack" in type(error).__name__.lower():
            raise _too_deep(where, what) from None
        raise damaged(f"{what}: {first_line(error)}") from None
    check_tree_bounds(tree, where, what)
    return tree


# Compression can grow incompressible data a little: zstd and blosc add at most a few
# bytes per block, gzip 5 bytes per 16 KiB block plus its header.
CHUNK_OVERHEAD_BYTES = 64 << 10


def check_chunk_files(root: StoragePath, name: str, array_bytes: int) -> None:
    """Refuse a zarr array whose chunk files are larger than the array can be.

    Tensorstore reads a plain (not OCDBT) zarr chunk file whole, and a sparse 1 TiB
    chunk file aborted it in the allocator. No chunk file of an array holds more than
    the array's bytes (twice, with compression's overhead), which the memory check
    has already held against the machine.
    """
    bound = 2 * array_bytes + CHUNK_OVERHEAD_BYTES
    pending = [os.path.join(os.fspath(root), name)]
    while pending:
        try:
            listing = list(os.scandir(pending.pop()))
        except OSError:
            continue  # missing: tensorstore reads the fill value, or says what is wrong
        for entry in listing:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif entry.stat().st_size > bound:
                raise _refused(
                    root,
                    f"{_relative(root, entry.path)} is {format_bytes(entry.stat().st_size)}, "
                    f"more than its array can hold ({format_bytes(array_bytes)}): not read",
                )


# --- the whole directory --------------------------------------------------------------------


def check_tree(root: StoragePath) -> None:
    """Walk the local checkpoint directory ``root``: no special file, no link out of it.

    Orbax and tensorstore open the files they read themselves; this walk, before they
    are let in, keeps a FIFO from blocking them and a link from leading them outside.
    A link that stays inside (to a file or directory of the same checkpoint) is fine.

    Raises:
      CheckpointRefused: the first offending entry, by its name inside ``root``.
    """
    if is_remote(root):
        return
    real_root = _real(root)
    pending = [real_root]
    entries = 0
    while pending:
        directory = pending.pop()
        try:
            listing = list(os.scandir(directory))
        except OSError:
            continue  # unreadable: the reader that needs it says so
        for entry in listing:
            entries += 1
            if entries > MAX_TREE_ENTRIES:
                raise _refused(root, f"holds more than {MAX_TREE_ENTRIES} files: not read")
            name = _relative(real_root, entry.path)
            if entry.is_symlink():
                real = _real(entry.path)
                if not _within(real_root, real):
                    raise _refused(
                        root, f"{name} leaves the checkpoint (a symbolic link to a place outside)"
                    )
                mode = os.stat(real).st_mode if os.path.exists(real) else stat.S_IFREG
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise _refused(root, f"{name} is not a regular file ({_file_type(mode)})")
                continue  # a directory reached through a link inside is walked where it is
            status = entry.stat(follow_symlinks=False)
            mode = status.st_mode
            if stat.S_ISDIR(mode):
                pending.append(entry.path)
            elif not stat.S_ISREG(mode):
                raise _refused(root, f"{name} is not a regular file ({_file_type(mode)})")
            else:
                cap = READ_WHOLE_BY_NAME.get(entry.name) or READ_WHOLE_BY_DIRECTORY.get(
                    os.path.basename(directory)
                )
                if cap is not None and status.st_size > cap:
                    raise _too_large(root, entry.path, cap)
