"""Atomic, durable writes: the target path only ever holds a whole old or a whole new checkpoint.

Orbax's own ``force=True`` deletes the old checkpoint before writing the new one,
and its small JSON files are not fsynced (see shared/reference/orbax-notes.md).
So icnn lets Orbax write into a private staging directory beside the target, fsyncs
everything, and then swaps it in with one ``renameat2`` call. ``tests/test_atomic.py``
kills writers at random moments and checks that readers only ever see a whole one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from pathlib import Path
from typing import Any

from icnn_cli.checkpoint.layout import COMMIT_MARKER, TREE_METADATA
from icnn_cli.checkpoint.remote_writing import check_remote_output, write_remote_checkpoint
from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.checkpoint.temporaries import ASIDE_TAG, ORBAX_TMP_SUFFIX, STAGING_TAG, leftovers
from icnn_cli.errors import IcnnError, OutputExists, RuntimeFailure, UsageError, param
from icnn_cli.resources import existing_ancestor, is_disk_full, mount_point

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# renameat2 flags are refused with EINVAL by filesystems that lack them, and the
# call is ENOSYS where the kernel or libc has no renameat2.
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


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


def staging_path(target: Path, owner_pid: int | None = None) -> Path:
    return target.parent / f".{target.name}{STAGING_TAG}{owner_pid or os.getpid()}"


def aside_path(target: Path) -> Path:
    return target.parent / f".{target.name}{ASIDE_TAG}{os.getpid()}"


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove staging directories left by dead icnn processes for ``target``."""
    removed = []
    for candidate, owner_gone in leftovers(target, STAGING_TAG):
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
    for candidate, owner_gone in leftovers(target, ASIDE_TAG):
        if not owner_gone:
            continue
        if not target.exists() and not target.is_symlink():
            os.rename(candidate, target)
            _fsync_directory(target.parent)
            restored = candidate
        else:
            shutil.rmtree(candidate, ignore_errors=True)
    return restored


def check_output_path(target: StoragePath, force: bool) -> None:
    """Refuse (exit 2) an output path that cannot take a new checkpoint, before any work.

    First puts back a checkpoint that an interrupted fallback swap left aside, so
    ``target`` is judged as it really stands. A URL (``gs://``) is checked by
    :mod:`~icnn_cli.checkpoint.remote_writing`.
    """
    if not isinstance(target, Path):
        return check_remote_output(target, force)
    recover_interrupted_swap(target)
    if target.is_file() or target.is_symlink():
        raise OutputExists("exists and is a file, not a checkpoint directory", "out", target)
    if target.exists():
        if not force:
            raise OutputExists(
                f"already exists (pass {param('force')} to replace it)", "out", target
            )
        is_checkpoint = (target / TREE_METADATA).is_file() or (target / COMMIT_MARKER).is_file()
        if not is_checkpoint and any(target.iterdir()):
            raise OutputExists(
                "is a non-empty directory that is not an Orbax checkpoint; "
                f"{param('force')} only replaces checkpoints",
                "out",
                target,
            )
    parent = existing_ancestor(target.parent)
    if not parent.is_dir():
        raise UsageError(f"{parent} is not a directory", "out", target)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"directory {parent} is not writable", "out", target)


def write_checkpoint_atomically(
    target: StoragePath,
    variables: Any,
    custom_metadata: dict[str, Any],
    force: bool,
) -> None:
    """Save ``variables`` with Orbax at ``target``; the old checkpoint survives any crash.

    Args:
      target: checkpoint directory to create (or replace, with ``force``).
      variables: the pytree to save; ``StandardCheckpointer().restore(target)`` returns it.
      custom_metadata: plain-JSON metadata stored with it.
      force: replace an existing checkpoint at ``target``.

    In a multi-process run every process calls this. Orbax writes each process's own
    shards (``ocdbt.process_N/``) into one staging directory named after process 0
    and finalizes it behind its own barriers; process 0 alone checks ``--out``, fsyncs
    and swaps the result in, and every process learns the outcome (``distributed``'s
    helpers are plain calls in a single process). ``target`` must then be on a shared
    filesystem.

    A URL (``gs://``) has no rename: :mod:`~icnn_cli.checkpoint.remote_writing`
    says what replaces the swap there.
    """
    if not isinstance(target, Path):
        return write_remote_checkpoint(target, variables, custom_metadata, force)
    import orbax.checkpoint as ocp

    from icnn_cli import distributed

    primary = distributed.is_primary()
    # Process 0 alone looks at --out: the check also puts back a checkpoint an
    # interrupted swap left aside, which two processes must not race to do.
    with distributed.all_or_none(f"preparing the output {target}"):
        if primary:
            check_output_path(target, force)
            target.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_staging(target)
    staging = staging_path(target, owner_pid=distributed.primary_value(os.getpid()))
    had_checkpoint = target.exists()
    try:
        with _disk_full_reported(target, had_checkpoint):
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(staging.absolute(), variables, custom_metadata=custom_metadata)
                checkpointer.wait_until_finished()
            # With several processes, Orbax's async_commit_complete barrier has passed
            # here: every process wrote its shards and process 0 finalized the staging.
            with distributed.all_or_none(f"committing the output {target}"):
                if primary:
                    _fsync_tree(staging)
                    _commit(staging, target, force)
    finally:
        if primary:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            for leftover in staging.parent.glob(f"{staging.name}{ORBAX_TMP_SUFFIX}*"):
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _disk_full_reported(target: Path, had_checkpoint: bool) -> Any:
    """A full disk during the save is one plain line (exit 1), not tensorstore's text.

    Orbax raises it as ``ValueError: RESOURCE_EXHAUSTED: Error writing ... in OCDBT
    database ...`` (or an ``OSError`` ENOSPC from its own files); the staging
    directory is removed by the caller, so ``target`` is as it was.
    """
    try:
        yield
    except IcnnError:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        kept = "the old checkpoint is untouched" if had_checkpoint else "nothing was written"
        raise RuntimeFailure(
            f"no space left on {mount_point(target.parent)} while writing {target}; {kept}"
        ) from None


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
            raise RuntimeFailure(
                "another process created it while this one was writing; its checkpoint was kept",
                "out",
                target,
            ) from None
        raise
