"""The one place that knows Orbax's layouts: what a path holds, and whether it is committed.

A path is one of three things (``tests/data/golden/foreign/LAYOUTS.md`` has the
evidence, release by release):

- a **single item**: a PyTree checkpoint with ``_METADATA`` (or, from Orbax 0.4,
  its msgpack ``checkpoint`` file, the only tree file of 0.4.0 to 0.4.2) at the top:
  ``StandardCheckpointer``, ``PyTreeCheckpointer``, and every ``icnn init``;
- a **step with items**: one subdirectory per item. ``_CHECKPOINT_METADATA``
  names them and their handlers (``item_handlers``, Orbax 0.11 on); older steps
  are read from their files. This is a ``CheckpointManager`` step with Composite
  items, a v1 ``save_checkpointables`` or ``save_pytree`` (the tree under
  ``state/``, an empty ``orbax.checkpoint`` marker file at the top) and a v1
  training ``Checkpointer`` step (``state/`` and ``metrics/``);
- a **root of steps**: step directories named ``100``, ``000100`` or
  ``step_100`` (``step_prefix``, ``step_format_fixed_length``; no file records the
  format), beside which ``metadata/`` (root metadata) and temporaries are not steps.

Committed is judged by the rules of the release that wrote it: Orbax writes
``commit_success.txt`` only since 0.12.3; before, a local checkpoint was committed
by renaming it to its final name, and from 0.5 on its ``_CHECKPOINT_METADATA``
records a commit time when it is finalized. A temporary name always means not
committed. Where nothing tells (Orbax 0.4 writes no step metadata), the checkpoint
is read and a warning says so. In object storage (``gs://``) nothing is renamed:
every Orbax release writes straight to the final name and ``commit_success.txt``
last, so there the marker alone says committed.

Longer than most modules on purpose: every Orbax layout and commit rule lives here, in
one place, so that a new release's layout is one new case beside the others.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from icnn_cli.checkpoint import guarded_files
from icnn_cli.checkpoint.single_files import FILE_KINDS, LAYOUTS, sniff
from icnn_cli.checkpoint.spec import METADATA_KEY
from icnn_cli.checkpoint.storage import (
    StoragePath,
    check_reachable,
    is_remote,
    missing_bucket,
)
from icnn_cli.checkpoint.temporaries import (
    interrupted_replace_hint,
    interrupted_swap_hint,
    is_temporary,
)
from icnn_cli.errors import (
    CheckpointRefused,
    DamagedCheckpoint,
    IcnnError,
    NotACheckpoint,
    first_line,
)

COMMIT_MARKER = "commit_success.txt"
TREE_METADATA = "_METADATA"
MSGPACK_TREE = "checkpoint"  # Orbax 0.4's msgpack tree (values or placeholders)
MSGPACK_TREE_ONLY_LAYOUT = "Orbax 0.4.0 to 0.4.2: msgpack tree, no _METADATA"
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
V1_MARKER = "orbax.checkpoint"  # an empty file the v1 free functions write at the top
JSON_ITEM_FILES = ("metadata", "data.json", "metrics")  # v0 JsonCheckpointHandler, v1 Json/Metrics
MAX_CHECKPOINT_METADATA_BYTES = 4 << 20  # Orbax's own entries plus an icnn spec are a few KiB
# Orbax's default step names are the number, optionally zero-padded, optionally after
# "<prefix>_" (CheckpointManagerOptions.step_prefix / step_format_fixed_length).
STEP_NAME = re.compile(r"^(?:(?P<prefix>.+)_)?(?P<number>\d+)$")
FIRST_RELEASE_WITH_MARKER = (0, 12, 3)
# A PyTree item's array data, which is no use without its tree (_METADATA or MSGPACK_TREE).
ARRAY_STORE_FILES = ("manifest.ocdbt", "_sharding")
# What an Orbax save writes before its marker, so what a killed one may have left.
SAVE_STARTED = (TREE_METADATA, CHECKPOINT_METADATA, "manifest.ocdbt", "ocdbt.process_0", "d")

ItemKind = Literal["pytree", "json", "unknown", "safetensors", "npz", "msgpack"]
TREE_KINDS = ("pytree", *FILE_KINDS)  # items that hold a tree of arrays


@dataclasses.dataclass(frozen=True)
class Item:
    """One item of a checkpoint: a PyTree, a JSON document, or something icnn cannot read."""

    name: str | None  # None: the checkpoint is this single item
    path: StoragePath
    kind: ItemKind
    handler: str | None = None  # Orbax's handler class path, where recorded

    @property
    def label(self) -> str:
        return self.name or "(top level)"

    @property
    def json_file(self) -> StoragePath | None:
        """The file holding a JSON item's document."""
        for name in JSON_ITEM_FILES:
            if (self.path / name).is_file():
                return self.path / name
        return None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A committed Orbax checkpoint directory: one item, or a step with items.

    Attributes:
      path: the directory.
      items: its items, by name (one nameless item for a single-item checkpoint).
      layout: how Orbax wrote it, in words ("single item", "v1 checkpointables", ...).
      metadata: ``_CHECKPOINT_METADATA`` (empty where the writer had none): handlers,
        ``custom_metadata``, init and commit times, metrics.
      warnings: what icnn could not tell, said rather than refused.
    """

    path: StoragePath
    items: tuple[Item, ...]
    layout: str
    metadata: CheckpointMetadata
    warnings: tuple[str, ...] = ()

    @property
    def single(self) -> bool:
        return len(self.items) == 1 and self.items[0].name is None

    @property
    def custom_metadata(self) -> dict[str, Any]:
        return self.metadata.custom_metadata

    def pytree_items(self) -> list[Item]:
        """The items that hold a tree of arrays (Orbax PyTrees, or a single weights file)."""
        return [item for item in self.items if item.kind in TREE_KINDS]

    def item(self, name: str) -> Item:
        """The item called ``name`` (``--item``)."""
        for item in self.items:
            if item.name == name:
                return item
        names = ", ".join(item.label for item in self.items)
        raise NotACheckpoint(f"{self.path} has no item {name!r} (items: {names})", "item", name)

    def only_pytree(self, purpose: str = "") -> Item:
        """The one PyTree item, for commands that need exactly one tree."""
        trees = self.pytree_items()
        if len(trees) == 1:
            return trees[0]
        if not trees:
            raise IcnnError(f"{self.path}: holds no PyTree item ({self.items_text()})")
        names = ", ".join(item.label for item in trees)
        raise IcnnError(
            f"{self.path}: holds several PyTree items ({names}){purpose}: give one of them, "
            f"e.g. {trees[0].path}"
        )

    def items_text(self) -> str:
        return ", ".join(f"{item.label}: {item.kind}" for item in self.items)


@dataclasses.dataclass(frozen=True)
class RootOfSteps:
    """A ``CheckpointManager`` (or v1 training ``Checkpointer``) root: step directories."""

    path: StoragePath
    steps: tuple[tuple[int, str], ...]  # (step, directory name), ascending

    def step_path(self, step: int | None, parameter: str = "step") -> tuple[int, StoragePath]:
        """``(step, directory)`` of ``step``, default the latest."""
        names = dict(self.steps)
        chosen = self.steps[-1][0] if step is None else step
        if chosen not in names:
            raise NotACheckpoint(
                f"{self.path} has no step {step} (steps: {steps_text(self.steps)})",
                parameter,
                step,
            )
        return chosen, self.path / names[chosen]


@dataclasses.dataclass(frozen=True)
class Location:
    """What a path named: a checkpoint, possibly reached through a root of steps."""

    checkpoint: Checkpoint
    root: RootOfSteps | None = None
    step: int | None = None


# --- steps -----------------------------------------------------------------------------------


def manager_steps(path: StoragePath) -> list[tuple[int, str]]:
    """``(step, directory name)`` of a root's step directories, ascending.

    ``100``, ``000100`` and ``step_100`` are steps; temporaries
    (``<step>.orbax-checkpoint-tmp-*``) and the root's ``metadata/`` are not.
    """
    if not path.is_dir():
        return []
    found = []
    for child in path.iterdir():
        match = STEP_NAME.match(child.name)
        if match and not is_temporary(child) and child.is_dir():
            guarded_files.inside(path, child.name, "step directory")  # no link out of the root
            found.append((int(match.group("number")), child.name))
    return sorted(found)


def steps_text(steps: Sequence[tuple[int, str]], shown: int = 3) -> str:
    """``0, 5, 10`` or, for many, ``0, 1, 2, ..., 97, 98, 99 (100 steps)``."""
    numbers = [str(step) for step, _ in steps]
    if len(numbers) <= 2 * shown:
        return ", ".join(numbers)
    return (
        f"{', '.join(numbers[:shown])}, ..., {', '.join(numbers[-shown:])} ({len(numbers)} steps)"
    )


# --- the step metadata file ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckpointMetadata:
    """A step's ``_CHECKPOINT_METADATA``: what Orbax records beside its items.

    Orbax's own ``StepMetadata`` is read through ``metadata()``, which reports a broken
    file as empty; these are the file's fields as icnn uses them, each optional.

    Attributes:
      item_handlers: the handler's name for a single item, else item name -> handler.
      custom_metadata: the writer's own metadata (icnn's spec under ``"icnn"``).
      init_timestamp_nsecs: when the save started (nanoseconds since the epoch).
      commit_timestamp_nsecs: when the save was committed.
      metrics: the metrics a ``CheckpointManager`` recorded with the step.
    """

    item_handlers: str | dict[str, Any] | None = None
    custom_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_timestamp_nsecs: int | None = None
    commit_timestamp_nsecs: int | None = None
    metrics: dict[str, Any] | None = None

    @classmethod
    def of_json(cls, document: dict[str, Any]) -> CheckpointMetadata:
        """The fields of the file's JSON object; a field of another type counts as absent."""
        handlers = document.get("item_handlers")
        custom = document.get("custom_metadata")
        metrics = document.get("metrics")
        return cls(
            item_handlers=handlers if isinstance(handlers, str | dict) else None,
            custom_metadata=custom if isinstance(custom, dict) else {},
            init_timestamp_nsecs=_nanoseconds(document.get("init_timestamp_nsecs")),
            commit_timestamp_nsecs=_nanoseconds(document.get("commit_timestamp_nsecs")),
            metrics=metrics if isinstance(metrics, dict) else None,
        )


