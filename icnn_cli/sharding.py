"""Device mesh and per-leaf layout for a sharded init: config rules -> ``NamedSharding``s.

The layout is decided from the ``jax.eval_shape`` tree, before anything is
computed, so ``jax.jit(init, out_shardings=...)`` creates every array already
split across the devices and no device ever holds a whole large leaf.

Default rule: a leaf of at least ``sharding.min_bytes`` is split along its
largest dimension that the number of devices divides, over all mesh axes at
once; smaller leaves, and leaves with no such dimension, are replicated.
``sharding.rules`` override it per leaf path (first match wins).

Example::

    mesh = build_mesh((2, 4), ("x", "y"))
    specs = partition_specs(leaf_shapes, mesh_axes(mesh), config.sharding)
    specs[("params", "w_zs_0", "kernel")]  # PartitionSpec(('x', 'y'),)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from icnn_cli.config import ShardingConfig, ShardingRule
from icnn_cli.errors import IcnnError, UsageError

GATHER_BLOCK_BYTES = 4 << 20  # one block of a leaf gathered across processes

LeafPath = tuple[str, ...]
LeafShape = tuple[tuple[int, ...], int]  # (shape, bytes)
MeshAxes = tuple[tuple[str, int], ...]  # ((name, size), ...) in mesh order


def parse_mesh(text: str) -> list[int]:
    """``"8"`` -> ``[8]``, ``"2x4"`` -> ``[2, 4]``; anything else is a ``--mesh`` error."""
    parts = text.lower().split("x")
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise UsageError("expected positive sizes joined by 'x', e.g. 8 or 2x4", "mesh", text)
    return [int(part) for part in parts]


def describe_mesh(axes: MeshAxes) -> str:
    """``x=2 y=4``."""
    return " ".join(f"{name}={size}" for name, size in axes)


def build_mesh(shape: Sequence[int], axis_names: Sequence[str], platform: str | None = None) -> Any:
    """A ``jax.sharding.Mesh`` over every device of ``platform`` (all processes' devices)."""
    import jax
    from jax.sharding import AxisType

    devices = jax.devices(platform) if platform else jax.devices()
    if math.prod(shape) != len(devices):
        where = f"{jax.process_count()} processes" if jax.process_count() > 1 else "this process"
        wanted = math.prod(shape)
        hint = (
            f" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count={wanted} "
            f"gives {wanted} devices)"
            if devices[0].platform == "cpu"
            else ""
        )
        raise UsageError(
            f"needs {wanted} devices, but JAX sees {len(devices)} {devices[0].platform} "
            f"device(s) in {where}{hint}",
            parameter="mesh",
            value="x".join(map(str, shape)),
        )
    # Auto axes: plain GSPMD partitioning of jit(out_shardings=...); make_mesh's
    # default (Explicit) would turn on sharding-in-types for the whole init.
    return jax.make_mesh(
        tuple(shape), tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape), devices=devices
    )


def mesh_axes(mesh: Any) -> MeshAxes:
    return tuple((str(name), int(size)) for name, size in mesh.shape.items())


def default_spec(shape: Sequence[int], nbytes: int, axes: MeshAxes, min_bytes: int) -> tuple:
    """Split the largest dimension the device count divides, over all axes; else replicate."""
    devices = math.prod(size for _, size in axes)
    if nbytes < min_bytes or not shape:
        return ()
    names = tuple(name for name, _ in axes)
    split = names[0] if len(names) == 1 else names
    # sorted() is stable: of equal dimensions, the first one is split.
    for dim in sorted(range(len(shape)), key=lambda dim: -shape[dim]):
        if shape[dim] % devices == 0:
            return (None,) * dim + (split,)
    return ()


