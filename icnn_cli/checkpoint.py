"""Orbax I/O: atomic, durable saves; committed-checkpoint checks; metadata; bounded reads.

Orbax's own ``force=True`` deletes the old checkpoint before writing the new one,
and its small JSON files are not fsynced (see shared/reference/orbax-notes.md).
So icnn lets Orbax write into a private staging directory beside the target, fsyncs
everything, and then swaps it in with one ``renameat2`` call: the target path only
ever holds a complete old checkpoint or a complete new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from icnn_cli import metadata_files
from icnn_cli.errors import RUNTIME_ERROR, IcnnError
from icnn_cli.summary import LeafRecord, LeafStats

COMMIT_MARKER = "commit_success.txt"
TREE_METADATA = "_METADATA"
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
MAX_CHECKPOINT_METADATA_BYTES = 4 << 20  # Orbax's own entries plus an icnn spec are a few KiB
ORBAX_TMP_SUFFIX = ".orbax-checkpoint-tmp"
STAGING_TAG = ".icnn-staging-"
ASIDE_TAG = ".icnn-aside-"  # the old checkpoint during a fallback (non-renameat2) swap
READ_BATCH_BYTES = 64 << 20  # leaves are read in batches of about this size for --stats

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# renameat2 flags are refused with EINVAL by filesystems that lack them, and the
# call is ENOSYS where the kernel or libc has no renameat2.
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


# --- what is a committed checkpoint ----------------------------------------------------


def ensure_committed_checkpoint(path: Path) -> None:
    """Refuse (exit 2) anything that is not a finished Orbax checkpoint directory.

    Orbax's ``metadata()`` happily answers for half-written directories, so the
    markers are checked here: no tmp suffix, a commit marker and tree metadata.
    """
    if not path.exists():
        raise IcnnError(f"{path}: no such checkpoint{interrupted_swap_hint(path)}")
    if not path.is_dir():
        raise IcnnError(f"{path}: not an Orbax checkpoint (it is a file, not a directory)")
    if any(tag in path.name for tag in (ORBAX_TMP_SUFFIX, STAGING_TAG, ASIDE_TAG)):
        raise IcnnError(
            f"{path}: an unfinished save left this temporary directory; it is not a checkpoint"
        )
    if not (path / TREE_METADATA).is_file():
        steps = manager_steps(path)
        hint = (
            f" (it holds step directories {steps_text(steps)} of a CheckpointManager root: give "
            f"one step's checkpoint, e.g. {_example_item(path / steps[-1][1])}; `icnn inspect` "
            "takes the root itself)"
            if steps
            else ""
        )
        raise IcnnError(f"{path}: not an Orbax checkpoint (no {TREE_METADATA} file){hint}")
    if not (path / COMMIT_MARKER).is_file():
        raise IcnnError(f"{path}: Orbax checkpoint was never committed (no {COMMIT_MARKER})")


# --- CheckpointManager roots -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ManagerStep:
    """The step of an Orbax ``CheckpointManager`` root that was chosen, and its item."""

    root: Path
    steps: list[int]  # every step found, ascending
    step: int
    item: Path  # the checkpoint directory of that step's PyTree item

    def as_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "steps": self.steps, "step": self.step}


def manager_steps(path: Path) -> list[tuple[int, str]]:
    """``(step, directory name)`` of a CheckpointManager root's step directories, ascending.

    A step directory is named by its number (Orbax writes ``<step>.orbax-checkpoint-tmp-*``
    first and renames it when the step is committed, so a numbered one is finished).
    """
    if not path.is_dir():
        return []
    found = [(int(child.name), child.name) for child in path.iterdir() if child.name.isdigit()]
    return sorted(found)


def steps_text(steps: Sequence[tuple[int, str]], shown: int = 3) -> str:
    """``0, 5, 10`` or, for many, ``0, 1, 2, ..., 97, 98, 99 (100 steps)``."""
    numbers = [str(step) for step, _ in steps]
    if len(numbers) <= 2 * shown:
        return ", ".join(numbers)
    return (
        f"{', '.join(numbers[:shown])}, ..., {', '.join(numbers[-shown:])} ({len(numbers)} steps)"
    )


def resolve_manager_step(path: Path, step: int | None) -> ManagerStep | None:
    """For a CheckpointManager root, the checkpoint of ``step`` (default: the latest).

    Returns ``None`` when ``path`` is a checkpoint itself (or nothing icnn can read,
    which :func:`ensure_committed_checkpoint` then reports).
    """
    if step is None and (path / TREE_METADATA).is_file():
        return None
    steps = manager_steps(path)
    if not steps:
        if step is not None:
            raise IcnnError(
                f"--step {step}: {path} is not a CheckpointManager root (no numbered step "
                "directories)"
            )
        return None
    names = dict(steps)
    chosen = steps[-1][0] if step is None else step
    if chosen not in names:
        raise IcnnError(f"--step {step}: {path} has no step {step} (steps: {steps_text(steps)})")
    item = _step_item(path / names[chosen], chosen)
    return ManagerStep(path, [number for number, _ in steps], chosen, item)


def _example_item(step_directory: Path) -> Path:
    try:
        return _step_item(step_directory, int(step_directory.name))
    except IcnnError:
        return step_directory


def _step_item(step_directory: Path, step: int) -> Path:
    if (step_directory / TREE_METADATA).is_file():
        return step_directory
    items = sorted(
        child
        for child in step_directory.iterdir()
        if child.is_dir() and (child / TREE_METADATA).is_file()
    )
    if len(items) == 1:
        return items[0]
    if not items:
        raise IcnnError(f"{step_directory}: step {step} holds no Orbax PyTree checkpoint")
    names = ", ".join(item.name for item in items)
    raise IcnnError(
        f"{step_directory}: step {step} holds several checkpoints ({names}): "
        f"inspect one of them, e.g. {items[0]}"
    )


# --- fingerprint -------------------------------------------------------------------------


def leaf_path_parts(key_path: Sequence[Any]) -> tuple[str, ...]:
    """``(DictKey('params'), SequenceKey(0))`` -> ``('params', '0')``."""
    parts = []
    for entry in key_path:
        for attribute in ("key", "idx", "name"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return tuple(parts)


def flatten_with_paths(tree: Any, is_leaf: Any = None) -> list[tuple[tuple[str, ...], Any]]:
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [(leaf_path_parts(key_path), leaf) for key_path, leaf in flat]


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
        self._last: tuple[str, ...] | None = None

    def add(self, parts: tuple[str, ...], leaf: Any) -> None:
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


# --- atomic, durable writes ---------------------------------------------------------------


def _renameat2(source: Path, target: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(Path(directory))


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_path(target: Path, owner_pid: int | None = None) -> Path:
    return target.parent / f".{target.name}{STAGING_TAG}{owner_pid or os.getpid()}"


def aside_path(target: Path) -> Path:
    return target.parent / f".{target.name}{ASIDE_TAG}{os.getpid()}"


def _leftovers(target: Path, tag: str) -> list[tuple[Path, bool]]:
    """``(path, owner is gone)`` for each temporary named ``.<target><tag><pid>...``."""
    prefix = f".{target.name}{tag}"
    if not target.parent.is_dir():
        return []
    found = []
    for candidate in sorted(target.parent.iterdir()):
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        owner_alive = (
            pid_text.isdigit() and int(pid_text) != os.getpid() and _process_alive(int(pid_text))
        )
        found.append((candidate, not owner_alive))
    return found


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove staging directories left by dead icnn processes for ``target``."""
    removed = []
    for candidate, owner_gone in _leftovers(target, STAGING_TAG):
        if owner_gone:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def recover_interrupted_swap(target: Path) -> Path | None:
    """Put back a checkpoint that a killed rename-aside swap left beside ``target``.

    Only the fallback swap (for filesystems without ``RENAME_EXCHANGE``) has a
    moment where ``target`` is missing: the old checkpoint is then at the aside
    name. Returns the path it was restored from, if any; stale asides next to a
    present ``target`` are deleted.
    """
    restored = None
    for candidate, owner_gone in _leftovers(target, ASIDE_TAG):
        if not owner_gone:
            continue
        if not target.exists() and not target.is_symlink():
            os.rename(candidate, target)
            _fsync_directory(target.parent)
            restored = candidate
        else:
            shutil.rmtree(candidate, ignore_errors=True)
    return restored