def _nanoseconds(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_checkpoint_metadata(path: StoragePath) -> CheckpointMetadata:
    """``_CHECKPOINT_METADATA`` of ``path`` (empty when absent); exit 1 when damaged.

    Orbax itself reports a broken file as ``custom_metadata={}``, which would make an
    icnn checkpoint look foreign, so the file is checked here.
    """
    file = path / CHECKPOINT_METADATA
    problem = None
    content: Any = None
    try:
        data = guarded_files.read_bytes(path, file, MAX_CHECKPOINT_METADATA_BYTES)
    except FileNotFoundError:
        return CheckpointMetadata()  # Orbax 0.4 wrote none; nothing is lost
    except OSError as error:
        problem = f"is unreadable ({first_line(error)})"
    else:
        try:
            content = guarded_files.load_json(data, path, CHECKPOINT_METADATA)
        except ValueError as error:
            problem = f"is not valid JSON ({first_line(error)})"
        else:
            if not isinstance(content, dict):
                problem = "is not a JSON object"
            elif not isinstance(content.get("custom_metadata") or {}, dict):
                problem = "has a custom_metadata that is not a JSON object"
    if problem:
        raise DamagedCheckpoint(
            f"{path}: {CHECKPOINT_METADATA} {problem}: the checkpoint's metadata is damaged"
        )
    return CheckpointMetadata.of_json(content)


# --- items ------------------------------------------------------------------------------------


def _kind_of_handler(handler: str) -> ItemKind:
    name = handler.rsplit(".", 1)[-1]
    if "PyTree" in name or "Standard" in name:
        return "pytree"
    if "Json" in name or "Metrics" in name:
        return "json"
    return "unknown"


def _kind_of_files(directory: StoragePath) -> ItemKind | None:
    """An item's kind from the files Orbax writes for it; ``None``: not an item."""
    if (directory / TREE_METADATA).is_file() or (directory / MSGPACK_TREE).is_file():
        return "pytree"
    if _has_array_store(directory):
        return "pytree"  # without its tree file: reading it says which file is missing
    if any((directory / name).is_file() for name in JSON_ITEM_FILES):
        return "json"
    return None


def _is_single_item(path: StoragePath) -> bool:
    return (path / TREE_METADATA).is_file() or (path / MSGPACK_TREE).is_file()


def _has_array_store(directory: StoragePath) -> bool:
    return any((directory / name).is_file() for name in ARRAY_STORE_FILES)


def tree_file_missing(path: StoragePath) -> DamagedCheckpoint:
    """A PyTree item without the file that says its tree: missing, which is not damaged."""
    return DamagedCheckpoint(
        f"{path}: {TREE_METADATA} is missing, and so is the msgpack tree {MSGPACK_TREE} that "
        "Orbax 0.4.0 to 0.4.2 wrote instead: nothing says what tree the array data holds"
    )


def is_msgpack_tree_only(path: StoragePath) -> bool:
    """A PyTree item whose only tree is the msgpack ``checkpoint``: no ``_METADATA``.

    ``PyTreeCheckpointHandler`` wrote ``_METADATA`` only when asked to in Orbax 0.4.0 to
    0.4.2 (``write_tree_metadata=False`` by default; True from 0.4.3 on).
    """
    return not (path / TREE_METADATA).exists() and (path / MSGPACK_TREE).is_file()


def _items(path: StoragePath, metadata: CheckpointMetadata) -> tuple[list[Item], str] | None:
    """The items of a directory and the layout's name; ``None`` when it holds none."""
    handlers = metadata.item_handlers
    if _is_single_item(path):
        handler = handlers if isinstance(handlers, str) else None
        layout = "single item"
        if is_msgpack_tree_only(path):
            layout += f" ({MSGPACK_TREE_ONLY_LAYOUT})"
        return [Item(None, path, "pytree", handler)], layout
    v1 = (path / V1_MARKER).is_file()
    if isinstance(handlers, dict) and handlers:
        items = []
        for name, handler in sorted(handlers.items()):
            # Item names come from the checkpoint: "/elsewhere" or "../x" must not lead out.
            directory = guarded_files.inside(path, str(name))
            kind = _kind_of_files(directory) or _kind_of_handler(str(handler))
            items.append(Item(str(name), directory, kind, str(handler)))
        api = "v1" if any(".v1." in str(handler) for handler in handlers.values()) else "v0"
    else:
        # Without handlers, items are told by their files; step directories (a root's
        # children) are not items, whatever they hold.
        children = sorted(
            child
            for child in path.iterdir()
            if child.is_dir() and not is_temporary(child) and not STEP_NAME.match(child.name)
        )
        items = [
            Item(child.name, child, kind)
            for child in children
            if (kind := _kind_of_files(child)) is not None
        ]
        api = "v1" if v1 else "v0"
    if not items:
        return None
    if v1:
        layout = "v1 checkpointables (orbax.checkpoint.v1 save)"
    elif api == "v1":
        layout = "v1 training step (orbax.checkpoint.v1 training Checkpointer)"
    else:
        layout = "step with items (CheckpointManager / Composite)"
    if any(item.kind == "pytree" and is_msgpack_tree_only(item.path) for item in items):
        layout += f"; items of {MSGPACK_TREE_ONLY_LAYOUT}"
    return items, layout


# --- commit rules ------------------------------------------------------------------------------


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _commit_problem(
    path: StoragePath, metadata: CheckpointMetadata
) -> tuple[str | None, str | None]:
    """``(why it is not committed, warning)``: at most one of them is set."""
    if (path / COMMIT_MARKER).is_file():
        return None, None
    if is_remote(path):
        # No rename in a bucket: the final name proves nothing, the marker is written last.
        return f"no {COMMIT_MARKER}, which a save to object storage writes last", None
    if not (path / CHECKPOINT_METADATA).exists():
        # Orbax 0.4 wrote neither file: only the final name (a rename) says it finished.
        return None, (
            f"{path}: no {COMMIT_MARKER} and no {CHECKPOINT_METADATA}, as Orbax 0.4 wrote "
            "them: taken as finished by its final name"
        )
    if metadata.commit_timestamp_nsecs is None:
        return f"no {COMMIT_MARKER}, and no commit time in {CHECKPOINT_METADATA}", None
    icnn = metadata.custom_metadata.get(METADATA_KEY)
    versions = icnn.get("versions") if isinstance(icnn, dict) else None
    writer = versions.get("orbax-checkpoint") if isinstance(versions, dict) else None
    if isinstance(writer, str) and _release(writer) >= FIRST_RELEASE_WITH_MARKER:
        return f"no {COMMIT_MARKER}, which orbax-checkpoint {writer} writes last", None
    return None, None  # Orbax 0.5 to 0.12.2: committed by renaming, with a commit time


# --- the entry points ----------------------------------------------------------------------------


def has_unfinished_save(path: StoragePath) -> bool:
    """Whether ``path`` holds what a save killed before its marker leaves (no marker)."""
    return not (path / COMMIT_MARKER).is_file() and any(
        (path / name).exists() for name in SAVE_STARTED
    )


def _not_found(path: StoragePath) -> IcnnError:
    if is_remote(path):
        bucket = missing_bucket(path)
        if bucket:
            return IcnnError(f"{path}: no such checkpoint: bucket {bucket} does not exist")
        hint = interrupted_replace_hint(path, COMMIT_MARKER)
        return IcnnError(f"{path}: no such checkpoint{hint}")
    hint = interrupted_swap_hint(path) if isinstance(path, Path) else ""
    return IcnnError(f"{path}: no such checkpoint{hint}")


def open_checkpoint(path: StoragePath) -> Checkpoint:
    """The committed checkpoint at ``path``; exit 2 for anything else, 1 for damaged metadata.

    Orbax's ``metadata()`` happily answers for half-written directories, so the
    commit rules above are applied here first.
    """
    check_reachable(path)
    if not path.exists():
        raise _not_found(path)
    if not path.is_dir():
        if not is_remote(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise CheckpointRefused(f"{path}: is not a regular file nor a directory")
        if is_remote(path):
            raise IcnnError(
                f"{path}: is a file; icnn reads Orbax checkpoint directories from object "
                "storage (copy a single weights file to a local disk to read it)"
            )
        kind = sniff(path)
        if kind is None:
            raise IcnnError(
                f"{path}: not an Orbax checkpoint (it is a file, not a directory), nor a "
                "safetensors, .npz or Flax msgpack file"
            )
        return Checkpoint(path, (Item(None, path, kind),), LAYOUTS[kind], CheckpointMetadata())
    if is_temporary(path):
        raise IcnnError(
            f"{path}: an unfinished save left this temporary directory; it is not a checkpoint"
        )
    # Orbax and tensorstore open their files themselves: no special file, no link out.
    guarded_files.check_tree(path)
    metadata = read_checkpoint_metadata(path)
    found = _items(path, metadata)
    if found is None and is_remote(path) and has_unfinished_save(path):
        raise IcnnError(
            f"{path}: Orbax checkpoint was never committed (no {COMMIT_MARKER}, which a save "
            f"to object storage writes last){interrupted_replace_hint(path, COMMIT_MARKER)}"
        )
    if found is None and not is_remote(path) and _has_array_store(path):
        raise tree_file_missing(path)
    if found is None:
        steps = manager_steps(path)
        hint = (
            f" (it holds step directories {steps_text(steps)} of a CheckpointManager root: give "
            f"one step's checkpoint, e.g. {path / steps[-1][1]}; `icnn inspect` takes the root "
            "itself)"
            if steps
            else ""
        )
        raise IcnnError(f"{path}: not an Orbax checkpoint (no {TREE_METADATA} file){hint}")
    items, layout = found
    problem, warning = _commit_problem(path, metadata)
    if problem:
        hint = interrupted_replace_hint(path, COMMIT_MARKER) if is_remote(path) else ""
        raise IcnnError(f"{path}: Orbax checkpoint was never committed ({problem}){hint}")
    return Checkpoint(path, tuple(items), layout, metadata, (warning,) if warning else ())


def locate(path: StoragePath, step: int | None = None) -> Location:
    """A checkpoint, or the step ``step`` (default: the latest) of a root of steps."""
    check_reachable(path)
    if not path.exists():
        raise _not_found(path)
    is_checkpoint_itself = not path.is_dir() or (
        _is_single_item(path)
        or (path / CHECKPOINT_METADATA).is_file()
        or (path / V1_MARKER).is_file()
    )
    steps = [] if is_checkpoint_itself else manager_steps(path)
    if not steps:
        if step is not None:
            raise NotACheckpoint(
                f"{path} is not a CheckpointManager root (no numbered step directories)",
                "step",
                step,
            )
        return Location(open_checkpoint(path))
    root = RootOfSteps(path, tuple(steps))
    number, step_directory = root.step_path(step)
    return Location(open_checkpoint(step_directory), root, number)