def partition_specs(
    leaves: Mapping[LeafPath, LeafShape], axes: MeshAxes, config: ShardingConfig
) -> dict[LeafPath, tuple]:
    """Partition-spec entries for every leaf: the first matching rule, else the default."""
    specs = {}
    for path, (shape, nbytes) in leaves.items():
        path_text = "/".join(path)
        for index, rule in enumerate(config.rules):
            if fnmatch.fnmatchcase(path_text, rule.path):
                specs[path] = _rule_spec(rule, index, path_text, shape, axes)
                break
        else:
            specs[path] = default_spec(shape, nbytes, axes, config.min_bytes)
    paths = ["/".join(path) for path in leaves]
    for index, rule in enumerate(config.rules):
        if not any(fnmatch.fnmatchcase(path, rule.path) for path in paths):
            example = "/".join(next(iter(leaves), ("params",)))
            raise IcnnError(
                f"sharding.rules[{index}].path: {rule.path!r} matches no leaf "
                f"(paths look like {example!r})"
            )
    return specs


def _rule_spec(
    rule: ShardingRule, index: int, path: str, shape: Sequence[int], axes: MeshAxes
) -> tuple:
    where = f"sharding.rules[{index}].spec"
    sizes = dict(axes)
    if len(rule.spec) > len(shape):
        raise IcnnError(
            f"{where}: {len(rule.spec)} entries for {path} of shape {tuple(shape)} "
            f"({len(shape)} dimensions)"
        )
    seen: set[str] = set()
    entries = []
    for dim, entry in enumerate(rule.spec):
        names = [] if entry is None else [entry] if isinstance(entry, str) else list(entry)
        for name in names:
            if name not in sizes:
                raise IcnnError(
                    f"{where}: unknown mesh axis {name!r} (the mesh has {describe_mesh(axes)})"
                )
            if name in seen:
                raise IcnnError(f"{where}: mesh axis {name!r} is used twice")
            seen.add(name)
        parts = math.prod(sizes[name] for name in names)
        if shape[dim] % parts:
            raise IcnnError(
                f"{where}: dimension {dim} of {path} has size {shape[dim]}, which "
                f"{'x'.join(names)} = {parts} devices do not divide"
            )
        entries.append(entry if entry is None or isinstance(entry, str) else tuple(entry))
    return tuple(entries)


def describe_spec(entries: Sequence[Any]) -> str:
    """``(None, 'x')`` -> ``P(None, 'x')``; a spec that splits nothing -> ``replicated``."""
    entries = list(entries)
    while entries and entries[-1] is None:
        entries.pop()
    if not entries:
        return "replicated"

    def entry_text(entry: Any) -> str:
        if entry is None:
            return "None"
        if isinstance(entry, str):
            return repr(entry)
        names = [repr(name) for name in entry]
        return names[0] if len(names) == 1 else f"({', '.join(names)})"

    return f"P({', '.join(entry_text(entry) for entry in entries)})"


def describe_sharding_metadata(metadata: Any) -> str | None:
    """The layout an Orbax ``ArrayMetadata`` recorded; ``None`` unless it was a mesh layout."""
    sharding = getattr(metadata, "sharding", None)
    spec = getattr(sharding, "partition_spec", None)
    if spec is None or not hasattr(sharding, "axis_names"):
        return None
    return describe_spec(spec)


