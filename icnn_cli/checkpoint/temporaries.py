"""Temporary directories beside a checkpoint: Orbax's tmp saves, icnn's staging and aside copies.

None of them is a checkpoint: a reader refuses them by name, and a writer removes
the ones whose owner process is gone (or puts an interrupted swap's aside copy back).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

from icnn_cli.errors import param

ORBAX_TMP_SUFFIX = ".orbax-checkpoint-tmp"
STAGING_TAG = ".icnn-staging-"
ASIDE_TAG = ".icnn-aside-"  # the old checkpoint during a fallback (non-renameat2) swap
TEMPORARY_TAGS = (ORBAX_TMP_SUFFIX, STAGING_TAG, ASIDE_TAG)


def is_temporary(path: PurePath) -> bool:
    """Whether ``path`` is named as an unfinished save (Orbax's or icnn's)."""
    return any(tag in path.name for tag in TEMPORARY_TAGS)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(target: Path, tag: str) -> list[tuple[Path, bool]]:
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
            pid_text.isdigit() and int(pid_text) != os.getpid() and process_alive(int(pid_text))
        )
        found.append((candidate, not owner_alive))
    return found


def remote_staging_leftovers(target: Any) -> list[Any]:
    """Staging copies an earlier write to ``target`` in a bucket left beside it.

    No process id can be checked there (the writer may have run anywhere): a bucket
    has one writer per ``--out`` at a time, so whatever is there is a leftover.
    """
    from icnn_cli.checkpoint.storage import storage_path

    prefix = f".{target.name}{STAGING_TAG}"
    parent = storage_path(str(target.parent))
    if not parent.is_dir():
        return []
    return sorted(child for child in parent.iterdir() if child.name.startswith(prefix))


def interrupted_replace_hint(target: Any, commit_marker: str) -> str:
    """Where an interrupted ``--force`` in a bucket left the new checkpoint whole, if it did."""
    for leftover in remote_staging_leftovers(target):
        if (leftover / commit_marker).is_file():
            return (
                f" (an interrupted replace ({param('force')}) left the new checkpoint whole at "
                f"{leftover}; the next init to this {param('out')} finishes replacing it)"
            )
    return ""


def interrupted_swap_hint(target: Path) -> str:
    """Where an interrupted ``--force`` swap left the previous checkpoint, if it did."""
    for candidate, owner_gone in leftovers(target, ASIDE_TAG):
        if owner_gone:
            return (
                f" (an interrupted replace ({param('force')}) left the previous checkpoint at "
                f"{candidate}; the next init to this {param('out')} puts it back)"
            )
    return ""
