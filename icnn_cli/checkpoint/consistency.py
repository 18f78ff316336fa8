"""Reads that give the old or the new checkpoint whole while a writer replaces it.

``icnn init --force`` swaps the new checkpoint in with one ``renameat2`` exchange and
then deletes the old one. A reader that started before the swap may take the spec of
one version and arrays of the next, or find files vanish under it: that is no damage,
and must never be reported as such. So a read notes which directory the path names
(device, inode, change time: the exchange changes them) before and after; if the path
named another directory meanwhile, whatever the read gave or raised is thrown away
and the read starts again, a bounded number of times.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from icnn_cli.checkpoint.storage import StoragePath
from icnn_cli.errors import RuntimeFailure

T = TypeVar("T")
MAX_ATTEMPTS = 5

Identity = tuple[int, int, int] | None


def identity(path: StoragePath) -> Identity:
    """Which directory ``path`` names now (``None``: nothing there, or not local)."""
    try:
        status = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return (status.st_dev, status.st_ino, status.st_ctime_ns)


def read_consistently(paths: Sequence[StoragePath], read: Callable[[], T]) -> T:
    """``read()``, again if any of ``paths`` was replaced while it ran; exit 1 if it keeps being."""
    for _ in range(MAX_ATTEMPTS):
        before = [identity(path) for path in paths]
        try:
            result = read()
        except Exception:
            if [identity(path) for path in paths] != before:
                continue
            raise
        if [identity(path) for path in paths] == before:
            return result
    raise RuntimeFailure(
        f"{paths[0]}: the checkpoint was replaced while being read, {MAX_ATTEMPTS} times in a "
        "row; read it again once its writer is done"
    )