def leaf_shardings(abstract: Any, mesh: Any, config: ShardingConfig) -> tuple[Any, dict]:
    """``(tree of NamedSharding, {path: spec entries})`` for an ``eval_shape`` tree."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from icnn_cli.tree_paths import flatten_with_paths

    leaves = {
        path: (tuple(leaf.shape), math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize)
        for path, leaf in flatten_with_paths(abstract)
    }
    specs = partition_specs(leaves, mesh_axes(mesh), config)
    flat, treedef = jax.tree_util.tree_flatten(abstract)
    shardings = [NamedSharding(mesh, PartitionSpec(*specs[path])) for path in leaves]
    if len(shardings) != len(flat):
        raise AssertionError("leaf paths are not unique")
    return jax.tree_util.tree_unflatten(treedef, shardings), specs


def host_blocks(array: Any, budget: int = GATHER_BLOCK_BYTES) -> Iterator[Any]:
    """The C-order bytes of a global array, as numpy blocks of whole rows, on every process.

    An array split across processes has no process that holds it whole, and
    slicing it inside ``jit`` makes XLA all-gather the whole array first. So each
    block is put together on the host instead: every process writes the parts
    it owns (the shards with ``replica_id`` 0) into a zeroed buffer, and one
    all-gather across processes fills it in (the bytes are OR-ed: each is
    owned by one process and zero on the others, so floats keep even ``-0.0``).
    Every process must ask for the same blocks; host memory stays a few times
    ``budget`` beyond the shards.
    """
    import numpy as np

    if array.sharding.is_fully_replicated:
        yield np.asarray(array.addressable_data(0))
        return
    rows = array.shape[0]
    row_bytes = max(1, array.nbytes // max(rows, 1))
    block_rows = max(1, min(rows, budget // row_bytes))
    owned = [shard for shard in array.addressable_shards if shard.replica_id == 0]
    for start in range(0, rows, block_rows):
        stop = min(rows, start + block_rows)
        block = np.zeros((stop - start, *array.shape[1:]), dtype=array.dtype)
        for shard in owned:
            _copy_rows(shard, rows, start, stop, block)
        yield _sum_across_processes(block)


def _copy_rows(shard: Any, rows: int, start: int, stop: int, block: Any) -> None:
    """Copy the rows ``start:stop`` that ``shard`` holds into ``block`` (rows ``start`` on)."""
    import jax
    import numpy as np

    first, last, _ = shard.index[0].indices(rows)
    low, high = max(start, first), min(stop, last)
    if low >= high:
        return
    # A traced start: one compiled slice per block size, not one per block.
    piece = jax.lax.dynamic_slice_in_dim(shard.data, low - first, high - low, 0)
    block[(slice(low - start, high - start), *shard.index[1:])] = np.asarray(piece)


def _sum_across_processes(block: Any) -> Any:
    """Every process's ``block`` put together: each byte is owned by one process, zero elsewhere."""
    import numpy as np
    from jax.experimental import multihost_utils

    raw = block.reshape(-1).view(np.uint8)
    # A power-of-two length keeps the number of compiled gathers small.
    padded = np.zeros(1 << max(0, (raw.size - 1).bit_length()), dtype=np.uint8)
    padded[: raw.size] = raw
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # [processes, bytes]
    combined = np.bitwise_or.reduce(gathered, axis=0)
    return combined[: raw.size].view(block.dtype).reshape(block.shape)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where every leaf lives: the mesh, a tree of ``NamedSharding``s and the specs by path."""

    mesh: Any
    shardings: Any
    specs: dict[LeafPath, tuple]

    def spec_text(self, path: LeafPath) -> str:
        return describe_spec(self.specs[path])

    def device_text(self, processes: int) -> str:
        """``cpu: 8 devices (cpu), mesh x=2 y=4, 2 processes`` for the spec's ``device``.

        It starts with the platform, as the one-device ``cpu:0 (cpu)`` does.
        """
        first = self.mesh.devices.flat[0]
        count = f"{self.mesh.size} device" + ("s" if self.mesh.size != 1 else "")
        text = f"{first.platform}: {count} ({first.device_kind})"
        text += f", mesh {describe_mesh(mesh_axes(self.mesh))}"
        return text + (f", {processes} processes" if processes > 1 else "")


def plan_layout(abstract: Any, config: ShardingConfig, platform: str | None) -> Layout:
    """The mesh of ``config.mesh`` and every leaf's sharding, from the ``eval_shape`` tree."""
    mesh = build_mesh(config.mesh or (), config.axis_names(), platform)
    shardings, specs = leaf_shardings(abstract, mesh, config)
    return Layout(mesh=mesh, shardings=shardings, specs=specs)