def interrupted_swap_hint(target: Path) -> str:
    """Where an interrupted ``--force`` swap left the previous checkpoint, if it did."""
    for candidate, owner_gone in _leftovers(target, ASIDE_TAG):
        if owner_gone:
            return (
                f" (an interrupted 'icnn init --force' left the previous checkpoint at "
                f"{candidate}; the next 'icnn init' with this --out puts it back)"
            )
    return ""


def check_output_path(target: Path, force: bool) -> None:
    """Refuse (exit 2) an output path that cannot take a new checkpoint, before any work.

    First puts back a checkpoint that an interrupted fallback swap left aside, so
    ``target`` is judged as it really stands.
    """
    recover_interrupted_swap(target)
    if target.is_file() or target.is_symlink():
        raise IcnnError(f"--out {target}: exists and is a file, not a checkpoint directory")
    if target.exists():
        if not force:
            raise IcnnError(f"--out {target}: already exists (pass --force to replace it)")
        is_checkpoint = (target / TREE_METADATA).is_file() or (target / COMMIT_MARKER).is_file()
        if not is_checkpoint and any(target.iterdir()):
            raise IcnnError(
                f"--out {target}: is a non-empty directory that is not an Orbax checkpoint; "
                "--force only replaces checkpoints"
            )
    parent = _existing_ancestor(target.parent)
    if not parent.is_dir():
        raise IcnnError(f"--out {target}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise IcnnError(f"--out {target}: directory {parent} is not writable")


def _existing_ancestor(directory: Path) -> Path:
    directory = directory.absolute()
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


def write_checkpoint_atomically(
    target: Path, variables: Any, custom_metadata: dict[str, Any], force: bool
) -> None:
    """Save ``variables`` with Orbax at ``target``; the old checkpoint survives any crash.

    Args:
      target: checkpoint directory to create (or replace, with ``force``).
      variables: the pytree to save; ``StandardCheckpointer().restore(target)`` returns it.
      custom_metadata: plain-JSON metadata stored with it.
      force: replace an existing checkpoint at ``target``.
    """
    import orbax.checkpoint as ocp

    check_output_path(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    staging = staging_path(target)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging.absolute(), variables, custom_metadata=custom_metadata)
            checkpointer.wait_until_finished()
        _fsync_tree(staging)
        _commit(staging, target, force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for leftover in staging.parent.glob(f"{staging.name}{ORBAX_TMP_SUFFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def write_checkpoint_from_every_process(
    target: Path, variables: Any, custom_metadata: dict[str, Any], force: bool
) -> None:
    """:func:`write_checkpoint_atomically` for a multi-process run; every process calls it.

    Orbax writes each process's own shards (``ocdbt.process_N/``) into one staging
    directory named after process 0, and finalizes it behind its own barriers;
    then process 0 alone fsyncs and swaps it in, and every process learns the outcome.
    ``target`` must be on a filesystem all processes share.
    """
    import orbax.checkpoint as ocp

    from icnn_cli import distributed

    primary = distributed.is_primary()
    # Process 0 alone looks at --out: the check also puts back a checkpoint an
    # interrupted swap left aside, which two processes must not race to do.
    with distributed.all_or_none(f"preparing --out {target}"):
        if primary:
            check_output_path(target, force)
            target.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_staging(target)
    staging = staging_path(target, owner_pid=distributed.primary_value(os.getpid()))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging.absolute(), variables, custom_metadata=custom_metadata)
            checkpointer.wait_until_finished()
        # Orbax's async_commit_complete barrier has passed: every process wrote
        # its shards and process 0 finalized the staging directory.
        with distributed.all_or_none(f"committing --out {target}"):
            if primary:
                _fsync_tree(staging)
                _commit(staging, target, force)
    finally:
        if primary:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            for leftover in staging.parent.glob(f"{staging.name}{ORBAX_TMP_SUFFIX}*"):
                shutil.rmtree(leftover, ignore_errors=True)


def _commit(staging: Path, target: Path, force: bool) -> None:
    if target.exists() and force:
        _swap_in(staging, target)
    else:
        _move_in(staging, target)
    _fsync_directory(target.parent)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the checkpoint at ``target`` by ``staging``; the old one ends at ``staging``."""
    try:
        # RENAME_EXCHANGE swaps both names in one step; the old checkpoint then
        # sits at the staging name and is deleted by the caller's cleanup.
        _renameat2(staging, target, _RENAME_EXCHANGE)
        return
    except OSError as error:
        if error.errno == errno.ENOENT and staging.exists():
            return _move_in(staging, target)  # the old one vanished meanwhile
        if error.errno not in _UNSUPPORTED:
            raise
    # Rename-aside for filesystems without RENAME_EXCHANGE (NFS, some FUSE, old
    # kernels): between the two renames ``target`` is missing and the old
    # checkpoint sits at the aside name, which the next run puts back.
    aside = aside_path(target)
    os.rename(target, aside)
    _fsync_directory(target.parent)
    os.rename(staging, target)
    _fsync_directory(target.parent)
    os.rename(aside, staging)


def _move_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target`` unless something is there already."""
    try:
        try:
            _renameat2(staging, target, _RENAME_NOREPLACE)
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
            # rename(2) of a directory fails on a non-empty target directory,
            # which is what a racing writer's committed checkpoint is.
            os.rename(staging, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise IcnnError(
                f"--out {target}: another process created it while this one was writing; "
                "its checkpoint was kept",
                RUNTIME_ERROR,
            ) from None
        raise


# --- reading ----------------------------------------------------------------------------------


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
            problem = f"is not valid JSON ({_first_line(error)})"
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


def _metadata_tree(step_metadata: Any) -> Any:
    item = step_metadata.item_metadata
    return getattr(item, "tree", item)


def _is_value_metadata(node: Any) -> bool:
    return hasattr(node, "dtype") or hasattr(node, "shape")


def leaf_records(step_metadata: Any) -> list[LeafRecord]:
    """One :class:`LeafRecord` per array in the checkpoint, from metadata alone."""
    import numpy as np

    records = []
    for parts, meta in flatten_with_paths(_metadata_tree(step_metadata), _is_value_metadata):
        shape = tuple(int(dim) for dim in (getattr(meta, "shape", None) or ()))
        dtype = np.dtype(getattr(meta, "dtype", None) or np.float32)
        size = int(np.prod(shape, dtype=np.int64))
        records.append(
            LeafRecord(
                parts, shape, str(dtype), size * dtype.itemsize, sharding=_sharding_text(meta)
            )
        )
    return records


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
    path: Path, step_metadata: Any, leaves: Sequence[LeafRecord], budget: int = READ_BATCH_BYTES
) -> Iterator[tuple[LeafRecord, Any]]:
    """Yield ``(leaf, numpy array)``, one leaf in memory at a time.

    Each leaf is read straight from its zarr array (:func:`metadata_files.array_reader`).
    Where the metadata files look unfamiliar, Orbax reads batches of about ``budget``
    bytes instead: a partial restore (other leaves are ``PLACEHOLDER``) into host
    numpy arrays, which also sidesteps Orbax's topology checks for sharded saves.
    """
    _unmap_large_buffers_when_freed()
    try:
        read = metadata_files.array_reader(path)
    except metadata_files.UnexpectedLayout:
        read = None
    if read is not None:
        for leaf in leaves:
            yield leaf, _read_leaf(path, read, leaf)
        return

    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    tree = _metadata_tree(step_metadata)
    for batch in _batches(leaves, budget):
        wanted = {leaf.path for leaf in batch}

        restore_args = jax.tree_util.tree_map_with_path(
            lambda key_path, _, wanted=wanted: (
                ocp.RestoreArgs(restore_type=np.ndarray)
                if leaf_path_parts(key_path) in wanted
                else ocp.PLACEHOLDER
            ),
            tree,
            is_leaf=_is_value_metadata,
        )
        restored = _restore_with(path, restore_args)
        arrays = dict(flatten_with_paths(restored, lambda node: node is ocp.PLACEHOLDER))
        for leaf in batch:
            yield leaf, arrays[leaf.path]
        del restored, arrays


def _read_leaf(path: Path, read: Any, leaf: LeafRecord) -> Any:
    try:
        return read(leaf)
    except (ValueError, RuntimeError) as error:  # tensorstore: missing data, DATA_LOSS, ...
        raise IcnnError(
            f"{path}: cannot read array data ({_first_line(error)})", RUNTIME_ERROR
        ) from None


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


def _restore_with(path: Path, restore_args: Any) -> Any:
    import orbax.checkpoint as ocp

    handler = ocp.PyTreeCheckpointHandler()
    with ocp.Checkpointer(handler) as checkpointer, warnings.catch_warnings():
        # Restoring into numpy needs no sharding, yet Orbax warns it is missing.
        warnings.filterwarnings("ignore", message="Sharding info not provided")
        try:
            return checkpointer.restore(
                path.absolute(), args=ocp.args.PyTreeRestore(restore_args=restore_args)
            )
        except Exception as error:  # Orbax raises plain Exception for a missing data file
            raise IcnnError(
                f"{path}: cannot read array data ({_first_line(error)})", RUNTIME_ERROR
            ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def leaf_statistics(array: Any) -> LeafStats:
    """Mean, std, min and max of the finite entries, NaN/Inf counts, share of negatives."""
    import numpy as np

    values = np.asarray(array, dtype=np.float64).ravel()
    if values.size == 0:
        return LeafStats(float("nan"), float("nan"), float("nan"), float("nan"), 0.0)
    finite_mask = np.isfinite(values)
    finite = values[finite_mask] if not finite_mask.all() else values
    nan_count = int(np.count_nonzero(np.isnan(values)))
    negative_fraction = float(np.count_nonzero(values < 0) / values.size)
    if finite.size == 0:
        mean = std = low = high = float("nan")
    else:
        mean, std = float(finite.mean()), float(finite.std())
        low, high = float(finite.min()), float(finite.max())
    return LeafStats(
        mean=mean,
        std=std,
        min=low,
        max=high,
        negative_fraction=negative_fraction,
        nan=nan_count,
        inf=int(values.size - finite.size - nan_count),
    )


def restore_variables(path: Path) -> Any:
    """The whole tree on this process's first device, whatever mesh wrote it.

    A bare ``restore`` insists on the saved topology ("Topology mismatch" for a
    checkpoint written by 8 devices), so the target comes from the metadata.
    """
    import jax
    import orbax.checkpoint as ocp

    ensure_committed_checkpoint(path)
    with ocp.StandardCheckpointer() as checkpointer:
        tree = _metadata_tree(checkpointer.metadata(path.absolute()))
        one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=one_device),
            tree,
            is_leaf=_is_value_metadata,
        )
        try:
            return checkpointer.restore(path.absolute(), target)
        except Exception as error:  # see _restore_with
            raise IcnnError(
                f"{path}: cannot read array data ({_first_line(error)})", RUNTIME_ERROR
            ) from None


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
