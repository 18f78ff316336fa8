"""Writing to object storage (``gs://``), where nothing can be renamed.

Orbax writes a checkpoint in a bucket straight under its final name and
``commit_success.txt`` last; readers (``layout``) take nothing there without that
marker. So a killed write leaves a checkpoint that every icnn command refuses as
never committed, never one taken as whole. ``--force`` over a committed checkpoint:

1. Orbax writes the new checkpoint under a fresh name beside it,
   ``.<name>.icnn-staging-<pid>-<random>``, marker last;
2. the old checkpoint's marker is deleted (from here on readers refuse ``--out``),
   then its other objects;
3. the new objects are copied to ``--out`` (server-side), the marker last;
4. the staging copy is deleted.

At every moment the bucket holds a whole checkpoint: the old one at ``--out``, or
the new one at ``--out`` or at the staging name. The next ``icnn init`` with this
``--out`` finishes an interrupted step 3 from the staging copy, and deletes
leftovers a killed step 1 or 4 left behind (one writer per ``--out`` at a time).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any

from icnn_cli.checkpoint.layout import COMMIT_MARKER, has_unfinished_save
from icnn_cli.checkpoint.storage import (
    check_reachable,
    files_under,
    forget_listing,
    missing_bucket,
    orbax_path,
    remote_failure,
)
from icnn_cli.checkpoint.temporaries import STAGING_TAG, remote_staging_leftovers
from icnn_cli.errors import (
    IcnnError,
    NotCommitted,
    OutputExists,
    StorageFailure,
    UsageError,
    first_line,
    param,
)


def staging_name(target: Any, owner_pid: int, token: int) -> str:
    return f".{target.name}{STAGING_TAG}{owner_pid}-{token:08x}"


def is_committed(path: Any) -> bool:
    return (path / COMMIT_MARKER).is_file()


def finish_interrupted_replace(target: Any) -> Any | None:
    """Complete a ``--force`` that was killed while copying; delete other leftovers.

    Returns the staging copy the checkpoint was completed from, if any.
    """
    finished = None
    for leftover in remote_staging_leftovers(target):
        if finished is None and is_committed(leftover) and not is_committed(target):
            _replace(leftover, target)
            finished = leftover
        _remove(leftover)
    forget_listing(target)
    return finished


def check_remote_output(target: Any, force: bool) -> None:
    """Refuse (exit 2) an output path in a bucket that cannot take a new checkpoint."""
    check_reachable(target)
    bucket = missing_bucket(target)
    if bucket:
        raise UsageError(f"bucket {bucket} does not exist", "out", target)
    finish_interrupted_replace(target)
    if target.is_file():
        raise OutputExists("exists and is an object, not a checkpoint directory", "out", target)
    if not target.exists():
        return
    unfinished = has_unfinished_save(target)
    is_checkpoint = unfinished or is_committed(target)
    if not force:
        if unfinished:
            raise OutputExists(
                f"holds an unfinished save (no {COMMIT_MARKER}: a killed write?); pass "
                f"{param('force')} to replace it",
                "out",
                target,
            )
        raise OutputExists(f"already exists (pass {param('force')} to replace it)", "out", target)
    if not is_checkpoint:
        raise OutputExists(
            f"holds objects that are not an Orbax checkpoint; {param('force')} only "
            "replaces checkpoints",
            "out",
            target,
        )


def write_remote_checkpoint(
    target: Any,
    variables: Any,
    custom_metadata: dict[str, Any],
    force: bool,
) -> None:
    """Save ``variables`` with Orbax at ``target`` in a bucket; see the module docstring."""
    from icnn_cli import distributed

    primary = distributed.is_primary()
    with distributed.all_or_none(f"preparing the output {target}"):
        if primary:
            check_remote_output(target, force)
            replacing = is_committed(target)
            if target.exists() and not replacing:
                _remove(target)  # an unfinished save: nothing there to keep
        else:
            replacing = False
    replacing = bool(distributed.primary_value(int(replacing)))
    if not replacing:
        with _write_failures_reported(target):
            _save(target, variables, custom_metadata)
        forget_listing(target)
        return
    # one staging name for all processes: process 0's
    owner = distributed.primary_value(os.getpid())
    token = distributed.primary_value(secrets.randbits(31))
    staging = target.parent / staging_name(target, owner, token)
    replaced = False
    try:
        with _write_failures_reported(target):
            _save(staging, variables, custom_metadata)
            with distributed.all_or_none(f"committing the output {target}"):
                if primary:
                    _replace(staging, target)
                    replaced = True
    finally:
        # A staging copy that is whole while --out is not stays: the next run finishes.
        if primary and (replaced or not _is_whole(staging)):
            _remove(staging)
        forget_listing(target)


def _save(path: Any, variables: Any, custom_metadata: dict[str, Any]) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(orbax_path(path), variables, custom_metadata=custom_metadata)
        checkpointer.wait_until_finished()


def _replace(staging: Any, target: Any) -> None:
    """Steps 2 and 3: the old checkpoint out (marker first), the new one in (marker last)."""
    source, destination = orbax_path(staging), orbax_path(target)
    names = sorted(files_under(source), key=lambda name: name == COMMIT_MARKER)
    if not names or names[-1] != COMMIT_MARKER:
        raise NotCommitted(f"{staging}: the new checkpoint is not committed")
    marker = destination / COMMIT_MARKER
    if marker.exists():
        marker.unlink()
    for name in files_under(destination):
        (destination / name).unlink()
    for name in names:
        (source / name).copy(destination / name, overwrite=True)


def _is_whole(path: Any) -> bool:
    try:
        return is_committed(orbax_path(path))
    except Exception:  # cannot tell (the network?): keep it, the next run decides
        return True


def _remove(path: Any) -> None:
    with contextlib.suppress(OSError):
        plain = orbax_path(path)
        if plain.exists():
            plain.rmtree()


@contextlib.contextmanager
def _write_failures_reported(target: Any) -> Any:
    """Orbax's and tensorstore's failures while writing to a bucket, in one line (exit 1)."""
    from icnn_cli.distributed import AgreedFailure

    try:
        yield
    except (IcnnError, AgreedFailure):  # worded already (and, if agreed, by every process)
        raise
    except Exception as error:
        plain = remote_failure(error, target, parameter="out")
        if plain is not None:
            raise plain from None
        raise StorageFailure(
            f"writing to object storage failed ({first_line(error, 160)}); "
            "nothing there is taken as a committed checkpoint",
            "out",
            target,
        ) from None
