"""Will the init fit? Its peak memory and its checkpoint's size, against what this machine has.

Both figures come from ``jax.eval_shape`` (shapes and dtypes, nothing computed), so a
model too big for the memory or the disk is refused (exit 2) before anything is
compiled, computed or written, with the numbers, instead of failing later as
``RESOURCE_EXHAUSTED`` or by the kernel's OOM killer.

Tests (and anyone curious) set ``ICNN_TEST_AVAILABLE_MEMORY`` / ``ICNN_TEST_FREE_DISK``
(bytes) to stand in for what this machine reports.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from pathlib import Path, PurePath
from typing import Any

from icnn_cli.errors import ResourcesExceeded, param
from icnn_cli.units import format_bytes

# Peak bytes the jitted init holds per parameter byte, measured on the 100M-parameter
# model of BENCHMARKS.md section 3 with XLA's buffer assignment
# (``compiled.memory_analysis()``): the output (1x) plus threefry's two uint32 halves
# of the leaf being drawn (2x that leaf). XLA's default CPU schedule keeps those of
# both 7000x7000 kernels live at once (output 389 MiB + temporaries 761 MiB = 2.96x);
# with LOW_PEAK_XLA_FLAGS one leaf's at a time (389 + 374 MiB = 1.96x). 2.0 is the
# figure with the flags, which ``icnn init`` sets; without them it runs up to ~3x.
PEAK_PER_PARAMETER_BYTE = 2.0
# XLA CPU flags that bring the init's temporaries from 2x the parameter bytes down
# to 2x the largest leaf, with the same bits and no slower (BENCHMARKS.md section 3):
# schedule for memory rather than for concurrency, and let copy insertion see that the
# threefry loops' buffers can be reused.
LOW_PEAK_XLA_FLAGS = (
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "--xla_cpu_copy_insertion_use_region_analysis=true",
)
# Orbax's metadata files and OCDBT's manifests beside the array data: 33 KiB measured for
# a 5,070-parameter ICNN (18 leaves), 35 KiB for a 98-parameter one (23 leaves). Was 1 MiB,
# which made a dry run call a 53 KB checkpoint ~1.0 MiB.
CHECKPOINT_OVERHEAD_BYTES = 40 << 10

AVAILABLE_MEMORY_VARIABLE = "ICNN_TEST_AVAILABLE_MEMORY"
FREE_DISK_VARIABLE = "ICNN_TEST_FREE_DISK"


@dataclasses.dataclass(frozen=True)
class ResourceEstimate:
    """What an init needs and what this machine has, in bytes.

    Args:
      peak_bytes: the most the init holds at once on one device (``--mesh``: per device).
      available_memory: what that device can still take (host RAM on a CPU), or ``None``
        when the backend does not say.
      memory_where: what ``available_memory`` is of (``"host memory"``, ``"gpu:0"``).
      checkpoint_bytes: the size of the checkpoint written.
      free_disk: free bytes on the filesystem of ``--out`` (``None`` for a remote
        store such as ``gs://``, which does not say).
      disk_where: that filesystem's mount point (or the remote URL).
    """

    peak_bytes: int
    available_memory: int | None
    memory_where: str
    checkpoint_bytes: int
    free_disk: int | None
    disk_where: str
    copies: int = 1  # checkpoints of this size written there (a sweep: one per seed)

    @property
    def memory_fits(self) -> bool:
        return self.available_memory is None or self.peak_bytes <= self.available_memory

    @property
    def disk_fits(self) -> bool:
        return self.free_disk is None or self.checkpoint_bytes <= self.free_disk

    def as_json(self) -> dict[str, Any]:
        return {
            "peak_memory_bytes": self.peak_bytes,
            "available_memory_bytes": self.available_memory,
            "memory_of": self.memory_where,
            "checkpoint_bytes": self.checkpoint_bytes,
            "free_disk_bytes": self.free_disk,
            "disk_of": self.disk_where,
        }

    def check(self, output: PurePath | None) -> None:
        """Raise :class:`ResourcesExceeded` when the init cannot fit."""
        if not self.memory_fits:
            assert self.available_memory is not None
            raise ResourcesExceeded(
                f"the init needs ~{format_bytes(self.peak_bytes)} at its peak, "
                f"{format_bytes(self.available_memory)} available ({self.memory_where}); "
                f"try {param('mesh')} or a smaller dim_hidden"
            )
        if not self.disk_fits:
            assert self.free_disk is not None
            what = (
                "the checkpoint needs"
                if self.copies == 1
                else f"the {self.copies} checkpoints need"
            )
            raise ResourcesExceeded(
                f"{what} ~{format_bytes(self.checkpoint_bytes)}, "
                f"{format_bytes(self.free_disk)} free on {self.disk_where}",
                "out",
                output,
            )


def prefer_low_peak_memory() -> None:
    """Add :data:`LOW_PEAK_XLA_FLAGS` to ``XLA_FLAGS`` (read when JAX starts its backend).

    A flag the user already set in ``XLA_FLAGS`` is left as they set it. Called before
    anything initialises JAX's backends; afterwards it changes nothing.
    """
    current = os.environ.get("XLA_FLAGS", "")
    named = {flag.split("=")[0] for flag in current.split()}
    added = [flag for flag in LOW_PEAK_XLA_FLAGS if flag.split("=")[0] not in named]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()


def parameter_bytes(abstract: Any) -> int:
    """Bytes of every leaf of an ``eval_shape`` tree."""
    import jax
    import numpy as np

    return sum(
        math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree.leaves(abstract)
        if hasattr(leaf, "shape")
    )


def estimate(
    abstract: Any, output: PurePath | None, devices: list[Any] | None = None, copies: int = 1
) -> ResourceEstimate:
    """The init's figures for the ``eval_shape`` tree ``abstract``, written to ``output``.

    ``devices``: the mesh's devices (each holds its share of every leaf), or the one
    device of an unsharded init. ``copies``: how many checkpoints of it go to ``output``'s
    filesystem (a sweep writes one per seed). ``output`` ``None``: nothing is written.
    """
    total = parameter_bytes(abstract)
    devices = devices or []
    peak = int(total * PEAK_PER_PARAMETER_BYTE)
    count = max(len(devices), 1)
    platform = devices[0].platform if devices else "cpu"
    if platform == "cpu":
        # CPU "devices" share the host's memory: what matters is this process's share.
        local = sum(1 for device in devices if _is_local(device)) or 1
        available, where = available_memory(), "host memory"
        peak = peak * local // count
    else:
        device = next((device for device in devices if _is_local(device)), devices[0])
        available, where = device_memory(device), f"{device.platform}:{device.id}"
        peak //= count
    remote = re.match(r"([a-z][a-z0-9+.-]*):/", str(output))
    if output is None:
        disk, where_written = None, "nowhere (nothing is written)"
    elif remote:  # gs:// and other object stores: no free-space figure
        disk, where_written = None, f"{remote.group(1)}://"
    else:
        mount = existing_ancestor(Path(output))
        disk, where_written = free_disk(mount), mount_point(mount)
    return ResourceEstimate(
        peak_bytes=peak,
        available_memory=available,
        memory_where=where,
        checkpoint_bytes=(total + CHECKPOINT_OVERHEAD_BYTES) * copies,
        free_disk=disk,
        disk_where=where_written,
        copies=copies,
    )


def _is_local(device: Any) -> bool:
    import jax

    return device.process_index == jax.process_index()


def available_memory() -> int:
    """Bytes of host memory available to a new allocation (``MemAvailable``)."""
    override = os.environ.get(AVAILABLE_MEMORY_VARIABLE)
    if override:
        return int(override)
    import psutil

    return int(psutil.virtual_memory().available)


def device_memory(device: Any) -> int | None:
    """Free bytes of an accelerator's memory, when its backend reports them."""
    override = os.environ.get(AVAILABLE_MEMORY_VARIABLE)
    if override:
        return int(override)
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every backend implements memory_stats
        return None
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def free_disk(directory: Path) -> int:
    """Free bytes on ``directory``'s filesystem, for an unprivileged writer."""
    override = os.environ.get(FREE_DISK_VARIABLE)
    if override:
        return int(override)
    return shutil.disk_usage(directory).free


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (an output is created later)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> str:
    """The mount point of ``path``'s filesystem, for messages such as "no space left on /data"."""
    path = existing_ancestor(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


# --- failures that still happen at run time ------------------------------------------------

_DISK_FULL_MARKERS = ("No space left", "ENOSPC", "Disk quota exceeded")
_OUT_OF_MEMORY_MARKERS = ("Out of memory", "out of memory", "Failed to allocate", "OOM")


def is_disk_full(error: BaseException) -> bool:
    """An ``OSError`` ENOSPC/EDQUOT, or Orbax's / tensorstore's ValueError that wraps one."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if any(marker in text for marker in _DISK_FULL_MARKERS):
            return True
        if "RESOURCE_EXHAUSTED" in text and not _mentions_memory(text):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_out_of_memory(error: BaseException) -> bool:
    """JAX's ``RESOURCE_EXHAUSTED: Out of memory ...`` (an allocation the device refused)."""
    text = str(error)
    return ("RESOURCE_EXHAUSTED" in text and _mentions_memory(text)) or isinstance(
        error, MemoryError
    )


def _mentions_memory(text: str) -> bool:
    return any(marker in text for marker in _OUT_OF_MEMORY_MARKERS)
